"""The ``ramanseg`` command line: thin entry points over the package's functions.

Each stage module defines ``add_commands(subparsers)``, which adds its subcommands and
sets ``func`` to a function taking the parsed arguments. The Snakemake rules call these
commands; they are equally usable by hand (``ramanseg <command> --help``).

A command imports only its own module (:data:`COMMANDS`): the stage modules import
scikit-learn, pandas, SciPy, rasterio and torch, and every Snakemake job starts a command,
so importing them all would cost each job seconds. ``ramanseg --help`` imports them all.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ramanseg import __version__
from ramanseg.config import ConfigError, load_config_files, parse_settings
from ramanseg.errors import InputError

if TYPE_CHECKING:
    import torch

#: Each subcommand and the module defining it, in the order of the pipeline's stages
#: (``tests/test_cli.py`` checks the modules define exactly these).
COMMANDS = {
    "phantom": "ramanseg.phantom",
    "check-samplesheet": "ramanseg.samplesheet",
    "preprocess": "ramanseg.preprocess.cli",
    "bench-preprocess": "ramanseg.benchmarks.preprocess",
    "qc-figure": "ramanseg.qc",
    "split": "ramanseg.split",
    "fold-split": "ramanseg.split",
    "bottleneck": "ramanseg.bottleneck",
    "nnunet-export": "ramanseg.nnunet.cli",
    "nnunet-plan": "ramanseg.nnunet.cli",
    "nnunet-train": "ramanseg.nnunet.cli",
    "nnunet-predict": "ramanseg.nnunet.cli",
    "nnunet-fold-predictions": "ramanseg.nnunet.validation",
    "bench-nnunet": "ramanseg.benchmarks.nnunet",
    "bench-nnunet-prediction": "ramanseg.benchmarks.nnunet",
    "train-model": "ramanseg.models.cli",
    "predict-model": "ramanseg.models.cli",
    "fit-baseline": "ramanseg.models.cli",
    "sweep-summary": "ramanseg.models.sweep",
    "bench-losses": "ramanseg.benchmarks.losses",
    "bench-inference": "ramanseg.benchmarks.inference",
    "evaluate": "ramanseg.evaluate",
    "evaluate-cv": "ramanseg.cross_validation",
    "evaluate-seeds": "ramanseg.seeds",
    "mask-to-geojson": "ramanseg.qupath",
    "overlay": "ramanseg.overlay",
    "interpret-nnunet": "ramanseg.interpret",
    "interpret-prototypes": "ramanseg.interpret",
    "prototype-patches": "ramanseg.models.prototypes.patches",
    "explain-slide": "ramanseg.interpret.slide_explanation",
    "spectra-synthetic": "ramanseg.spectra.cli",
    "spectra-run": "ramanseg.spectra.cli",
    "spectra-summary": "ramanseg.spectra.cli",
    "spectra-pixel-model": "ramanseg.spectra.cli",
    # Hyperspectral SRS (issue 16, phasor part) and the tumour table's phasor baseline.
    "hsrs-cells": "ramanseg.hsrs.cli",
    "hsrs-celegans": "ramanseg.hsrs.cli",
    "hsrs-phasor": "ramanseg.hsrs.cli",
    "hsrs-dice": "ramanseg.hsrs.cli",
    "fit-phasor": "ramanseg.hsrs.cli",
    # Hyperspectral SRS: the trained models (issue 16, hybrid U-Net part).
    "hsrs-train": "ramanseg.hsrs.models",
    # Hyperspectral SRS: nnU-Net on the spatial blocks (issue 16, nnU-Net part).
    "hsrs-nnunet-export": "ramanseg.hsrs.nnunet",
    "hsrs-nnunet-predict": "ramanseg.hsrs.nnunet",
    "benchmark-summary": "ramanseg.report",
    "bench-dag": "ramanseg.benchmarks.dag",
    # The model package and prediction of new slides (issue 18).
    "package": "ramanseg.package",
    "unpack-package": "ramanseg.package",
    "predict-slides": "ramanseg.predict",
    "predict-export": "ramanseg.predict",
    "predict-summary": "ramanseg.predict",
}

#: Modules contributing subcommands, in the order of the pipeline's stages.
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` / ``--settings``, the two ways to give a command its settings."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--config",
        nargs="+",
        metavar="YAML",
        default=["config/config.yaml"],
        help="workflow configuration file(s); later files override earlier ones "
        "(default: config/config.yaml)",
    )
    group.add_argument(
        "--settings",
        metavar="JSON",
        help="the configuration subset as inline JSON or @file (used by the Snakemake rules)",
    )


def settings_from_args(args: argparse.Namespace) -> dict:
    """The configuration a command runs with, from ``--settings`` or ``--config``."""
    if getattr(args, "settings", None):
        return parse_settings(args.settings)
    return load_config_files(args.config)


def add_split_data_arguments(parser: argparse.ArgumentParser, *, labels: bool = True) -> None:
    """Add ``--stacks`` (with ``labels`` also ``--masks`` and ``--foregrounds``), the
    preprocessed files of the samples, and ``--split``, the split that picks them (the
    commands that fit or train a model and predict a split subset).

    Args:
        parser: the command's parser.
        labels: also the ground truth, for commands that learn from the training samples.
    """
    files = [("--stacks", "stack.ome.tif")]
    if labels:
        files += [("--masks", "mask.tif"), ("--foregrounds", "foreground.tif")]
    for option, name in files:
        parser.add_argument(
            option,
            required=True,
            nargs="+",
            metavar="FILE",
            help=f"the samples' preprocessed {name} (results/preprocessed/<sample>/{name})",
        )
    parser.add_argument("--split", required=True, metavar="JSON", help="split.json")


# The PyTorch commands' shared options (train-model, predict-model, hsrs-train,
# bench-inference); torch is imported only when a command runs.


def add_torch_threads_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--threads``: PyTorch's CPU threads (see :func:`set_torch_threads`)."""
    parser.add_argument(
        "--threads", type=int, metavar="N", help="CPU threads for PyTorch (default: its own)"
    )


def set_torch_threads(threads: int | None) -> None:
    """Give PyTorch ``--threads`` CPU threads (``None``: leave its own default).

    Raises:
        ConfigError: fewer than one thread.
    """
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def configured_device(config: Mapping[str, Any]) -> torch.device:
    """The torch device of the configuration's ``device`` (default ``auto``).

    Raises:
        ConfigError: an unknown device, or a GPU asked for that this machine lacks.
    """
    from ramanseg.runtime import resolve_device

    try:
        return resolve_device(config.get("device", "auto"))
    except ValueError as error:
        raise ConfigError(f"device: {error}") from error


def build_parser(modules: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``ramanseg`` parser with the subcommands of ``modules`` (default: all)."""
    parser = argparse.ArgumentParser(
        prog="ramanseg",
        description="Tumour segmentation of stimulated-Raman images: the RamanSeg pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"ramanseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES if modules is None else modules:
        importlib.import_module(module_name).add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((token for token in argv if not token.startswith("-")), None)
    # An unknown command (or none) gets the full parser, whose error lists every command.
    parser = build_parser([COMMANDS[command]] if command in COMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result = args.func(args)
    except (InputError, ConfigError) as error:
        print(f"ramanseg {args.command}: error: {error}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
