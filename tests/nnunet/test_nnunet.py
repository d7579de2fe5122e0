"""nnU-Net v2 through our launcher: export, planning, fold training, resume, ensemble.

These run the real nnunetv2 library on a tiny dataset (6 samples of 4 x 48 x 48 px,
two folds, a few iterations), each step in a subprocess as the workflow runs it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from ramanseg.errors import InputError
from ramanseg.nnunet.dataset import (
    dataset_name,
    export_raw_dataset,
    nnunet_splits,
    read_dataset_channels,
)
from ramanseg.predictions import read_prediction

pytestmark = pytest.mark.workflow

SAMPLES = [f"S{i}" for i in range(6)]
SPLIT = {
    "train": SAMPLES[:3],
    "val": SAMPLES[3:4],
    "test": SAMPLES[4:],
    "folds": [
        {"train": ["S0", "S1"], "val": ["S2", "S3"]},
        {"train": ["S2", "S3"], "val": ["S0", "S1"]},
    ],
}
TRAINER_DIR = "nnUNetTrainerRamansegShort__nnUNetResEncUNetDemoPlans__2d"


def _settings(epochs: int = 2, iterations: int = 2) -> dict:
    return {
        "channels": [{"name": f"Raman {2850 + 10 * i}", "role": "raman"} for i in range(4)],
        "seed": 0,
        "deterministic": True,
        "device": "cpu",
        "nnunet": {
            "dataset_id": 987,
            "planner": "nnUNetPlannerResEncDemo",
            "configuration": "2d",
            "trainer": "nnUNetTrainerRamansegShort",
            "epochs": epochs,
            "iterations_per_epoch": iterations,
            "fingerprint_voxels": 10000,
        },
    }


def _write_preprocessed(root: Path) -> Path:
    """Tiny stacks whose channel 0 shows a square 'tumour'."""
    rng = np.random.default_rng(0)
    for sample in SAMPLES:
        folder = root / sample
        folder.mkdir(parents=True)
        mask = np.zeros((48, 48), np.uint8)
        y, x = rng.integers(4, 24, 2)
        mask[y : y + 18, x : x + 18] = 1
        stack = rng.random((4, 48, 48), dtype=np.float32) * 0.3
        stack[0] += 0.6 * mask
        tifffile.imwrite(folder / "stack.ome.tif", stack)
        tifffile.imwrite(folder / "mask.tif", mask)
    return root


def ramanseg(*args: str, settings: dict, check: bool = True, **popen):
    command = [sys.executable, "-m", "ramanseg", *args, "--settings", json.dumps(settings)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, **popen)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> dict:
    """Export and plan once for the module."""
    root = tmp_path_factory.mktemp("nnunet")
    preprocessed = _write_preprocessed(root / "preprocessed_samples")
    split_file = root / "split.json"
    split_file.write_text(json.dumps(SPLIT))
    nnunet_dir = root / "nnunet"
    common = ["--nnunet-dir", str(nnunet_dir), "--threads", "1"]
    stacks = [str(preprocessed / s / "stack.ome.tif") for s in SAMPLES]
    masks = [str(preprocessed / s / "mask.tif") for s in SPLIT["train"] + SPLIT["val"]]
    ramanseg(
        "nnunet-export", *common, "--stacks", *stacks, "--masks", *masks,
        "--split", str(split_file), settings=_settings(),
    )  # fmt: skip
    ramanseg("nnunet-plan", *common, settings=_settings())
    return {"nnunet_dir": nnunet_dir, "preprocessed": preprocessed, "split": split_file}


def test_export_writes_channels_labels_and_our_folds(tmp_path):
    preprocessed = _write_preprocessed(tmp_path / "pre")
    target = export_raw_dataset(preprocessed, SPLIT, _settings(), tmp_path / "raw", 987)
    assert target.name == dataset_name(987) == "Dataset987_RamanSeg"
    dataset = json.loads((target / "dataset.json").read_text())
    assert dataset["channel_names"] == {str(i): f"Raman {2850 + 10 * i}" for i in range(4)}
    assert dataset["labels"] == {"background": 0, "tumour": 1}
    assert dataset["numTraining"] == 4
    assert len(list((target / "imagesTr").glob("*.tif"))) == 4 * 4
    assert len(list((target / "imagesTs").glob("*.tif"))) == 2 * 4
    assert sorted(p.stem for p in (target / "labelsTr").glob("*.tif")) == SAMPLES[:4]
    channel = tifffile.imread(target / "imagesTr" / "S1_0002.tif")
    stack = tifffile.imread(preprocessed / "S1" / "stack.ome.tif")
    np.testing.assert_array_equal(channel, stack[2])
    assert json.loads((target / "splits_final.json").read_text()) == nnunet_splits(SPLIT)


def test_the_exported_channels_read_back_and_a_bad_dataset_json_is_named(tmp_path):
    preprocessed = _write_preprocessed(tmp_path / "pre")
    target = export_raw_dataset(preprocessed, SPLIT, _settings(), tmp_path / "raw", 987)
    names = [channel["name"] for channel in _settings()["channels"]]
    assert read_dataset_channels(target, fix="-") == names
    assert read_dataset_channels(target / "dataset.json", fix="-") == names
    with pytest.raises(InputError, match="does not exist") as caught:
        read_dataset_channels(tmp_path, fix="export it again")
    assert caught.value.path == tmp_path / "dataset.json" and caught.value.fix == "export it again"
    (target / "dataset.json").write_text('{"channel_names": ["a"]}')
    with pytest.raises(InputError, match="has no channel_names object"):
        read_dataset_channels(target, fix="-")


def test_export_rejects_a_fold_outside_training(tmp_path):
    preprocessed = _write_preprocessed(tmp_path / "pre")
    bad = dict(SPLIT, folds=[{"train": ["S0"], "val": ["S5"]}])
    with pytest.raises(ValueError, match=r"fold 0 names samples outside train \+ val: \['S5'\]"):
        export_raw_dataset(preprocessed, bad, _settings(), tmp_path / "raw", 987)
    assert not (tmp_path / "raw" / "Dataset987_RamanSeg").exists()


def test_export_rejects_a_stack_with_other_channels(tmp_path):
    preprocessed = _write_preprocessed(tmp_path / "pre")
    stack = preprocessed / "S2" / "stack.ome.tif"
    tifffile.imwrite(stack, tifffile.imread(stack)[:3], ome=True)
    with pytest.raises(InputError, match="has 3 channels, but the configuration lists 4") as caught:
        export_raw_dataset(preprocessed, SPLIT, _settings(), tmp_path / "raw", 987)
    assert caught.value.sample == "S2" and caught.value.path == stack
    assert not (tmp_path / "raw" / "Dataset987_RamanSeg").exists()


def test_planning_installs_our_splits(planned):
    folder = planned["nnunet_dir"] / "preprocessed" / "Dataset987_RamanSeg"
    assert json.loads((folder / "splits_final.json").read_text()) == nnunet_splits(SPLIT)
    assert (folder / "nnUNetResEncUNetDemoPlans.json").is_file()


#: The demo planner's plan for a dataset of 128 x 128 images (the demo's), in a fresh process:
#: nnU-Net reads its folders from the environment when first imported.
PLAN_FOR_128 = """
import json, sys
from ramanseg.nnunet.environment import configure_nnunet
configure_nnunet(sys.argv[1])
from ramanseg.nnunet.demo_planner import nnUNetPlannerResEncDemo
planner = nnUNetPlannerResEncDemo(987)
plan = planner.get_plans_for_configuration((1.0, 1.0), (128, 128), "2d", 32 * 128 * 128, {})
arch = plan["architecture"]["arch_kwargs"]
patch = [int(edge) for edge in plan["patch_size"]]
print(json.dumps({"patch_size": patch, "features": list(arch["features_per_stage"])}))
"""


def test_demo_planner_caps_the_patch_for_cpus(planned):
    # nnU-Net would take the whole 128 px image as the patch; the demo planner caps it.
    result = subprocess.run(
        [sys.executable, "-c", PLAN_FOR_128, str(planned["nnunet_dir"])],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    plan = json.loads(result.stdout.strip().splitlines()[-1])
    assert plan["patch_size"] == [64, 64]
    assert plan["features"][0] == 16 and max(plan["features"]) == 128


def _train(planned, fold: int, **popen) -> subprocess.CompletedProcess:
    return ramanseg(
        "nnunet-train", "--nnunet-dir", str(planned["nnunet_dir"]), "--threads", "1",
        "--fold", str(fold), settings=_settings(), **popen,
    )  # fmt: skip


def _fold_dir(planned, fold: int) -> Path:
    return planned["nnunet_dir"] / "trained" / "Dataset987_RamanSeg" / TRAINER_DIR / f"fold_{fold}"


def test_fold_trains_on_our_fold_and_is_deterministic(planned):
    first = _train(planned, 0)
    dice_first = float(re.search(r"validation Dice (\S+)", first.stdout).group(1))
    fold_dir = _fold_dir(planned, 0)
    # nnU-Net's own record: it read our split file and validated on our fold's cases.
    log_text = "".join(p.read_text() for p in fold_dir.glob("training_log_*.txt"))
    assert "Using splits from existing split file" in log_text
    summary = json.loads((fold_dir / "validation" / "summary.json").read_text())
    validated = sorted(Path(case["prediction_file"]).stem for case in summary["metric_per_case"])
    assert validated == SPLIT["folds"][0]["val"]
    # Slimmed: no optimiser state, no checkpoint_best.
    import torch

    final = fold_dir / "checkpoint_final.pth"
    checkpoint = torch.load(final, map_location="cpu", weights_only=False)
    assert "optimizer_state" not in checkpoint and "network_weights" in checkpoint
    assert not (fold_dir / "checkpoint_best.pth").exists()
    second = _train(planned, 0)
    dice_second = float(re.search(r"validation Dice (\S+)", second.stdout).group(1))
    assert dice_first == dice_second


def test_killed_training_resumes_from_its_checkpoint(planned):
    settings = _settings(epochs=4, iterations=2)
    fold_dir = _fold_dir(planned, 1)
    command = [
        sys.executable, "-m", "ramanseg", "nnunet-train", "--nnunet-dir",
        str(planned["nnunet_dir"]), "--threads", "1", "--fold", "1",
        "--settings", json.dumps(settings),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    latest = fold_dir / "checkpoint_latest.pth"
    deadline = time.monotonic() + 300
    while not latest.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert latest.exists(), "no checkpoint_latest.pth appeared before the run ended"
    time.sleep(0.5)  # let the checkpoint be written completely
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (fold_dir / "checkpoint_final.pth").exists()
    logs_before = set(fold_dir.glob("training_log_*.txt"))

    result = ramanseg(
        "nnunet-train", "--nnunet-dir", str(planned["nnunet_dir"]), "--threads", "1",
        "--fold", "1", settings=settings,
    )  # fmt: skip
    assert "resuming from checkpoint_latest.pth" in result.stderr
    resumed_log = [p for p in fold_dir.glob("training_log_*.txt") if p not in logs_before]
    text = "".join(p.read_text() for p in resumed_log)
    epochs_run = [int(n) for n in re.findall(r"Epoch (\d+) *\n", text)]
    assert epochs_run and epochs_run[0] >= 1 and epochs_run[-1] == 3
    assert (fold_dir / "checkpoint_final.pth").exists()


def test_ensemble_predicts_the_test_samples(planned, tmp_path):
    for fold in (0, 1):
        if not (_fold_dir(planned, fold) / "checkpoint_final.pth").exists():
            _train(planned, fold)
    outdir = tmp_path / "predictions"
    timing = tmp_path / "timing.json"
    ramanseg(
        "nnunet-predict", "--nnunet-dir", str(planned["nnunet_dir"]), "--threads", "1",
        "--stacks", *[str(planned["preprocessed"] / s / "stack.ome.tif") for s in SPLIT["test"]],
        "--split", str(planned["split"]),
        "--outdir", str(outdir), "--timing", str(timing), settings=_settings(),
    )  # fmt: skip
    for sample in SPLIT["test"]:
        mask, probability = read_prediction(outdir, sample)
        assert mask.shape == probability.shape == (48, 48)
        assert mask.dtype == np.uint8 and probability.dtype == np.float32
        np.testing.assert_array_equal(mask, (probability >= 0.5).astype(np.uint8))
    numbers = json.loads(timing.read_text())
    assert numbers["folds"] == [0, 1] and numbers["samples"] == 2
    assert numbers["seconds_per_megapixel"] > 0
