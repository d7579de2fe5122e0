"""`ramanseg bench-nnunet` (nnU-Net ensemble inference time) and `bench-nnunet-prediction`
(speed and Dice of the predictor's settings), on a randomly initialised nnU-Net model folder
(the timing does not depend on trained weights; the Dice here only has to be computed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
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


# --- bench-nnunet-prediction -------------------------------------------------------------

TEST_SAMPLES = ["T1", "T2"]


def write_test_slides(root, size: int = 48) -> None:
    """Two preprocessed test slides: stack, mask, class map and tissue mask."""
    rng = np.random.default_rng(2)
    for sample in TEST_SAMPLES:
        folder = root / sample
        folder.mkdir(parents=True)
        mask = np.zeros((size, size), np.uint8)
        mask[8:30, 10:36] = 1
        stack = rng.random((4, size, size), dtype=np.float32) * 0.3
        stack[0] += 0.6 * mask
        tifffile.imwrite(folder / "stack.ome.tif", stack)
        tifffile.imwrite(folder / "mask.tif", mask)
        tifffile.imwrite(folder / "classes.tif", mask + 1)
        tifffile.imwrite(folder / "foreground.tif", np.ones_like(mask))


def prediction_argv(nnunet_dir, tmp_path, out) -> list[str]:
    split = tmp_path / "split.json"
    folds = [{"train": ["A"], "val": ["B"]}, {"train": ["B"], "val": ["A"]}]
    split.write_text(
        json.dumps({"train": ["A"], "val": ["B"], "test": TEST_SAMPLES, "folds": folds})
    )
    return [
        "bench-nnunet-prediction", "--nnunet-dir", str(nnunet_dir),
        "--preprocessed", str(tmp_path / "preprocessed"), "--split", str(split),
        "--repeats", "1", "--out", str(out), "--settings", json.dumps(SETTINGS),
    ]  # fmt: skip


def test_bench_nnunet_prediction_writes_speed_and_dice_with_ratios(nnunet_dir, tmp_path):
    from ramanseg.benchmarks.nnunet import CANDIDATES
    from ramanseg.cli import main
    from ramanseg.nnunet.run import trained_model_dir
    from tests.interpret.nnunet_model import write_model_folder, write_validation_summaries

    model_dir = trained_model_dir(999, "nnUNetTrainer", "nnUNetPlannerResEncM", "2d")
    write_model_folder(model_dir, channels=4, size=32, folds=(0, 1))
    write_validation_summaries(model_dir, {0: 0.5, 1: 0.6})
    write_test_slides(tmp_path / "preprocessed")
    out = tmp_path / "bench" / "nnunet_prediction.json"
    assert main(prediction_argv(nnunet_dir, tmp_path, out)) == 0
    result = json.loads(out.read_text())
    rows = {row["name"]: row for row in result["rows"]}
    assert result["samples"] == TEST_SAMPLES and result["repeats"] == 1
    assert result["megapixels"] == pytest.approx(2 * 48 * 48 / 1e6)
    assert result["command"].startswith("ramanseg bench-nnunet-prediction --nnunet-dir")
    default = result["rows"][0]
    assert default["name"] == "default" and default["speedup"] == 1.0
    assert default["dice_points_lost"] == 0.0 and default["folds"] == [0, 1]
    assert (default["mirroring"], default["tile_step_size"]) == (True, 0.5)
    # The configured fast preset, then the fixed candidates (a duplicate measured once).
    assert result["rows"][1]["name"] == "fast preset"
    assert 2 < len(rows) <= 2 + len(CANDIDATES)
    # Two 48 px slides, 32 px tiles: 2 x 2 tiles at step 0.5 and 1; 4 passes with mirroring.
    assert default["forward_passes"] == 2 * (2 * 2) * 4 * 2
    best = rows["no mirroring, step 1, best 1 fold"]
    assert best["forward_passes"] == 2 * 4 and best["folds"] == [1]
    assert result["fold_validation_dice"] == {"0": 0.5, "1": 0.6}
    for row in result["rows"]:
        assert row["seconds_per_megapixel"] > 0 and row["speedup"] > 0
        assert set(row["dice_per_sample"]) == set(TEST_SAMPLES)
        assert 0 <= row["dice"] <= 100
        assert row["dice_points_lost"] == pytest.approx(default["dice"] - row["dice"])
        assert row["speedup"] == pytest.approx(default["seconds_median"] / row["seconds_median"])
    table = out.with_suffix(".md").read_text()
    assert "| speed-up |" in table and "| Dice points lost |" in table
    assert result["command"] in table
    assert table.count("\n| ") == 1 + len(result["rows"])  # the header and one row each


def test_bench_nnunet_prediction_without_a_test_slide_is_an_input_error(
    nnunet_dir, tmp_path, capsys
):
    from ramanseg.cli import main
    from ramanseg.nnunet.run import trained_model_dir
    from tests.interpret.nnunet_model import write_model_folder, write_validation_summaries

    model_dir = trained_model_dir(999, "nnUNetTrainer", "nnUNetPlannerResEncM", "2d")
    write_model_folder(model_dir, channels=4, size=32, folds=(0, 1))
    write_validation_summaries(model_dir, {0: 0.5, 1: 0.6})
    write_test_slides(tmp_path / "preprocessed")
    (tmp_path / "preprocessed" / "T2" / "stack.ome.tif").unlink()
    out = tmp_path / "bench" / "nnunet_prediction.json"
    assert main(prediction_argv(nnunet_dir, tmp_path, out)) == 2
    error = capsys.readouterr().err
    assert "T2" in error and "stack.ome.tif" in error and "Traceback" not in error
    assert not out.exists() and not out.with_suffix(".md").exists()


def test_arrange_places_the_slides_in_a_zero_padded_mosaic():
    from ramanseg.benchmarks.nnunet import arrange

    stacks = {
        "A": np.full((2, 4, 6), 1, np.float32),
        "B": np.full((2, 5, 3), 2, np.float32),
        "C": np.full((2, 3, 3), 3, np.float32),
    }
    alone = arrange(stacks)
    assert [image.shape for image, _ in alone] == [(2, 4, 6), (2, 5, 3), (2, 3, 3)]
    [(image, places)] = arrange(stacks, columns=2)
    assert image.shape == (2, 10, 12)  # 2 rows x 2 columns of 5 x 6 cells
    for sample, stack in stacks.items():
        np.testing.assert_array_equal(image[(slice(None), *places[sample])], stack)
    assert places["C"] == (slice(5, 8), slice(0, 3))
    assert image.sum() == sum(stack.sum() for stack in stacks.values())  # zeros elsewhere


def test_a_mosaic_is_predicted_as_one_image_and_scored_per_slide(nnunet_dir, tmp_path):
    from ramanseg.benchmarks.nnunet import Candidate, bench_prediction
    from ramanseg.evaluate import read_ground_truth
    from ramanseg.nnunet.run import trained_model_dir
    from ramanseg.nnunet.settings import PredictionSettings
    from ramanseg.preprocessed import read_stack
    from tests.interpret.nnunet_model import write_model_folder

    model_dir = trained_model_dir(999, "nnUNetTrainer", "nnUNetPlannerResEncM", "2d")
    write_model_folder(model_dir, channels=4, size=32, folds=(0, 1))
    write_test_slides(tmp_path / "preprocessed")
    stacks = {
        s: read_stack(tmp_path / "preprocessed" / s / "stack.ome.tif", s)[0] for s in TEST_SAMPLES
    }
    truths = {s: read_ground_truth(tmp_path / "preprocessed", s) for s in TEST_SAMPLES}
    candidates = [Candidate("default", PredictionSettings(), (0, 1))]
    result = bench_prediction(
        model_dir, candidates, stacks, truths, torch.device("cpu"), repeats=1, mosaic_columns=2
    )
    assert result["images"] == [[4, 48, 96]]
    # 48 x 96 px, 32 px tiles at step 0.5: 2 x 5 tiles, 4 mirrored passes, 2 folds.
    [row] = result["rows"]
    assert row["forward_passes"] == 2 * 5 * 4 * 2
    assert set(row["dice_per_sample"]) == set(TEST_SAMPLES)
