"""The ``ramanseg phantom`` command."""

from __future__ import annotations

import argparse

from ramanseg.phantom.design import PhantomSettings
from ramanseg.phantom.write import write_phantom


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _run(args: argparse.Namespace) -> int:
    from ramanseg.cli import settings_from_args

    write_phantom(PhantomSettings.from_config(settings_from_args(args)), args.outdir, args.threads)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``phantom`` subcommand."""
    from ramanseg.cli import add_settings_arguments

    parser = subparsers.add_parser(
        "phantom",
        help="write the synthetic SRS demo dataset (sample sheet, OME-TIFFs, H&E, GeoJSON)",
        description=(
            "Write a synthetic stimulated-Raman dataset in the workflow's input contract: "
            "samples.tsv, srs/*.ome.tif, he/*.tif, annotations/*.geojson and preview.png. "
            "Sizes and the seed come from the configuration's `phantom` section."
        ),
    )
    parser.add_argument(
        "--outdir",
        required=True,
        help="the dataset folder to write (replaced atomically if it exists)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="samples generated in parallel (the output does not depend on it; default 1)",
    )
    add_settings_arguments(parser)
    parser.set_defaults(func=_run)
