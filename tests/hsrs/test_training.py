"""The HSRS models' training: blocks, grouped folds, no leakage, cross-validation, CLI."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from ramanseg.cli import main
from ramanseg.hsrs.dice import COLUMNS
from ramanseg.hsrs.models import HYBRID_MODULES, HsrsModelSettings, ablation_name
from ramanseg.hsrs.stack import HsrsStack, write_hsrs_stack
from ramanseg.hsrs.training import (
    IGNORE,
    CrossValidationResult,
    _patches,
    assign_folds,
    build_model,
    cross_validate,
    make_blocks,
    out_of_fold_files,
    prepare_cube,
    training_labels,
)
from ramanseg.models.hybrid_unet import MODULES, HybridUNet
from ramanseg.models.unet import UNet
from tests.models.test_training import single_thread  # noqa: F401 (fixture)

CLASSES = ("background", "nucleus")


def section(**overrides) -> dict:
    """A tiny ``hsrs.models`` section."""
    return {
        "block_size": 8,
        "folds": 2,
        "buffer": 1,
        "patch_size": 8,
        "patches_per_epoch": 32,
        "max_bands": None,
        "epochs": 12,
        "batch_size": 8,
        "learning_rate": 1e-2,
        "weight_decay": 1e-4,
        "ablation": True,
        "hybrid_unet": {
            "levels": 2,
            "spectral_features": 4,
            "spectral_kernel_sizes": [1, 3],
            "compressed_features": 1,
            "context_features": 2,
            "band_position": True,
            "modules": dict.fromkeys(HYBRID_MODULES, True),
        },
        "unet_2d": {"levels": 1, "base_channels": 4},
        **overrides,
    }


def config(**overrides) -> dict:
    return {
        "seed": 0,
        "deterministic": True,
        "device": "cpu",
        "hsrs": {"models": section(**overrides)},
    }


def spectral_stack(seed: int, size: int = 16, bands: int = 6) -> HsrsStack:
    """Squares of class 1 whose spectrum peaks at band 1 on a flat background spectrum of
    the same mean: told apart by the spectrum's shape only."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), dtype=np.int16)
    for _ in range(3):
        y, x = rng.integers(0, size - 4, 2)
        labels[y : y + 4, x : x + 4] = 1
    cube = 0.2 * rng.random((bands, size, size)).astype(np.float32)
    cube[1] += bands * (labels == 1)
    cube += labels == 0
    return HsrsStack(cube, np.arange(bands) * 10.0 + 2800, labels, CLASSES, f"test {seed}")


def test_the_module_names_are_the_models():
    assert HYBRID_MODULES == MODULES


def test_models_to_train_with_and_without_the_ablation():
    settings = HsrsModelSettings.from_config(config())
    assert settings.model_names == [
        "hybrid_unet",
        *(f"hybrid_unet_no_{m}" for m in MODULES),
        "unet_2d",
    ]
    assert HsrsModelSettings.from_config(config(ablation=False)).model_names == [
        "hybrid_unet",
        "unet_2d",
    ]
    off = settings.hybrid_switches(ablation_name("attention_pooling"))
    assert off == {"multiscale_3d": True, "spectral_compression": True, "attention_pooling": False}
    ablated = build_model(ablation_name("spectral_compression"), settings, bands=6, classes=4)
    assert isinstance(ablated, HybridUNet)
    assert type(ablated.bottleneck).__name__ == "SpectralFlatten"
    assert isinstance(build_model("unet_2d", settings, bands=6, classes=4), UNet)
    with pytest.raises(ValueError, match="not a hybrid U-Net variant"):
        settings.hybrid_switches("unet_3d")


def test_blocks_tile_every_pixel_once():
    blocks = make_blocks([(20, 33), (8, 8)], block_size=8)
    for index, shape in enumerate([(20, 33), (8, 8)]):
        cover = np.zeros(shape, dtype=int)
        for block in blocks:
            if block.stack == index:
                cover[block.slices] += 1
                assert block.y1 - block.y0 >= 8 and block.x1 - block.x0 >= 8
        assert (cover == 1).all()
    assert len(blocks) == 2 * 4 + 1


def test_folds_are_seeded_and_balanced():
    folds = assign_folds(10, 3, seed=1)
    assert sorted(np.bincount(folds)) == [3, 3, 4]
    assert (assign_folds(10, 3, seed=1) == folds).all()
    with pytest.raises(ValueError, match="2 spatial blocks cannot fill 3 folds"):
        assign_folds(2, 3, seed=0)


def test_held_out_blocks_and_their_buffer_are_left_out_of_the_loss():
    stack = spectral_stack(0)
    blocks = make_blocks([stack.shape], 8)  # 2 x 2 blocks
    held_out = np.array([True, False, False, False])  # the top-left block
    (labels,) = training_labels([stack], blocks, held_out, buffer=2)
    assert (labels[:8, :8] == IGNORE).all()
    assert (labels[:10, 8:10] == IGNORE).all() and (labels[8:10, :10] == IGNORE).all()
    assert (labels[10:, 10:] == stack.labels[10:, 10:]).all()
    assert (labels[:, 10:][:8] == stack.labels[:8, 10:]).all()
    (no_buffer,) = training_labels([stack], blocks, held_out, buffer=0)
    assert (no_buffer != IGNORE).sum() == 3 * 64


def test_training_patches_never_hold_a_held_out_pixel():
    stack = spectral_stack(0, size=24)
    settings = HsrsModelSettings.from_config(config(patch_size=6, patches_per_epoch=200))
    blocks = make_blocks([stack.shape], 8)  # 3 x 3 blocks
    held_out = assign_folds(len(blocks), 2, 0) == 0
    cube = np.zeros_like(stack.cube)
    for block, out in zip(blocks, held_out, strict=True):
        if out:
            cube[(slice(None), *block.slices)] = 99.0  # the held-out pixels' mark
    labels = training_labels([stack], blocks, held_out, buffer=0)
    train = [b for b, out in zip(blocks, held_out, strict=True) if not out]
    images, targets = _patches([cube], labels, train, settings, np.random.default_rng(0))
    assert images.shape == (200, 6, 6, 6) and targets.shape == (200, 6, 6)
    assert (images != 99.0).all()
    assert (targets != IGNORE).all()


def test_bands_are_averaged_down_and_the_cube_scaled():
    cube = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 4, 4), np.float32)
    prepared = prepare_cube(cube, max_bands=5)
    assert prepared.shape == (5, 4, 4)
    # Pairs of bands averaged (0.5, 2.5, ...), then one scale for all: the shape is kept.
    assert np.allclose(prepared[:, 0, 0] / prepared[0, 0, 0], [1, 5, 9, 13, 17])
    assert np.isclose(np.percentile(prepared, 99), 1.0)
    assert prepare_cube(cube, None).shape == (10, 4, 4)


def test_cross_validation_predicts_every_pixel_out_of_fold_and_learns():
    stacks = [spectral_stack(seed) for seed in (1, 2)]
    settings = HsrsModelSettings.from_config(config(epochs=20))
    result = cross_validate("toy", "hybrid_unet", stacks, settings)
    assert all((p != IGNORE).all() for p in result.predictions)
    table = pd.DataFrame(result.rows, columns=list(COLUMNS))
    assert set(table["fold"]) == {"block_fold0", "block_fold1"}
    assert len(table) == 2 * len(CLASSES)
    # Learnt from the spectrum: far above chance for the squares.
    assert table[table["class"] == "nucleus"]["dice"].mean() > 0.8
    assert len(result.log) == 2 * settings.epochs


def test_cross_validation_rejects_a_mixed_dataset():
    other = spectral_stack(3, bands=5)
    settings = HsrsModelSettings.from_config(config())
    with pytest.raises(ValueError, match="band counts differ: 6 and 5 bands"):
        cross_validate("toy", "unet_2d", [spectral_stack(1), other], settings)


@pytest.fixture(scope="module")
def stack_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stacks")
    paths = [folder / f"field{seed}.npz" for seed in (1, 2)]
    for seed, path in zip((1, 2), paths, strict=True):
        write_hsrs_stack(path, spectral_stack(seed))
    return [str(p) for p in paths]


def test_cli_writes_dice_log_folds_and_figure(stack_files, tmp_path):
    torch.manual_seed(0)
    outdir = tmp_path / "unet_2d"
    argv = ["hsrs-train", "--dataset", "toy", "--model", "unet_2d", "--stacks", *stack_files]
    settings = json.dumps(config(epochs=2))
    assert main([*argv, "--outdir", str(outdir), "--threads", "1", "--settings", settings]) == 0
    assert {p.name for p in outdir.iterdir()} == {
        "dice.csv",
        "training_log.csv",
        "folds.json",
        "segmentation.png",
        "segmentation.pdf",
    }
    table = pd.read_csv(outdir / "dice.csv")
    assert tuple(table.columns) == COLUMNS and set(table["model"]) == {"unet_2d"}
    folds = json.loads((outdir / "folds.json").read_text())["blocks"]
    assert len(folds) == 8 and {block["fold"] for block in folds} == {0, 1}


def test_cli_rejects_an_unknown_model_and_an_unlabelled_stack(stack_files, tmp_path, capsys):
    settings = json.dumps(config(epochs=1))
    argv = ["hsrs-train", "--dataset", "toy", "--outdir", str(tmp_path / "out")]
    assert (
        main([*argv, "--model", "unet_3d", "--stacks", *stack_files, "--settings", settings]) == 2
    )
    assert "unknown model 'unet_3d'" in capsys.readouterr().err
    unlabelled = tmp_path / "unlabelled.npz"
    stack = spectral_stack(1)
    write_hsrs_stack(unlabelled, HsrsStack(stack.cube, stack.wavenumbers))
    code = main([*argv, "--model", "unet_2d", "--stacks", str(unlabelled), "--settings", settings])
    assert code == 2
    error = capsys.readouterr().err
    assert "unlabelled.npz" in error and "no labels" in error
    assert not (tmp_path / "out" / "dice.csv").exists()


def test_the_hsrs_target_plans_one_training_job_per_dataset_and_model(tmp_path):
    from tests.test_workflow import planned_jobs, snakemake

    jobs = planned_jobs(snakemake("-n", "--forceall", "hsrs").stdout)
    assert jobs["hsrs_train"] == 5  # the cell phantom: hybrid, its 3 ablations, 2-D U-Net
    no_ablation = tmp_path / "no_ablation.yaml"
    no_ablation.write_text("hsrs: {models: {ablation: false}}\n")
    jobs = planned_jobs(
        snakemake("-n", "--forceall", "hsrs", "--configfile", str(no_ablation)).stdout
    )
    assert jobs["hsrs_train"] == 2
    detail = snakemake(
        "-n", "--forceall", "-p", "hsrs", "--configfile", "config/paper.yaml"
    ).stdout  # fmt: skip
    assert re.search(r"rule hsrs_train:(?:.|\n)*?resources: .*gpu=1", detail)
    assert '"max_bands": null' in detail


def test_out_of_fold_files_name_every_block_and_the_details(tmp_path):
    # hsrs-nnunet-predict's use (its own run needs a trained nnU-Net: a workflow test).
    stacks = [spectral_stack(0), spectral_stack(1)]
    blocks = make_blocks([stack.shape for stack in stacks], 8)
    fold_of = assign_folds(len(blocks), 2, seed=0)
    rows = [dict(zip(COLUMNS, ("toy", "nnunet", "block_fold0", c, 0.5), strict=True))
            for c in CLASSES]  # fmt: skip
    result = CrossValidationResult([s.labels for s in stacks], fold_of, blocks, rows, [])
    details = {"nnunet_dataset": "Dataset001_toy", "predictor": {"mirroring": False}}
    paths = ["a/s0.npz", "a/s1.npz"]
    files = out_of_fold_files(tmp_path, "toy", "nnunet", paths, stacks, result, details)
    assert {p.name for p in files} == {"dice.csv", "folds.json", "segmentation.png",
                                       "segmentation.pdf"}  # fmt: skip
    folds = json.loads(files[tmp_path / "folds.json"])
    assert list(folds) == ["model", "nnunet_dataset", "predictor", "blocks"]
    assert folds["model"] == "nnunet" and folds["predictor"] == {"mirroring": False}
    assert len(folds["blocks"]) == 8 and {b["stack"] for b in folds["blocks"]} == set(paths)
    assert [b["fold"] for b in folds["blocks"]] == fold_of.tolist()
    table = pd.read_csv(io.BytesIO(files[tmp_path / "dice.csv"]))
    assert tuple(table.columns) == COLUMNS and list(table["class"]) == list(CLASSES)
    plain = out_of_fold_files(tmp_path, "toy", "unet_2d", paths, stacks, result)
    assert list(json.loads(plain[tmp_path / "folds.json"])) == ["model", "blocks"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_refuses_a_gpu_this_machine_lacks_before_any_work(stack_files, tmp_path, capsys):
    settings = json.dumps({**config(epochs=1), "device": "cuda"})
    argv = ["hsrs-train", "--dataset", "toy", "--model", "unet_2d", "--stacks", *stack_files]
    assert main([*argv, "--outdir", str(tmp_path / "out"), "--settings", settings]) == 2
    error = capsys.readouterr().err
    assert "device: device 'cuda' asked for, but CUDA is not available here" in error
    assert "check the dataset" not in error and not (tmp_path / "out").exists()


def test_cli_refuses_fewer_than_one_thread(stack_files, tmp_path, capsys):
    argv = ["hsrs-train", "--dataset", "toy", "--model", "unet_2d", "--stacks", *stack_files]
    settings = json.dumps(config(epochs=1))
    assert (
        main([*argv, "--outdir", str(tmp_path / "o"), "--threads", "0", "--settings", settings])
        == 2
    )
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err
