"""The prototype-count sweep (paper section 3.2.3): validation Dice against prototypes per class.

The paper fixes one RamanSeg variant and trains it with several numbers of prototypes per
class (``models.prototype_sweep.prototypes_per_class``); the workflow trains each count as an
ordinary ``train-model --model ramanseg`` run with ``models.ramanseg.prototypes_per_class``
set to that count. This module only summarises the finished runs: it reads each run's
``model.json`` (the count from the stored architecture, the validation Dice of the kept
weights as the harness recorded it) and writes a table (CSV, Parquet, Markdown) and a plot
of validation Dice against prototypes per class (PNG, PDF), all byte-deterministic.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ramanseg.errors import InputError
from ramanseg.figures import table_bytes
from ramanseg.fileio import prefixed, write_files
from ramanseg.models.folder import METADATA_NAME, read_metadata

logger = logging.getLogger(__name__)

__all__ = [
    "COLUMNS",
    "add_commands",
    "markdown_table",
    "read_sweep_run",
    "run_sweep_summary",
    "sweep_figure_bytes",
    "sweep_table",
]

#: The columns of the sweep table, in order.
COLUMNS = (
    "prototypes_per_class",
    "val_dice",
    "model",
    "projection",
    "selection",
    "selected_epoch",
    "epochs",
    "run",
)


def read_sweep_run(run_dir: str | Path) -> dict[str, Any]:
    """One row of the sweep table from a training folder's ``model.json``.

    Args:
        run_dir: a ``train-model --outdir`` folder of a RamanSeg model.

    Returns:
        The row: see :data:`COLUMNS` (``run`` is the folder as given).

    Raises:
        InputError: a missing or unreadable ``model.json``, one without
            ``architecture.prototypes_per_class`` (not a RamanSeg model), or without a
            validation Dice (trained without validation samples).
    """
    run_dir = Path(run_dir)
    path = run_dir / METADATA_NAME
    metadata = read_metadata(
        run_dir,
        fix="train this prototype count with `ramanseg train-model --model ramanseg "
        f"--outdir {run_dir}` first",
    )
    architecture = metadata.get("architecture")
    count = architecture.get("prototypes_per_class") if isinstance(architecture, dict) else None
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InputError(
            "model.json has no positive integer architecture.prototypes_per_class, so it is "
            f"not a RamanSeg model (model {metadata.get('model')!r})",
            path=path,
            fix="pass the training folders of the sweep's RamanSeg runs",
        )
    dice = metadata.get("val_dice")
    if isinstance(dice, bool) or not isinstance(dice, int | float) or not math.isfinite(dice):
        raise InputError(
            f"model.json has no validation Dice (val_dice = {dice!r}); the run was trained "
            "without validation samples",
            path=path,
            fix="train the sweep with a split that has validation samples",
        )
    hyperparameters = metadata.get("hyperparameters") or {}
    projection = hyperparameters.get("projection") if isinstance(hyperparameters, dict) else None
    return {
        "prototypes_per_class": count,
        "val_dice": float(dice),
        "model": str(metadata.get("model", "")),
        "projection": None if projection is None else bool(projection),
        "selection": str(metadata.get("selection", "")),
        "selected_epoch": int(metadata.get("selected_epoch", 0)),
        "epochs": int(metadata.get("epochs", 0)),
        "run": str(run_dir),
    }


def sweep_table(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """The sweep table of several runs, sorted by prototypes per class (then run).

    Args:
        run_dirs: the runs' training folders.

    Returns:
        One row per run, columns :data:`COLUMNS`.

    Raises:
        ValueError: no runs.
        InputError: see :func:`read_sweep_run`.
    """
    if not run_dirs:
        raise ValueError("the sweep summary needs at least one run")
    rows = [read_sweep_run(run_dir) for run_dir in run_dirs]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table["projection"] = table["projection"].astype("boolean")
    return table.sort_values(["prototypes_per_class", "run"], kind="stable").reset_index(drop=True)


def markdown_table(table: pd.DataFrame) -> str:
    """The sweep table in Markdown: count, validation Dice (4 decimals), model, run."""
    shown = table[["prototypes_per_class", "val_dice", "model", "selected_epoch", "run"]].rename(
        columns={
            "prototypes_per_class": "Prototypes per class",
            "val_dice": "Validation Dice",
            "model": "Model",
            "selected_epoch": "Kept epoch",
            "run": "Run",
        }
    )
    return shown.to_markdown(index=False, floatfmt=".4f") + "\n"


def sweep_figure_bytes(table: pd.DataFrame) -> dict[str, bytes]:
    """Validation Dice against prototypes per class, as deterministic ``.png`` / ``.pdf`` bytes.

    Each run is a point; the line joins the mean Dice of each count (several runs of one
    count, e.g. seeds, are averaged).

    Args:
        table: the sweep table.

    Returns:
        ``{".png": ..., ".pdf": ...}``.
    """
    from ramanseg.figures import figure_bytes, new_figure

    means = table.groupby("prototypes_per_class", sort=True)["val_dice"].mean()
    figure = new_figure(5.0, 3.6)
    axis = figure.subplots()
    axis.plot(means.index, means.to_numpy(), marker="o", color="C0", label="mean per count")
    axis.scatter(
        table["prototypes_per_class"], table["val_dice"], color="C1", zorder=3, label="run"
    )
    counts = [int(c) for c in means.index]
    axis.set_xticks(counts)
    axis.set_xticklabels([str(c) for c in counts])
    axis.set_xlabel("prototypes per class")
    axis.set_ylabel("validation Dice")
    axis.set_ylim(0.0, 1.0)
    axis.grid(True, alpha=0.3)
    models = ", ".join(sorted(set(table["model"])))
    axis.set_title(f"Prototype-count sweep ({models})")
    if len(table) > len(means):
        axis.legend(loc="lower right")
    return figure_bytes(figure)


def run_sweep_summary(run_dirs: Sequence[str | Path], out_prefix: str | Path) -> pd.DataFrame:
    """Summarise sweep runs: ``<prefix>.csv``, ``.parquet``, ``.md``, ``.png``, ``.pdf``.

    Everything is computed before anything is written; each file is written atomically and
    a failure removes the files already written.

    Args:
        run_dirs: the runs' training folders.
        out_prefix: output path without extension.

    Returns:
        The sweep table.

    Raises:
        ValueError: no runs.
        InputError: see :func:`read_sweep_run`.
    """
    table = sweep_table(run_dirs)
    markdown = markdown_table(table)
    outputs = table_bytes(table, markdown, float_format="%.6f") | sweep_figure_bytes(table)
    write_files(prefixed(Path(out_prefix), outputs))
    logger.info("prototype sweep over %d runs:\n%s", len(table), markdown)
    return table


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sweep-summary`` to the ``ramanseg`` command line."""
    parser = subparsers.add_parser(
        "sweep-summary",
        help="tabulate and plot the prototype-count sweep (paper section 3.2.3)",
        description="Read model.json of each sweep run (train-model --outdir) and write the "
        "validation Dice against prototypes per class as a table (.csv .parquet .md) and a "
        "plot (.png .pdf).",
    )
    parser.add_argument(
        "--runs", nargs="+", required=True, metavar="DIR", help="the runs' training folders"
    )
    parser.add_argument(
        "--out-prefix",
        required=True,
        help="output path without extension (writes .csv .parquet .md .png .pdf)",
    )

    def run(args: argparse.Namespace) -> int:
        run_sweep_summary(args.runs, args.out_prefix)
        return 0

    parser.set_defaults(func=run)
