"""The training harness: data loading, patch sampling, determinism, checkpoints and resume.

Also home of the tiny synthetic dataset the other model tests import: 4 channels,
32 x 48 pixels, a square tumour brighter in channel 0.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from ramanseg.errors import InputError
from ramanseg.models.data import PatchSampler, Sample, load_sample, load_samples
from ramanseg.models.training import (
    LOG_NAME,
    METADATA_NAME,
    WEIGHTS_NAME,
    EpochContext,
    SupervisedStrategy,
    TrainingSettings,
    TrainingStrategy,
    configure_reproducibility,
    dice_loss_on_output,
    resolve_device,
    soft_dice_loss,
    train,
)
from ramanseg.models.unet import UNet
from ramanseg.split import read_split
from tests.sample_files import write_preprocessed_files

CHANNELS = ("Raman 2802", "Raman 2850", "TPEF", "SHG")


def make_sample(sample_id: str, seed: int, height: int = 32, width: int = 48) -> Sample:
    """A synthetic sample: noise, and a square tumour brighter in channel 0."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.0, 0.3, size=(len(CHANNELS), height, width)).astype(np.float32)
    mask = np.zeros((height, width), dtype=np.uint8)
    side = int(rng.integers(8, 14))
    y, x = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
    mask[y : y + side, x : x + side] = 1
    image[0][mask == 1] += 0.6
    tissue = np.zeros_like(mask)
    tissue[2:-2, 2:-2] = 1
    return Sample(sample_id, image, mask, tissue, CHANNELS)


def preprocessed_files(root: Path, *kinds: str) -> list[str]:
    """The command-line options passing every sample's preprocessed files of ``kinds``."""
    names = {"stacks": "stack.ome.tif", "masks": "mask.tif", "foregrounds": "foreground.tif"}
    argv = []
    for kind in kinds:
        argv += [f"--{kind}", *map(str, sorted((root / "preprocessed").glob(f"*/{names[kind]}")))]
    return argv


def write_dataset(root: Path, n_train: int = 3, n_val: int = 1, n_test: int = 2) -> Path:
    """Write synthetic samples in the preprocessed layout and a split; return the split."""
    ids = {
        "train": [f"tr{i}" for i in range(n_train)],
        "val": [f"va{i}" for i in range(n_val)],
        "test": [f"te{i}" for i in range(n_test)],
    }
    all_ids = [i for subset in ids.values() for i in subset]
    for seed, sample_id in enumerate(all_ids):
        sample = make_sample(sample_id, seed)
        write_preprocessed_files(root / "preprocessed" / sample_id, sample, CHANNELS)
    split = root / "split.json"
    split.write_text(json.dumps({**ids, "folds": []}))
    return split


class NoisyUNet(UNet):
    """A U-Net with input dropout, so training draws from torch's generator (whose state a
    resume must restore); its state dict is a plain UNet's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.nn.functional.dropout2d(x, 0.25, self.training))


def tiny_settings(**overrides) -> TrainingSettings:
    values = {
        "patch_size": 16,
        "batch_size": 4,
        "patches_per_epoch": 8,
        "seed": 3,
        "deterministic": True,
        "device": "cpu",
    }
    values.update(overrides)
    return TrainingSettings(**values)


def tiny_run(
    outdir: Path,
    train_samples: list[Sample],
    val_samples: list[Sample],
    *,
    epochs: int = 2,
    crash_in_epoch: int | None = None,
    settings: TrainingSettings | None = None,
    lr: float = 1e-2,
    **kwargs,
):
    """Build a tiny U-Net the way the CLI does and train it; optionally crash mid-epoch."""
    settings = settings or tiny_settings()
    configure_reproducibility(settings.seed, settings.deterministic, torch.device("cpu"))
    architecture = {"in_channels": 4, "levels": 2, "base_channels": 4}
    model = NoisyUNet(**architecture)
    dice = dice_loss_on_output(model)
    calls = {"n": 0}

    def loss(output, target):
        calls["n"] += 1
        batches_per_epoch = settings.patches_per_epoch // settings.batch_size
        if crash_in_epoch and calls["n"] > (crash_in_epoch - 1) * batches_per_epoch:
            raise KeyboardInterrupt("simulated kill")
        return dice(output, target)

    strategy = SupervisedStrategy(
        loss, lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=1e-3), epochs
    )
    return train(
        model,
        strategy,
        train_samples,
        val_samples,
        settings,
        outdir,
        model_name="unet",
        architecture=architecture,
        hyperparameters={"lr": lr},
        progress=False,
        **kwargs,
    )


class PhasedStrategy(TrainingStrategy):
    """Two phases, as RamanSeg has: SGD on every weight, then Adam on the head alone with
    the rest frozen; a decaying learning rate; a loss with named parts; and a simulated
    kill at the first batch of ``crash_in_epoch``."""

    epochs = 4
    model_selection = "last"

    def __init__(self, batches_per_epoch: int, crash_in_epoch: int | None = None) -> None:
        self.batches_per_epoch = batches_per_epoch
        self.crash_in_epoch = crash_in_epoch
        self.calls = 0

    def optimizer_key(self, epoch: int) -> str:
        return "all" if epoch <= 2 else "head"

    def build_optimizer(self, model: torch.nn.Module, epoch: int) -> torch.optim.Optimizer:
        if self.optimizer_key(epoch) == "all":
            return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return torch.optim.Adam(model.head.parameters(), lr=1e-2)

    def build_scheduler(self, optimizer: torch.optim.Optimizer, epoch: int):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    def on_epoch_start(self, context: EpochContext) -> None:
        head_only = self.optimizer_key(context.epoch) == "head"
        for name, parameter in context.model.named_parameters():
            parameter.requires_grad = not head_only or name.startswith("head.")

    def loss(self, output, target, model):
        self.calls += 1
        if self.crash_in_epoch and self.calls > (self.crash_in_epoch - 1) * self.batches_per_epoch:
            raise KeyboardInterrupt("simulated kill")
        dice = soft_dice_loss(torch.sigmoid(output[:, 0]), target)
        l1 = model.head.weight.abs().sum()
        return dice + 1e-3 * l1, {"dice": dice, "l1": l1}


def phased_run(outdir: Path, train_samples, val_samples, crash_in_epoch: int | None = None):
    settings = tiny_settings()
    configure_reproducibility(settings.seed, settings.deterministic, torch.device("cpu"))
    architecture = {"in_channels": 4, "levels": 2, "base_channels": 4}
    strategy = PhasedStrategy(settings.patches_per_epoch // settings.batch_size, crash_in_epoch)
    return train(
        NoisyUNet(**architecture),
        strategy,
        train_samples,
        val_samples,
        settings,
        outdir,
        model_name="unet",
        architecture=architecture,
        progress=False,
    )


def read_log(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One PyTorch thread: tiny models run far faster so on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- data -----------------------------------------------------------------------------------


def test_load_sample_reads_the_preprocessed_layout(tmp_path):
    split_path = write_dataset(tmp_path, n_train=1, n_val=0, n_test=0)
    sample = load_sample(tmp_path / "preprocessed", "tr0")
    expected = make_sample("tr0", 0)
    np.testing.assert_array_equal(sample.image, expected.image)
    np.testing.assert_array_equal(sample.mask, expected.mask)
    assert sample.channel_names == CHANNELS
    split = read_split(split_path)
    assert (split["train"], split["val"], split["test"]) == (["tr0"], [], [])


def test_loading_fails_naming_sample_and_file(tmp_path):
    write_dataset(tmp_path, n_train=2, n_val=0, n_test=0)
    (tmp_path / "preprocessed" / "tr1" / "mask.tif").unlink()
    with pytest.raises(InputError, match=r"sample 'tr1'.*mask\.tif"):
        load_samples(tmp_path / "preprocessed", ["tr0", "tr1"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": ["a"], "val": ["a"], "test": []}))
    with pytest.raises(InputError, match="both 'train' and 'val'"):
        read_split(bad)
    bad.write_text(json.dumps({"train": ["a"], "test": []}))
    with pytest.raises(InputError, match="under 'val'"):
        read_split(bad)


def test_sampler_is_a_pure_function_of_seed_and_epoch(samples):
    train_samples, _ = samples
    sampler = PatchSampler(train_samples, 16, 20, 4, seed=7)
    first, again = sampler.plan(2), PatchSampler(train_samples, 16, 20, 4, seed=7).plan(2)
    for name in ("sample", "y0", "x0", "flip", "on_tumour"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.y0, sampler.plan(3).y0)
    assert int(first.on_tumour.sum()) == 10  # exactly half
    assert first.flip.any() and not first.flip.all()
    # Patches lie inside the images and tumour-centred ones contain tumour.
    for i in range(len(first)):
        image, target = sampler.patch(first, i)
        assert image.shape == (4, 16, 16) and target.shape == (16, 16)
        if first.on_tumour[i]:
            assert target.any()
    batches = list(sampler.batches(2))
    assert [len(b.image) for b in batches] == [4] * 5
    assert batches[0].image.dtype == torch.float32 and batches[0].target.dtype == torch.int64


def test_flip_mirrors_image_and_target_along_x(samples):
    train_samples, _ = samples
    sampler = PatchSampler(train_samples, 16, 40, 8, seed=1, horizontal_flip=True)
    plan = sampler.plan(0)
    flipped = np.flatnonzero(plan.flip)
    assert len(flipped) > 0
    for i in flipped[:5]:
        s, y0, x0 = plan.sample[i], plan.y0[i], plan.x0[i]
        image, target = sampler.patch(plan, i)
        window = train_samples[s].image[:, y0 : y0 + 16, x0 : x0 + 16]
        np.testing.assert_array_equal(image, window[:, :, ::-1])
        np.testing.assert_array_equal(
            target,
            train_samples[s].mask[
                y0 : y0 + 16,
                x0 : x0 + 16,
            ][:, ::-1],
        )
    no_flip = PatchSampler(train_samples, 16, 40, 8, seed=1, horizontal_flip=False).plan(0)
    assert not no_flip.flip.any()


def test_sampler_pads_images_smaller_than_a_patch():
    small = make_sample("small", 0, height=20, width=24)
    sampler = PatchSampler([small], 32, 4, 4, seed=0, horizontal_flip=False)
    image, target = sampler.patch(sampler.plan(0), 0)
    assert image.shape == (4, 32, 32)
    np.testing.assert_array_equal(image[:, :20, :24], small.image)  # padding at the end only
    assert not image[:, 20:, :].any() and not target[20:, :].any()


def test_sampler_rejects_bad_arguments(samples):
    with pytest.raises(ValueError, match="at least one training sample"):
        PatchSampler([], 16, 8, 4)
    with pytest.raises(ValueError, match="patch_size"):
        PatchSampler(samples[0], 0, 8, 4)
    with pytest.raises(ValueError, match="tumour_fraction"):
        PatchSampler(samples[0], 16, 8, 4, tumour_fraction=1.5)


# --- settings and helpers -------------------------------------------------------------------


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


# --- the harness ----------------------------------------------------------------------------


def test_deterministic_mode_gives_identical_runs(tmp_path, samples):
    first = tiny_run(tmp_path / "a", *samples)
    second = tiny_run(tmp_path / "b", *samples)
    losses = [row["train_loss"] for row in first.history]
    assert losses == [row["train_loss"] for row in second.history]
    assert all(np.isfinite(losses))
    a = torch.load(first.weights, weights_only=True)
    b = torch.load(second.weights, weights_only=True)
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_training_without_validation_keeps_the_last_epoch(tmp_path, samples):
    result = tiny_run(tmp_path / "run", samples[0], [], epochs=2)
    assert result.selected_epoch == 2 and np.isnan(result.val_dice)
    assert json.loads(result.metadata.read_text())["val_dice"] is None


# --- the command line -----------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    """Run one of the models commands as `ramanseg` would."""
    from ramanseg.models.cli import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_trains_and_predicts(tmp_path):
    split = write_dataset(tmp_path, n_train=2, n_val=1, n_test=2)
    settings = json.dumps(
        {
            "seed": 0,
            "deterministic": True,
            "device": "cpu",
            "models": {
                "training": {"patch_size": 16, "batch_size": 4, "patches_per_epoch": 8},
                "unet": {
                    "epochs": 1,
                    "levels": 2,
                    "base_channels": 4,
                    "learning_rate": 1e-3,
                    "weight_decay": 1e-3,
                },
            },
        }
    )
    train_files = preprocessed_files(tmp_path, "stacks", "masks", "foregrounds")
    common = [*preprocessed_files(tmp_path, "stacks"), "--split", str(split)]
    models_dir, predictions = tmp_path / "models" / "unet", tmp_path / "predictions" / "unet"
    assert (
        run_cli(
            [
                "train-model",
                "--model",
                "unet",
                *train_files,
                "--split",
                str(split),
                "--outdir",
                str(models_dir),
                "--settings",
                settings,
                "--no-progress",
            ]
        )
        == 0
    )
    assert {p.name for p in models_dir.iterdir()} == {WEIGHTS_NAME, METADATA_NAME, LOG_NAME}
    assert (
        run_cli(
            [
                "predict-model",
                "--model",
                "unet",
                "--weights",
                str(models_dir),
                *common,
                "--outdir",
                str(predictions),
                "--timing",
                str(tmp_path / "timing.json"),
                "--settings",
                settings,
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "timing.json").read_text())["samples"] == 2
    names = sorted(p.name for p in predictions.iterdir())
    assert names == ["te0.mask.tif", "te0.probability.tif", "te1.mask.tif", "te1.probability.tif"]
    assert tifffile.imread(predictions / "te0.probability.tif").shape == (32, 48)
    with pytest.raises(InputError, match="not 'unetr'"):
        run_cli(
            [
                "predict-model",
                "--model",
                "unetr",
                "--weights",
                str(models_dir),
                *common,
                "--outdir",
                str(predictions),
                "--settings",
                settings,
            ]
        )
