"""Helpers for the HTML report: the run's per-rule resource use.

Every rule writes a Snakemake benchmark file ``results/benchmarks/<path>.tsv``: a header
``s  h:m:s  max_rss  max_vms  max_uss  max_pss  io_in  io_out  mean_load  cpu_time`` and one
row per repetition (``benchmark: repeat(...)``), with ``NA`` or ``-`` where a value could not
be measured. :func:`benchmark_table` collects them into one table:

* ``job``: the file's path below the benchmarks folder without ``.tsv``
  (``preprocess/P01_S1``, ``nnunet/train_fold_0``, ``bottleneck``);
* ``group``: its first path component (``preprocess``, ``nnunet``; the job itself for files
  at the top level), which is how the rules name their benchmark folders;
* ``seconds`` (wall clock) and ``cpu_seconds``: means over the repetitions;
* ``max_rss_mb``: the largest resident set size over the repetitions (MB, as Snakemake
  reports it);
* ``repeats``: the number of rows.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ramanseg.errors import InputError
from ramanseg.figures import figure_bytes, new_figure, table_bytes
from ramanseg.fileio import prefixed, write_files

log = logging.getLogger(__name__)

COLUMNS = ("group", "job", "seconds", "cpu_seconds", "max_rss_mb", "repeats")


def read_benchmark(path: str | Path) -> dict[str, float]:
    """One Snakemake benchmark file: mean seconds and CPU seconds, largest RSS, repeats.

    Raises:
        InputError: an unreadable file, no ``s`` column or no rows.
    """
    path = Path(path)
    fix = "delete the file and rerun its rule (Snakemake writes it again)"
    try:
        frame = pd.read_csv(path, sep="\t", na_values=["NA", "-", ""])
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise InputError(
            f"the benchmark file cannot be read ({error})", path=path, fix=fix
        ) from None
    if "s" not in frame.columns or frame.empty:
        raise InputError(
            "the benchmark file has no `s` column or no rows (not a Snakemake benchmark)",
            path=path,
            fix=fix,
        )

    def column(name: str, reduce) -> float:
        if name not in frame.columns:
            return math.nan
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        return float(reduce(values)) if values.size else math.nan

    return {
        "seconds": column("s", np.mean),
        "cpu_seconds": column("cpu_time", np.mean),
        "max_rss_mb": column("max_rss", np.max),
        "repeats": len(frame),
    }


def benchmark_table(folder: str | Path) -> pd.DataFrame:
    """Every ``*.tsv`` below ``folder`` (recursively) as one table, sorted by job.

    Raises:
        InputError: a missing folder, no benchmark file, or an unreadable one.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(
            "the benchmarks folder does not exist",
            path=folder,
            fix="run the workflow first (every rule writes a benchmark)",
        )
    paths = sorted(folder.rglob("*.tsv"), key=lambda p: p.relative_to(folder).as_posix())
    if not paths:
        raise InputError(
            "the benchmarks folder holds no .tsv file",
            path=folder,
            fix="run the workflow first (every rule writes a benchmark)",
        )
    rows = []
    for path in paths:
        relative = path.relative_to(folder).with_suffix("")
        rows.append(
            {"group": relative.parts[0], "job": relative.as_posix(), **read_benchmark(path)}
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def group_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per group: jobs, total and largest seconds, largest RSS; slowest total first."""
    summary = (
        table.groupby("group", sort=True)
        .agg(
            jobs=("job", "count"),
            total_seconds=("seconds", "sum"),
            max_seconds=("seconds", "max"),
            max_rss_mb=("max_rss_mb", "max"),
        )
        .reset_index()
    )
    return summary.sort_values(
        ["total_seconds", "group"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)


def _number(value: float, digits: int) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


def markdown_benchmarks(table: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The per-group summary and the per-job table as Markdown."""
    lines = [
        "| Rule group | Jobs | Total s | Slowest job s | Max RSS MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in summary.itertuples(index=False):
        lines.append(
            f"| {row.group} | {row.jobs} | {_number(row.total_seconds, 1)} "
            f"| {_number(row.max_seconds, 1)} | {_number(row.max_rss_mb, 0)} |"
        )
    lines += ["", "| Job | Wall s | CPU s | Max RSS MB | Repeats |", "|---|---:|---:|---:|---:|"]
    for row in table.itertuples(index=False):
        lines.append(
            f"| {row.job} | {_number(row.seconds, 2)} | {_number(row.cpu_seconds, 2)} "
            f"| {_number(row.max_rss_mb, 0)} | {row.repeats} |"
        )
    total = float(np.nansum(table["seconds"].to_numpy(dtype=np.float64)))
    return "\n".join(lines) + f"\n\n{len(table)} jobs, {total:.1f} s of wall-clock time in all.\n"


def benchmark_figure(summary: pd.DataFrame):
    """Horizontal bars: total wall-clock seconds per rule group (with job counts)."""
    figure = new_figure(6.5, max(2.5, 0.35 * len(summary) + 1.2))
    axis = figure.subplots()
    ordered = summary.iloc[::-1]
    positions = np.arange(len(ordered))
    values = np.nan_to_num(ordered["total_seconds"].to_numpy(dtype=np.float64))
    axis.barh(positions, values, color="#1f77b4")
    axis.set_yticks(positions)
    axis.set_yticklabels(
        [
            f"{g} ({n} job{'s' if n != 1 else ''})"
            for g, n in zip(ordered["group"], ordered["jobs"], strict=True)
        ],
        fontsize=8,
    )
    for y, value in zip(positions, values, strict=True):
        axis.annotate(
            f"{value:.1f} s",
            (value, y),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
        )
    axis.set_xlabel("wall-clock time, sum over the group's jobs (s)")
    axis.set_xlim(0, max(float(values.max()) if values.size else 1.0, 1e-9) * 1.18)
    axis.grid(True, axis="x", alpha=0.3)
    axis.set_title("Run time per rule (Snakemake benchmarks)", fontsize=10)
    return figure


def run_benchmark_summary(benchmarks: str | Path, out_prefix: str | Path) -> pd.DataFrame:
    """Collect the benchmarks and write ``<prefix>.csv``, ``.parquet``, ``.md``, ``.png``,
    ``.pdf`` (the per-job table; the Markdown also has the per-group summary, which the plot
    shows).

    Returns:
        The per-job table.
    """
    table = benchmark_table(benchmarks)
    summary = group_summary(table)
    markdown = markdown_benchmarks(table, summary)
    files = {
        **prefixed(out_prefix, table_bytes(table, markdown)),
        **prefixed(out_prefix, figure_bytes(benchmark_figure(summary))),
    }
    write_files(files)
    log.info("benchmark summary of %d jobs written to %s.*", len(table), out_prefix)
    return table


def add_commands(subparsers: Any) -> None:
    """Add ``benchmark-summary`` to the ``ramanseg`` command line."""
    parser = subparsers.add_parser(
        "benchmark-summary",
        help="collect the rules' Snakemake benchmark files into one table and plot",
        description="Read every results/benchmarks/**/*.tsv and write the per-job wall-clock "
        "time, CPU time and peak memory as CSV, Parquet and Markdown, and a bar plot.",
    )
    parser.add_argument("--benchmarks", required=True, type=Path, help="results/benchmarks")
    parser.add_argument(
        "--out-prefix",
        required=True,
        type=Path,
        help="output path without extension (writes .csv .parquet .md .png .pdf)",
    )

    def run(args: Any) -> int:
        run_benchmark_summary(args.benchmarks, args.out_prefix)
        return 0

    parser.set_defaults(func=run)
