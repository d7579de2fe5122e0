"""Commands of the HSRS stage: ``hsrs-cells``, ``hsrs-celegans``, ``hsrs-phasor``,
``hsrs-dice``, and ``fit-phasor`` (the phasor baseline of the tumour table)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ramanseg.errors import InputError

logger = logging.getLogger(__name__)

#: The file name of field ``index`` of the cell phantom.
FIELD_NAME = "field{index}.npz"


def field_paths(outdir: str | Path, fields: int) -> list[Path]:
    """The files ``hsrs-cells`` writes for ``fields`` fields."""
    return [Path(outdir) / FIELD_NAME.format(index=index) for index in range(fields)]


def run_cells(args: argparse.Namespace) -> int:
    """``ramanseg hsrs-cells``: write the synthetic HSRS cell phantom, one file per field."""
    from ramanseg.cli import settings_from_args
    from ramanseg.fileio import check_output_folder
    from ramanseg.hsrs.cells import CellPhantomSettings, make_field
    from ramanseg.hsrs.stack import write_hsrs_stacks

    settings = CellPhantomSettings.from_config(settings_from_args(args))
    check_output_folder(args.outdir)
    paths = field_paths(args.outdir, settings.fields)
    write_hsrs_stacks({path: make_field(settings, index) for index, path in enumerate(paths)})
    logger.info("wrote %d fields to %s", len(paths), args.outdir)
    return 0


def run_celegans(args: argparse.Namespace) -> int:
    """``ramanseg hsrs-celegans``: read the C. elegans stack and label it by phasor cursors."""
    from ramanseg.cli import settings_from_args
    from ramanseg.config import ConfigError
    from ramanseg.hsrs.celegans import celegans_stack
    from ramanseg.hsrs.phasor import PhasorSettings
    from ramanseg.hsrs.stack import write_hsrs_stack

    config = settings_from_args(args)
    folder = args.folder or config["hsrs"]["celegans_dir"]
    if not folder:
        raise ConfigError(
            "`hsrs.celegans_dir` is null: no C. elegans stack is configured; set it to the "
            "folder holding celegans_srs_cube.npy and celegans_spec_init.mat"
        )
    stack = celegans_stack(folder, PhasorSettings.from_config(config))
    write_hsrs_stack(args.out, stack)
    logger.info("wrote %s (%s)", args.out, stack.source)
    return 0


def run_phasor(args: argparse.Namespace) -> int:
    """``ramanseg hsrs-phasor``: phasor segmentation of one dataset, its Dice and figures."""
    import pandas as pd

    from ramanseg.cli import settings_from_args
    from ramanseg.figures import figure_bytes, table_bytes
    from ramanseg.fileio import check_output_folder, json_bytes, prefixed, write_files
    from ramanseg.hsrs.analysis import analyse_dataset
    from ramanseg.hsrs.dice import COLUMNS
    from ramanseg.hsrs.figures import phasor_plot, segmentation_figure
    from ramanseg.hsrs.phasor import PhasorSettings
    from ramanseg.hsrs.stack import read_labelled_stacks

    settings = PhasorSettings.from_config(settings_from_args(args))
    check_output_folder(args.outdir)
    stacks = read_labelled_stacks(
        args.stacks, "hsrs-phasor", "to place cursors from and score against"
    )
    try:
        analysis = analyse_dataset(args.dataset, stacks, settings)
    except ValueError as error:
        raise InputError(
            str(error), path=args.stacks[0], fix="check the dataset's labels"
        ) from error
    outdir = Path(args.outdir)
    table = pd.DataFrame(list(analysis.rows), columns=list(COLUMNS))
    first = stacks[0]
    files = {
        outdir / "dice.csv": table_bytes(table)[".csv"],
        outdir / "cursors.json": json_bytes(
            {"cursors": analysis.cursors.to_dict(), "clusters": analysis.clusters.to_dict()}
        ),
        **prefixed(
            outdir / "phasor_plot",
            figure_bytes(
                phasor_plot(analysis.phasors, analysis.cursors, analysis.clusters, args.dataset)
            ),
        ),
        **prefixed(
            outdir / "segmentation",
            figure_bytes(
                segmentation_figure(
                    analysis.phasors[0].mean,
                    first.labels,
                    analysis.predictions[0],
                    first.class_names,
                    f"{args.dataset}: {Path(args.stacks[0]).stem}",
                )
            ),
        ),
    }
    write_files(files)
    summary = table.groupby(["model", "class"], sort=False)["dice"].mean().round(3)
    logger.info("%s: mean Dice per class\n%s", args.dataset, summary.to_string())
    return 0


def run_dice(args: argparse.Namespace) -> int:
    """``ramanseg hsrs-dice``: join the methods' Dice rows into the HSRS Dice table."""
    from ramanseg.figures import table_bytes
    from ramanseg.fileio import prefixed, write_files
    from ramanseg.hsrs.dice import combine_dice_tables, missed_classes

    frame, markdown = combine_dice_tables(args.tables)
    for line in missed_classes(frame):
        logger.warning("DEGENERATE SEGMENTATION: %s (Dice 0)", line)
    write_files(prefixed(args.out_prefix, table_bytes(frame, markdown)))
    return 0


def run_fit_phasor(args: argparse.Namespace) -> int:
    """``ramanseg fit-phasor``: place the tumour / non-tumour cursors and predict."""
    from ramanseg.cli import settings_from_args
    from ramanseg.fileio import check_output_folder
    from ramanseg.hsrs.tumour import (
        TumourPhasorSettings,
        fit_tumour_cursors,
        predict_tumour,
        raman_order,
        save_tumour_cursors,
    )
    from ramanseg.preprocessed import files_by_sample, read_foreground, read_mask, read_stack
    from ramanseg.settings import ChannelLayout
    from ramanseg.split import read_split

    config = settings_from_args(args)
    settings = TumourPhasorSettings.from_config(config)
    layout = ChannelLayout.from_config(config)
    bands = raman_order(layout)
    split = read_split(args.split)
    files = files_by_sample(stacks=args.stacks, masks=args.masks, foregrounds=args.foregrounds)
    check_output_folder(args.outdir)

    def stack_of(sample_id: str):
        if sample_id not in files or files[sample_id].stack is None:
            raise InputError(
                "no preprocessed stack was given for this sample of the split",
                sample=sample_id,
                path=args.split,
                fix="pass every training and predicted sample's stack.ome.tif to --stacks",
            )
        return read_stack(files[sample_id].stack, sample_id, channel_names=layout.names)[0]

    train = []
    for sample_id in split["train"]:
        stack = stack_of(sample_id)
        sample_files = files[sample_id]
        if sample_files.mask is None or sample_files.foreground is None:
            raise InputError(
                "no mask or foreground was given for this training sample",
                sample=sample_id,
                fix="pass the training samples' mask.tif and foreground.tif",
            )
        mask = read_mask(sample_files.mask, sample_id, stack.shape[1:])
        foreground = read_foreground(sample_files.foreground, sample_id, stack.shape[1:])
        train.append((sample_id, stack, mask, foreground))
    if not train:
        raise InputError("the split has no training samples", path=args.split)
    seed = int(config.get("seed", 0))
    cursors = fit_tumour_cursors(train, bands, settings, seed=seed)
    del train
    predicted = [(sample_id, stack_of(sample_id)) for sample_id in split[args.subset]]
    save_tumour_cursors(cursors, args.model_out, [s for s in split["train"]], seed)
    written = predict_tumour(cursors, predicted, bands, settings, args.outdir)
    logger.info(
        "phasor baseline: wrote %s and %d predictions to %s",
        args.model_out,
        len(written),
        args.outdir,
    )
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the HSRS stage's commands."""
    from ramanseg.cli import add_settings_arguments, add_split_data_arguments

    parser = subparsers.add_parser(
        "hsrs-cells",
        help="write the synthetic HSRS cell phantom (one .npz stack per field)",
        description="Write the fields of the synthetic hyperspectral SRS cell phantom "
        "(hsrs.cells) with their truth, as field<N>.npz in --outdir.",
    )
    parser.add_argument("--outdir", required=True, metavar="DIR", help="results/hsrs/data/cells")
    add_settings_arguments(parser)
    parser.set_defaults(func=run_cells)

    parser = subparsers.add_parser(
        "hsrs-celegans",
        help="read the C. elegans HSRS stack and label it by phasor cursors",
        description="Read the C. elegans stack from hsrs.celegans_dir (or --folder), label "
        "each pixel by the nearest reference spectrum's phasor, write one .npz stack.",
    )
    parser.add_argument("--out", required=True, metavar="NPZ", help="the stack to write")
    parser.add_argument("--folder", metavar="DIR", help="overrides hsrs.celegans_dir")
    add_settings_arguments(parser)
    parser.set_defaults(func=run_celegans)

    parser = subparsers.add_parser(
        "hsrs-phasor",
        help="phasor segmentation of an HSRS dataset: Dice per class, phasor plot",
        description="Segment labelled HSRS stacks by phasor cursors (placed on held-out "
        "stacks or halves) and by a Gaussian mixture; write dice.csv, cursors.json, "
        "phasor_plot.{png,pdf} and segmentation.{png,pdf} to --outdir.",
    )
    parser.add_argument("--dataset", required=True, help="the dataset's name, for the table")
    parser.add_argument("--stacks", required=True, nargs="+", metavar="NPZ")
    parser.add_argument(
        "--outdir", required=True, metavar="DIR", help="results/hsrs/phasor/<dataset>"
    )
    add_settings_arguments(parser)
    parser.set_defaults(func=run_phasor)

    parser = subparsers.add_parser(
        "hsrs-dice",
        help="join the HSRS methods' Dice rows into one table",
        description="Join Dice tables (columns dataset, model, fold, class, dice) into "
        "<prefix>.csv, .parquet and .md (mean ± std over the folds).",
    )
    parser.add_argument("--tables", required=True, nargs="+", metavar="CSV")
    parser.add_argument("--out-prefix", required=True, metavar="PREFIX", help="results/hsrs/dice")
    parser.set_defaults(func=run_dice)

    parser = subparsers.add_parser(
        "fit-phasor",
        help="the phasor baseline of the tumour table: place cursors and predict",
        description="Place tumour and non-tumour cursors in the phasor plane of the Raman "
        "bands from the training samples' tissue pixels; write them as JSON and predict a "
        "split subset in the shared prediction format.",
    )
    add_split_data_arguments(parser)
    parser.add_argument(
        "--model-out", required=True, metavar="JSON", help="results/models/phasor/model.json"
    )
    parser.add_argument("--outdir", required=True, metavar="DIR", help="results/predictions/phasor")
    parser.add_argument("--subset", choices=("train", "val", "test"), default="test")
    add_settings_arguments(parser)
    parser.set_defaults(func=run_fit_phasor)
