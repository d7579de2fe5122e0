"""nnU-Net on the HSRS datasets: the exported dataset (a case per block, bands as
channels, the blocks' folds, the buffer as the ignore label) and a tiny real training
of every fold with the real nnunetv2 library, scored into Dice rows."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile

from ramanseg.cli import main
from ramanseg.config import ConfigError
from ramanseg.hsrs.dice import COLUMNS
from ramanseg.hsrs.models import HsrsModelSettings
from ramanseg.hsrs.nnunet import export_hsrs_dataset, hsrs_nnunet_config
from ramanseg.hsrs.stack import HsrsStack, write_hsrs_stack
from ramanseg.hsrs.training import assign_folds, make_blocks, prepare_cube
from tests.hsrs.test_training import section

CLASSES = ("background", "cytoplasm", "nucleus", "lipid_droplet")
BANDS = 6


def cell_stack(seed: int, size: int = 32) -> HsrsStack:
    """Three classes of squares on a background, each with its own spectral peak."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), dtype=np.int16)
    for value in (1, 2, 3):
        for _ in range(2):
            y, x = rng.integers(0, size - 6, 2)
            labels[y : y + 6, x : x + 6] = value
    cube = 0.2 * rng.random((BANDS, size, size)).astype(np.float32)
    for value in (1, 2, 3):
        cube[value] += 2.0 * (labels == value)
    return HsrsStack(cube, np.arange(BANDS) * 10.0 + 2800, labels, CLASSES, f"cells {seed}")


def config(epochs: int = 1, iterations: int = 2) -> dict:
    prediction = {
        "mirroring": True,
        "tile_step_size": 0.5,
        "folds": "all",
        "perform_everything_on_device": True,
    }
    return {
        "seed": 0,
        "deterministic": True,
        "device": "cpu",
        "nnunet": {
            "dataset_id": 501,
            "planner": "nnUNetPlannerResEncDemo",
            "configuration": "2d",
            "trainer": "nnUNetTrainerRamansegShort",
            "epochs": 15,
            "iterations_per_epoch": 20,
            "batch_size": 8,
            "fingerprint_voxels": 10000,
            "keep_best_checkpoint": False,
            "prediction": prediction,
            "fast_prediction": {**prediction, "mirroring": False},
        },
        "hsrs": {
            "models": section(block_size=16, folds=2, buffer=2),
            "nnunet": {
                "dataset_ids": {"cells": 987, "celegans": 988},
                "epochs": epochs,
                "iterations_per_epoch": iterations,
            },
        },
    }


def test_the_config_gives_each_dataset_its_id_and_the_epochs():
    nnunet = hsrs_nnunet_config(config(epochs=3, iterations=4), "celegans")["nnunet"]
    assert (nnunet["dataset_id"], nnunet["epochs"], nnunet["iterations_per_epoch"]) == (988, 3, 4)
    assert hsrs_nnunet_config(hsrs_nnunet_config(config(), "cells"), "cells") == (
        hsrs_nnunet_config(config(), "cells")
    )
    unset = config()
    unset["hsrs"]["nnunet"].update(epochs=None, iterations_per_epoch=None)
    assert hsrs_nnunet_config(unset, "cells")["nnunet"]["epochs"] == 15
    missing = config()
    del missing["hsrs"]["nnunet"]["dataset_ids"]["celegans"]
    with pytest.raises(ConfigError, match=r"hsrs\.nnunet\.dataset_ids"):
        hsrs_nnunet_config(missing, "celegans")


@pytest.fixture
def exported(tmp_path):
    stacks = [cell_stack(0), cell_stack(1)]
    settings = HsrsModelSettings.from_config(config())
    target = export_hsrs_dataset("cells", stacks, settings, tmp_path / "raw", 987)
    return stacks, settings, target


def test_the_cases_are_the_blocks_with_the_bands_as_channels(exported):
    stacks, settings, target = exported
    blocks = make_blocks([s.shape for s in stacks], settings.block_size)
    assert target.name == "Dataset987_RamanSeg" and len(blocks) == 8
    dataset = json.loads((target / "dataset.json").read_text())
    assert dataset["channel_names"] == {str(b): "noNorm" for b in range(BANDS)}
    assert dataset["labels"] == {
        "background": 0, "cytoplasm": 1, "nucleus": 2, "lipid_droplet": 3, "ignore": 4,
    }  # fmt: skip
    assert dataset["numTraining"] == len(blocks)
    assert len(list((target / "imagesTr").glob("*.tif"))) == len(blocks) * BANDS
    cases = json.loads((target / "blocks.json").read_text())["cases"]
    for index, (case, block) in enumerate(zip(cases, blocks, strict=True)):
        assert (case["stack"], case["y"], case["x"]) == (block.stack, [block.y0, block.y1],
                                                         [block.x0, block.x1])  # fmt: skip
        band = tifffile.imread(target / "imagesTr" / f"block_{index:03d}_0002.tif")
        cube = prepare_cube(stacks[block.stack].cube, settings.max_bands)
        np.testing.assert_array_equal(band, cube[2][block.slices])


def test_the_folds_are_the_blocks_folds_and_no_training_case_holds_a_held_out_pixel(exported):
    stacks, settings, target = exported
    blocks = make_blocks([s.shape for s in stacks], settings.block_size)
    fold_of = assign_folds(len(blocks), settings.folds, settings.seed)
    splits = json.loads((target / "splits_final.json").read_text())
    assert len(splits) == settings.folds
    cases = json.loads((target / "blocks.json").read_text())["cases"]
    for fold, split in enumerate(splits):
        assert sorted(split["val"]) == [c["case"] for c in cases if c["fold"] == fold]
        assert not set(split["train"]) & set(split["val"])
        assert sorted(split["train"] + split["val"]) == [c["case"] for c in cases]
        held_out = [np.zeros(s.shape, bool) for s in stacks]
        for block, block_fold in zip(blocks, fold_of, strict=True):
            held_out[block.stack][block.slices] |= block_fold == fold
        for name in split["train"]:
            block = blocks[int(name.split("_")[1])]
            assert not held_out[block.stack][block.slices].any()
    assert [c["fold"] for c in cases] == fold_of.tolist()


def test_the_buffer_around_other_folds_is_the_ignore_label(exported):
    stacks, settings, target = exported
    blocks = make_blocks([s.shape for s in stacks], settings.block_size)
    fold_of = assign_folds(len(blocks), settings.folds, settings.seed)
    ignored = 0
    for index, block in enumerate(blocks):
        labels = tifffile.imread(target / "labelsTr" / f"block_{index:03d}.tif")
        truth = stacks[block.stack].labels[block.slices]
        # Distance of each pixel of the block to the nearest pixel of another fold's block.
        other = np.zeros(stacks[block.stack].shape, bool)
        for neighbour, neighbour_fold in zip(blocks, fold_of, strict=True):
            if neighbour.stack == block.stack and neighbour_fold != fold_of[index]:
                other[neighbour.slices] = True
        ys, xs = np.nonzero(other)
        grid_y, grid_x = np.mgrid[block.slices]
        near = np.zeros(labels.shape, bool)
        if len(ys):
            distance = np.maximum(abs(grid_y[..., None] - ys), abs(grid_x[..., None] - xs)).min(
                axis=-1
            )
            near = distance <= settings.buffer
        np.testing.assert_array_equal(labels == len(CLASSES), near)
        np.testing.assert_array_equal(labels[~near], truth[~near])
        ignored += near.sum()
    assert ignored > 0


def test_an_unlabelled_stack_exits_2_and_writes_nothing(tmp_path, capsys):
    path = write_hsrs_stack(tmp_path / "u.npz", HsrsStack(np.ones((BANDS, 32, 32), np.float32)))
    argv = ["hsrs-nnunet-export", "--dataset", "cells", "--stacks", str(path)]
    argv += ["--nnunet-dir", str(tmp_path / "nn"), "--settings", json.dumps(config())]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "u.npz" in error and "no labels" in error and "Traceback" not in error
    assert not list((tmp_path / "nn" / "raw").glob("Dataset*"))


def test_too_few_blocks_for_the_folds_exits_2(tmp_path, capsys):
    path = write_hsrs_stack(tmp_path / "s.npz", cell_stack(0, size=16))
    argv = ["hsrs-nnunet-export", "--dataset", "cells", "--stacks", str(path)]
    argv += ["--nnunet-dir", str(tmp_path / "nn"), "--settings", json.dumps(config())]
    assert main(argv) == 2
    assert "cannot fill 2 folds" in capsys.readouterr().err
    assert not list((tmp_path / "nn" / "raw").glob("Dataset*"))


def ramanseg(*args: str, settings: dict, check: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ramanseg", *args, "--settings", json.dumps(settings)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.mark.workflow
def test_every_fold_trains_and_its_held_out_blocks_give_dice_rows(tmp_path):
    stacks = [str(write_hsrs_stack(tmp_path / f"field_{i}.npz", cell_stack(i))) for i in range(2)]
    nnunet_dir = str(tmp_path / "nnunet")
    common = ["--dataset", "cells", "--stacks", *stacks, "--nnunet-dir", nnunet_dir]
    settings = config()
    outdir = tmp_path / "models" / "cells" / "nnunet"
    predict = ["hsrs-nnunet-predict", *common, "--outdir", str(outdir)]
    # Before any training: exit 2 naming the missing folds.
    early = ramanseg(*predict, settings=settings, check=False)
    assert early.returncode == 2 and "no trained fold [0, 1]" in early.stderr

    ramanseg("hsrs-nnunet-export", *common, settings=settings)
    nnunet_settings = hsrs_nnunet_config(settings, "cells")
    ramanseg("nnunet-plan", "--nnunet-dir", nnunet_dir, settings=nnunet_settings)
    preprocessed = tmp_path / "nnunet" / "preprocessed" / "Dataset987_RamanSeg"
    raw = tmp_path / "nnunet" / "raw" / "Dataset987_RamanSeg"
    assert (preprocessed / "splits_final.json").read_text() == (
        raw / "splits_final.json"
    ).read_text()
    for fold in (0, 1):
        ramanseg(
            "nnunet-train", "--nnunet-dir", nnunet_dir, "--fold", str(fold),
            settings=nnunet_settings,
        )  # fmt: skip
    ramanseg(*predict, settings=settings)
    table = pd.read_csv(outdir / "dice.csv", dtype={"fold": str})
    assert tuple(table.columns) == COLUMNS
    assert len(table) == 2 * len(CLASSES)
    assert set(table["model"]) == {"nnunet"} and set(table["dataset"]) == {"cells"}
    assert sorted(set(table["fold"])) == ["block_fold0", "block_fold1"]
    dice = table["dice"].dropna()
    assert len(dice) and ((dice >= 0) & (dice <= 1)).all()
    folds = json.loads((outdir / "folds.json").read_text())
    assert folds["predictor"]["mirroring"] is False and len(folds["blocks"]) == 8
    assert (outdir / "segmentation.png").is_file()
