"""The results table, its Markdown and its figures, from :mod:`ramanseg.evaluate`'s metrics.

* :func:`summarise`, :func:`results_table`: the per-sample metrics summarised per model,
  beside the paper's numbers (:func:`read_paper_results`) and the statistics of
  :mod:`ramanseg.statistics` (:func:`table_with_statistics`, shared by the test-split and
  the cross-validated tables);
* :func:`markdown_results`: ours beside the paper's numbers, with the patient bootstrap
  intervals and the paired comparison with the reference model;
* :func:`dice_figure`: mean Dice per model, ours beside the paper's;
* :func:`paired_figure`: every test sample's Dice across the models, one line per sample,
  coloured by patient;
* :func:`forest_figure`: each model's mean Dice and its difference from the reference,
  with their intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ramanseg import statistics
from ramanseg.catalog import model_label
from ramanseg.errors import InputError
from ramanseg.evaluate import METRICS, EvaluationSettings
from ramanseg.figures import new_figure
from ramanseg.statistics import smallest_wilcoxon_p

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PAPER_COLUMNS = (
    "model",
    "label",
    "dice_mean",
    "dice_std",
    "sensitivity_mean",
    "sensitivity_std",
    "specificity_mean",
    "specificity_std",
)
METRIC_LABELS = {"dice": "Dice", "sensitivity": "Sensitivity", "specificity": "Specificity"}
#: What the table and the figures say instead of an interval from one patient.
DEGENERATE_TEXT = "one patient: no CI"


def summarise(per_sample: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation (ddof = 0) and count of each metric per model, in percent.

    NaN values (undefined metrics) are left out; a metric undefined on every sample has a
    NaN mean and standard deviation and count 0.

    Args:
        per_sample: the output of :func:`evaluate_models`.

    Returns:
        One row per model, in first-appearance order: ``model``, ``n_samples`` and for each
        metric ``<metric>_mean``, ``<metric>_std``, ``<metric>_n``.
    """
    rows = []
    for model in dict.fromkeys(per_sample["model"]):
        group = per_sample[per_sample["model"] == model]
        row: dict[str, Any] = {"model": model, "n_samples": len(group)}
        for metric in METRICS:
            values = group[metric].to_numpy(dtype=np.float64)
            values = values[np.isfinite(values)] * 100.0
            row[f"{metric}_mean"] = float(values.mean()) if values.size else math.nan
            row[f"{metric}_std"] = float(values.std(ddof=0)) if values.size else math.nan
            row[f"{metric}_n"] = int(values.size)
        rows.append(row)
    return pd.DataFrame(rows)


def read_paper_results(path: str | Path) -> pd.DataFrame:
    """The paper's results table (``resources/paper_results.csv``), validated.

    Raises:
        InputError: a missing file, missing columns, a repeated model or non-numeric values.
    """
    path = Path(path)
    fix = "restore resources/paper_results.csv from the repository"
    if not path.is_file():
        raise InputError("the paper's results table does not exist", path=path, fix=fix)
    paper = pd.read_csv(path)
    missing = [column for column in PAPER_COLUMNS if column not in paper.columns]
    if missing:
        raise InputError(f"the paper's results table lacks columns {missing}", path=path, fix=fix)
    if paper["model"].duplicated().any():
        raise InputError("the paper's results table lists a model twice", path=path, fix=fix)
    numeric = [column for column in PAPER_COLUMNS if column.endswith(("_mean", "_std"))]
    try:
        paper[numeric] = paper[numeric].astype(np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(
            f"the paper's results table has non-numeric values ({error})", path=path, fix=fix
        ) from None
    return paper[list(PAPER_COLUMNS)].reset_index(drop=True)


def results_table(
    summary: pd.DataFrame,
    paper: pd.DataFrame | None,
    intervals: pd.DataFrame | None = None,
    comparisons: pd.DataFrame | None = None,
    reference: str | None = None,
) -> pd.DataFrame:
    """Our summary with the paper's numbers beside it (``paper_<metric>_mean`` / ``_std``).

    Rows follow ``summary``; a model the paper does not report has NaN paper columns.

    Args:
        summary: the output of :func:`summarise`.
        paper: the output of :func:`read_paper_results`, or ``None``.
        intervals: the output of :func:`ramanseg.statistics.metric_intervals`, or ``None``.
        comparisons: the output of :func:`ramanseg.statistics.paired_comparisons`, or
            ``None``.
        reference: the reference model of ``comparisons`` (needed with them).

    Returns:
        ``model``, ``label``, ``n_samples``, our ``<metric>_mean/_std/_n`` and
        ``paper_<metric>_mean/_std``, all in percent; then, with ``intervals``,
        ``n_patients``, ``ci_degenerate`` and ``<metric>_ci_low/_ci_high/_n_patients``;
        with ``comparisons`` also ``reference``, ``dice_difference``,
        ``dice_difference_ci_low/_ci_high`` and ``dice_difference_p`` (NaN on the
        reference's own row).
    """
    table = summary.copy()
    statistics_columns = []
    if intervals is not None:
        table = table.merge(intervals, on="model", how="left", validate="one_to_one")
        statistics_columns += [column for column in intervals.columns if column != "model"]
    if comparisons is not None:
        if reference is None:
            raise ValueError("the comparisons need the name of their reference model")
        columns = {
            "mean_difference": "dice_difference",
            "ci_low": "dice_difference_ci_low",
            "ci_high": "dice_difference_ci_high",
            "p_value": "dice_difference_p",
        }
        renamed = comparisons[["model", *columns]].rename(columns=columns)
        table = table.merge(renamed, on="model", how="left", validate="one_to_one")
        table["reference"] = reference  # also when it is the only model evaluated
        statistics_columns += ["reference", *columns.values()]
    paper_rows = {} if paper is None else {row.model: row for row in paper.itertuples()}
    labels = []
    for model in table["model"]:
        row = paper_rows.get(model)
        labels.append(row.label if row is not None else model_label(model))
    table.insert(1, "label", labels)
    for metric in METRICS:
        for stat in ("mean", "std"):
            column = f"{metric}_{stat}"
            table[f"paper_{column}"] = [
                float(getattr(paper_rows[model], column)) if model in paper_rows else math.nan
                for model in table["model"]
            ]
    # The statistics come last: the columns the table has always had keep their places.
    return table[[c for c in table.columns if c not in statistics_columns] + statistics_columns]


def table_with_statistics(
    per_sample: pd.DataFrame,
    patient_of: Mapping[str, str],
    settings: EvaluationSettings,
    paper_table: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The results table of per-sample metrics, with the patient bootstrap statistics.

    Shared by the test-split table and the cross-validated one
    (:mod:`ramanseg.cross_validation`), so both have the same intervals and comparisons.

    Args:
        per_sample: the output of :func:`evaluate_models`.
        patient_of: each sample's patient (the bootstrap's clusters).
        settings: the evaluation settings (resamples, level, seed, reference model).
        paper_table: the paper's numbers (:func:`read_paper_results`), or ``None``.

    Returns:
        ``(table, comparisons)``: the results table
        (:func:`ramanseg.evaluation_report.results_table`) and each model's Dice against the
        reference (:func:`ramanseg.statistics.paired_comparisons`, with a ``label`` column).
    """
    bootstrap = {
        "resamples": settings.resamples,
        "seed": settings.seed,
        "level": settings.confidence_level,
    }
    intervals = statistics.metric_intervals(per_sample, patient_of, METRICS, **bootstrap)
    comparisons = statistics.paired_comparisons(
        per_sample, patient_of, settings.reference_model, "dice", **bootstrap
    )
    table = results_table(
        summarise(per_sample), paper_table, intervals, comparisons, settings.reference_model
    )
    comparisons.insert(1, "label", [model_label(model) for model in comparisons["model"]])
    return table, comparisons


def _pm(mean: float, std: float, n: int | None = None, total: int | None = None) -> str:
    if not math.isfinite(mean):
        return "n/a"
    text = f"{mean:.1f} ± {std:.1f}"
    if n is not None and total is not None and n != total:
        text += f" (n={n})"
    return text


def _interval_text(low: float, high: float, n_patients: int) -> str:
    if n_patients == 1:
        return DEGENERATE_TEXT
    if n_patients == 0 or not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return f"[{low:.1f}, {high:.1f}]"


def significance_mark(p_value: float, level: float) -> str:
    """``*`` when the Wilcoxon p-value is below ``1 - level``, ``ns`` when not, else n/a."""
    if not math.isfinite(p_value):
        return "n/a"
    return "*" if p_value < 1.0 - level else "ns"


def _difference_text(row: dict, level: float) -> str:
    if row["model"] == row["reference"]:
        return "reference"
    difference = row["dice_difference"]
    if not math.isfinite(difference):
        return "n/a"
    interval = _interval_text(
        row["dice_difference_ci_low"], row["dice_difference_ci_high"], row["n_patients"]
    )
    interval = f"({interval})" if row["ci_degenerate"] else interval
    rounded = round(difference, 1) + 0.0  # no "-0.0"
    return f"{rounded:+.1f} {interval} {significance_mark(row['dice_difference_p'], level)}"


def _percent(level: float) -> str:
    return f"{100 * level:g} %"


def markdown_results(
    table: pd.DataFrame,
    pixels: str,
    level: float = 0.95,
    resamples: int | None = None,
    seed: int | None = None,
    population: str = "test",
    with_paper: bool = True,
    comparisons_file: str = "results_comparisons.csv",
) -> str:
    """The results table as Markdown: ours and the paper's numbers side by side.

    Each metric has an "ours" and a "paper" column ("mean ± std", percent); where a metric
    is undefined on some samples, its count is given as ``(n=...)``. When the table has
    the intervals (:func:`ramanseg.statistics.metric_intervals`), each metric also has its
    interval beside ours and the table the number of patients; when it has the paired
    comparisons, a last column gives the Dice difference from the reference model with its
    interval and the Wilcoxon mark.

    Args:
        table: the output of :func:`ramanseg.evaluate.results_table`.
        pixels: ``evaluate.pixels``, named in the note.
        level: the intervals' confidence level.
        resamples: the bootstrap replicates, named in the note.
        seed: the bootstrap seed, named in the note.
        population: which samples the table is over (``test``; ``held-out`` for the
            cross-validated table), named in the notes.
        with_paper: give the paper's columns (the paper has no cross-validated table).
        comparisons_file: where the notes say the p-values are.
    """
    with_intervals = "n_patients" in table.columns
    with_comparison = "reference" in table.columns
    ci = f"{_percent(level)} CI"
    header = ["Model", "n"] + (["patients"] if with_intervals else [])
    for metric in METRICS:
        header.append(f"{METRIC_LABELS[metric]} (ours)")
        if with_intervals:
            header.append(f"{METRIC_LABELS[metric]} {ci}")
        if with_paper:
            header.append(f"{METRIC_LABELS[metric]} (paper)")
    reference_label = None
    if with_comparison:
        reference = table["reference"].iloc[0]
        reference_label = table.loc[table["model"] == reference, "label"].iloc[0]
        header.append(f"Dice vs {reference_label}: difference [{ci}], Wilcoxon")
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for row in table.to_dict("records"):
        cells = [str(row["label"]), str(row["n_samples"])]
        if with_intervals:
            cells.append(str(row["n_patients"]))
        for metric in METRICS:
            cells.append(
                _pm(
                    row[f"{metric}_mean"],
                    row[f"{metric}_std"],
                    row[f"{metric}_n"],
                    row["n_samples"],
                )
            )
            if with_intervals:
                n_patients = row.get(f"{metric}_n_patients", row["n_patients"])
                cells.append(
                    _interval_text(row[f"{metric}_ci_low"], row[f"{metric}_ci_high"], n_patients)
                )
            if with_paper:
                cells.append(_pm(row[f"paper_{metric}_mean"], row[f"paper_{metric}_std"]))
        if with_comparison:
            cells.append(_difference_text(row, level))
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        f"Mean ± standard deviation over the {population} samples, in percent; pixels "
        f"counted: {pixels}."
        + (" Paper: the RamanSeg paper's results table." if with_paper else "")
    ]
    if with_intervals:
        n_patients = int(table["n_patients"].max())
        how = ", ".join(
            part
            for part in (
                f"{resamples} resamples" if resamples else "",
                f"seed {seed}" if seed is not None else "",
            )
            if part
        )
        notes.append(
            f"{ci}: percentile interval of a bootstrap over the "
            f"{_count(n_patients, f'{population} patient')} "
            f"(patients drawn with replacement, each with all its {population} samples"
            + (f"; {how}" if how else "")
            + f"). With one patient no interval can be given ({DEGENERATE_TEXT}); with few "
            f"patients the interval is rough."
        )
    if with_comparison:
        n = int(table["n_samples"].max())
        alpha = 1.0 - level
        notes.append(
            f"Dice vs {reference_label}: mean per-sample difference in percentage points "
            f"with its paired patient bootstrap {ci}; * Wilcoxon signed-rank p < {alpha:g} "
            f"on the per-sample Dice, ns not significant (p-values in "
            f"{comparisons_file})."
            + (
                f" With {n} samples the smallest possible p is "
                f"{smallest_wilcoxon_p(n):.4g}, so no difference can reach p < {alpha:g}."
                if smallest_wilcoxon_p(n) >= alpha
                else ""
            )
        )
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


def _dice_error_bars(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Error bars of mean ± std cut at the Dice range [0, 100], as (2, N) lower / upper
    lengths: mean + std of a bounded score can pass 100, a Dice cannot."""
    mean, std = np.nan_to_num(mean), np.nan_to_num(std)
    return np.stack([np.minimum(std, mean), np.minimum(std, 100.0 - mean)]).clip(min=0.0)


def dice_figure(table: pd.DataFrame, pixels: str):
    """Bar plot of the mean Dice per model, ours beside the paper's, with std error bars."""
    figure = new_figure(max(5.0, 1.1 * len(table) + 1.5), 3.8)
    axis = figure.subplots()
    positions = np.arange(len(table))
    width = 0.38
    ours = table["dice_mean"].to_numpy(dtype=float)
    paper = table["paper_dice_mean"].to_numpy(dtype=float)
    axis.bar(
        positions - width / 2,
        np.nan_to_num(ours),
        width,
        yerr=_dice_error_bars(ours, table["dice_std"].to_numpy(dtype=float)),
        capsize=3,
        label="this run",
        color="#1f77b4",
    )
    has_paper = np.isfinite(paper)
    axis.bar(
        positions[has_paper] + width / 2,
        paper[has_paper],
        width,
        yerr=_dice_error_bars(
            paper[has_paper], table["paper_dice_std"].to_numpy(dtype=float)[has_paper]
        ),
        capsize=3,
        label="paper",
        color="#ff7f0e",
    )
    for offset, values in ((-width / 2, ours), (width / 2, paper)):
        for x, value in zip(positions + offset, values, strict=True):
            if math.isfinite(value) and value > 0:
                axis.text(
                    x,
                    1.5,
                    f"{value:.1f}",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="white",
                    rotation=90,
                )
    axis.set_xticks(positions)
    axis.set_xticklabels(table["label"], rotation=20, ha="right", fontsize=8)
    axis.set_ylabel("Dice of the tumour class (%), mean ± std")
    axis.set_ylim(0, 125)
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend(fontsize=8, loc="upper right", ncols=2)
    n = int(table["n_samples"].max()) if len(table) else 0
    axis.set_title(f"Test-set Dice, {n} samples, pixels: {pixels}", fontsize=10)
    return figure


#: Colours of the patients in the paired figure (matplotlib's tab10, then repeated).
PATIENT_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


def lines_across_models(
    axis: Any,
    values: pd.DataFrame,
    line_colours: Sequence[str],
    labels: Sequence[str],
    legend: Sequence[tuple[Any, str]],
    mean_label: str = "mean",
    legend_after: Sequence[tuple[Any, str]] = (),
) -> np.ndarray:
    """Draw paired values across the models: one line per row of ``values``, its column
    mean as a black bar, the models on the x axis and a Dice axis from 0 to 105.

    Args:
        axis: the Matplotlib axes.
        values: one row per line (a sample, a seed), one column per model, in order.
        line_colours: the colour of each row's line.
        labels: the x tick label of each model.
        legend: the legend's entries before the mean's, as (handle, name).
        mean_label: the mean bar's name in the legend.
        legend_after: entries after the mean's (marks the caller draws itself).

    Returns:
        The models' x positions.
    """
    from matplotlib.lines import Line2D

    positions = np.arange(values.shape[1])
    for (_, row), colour in zip(values.iterrows(), line_colours, strict=True):
        axis.plot(positions, row.to_numpy(dtype=float), marker="o", markersize=4,
                  linewidth=1.0, alpha=0.8, color=colour)  # fmt: skip
    axis.scatter(positions, values.mean(axis=0).to_numpy(dtype=float), marker="_", s=900,
                 linewidths=2.5, color="black", zorder=3)  # fmt: skip
    mean = Line2D([], [], color="black", marker="_", markersize=14, linewidth=0)
    handles, names = zip(*[*legend, (mean, mean_label), *legend_after], strict=True)
    axis.legend(handles, names, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5),
                frameon=False)  # fmt: skip
    axis.set_xticks(positions)
    axis.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    axis.set_xlim(-0.4, len(positions) - 0.6)
    axis.set_ylim(0, 105)
    axis.grid(True, axis="y", alpha=0.3)
    return positions


def legend_line(colour: str) -> Any:
    """A legend handle for a line of :func:`lines_across_models`."""
    from matplotlib.lines import Line2D

    return Line2D([], [], color=colour, marker="o", markersize=4)


def paired_figure(per_sample: pd.DataFrame, table: pd.DataFrame, reference: str) -> Figure:
    """Every test sample's Dice across the models: one line per sample, one colour per patient.

    Args:
        per_sample: the per-sample metrics with their ``patient`` column.
        table: the results table (model order and labels).
        reference: the reference model (marked on its axis label).
    """
    models = list(table["model"])
    labels = [
        f"{label}\n(reference)" if model == reference else label
        for model, label in zip(models, table["label"], strict=True)
    ]
    figure = new_figure(max(5.5, 1.0 * len(models) + 2.5), 4.2)
    axis = figure.subplots()
    dice = per_sample.pivot(index="sample", columns="model", values="dice")[models] * 100.0
    patient_of = per_sample.drop_duplicates("sample").set_index("sample")["patient"]
    patients = sorted(set(patient_of))
    colour = {p: PATIENT_COLOURS[i % len(PATIENT_COLOURS)] for i, p in enumerate(patients)}
    lines_across_models(
        axis,
        dice,
        [colour[patient_of[sample]] for sample in dice.index],
        labels,
        [(legend_line(colour[p]), f"patient {p}") for p in patients],
    )
    axis.set_ylabel("Dice of the tumour class (%)")
    axis.set_title(
        f"Per-sample test Dice, {_count(len(dice), 'sample')} of "
        f"{_count(len(patients), 'patient')}; each line joins one sample",
        fontsize=10,
    )
    return figure


def forest_figure(table: pd.DataFrame, level: float = 0.95) -> Figure:
    """Forest plot: each model's mean Dice and its difference from the reference, with CIs.

    Left: the mean Dice with its patient bootstrap interval. Right: the mean paired
    difference from the reference model with its interval, a line at 0 and the Wilcoxon
    p-value. Without intervals (one test patient) the means are hollow points and the title
    says why.

    Args:
        table: the results table with intervals and comparisons.
        level: the intervals' confidence level.
    """
    rows = table.to_dict("records")
    n = len(rows)
    figure = new_figure(9.0, 0.45 * n + 1.6)
    left, right = figure.subplots(1, 2, sharey=True, width_ratios=[1.0, 1.15])
    y = np.arange(n)[::-1]
    ci = f"{_percent(level)} CI"
    for position, row in zip(y, rows, strict=True):
        pairs = [(left, row["dice_mean"], row["dice_ci_low"], row["dice_ci_high"], "#1f77b4")]
        if row["model"] != row["reference"]:
            pairs.append(
                (
                    right,
                    row["dice_difference"],
                    row["dice_difference_ci_low"],
                    row["dice_difference_ci_high"],
                    "#d62728",
                )
            )
        for axis, value, low, high, colour in pairs:
            if not math.isfinite(value):
                continue
            if row["ci_degenerate"] or not (math.isfinite(low) and math.isfinite(high)):
                # No interval (said in the title): the mean alone, hollow.
                axis.plot(value, position, "o", markerfacecolor="white", color=colour)
            else:
                axis.errorbar(
                    value,
                    position,
                    xerr=[[value - low], [high - value]],
                    fmt="o",
                    color=colour,
                    capsize=3,
                )
        if row["model"] == row["reference"]:
            right.annotate("reference", (0.0, position), xytext=(6, -3),
                           textcoords="offset points", fontsize=8, style="italic")  # fmt: skip
        elif math.isfinite(row["dice_difference_p"]):
            p = row["dice_difference_p"]
            right.annotate(
                f"p = {p:.3g} {significance_mark(p, level)}",
                (1.0, position),
                xycoords=("axes fraction", "data"),
                xytext=(4, -3),
                textcoords="offset points",
                fontsize=8,
            )
    right.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
    left.set_yticks(y)
    left.set_yticklabels([row["label"] for row in rows], fontsize=8)
    left.set_ylim(-0.7, n - 0.3)
    left.set_xlabel(f"mean Dice (%), {ci}", fontsize=9)
    reference_label = next((r["label"] for r in rows if r["model"] == r["reference"]), "?")
    right.set_xlabel(f"Dice difference from {reference_label} (points), {ci}", fontsize=9)
    for axis in (left, right):
        axis.grid(True, axis="x", alpha=0.3)
    n_patients = int(table["n_patients"].max())
    n_samples = int(table["n_samples"].max())
    if n_patients < 2:
        title = (
            f"One test patient ({_count(n_samples, 'sample')}): no confidence interval can be "
            "given,\nhollow points are the means alone; right: Wilcoxon p on the per-sample Dice"
        )
    else:
        title = (
            f"Bootstrap over {_count(n_patients, 'test patient')} "
            f"({_count(n_samples, 'sample')}); right: paired, Wilcoxon p on the per-sample Dice"
        )
    figure.suptitle(title, fontsize=10)
    return figure


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
