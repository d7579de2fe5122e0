"""The trained models of the HSRS stage and their settings (``hsrs.models``).

The names here are the ``model`` column of the HSRS Dice table and the folders under
``results/hsrs/models/<dataset>/``. This module imports nothing heavy: Snakemake reads it
to plan the training jobs; the training itself is :mod:`ramanseg.hsrs.training`.

* ``hybrid_unet``: the hybrid 3D/2D U-Net (:mod:`ramanseg.models.hybrid_unet`) with all
  three modules;
* ``hybrid_unet_no_<module>``: the ablation, one module switched off (with
  ``hsrs.models.ablation``);
* ``unet_2d``: the 2-D U-Net (:class:`ramanseg.models.unet.UNet`), bands as channels.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ramanseg.config import ConfigError, require
from ramanseg.errors import InputError

logger = logging.getLogger(__name__)

HYBRID = "hybrid_unet"
UNET_2D = "unet_2d"
#: The hybrid U-Net's switchable modules (as :data:`ramanseg.models.hybrid_unet.MODULES`,
#: repeated here so that Snakemake does not import torch; a test checks they agree).
HYBRID_MODULES = ("multiscale_3d", "spectral_compression", "attention_pooling")


def ablation_name(module: str) -> str:
    """The name of the hybrid U-Net with ``module`` switched off."""
    return f"{HYBRID}_no_{module}"


@dataclass(frozen=True)
class HsrsModelSettings:
    """The ``hsrs.models`` section and the run's seed and device.

    Attributes:
        block_size: side of the spatial blocks (px): the groups of the cross-validation.
        folds: cross-validation folds (each holds out every ``folds``-th block, shuffled).
        buffer: training pixels within this distance (px) of a held-out block are left
            out of the loss, so that no label right next to a test pixel is learnt.
        patch_size: side of the training patches, cut from inside one training block.
        patches_per_epoch: training patches per epoch.
        max_bands: adjacent bands are averaged down to at most this many (None: all).
        epochs: training epochs per fold.
        batch_size: patches per optimiser step.
        learning_rate: AdamW's learning rate.
        weight_decay: AdamW's weight decay.
        ablation: also train the hybrid U-Net with each module switched off.
        hybrid_unet: the hybrid U-Net's architecture section.
        unet_2d: the 2-D U-Net's ``levels`` and ``base_channels``.
        seed: the seed.
        deterministic: PyTorch's deterministic mode.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """

    block_size: int
    folds: int
    buffer: int
    patch_size: int
    patches_per_epoch: int
    max_bands: int | None
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    ablation: bool
    hybrid_unet: Mapping[str, Any]
    unet_2d: Mapping[str, Any]
    seed: int
    deterministic: bool
    device: str

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> HsrsModelSettings:
        """The settings of a validated configuration (``hsrs.models``, ``seed``, ``device``).

        Raises:
            ConfigError: a missing key.
        """
        section = require(config, "hsrs.models")
        return cls(
            block_size=int(section["block_size"]),
            folds=int(section["folds"]),
            buffer=int(section["buffer"]),
            patch_size=int(section["patch_size"]),
            patches_per_epoch=int(section["patches_per_epoch"]),
            max_bands=None if section["max_bands"] is None else int(section["max_bands"]),
            epochs=int(section["epochs"]),
            batch_size=int(section["batch_size"]),
            learning_rate=float(section["learning_rate"]),
            weight_decay=float(section["weight_decay"]),
            ablation=bool(section["ablation"]),
            hybrid_unet=dict(section["hybrid_unet"]),
            unet_2d=dict(section["unet_2d"]),
            seed=int(require(config, "seed")),
            deterministic=bool(require(config, "deterministic")),
            device=str(require(config, "device")),
        )

    @property
    def model_names(self) -> list[str]:
        """The models to train, in table order."""
        ablations = [ablation_name(module) for module in HYBRID_MODULES] if self.ablation else []
        return [HYBRID, *ablations, UNET_2D]

    def hybrid_switches(self, name: str) -> dict[str, bool]:
        """The module switches of a hybrid U-Net variant: the section's, one off for an
        ablation name.

        Raises:
            ValueError: a name that is not a hybrid variant of :attr:`model_names`.
        """
        switches = {m: bool(self.hybrid_unet["modules"][m]) for m in HYBRID_MODULES}
        if name == HYBRID:
            return switches
        for module in HYBRID_MODULES:
            if name == ablation_name(module):
                return {**switches, module: False}
        raise ValueError(f"{name!r} is not a hybrid U-Net variant; the models: {self.model_names}")


def run_train(args: argparse.Namespace) -> int:
    """``ramanseg hsrs-train``: cross-validate one model on one HSRS dataset."""
    import pandas as pd

    from ramanseg.cli import configured_device, set_torch_threads, settings_from_args
    from ramanseg.figures import table_bytes
    from ramanseg.fileio import check_output_folder, write_files
    from ramanseg.hsrs.stack import read_labelled_stacks
    from ramanseg.hsrs.training import cross_validate, out_of_fold_files

    config = settings_from_args(args)
    settings = HsrsModelSettings.from_config(config)
    if args.model not in settings.model_names:
        raise ConfigError(
            f"hsrs-train: unknown model {args.model!r}; the configured models are "
            f"{settings.model_names}"
        )
    set_torch_threads(args.threads)
    configured_device(config)  # a bad device is a configuration error, before any work
    check_output_folder(args.outdir)
    stacks = read_labelled_stacks(args.stacks, "hsrs-train", "to train on and score against")
    try:
        result = cross_validate(args.dataset, args.model, stacks, settings)
    except ValueError as error:
        raise InputError(str(error), path=args.stacks[0], fix="check the dataset") from error
    files = out_of_fold_files(args.outdir, args.dataset, args.model, args.stacks, stacks, result)
    files[Path(args.outdir) / "training_log.csv"] = table_bytes(pd.DataFrame(result.log))[".csv"]
    write_files(files)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``hsrs-train``."""
    from ramanseg.cli import add_settings_arguments, add_torch_threads_argument

    parser = subparsers.add_parser(
        "hsrs-train",
        help="train one model on an HSRS dataset by grouped cross-validation over blocks",
        description="Cut the labelled HSRS stacks into spatial blocks, hold each block out "
        "in one of hsrs.models.folds folds, train the model on the other blocks and predict "
        "the held-out ones; write dice.csv (per fold and class), training_log.csv, "
        "folds.json and segmentation.{png,pdf} to --outdir.",
    )
    parser.add_argument("--dataset", required=True, help="the dataset's name, for the table")
    parser.add_argument(
        "--model", required=True, help="hybrid_unet, hybrid_unet_no_<module> or unet_2d"
    )
    parser.add_argument("--stacks", required=True, nargs="+", metavar="NPZ")
    parser.add_argument(
        "--outdir", required=True, metavar="DIR", help="results/hsrs/models/<dataset>/<model>"
    )
    add_torch_threads_argument(parser)
    add_settings_arguments(parser)
    parser.set_defaults(func=run_train)
