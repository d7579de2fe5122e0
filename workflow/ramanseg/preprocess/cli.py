"""The ``ramanseg preprocess`` command: one sample's preprocessing, as a rule runs it."""

from __future__ import annotations

from typing import Any

from ramanseg.preprocess.sample import preprocess_sample
from ramanseg.settings import AnnotationSettings, ChannelLayout, PreprocessSettings


def add_commands(subparsers: Any) -> None:
    """Add ``preprocess`` to the ``ramanseg`` command line.

    Args:
        subparsers: the ``ramanseg`` parser's subparsers.
    """
    from ramanseg.cli import add_settings_arguments, settings_from_args

    parser = subparsers.add_parser(
        "preprocess",
        help="preprocess one sample (paper section 3.1)",
        description="Read one sample's SRS stack, H&E image and QuPath annotations; write "
        "the normalised stack, class map, mask, foreground and QC report.",
    )
    parser.add_argument("--sample", required=True, help="sample id")
    parser.add_argument("--srs", required=True, help="SRS stack (TIFF / OME-TIFF)")
    parser.add_argument(
        "--he", default="", help="H&E image registered to the SRS grid; empty for none"
    )
    parser.add_argument(
        "--annotations", default="", help="QuPath GeoJSON export; empty for none (a new slide)"
    )
    parser.add_argument("--outdir", required=True, help="output folder for this sample")
    parser.add_argument("--threads", type=int, default=1, help="threads (default 1)")
    add_settings_arguments(parser)

    def run_preprocess(args: Any) -> int:
        config = settings_from_args(args)
        preprocess_sample(
            args.sample, args.srs, args.he or None, args.annotations or None, args.outdir,
            channels=ChannelLayout.from_config(config),
            annotations=AnnotationSettings.from_config(config),
            settings=PreprocessSettings.from_config(config),
            threads=args.threads,
        )  # fmt: skip
        return 0

    parser.set_defaults(func=run_preprocess)
