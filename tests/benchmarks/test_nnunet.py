"""`ramanseg bench-nnunet`: nnU-Net ensemble inference time, on a randomly initialised
nnU-Net model folder (the timing does not depend on trained weights)."""

from __future__ import annotations

import json

import pytest
import torch

from ramanseg.benchmarks.nnunet import trained_folds
from ramanseg.errors import InputError

NNUNET = {
    "dataset_id": 999,
    "trainer": "nnUNetTrainer",
    "planner": "nnUNetPlannerResEncM",
    "configuration": "2d",
}
SETTINGS = {
    "device": "cpu",
    "channels": [{"name": f"band {c}", "role": "raman"} for c in range(4)],
    "nnunet": NNUNET,
}


@pytest.fixture
def nnunet_dir(tmp_path, monkeypatch):
    """An nnU-Net folder for this test (nnU-Net's environment restored afterwards)."""
    from tests.interpret.nnunet_model import configure_nnunet_for_test

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = configure_nnunet_for_test(monkeypatch, tmp_path / "nnunet")
    yield folder
    torch.set_num_threads(threads)


def bench_argv(nnunet_dir, out) -> list[str]:
    return [
        "bench-nnunet", "--nnunet-dir", str(nnunet_dir), "--size", "48", "--repeats", "2",
        "--out", str(out), "--settings", json.dumps(SETTINGS),
    ]  # fmt: skip


def test_bench_nnunet_times_the_ensemble_of_the_trained_folds(nnunet_dir, tmp_path):
    from ramanseg.cli import main
    from ramanseg.nnunet.run import trained_model_dir
    from tests.interpret.nnunet_model import write_model_folder

    model_dir = trained_model_dir(999, "nnUNetTrainer", "nnUNetPlannerResEncM", "2d")
    write_model_folder(model_dir, channels=4, size=32, folds=(0, 2))
    out = tmp_path / "bench" / "nnunet_inference.json"
    assert main(bench_argv(nnunet_dir, out)) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "nnunet" and result["folds"] == [0, 2]
    assert result["image_size"] == 48 and result["repeats"] == 2 and result["device"] == "cpu"
    assert result["seconds_per_megapixel"] > 0
    assert result["megapixels_per_second"] == pytest.approx(1 / result["seconds_per_megapixel"])


def test_bench_nnunet_without_trained_folds_is_an_input_error(nnunet_dir, tmp_path, capsys):
    from ramanseg.cli import main

    out = tmp_path / "nnunet_inference.json"
    assert main(bench_argv(nnunet_dir, out)) == 2
    error = capsys.readouterr().err
    assert "no trained nnU-Net folds" in error and "Dataset999" in error
    assert "rule nnunet_train" in error and "Traceback" not in error
    assert not out.exists()
    with pytest.raises(InputError, match="no trained nnU-Net folds"):
        trained_folds(tmp_path)
