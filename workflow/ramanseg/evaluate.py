"""Evaluation of the test-set predictions: the paper's results table (section 4).

For every model and test sample the predicted tumour mask is compared with the ground truth
(``results/preprocessed/<sample>/mask.tif``) pixel by pixel:

* **Dice** of the foreground: ``2 TP / (2 TP + FP + FN)``;
* **sensitivity** (recall of tumour pixels): ``TP / (TP + FN)``;
* **specificity** (recall of non-tumour pixels): ``TN / (TN + FP)``.

Which pixels are counted (``evaluate.pixels``; all three metrics use the same set):

* ``tissue`` (the default): the tissue mask (``foreground.tif``) together with every
  annotated pixel (``classes.tif`` > 0; annotations are drawn on tissue, so a tumour pixel is
  never dropped because the H&E tissue detection missed it). Glass is left out: it is
  trivially negative, and its share of an image (which depends only on how much slide was
  scanned) would otherwise inflate the specificity, and glass false positives would lower
  Dice for a reason no pathologist cares about.
* ``annotated``: annotated pixels only (``classes.tif`` > 0): every pixel has a known label,
  but false positives in unannotated tissue go unnoticed.
* ``all``: every pixel of the image, the whole-image per-pixel count (what "per-pixel" means
  in the paper if nothing is excluded); specificity then includes the glass.

Conventions for empty sets (inside the counted pixels):

* Dice is 1 when the prediction and the ground truth are both empty (they agree perfectly)
  and 0 when exactly one of them is empty (the formula gives 0).
* Sensitivity is undefined (NaN) when the ground truth has no tumour pixel, specificity is
  undefined (NaN) when it has no non-tumour pixel. Undefined values are left out of the
  means and standard deviations; the table gives the number of samples each statistic is
  over (``*_n``).

Summary statistics are the mean and the population standard deviation (``ddof = 0``, as
``numpy.std``) over the test samples, in percent as printed in the paper; the paper's own
numbers (``resources/paper_results.csv``) are put beside ours.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ramanseg.catalog import model_label, producing_rule
from ramanseg.config import ConfigError
from ramanseg.errors import InputError
from ramanseg.figures import figure_bytes, new_figure, table_bytes
from ramanseg.fileio import prefixed, with_suffix, write_files
from ramanseg.predictions import MASK_SUFFIX, masks_by_model, read_predicted_mask
from ramanseg.preprocessed import (
    PreprocessedSource,
    files_by_sample,
    files_of,
    read_foreground,
    read_label,
    read_mask,
)

log = logging.getLogger(__name__)

PIXEL_SETS = ("tissue", "annotated", "all")
DEFAULT_PIXELS = "tissue"
METRICS = ("dice", "sensitivity", "specificity")
METRIC_LABELS = {"dice": "Dice", "sensitivity": "Sensitivity", "specificity": "Specificity"}
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


@dataclass(frozen=True)
class Confusion:
    """Pixel counts of a binary comparison."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def pixels(self) -> int:
        """All pixels counted."""
        return self.tp + self.fp + self.fn + self.tn


def confusion(
    prediction: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None
) -> Confusion:
    """The confusion matrix of a predicted and a true mask, counted inside ``region``.

    Args:
        prediction: 2-D mask, nonzero = tumour.
        truth: the ground truth, same shape, nonzero = tumour.
        region: the pixels to count (nonzero), same shape; ``None`` counts every pixel.

    Returns:
        The counts.

    Raises:
        ValueError: if the shapes differ.
    """
    prediction = np.asarray(prediction) != 0
    truth = np.asarray(truth) != 0
    if prediction.shape != truth.shape:
        raise ValueError(
            f"prediction shape {prediction.shape} differs from ground truth {truth.shape}"
        )
    if region is None:
        region = np.ones(truth.shape, dtype=bool)
    else:
        region = np.asarray(region) != 0
        if region.shape != truth.shape:
            raise ValueError(f"region shape {region.shape} differs from ground truth {truth.shape}")
    tp = int(np.count_nonzero(prediction & truth & region))
    fp = int(np.count_nonzero(prediction & ~truth & region))
    fn = int(np.count_nonzero(~prediction & truth & region))
    tn = int(np.count_nonzero(~prediction & ~truth & region))
    return Confusion(tp, fp, fn, tn)


def metrics(counts: Confusion) -> dict[str, float]:
    """Dice, sensitivity and specificity of a confusion matrix (fractions, not percent).

    See the module docstring for the conventions: Dice 1 when prediction and truth are both
    empty; sensitivity NaN without true tumour pixels; specificity NaN without true
    non-tumour pixels.
    """
    positives = counts.tp + counts.fn
    negatives = counts.tn + counts.fp
    denominator = 2 * counts.tp + counts.fp + counts.fn
    return {
        "dice": 1.0 if denominator == 0 else 2.0 * counts.tp / denominator,
        "sensitivity": counts.tp / positives if positives else math.nan,
        "specificity": counts.tn / negatives if negatives else math.nan,
    }


def evaluation_region(
    pixels: str, shape: tuple[int, int], foreground: np.ndarray | None, classes: np.ndarray | None
) -> np.ndarray:
    """The pixels counted for ``evaluate.pixels`` (see the module docstring).

    Args:
        pixels: ``tissue``, ``annotated`` or ``all``.
        shape: the image shape.
        foreground: the tissue mask (needed for ``tissue``).
        classes: the class map (needed for ``tissue`` and ``annotated``).

    Returns:
        bool array of ``shape``.

    Raises:
        ValueError: an unknown ``pixels`` or a missing / mis-shaped mask it needs.
    """
    if pixels not in PIXEL_SETS:
        raise ValueError(f"evaluate.pixels must be one of {PIXEL_SETS}, got {pixels!r}")
    if pixels == "all":
        return np.ones(shape, dtype=bool)
    needed = (
        {"classes": classes}
        if pixels == "annotated"
        else {"foreground": foreground, "classes": classes}
    )
    for name, array in needed.items():
        if array is None:
            raise ValueError(f"evaluate.pixels = {pixels!r} needs the {name} map")
        if array.shape != shape:
            raise ValueError(f"the {name} map has shape {array.shape}, the image {shape}")
    region = classes != 0
    if pixels == "tissue":
        region = region | (foreground != 0)
    return region


def read_ground_truth(
    source: PreprocessedSource, sample: str, pixels: str = DEFAULT_PIXELS
) -> tuple[np.ndarray, np.ndarray]:
    """The ground-truth mask of a sample and the region evaluated on it.

    Args:
        source: the samples' preprocessed files by sample id (what a rule passes: the mask,
            and the class map and foreground where ``pixels`` needs them), or the folder
            of per-sample folders.
        sample: the sample id.
        pixels: ``evaluate.pixels``.

    Returns:
        ``(truth, region)``, both bool (Y, X).

    Raises:
        InputError: a missing, unreadable or mis-shaped file.
    """
    files = files_of(source, sample)
    truth = read_mask(files.path("mask", "--truth"), sample)
    classes = foreground = None
    if pixels in ("tissue", "annotated"):
        classes = read_label(
            files.path("classes", "--classes"), sample, "class map", truth.shape, max_label=255
        )
    if pixels == "tissue":
        foreground = read_foreground(files.path("foreground", "--foregrounds"), sample, truth.shape)
    region = evaluation_region(pixels, truth.shape, foreground, classes)
    return truth != 0, region


def _prediction_fix(model: str) -> str:
    return (
        f"run the rule {producing_rule(model)} (it writes results/predictions/{model}/), "
        f"or leave {model!r} out of --models"
    )


def evaluate_models(
    predictions: Mapping[str, Mapping[str, Path]],
    models: Sequence[str],
    truth: PreprocessedSource,
    samples: Sequence[str],
    pixels: str = DEFAULT_PIXELS,
) -> pd.DataFrame:
    """Per-sample metrics of every model on the test samples.

    Every prediction is checked to exist before anything is computed, so a missing one is
    reported at once, naming the model and its rule.

    Args:
        predictions: each model's predicted-mask files by sample
            (:func:`ramanseg.predictions.masks_by_model`).
        models: the models to evaluate, in table order.
        truth: the test samples' preprocessed files (mask, class map, foreground) by
            sample, or the folder of per-sample folders.
        samples: the test sample ids.
        pixels: ``evaluate.pixels``.

    Returns:
        One row per (model, sample): ``model``, ``sample``, ``tp``, ``fp``, ``fn``, ``tn``,
        ``pixels``, ``dice``, ``sensitivity``, ``specificity`` (fractions; NaN where
        undefined).

    Raises:
        ValueError: no models or samples, a repeated model, an unknown ``pixels``.
        InputError: a missing or unreadable prediction or ground truth, or mismatched shapes.
    """
    if not models:
        raise ValueError("no models to evaluate")
    if not samples:
        raise ValueError("no test samples to evaluate (the split's `test` list is empty)")
    if len(set(models)) != len(models):
        raise ValueError(f"a model is listed twice in {list(models)}")
    if pixels not in PIXEL_SETS:
        raise ValueError(f"evaluate.pixels must be one of {PIXEL_SETS}, got {pixels!r}")
    for model in models:  # fail fast, before any work
        for sample in samples:
            if sample not in predictions.get(model, {}):
                raise InputError(
                    f"model {model!r} has no prediction for this test sample",
                    sample=sample,
                    path=Path("results") / "predictions" / model / f"{sample}{MASK_SUFFIX}",
                    fix=_prediction_fix(model),
                )
    truths = {sample: read_ground_truth(truth, sample, pixels) for sample in samples}
    rows = []
    for model in models:
        for sample in samples:
            truth_mask, region = truths[sample]
            path = predictions[model][sample]
            predicted = read_predicted_mask(path, sample, _prediction_fix(model))
            if predicted.shape != truth_mask.shape:
                raise InputError(
                    f"the {model} prediction has shape {predicted.shape}, the ground truth "
                    f"{truth_mask.shape}",
                    sample=sample,
                    path=path,
                    fix=f"rerun the rule {producing_rule(model)}",
                )
            counts = confusion(predicted, truth_mask, region)
            rows.append(
                {
                    "model": model,
                    "sample": sample,
                    "tp": counts.tp,
                    "fp": counts.fp,
                    "fn": counts.fn,
                    "tn": counts.tn,
                    "pixels": counts.pixels,
                    **metrics(counts),
                }
            )
    return pd.DataFrame(rows)


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


def results_table(summary: pd.DataFrame, paper: pd.DataFrame | None) -> pd.DataFrame:
    """Our summary with the paper's numbers beside it (``paper_<metric>_mean`` / ``_std``).

    Rows follow ``summary``; a model the paper does not report has NaN paper columns.

    Args:
        summary: the output of :func:`summarise`.
        paper: the output of :func:`read_paper_results`, or ``None``.

    Returns:
        ``model``, ``label``, ``n_samples``, our ``<metric>_mean/_std/_n`` and
        ``paper_<metric>_mean/_std``, all in percent.
    """
    table = summary.copy()
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
    return table


def _pm(mean: float, std: float, n: int | None = None, total: int | None = None) -> str:
    if not math.isfinite(mean):
        return "n/a"
    text = f"{mean:.1f} ± {std:.1f}"
    if n is not None and total is not None and n != total:
        text += f" (n={n})"
    return text


def markdown_results(table: pd.DataFrame, pixels: str) -> str:
    """The results table as Markdown: ours and the paper's numbers side by side.

    Each metric has an "ours" and a "paper" column ("mean ± std", percent); where a metric
    is undefined on some samples, its count is given as ``(n=...)``.
    """
    header = ["Model", "n"]
    for metric in METRICS:
        header += [f"{METRIC_LABELS[metric]} (ours)", f"{METRIC_LABELS[metric]} (paper)"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---:"] + ["---:"] * (2 * len(METRICS))) + "|",
    ]
    for row in table.to_dict("records"):
        cells = [str(row["label"]), str(row["n_samples"])]
        for metric in METRICS:
            cells.append(
                _pm(
                    row[f"{metric}_mean"],
                    row[f"{metric}_std"],
                    row[f"{metric}_n"],
                    row["n_samples"],
                )
            )
            cells.append(_pm(row[f"paper_{metric}_mean"], row[f"paper_{metric}_std"]))
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        f"\nMean ± standard deviation over the test samples, in percent; pixels counted: "
        f"{pixels}. Paper: the RamanSeg paper's results table.\n"
    )
    return "\n".join(lines) + "\n" + note


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
        yerr=np.nan_to_num(table["dice_std"].to_numpy(dtype=float)),
        capsize=3,
        label="this run",
        color="#1f77b4",
    )
    has_paper = np.isfinite(paper)
    axis.bar(
        positions[has_paper] + width / 2,
        paper[has_paper],
        width,
        yerr=table["paper_dice_std"].to_numpy(dtype=float)[has_paper],
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


def evaluation_settings(config: Mapping[str, Any]) -> str:
    """``evaluate.pixels`` from the configuration (default ``tissue``), validated.

    Raises:
        ConfigError: an unknown value.
    """
    pixels = (config.get("evaluate") or {}).get("pixels", DEFAULT_PIXELS)
    if pixels not in PIXEL_SETS:
        raise ConfigError(f"evaluate.pixels must be one of {PIXEL_SETS}, got {pixels!r}")
    return pixels


def read_test_samples(split_path: str | Path) -> list[str]:
    """The ``test`` list of ``split.json`` (read by :func:`ramanseg.split.read_split`)."""
    from ramanseg.split import read_split

    return list(read_split(split_path)["test"])


def run_evaluate(
    predictions: Mapping[str, Mapping[str, Path]],
    models: Sequence[str],
    truth: PreprocessedSource,
    split: str | Path,
    out_prefix: str | Path,
    paper: str | Path | None = None,
    pixels: str = DEFAULT_PIXELS,
) -> pd.DataFrame:
    """Evaluate the models and write the per-sample metrics, the results table and the plot.

    Writes, all after everything is computed:

    * ``<prefix>_per_sample.csv`` / ``.parquet``: one row per (model, sample) with the
      confusion counts and the metrics (fractions);
    * ``<prefix>.csv`` / ``.parquet`` / ``.md``: the results table, percent, ours and the
      paper's side by side;
    * ``<prefix>_dice.png`` / ``.pdf``: ours vs the paper's Dice per model.

    Args:
        predictions: each model's predicted-mask files by sample.
        models: the models to evaluate, in table order.
        truth: the test samples' preprocessed files by sample (or their parent folder).
        split: ``results/split/split.json``.
        out_prefix: e.g. ``results/evaluation/results``.
        paper: ``resources/paper_results.csv`` (``None``: no paper columns' values).
        pixels: ``evaluate.pixels``.

    Returns:
        The results table.
    """
    samples = read_test_samples(split)
    paper_table = read_paper_results(paper) if paper is not None else None
    per_sample = evaluate_models(predictions, models, truth, samples, pixels)
    table = results_table(summarise(per_sample), paper_table)
    markdown = markdown_results(table, pixels)
    files = {
        **prefixed(with_suffix(out_prefix, "_per_sample"), table_bytes(per_sample)),
        **prefixed(out_prefix, table_bytes(table, markdown, float_format="%.4f")),
        **prefixed(with_suffix(out_prefix, "_dice"), figure_bytes(dice_figure(table, pixels))),
    }
    write_files(files)
    log.info("results on %d test samples:\n%s", len(samples), markdown)
    return table


def add_commands(subparsers: Any) -> None:
    """Add ``evaluate`` to the ``ramanseg`` command line."""
    from ramanseg.cli import add_settings_arguments, settings_from_args

    parser = subparsers.add_parser(
        "evaluate",
        help="per-sample Dice, sensitivity, specificity and the results table (section 4)",
        description="Compare every model's test-set predictions with the ground truth and "
        "write the per-sample metrics, the results table beside the paper's numbers and a "
        "Dice bar plot.",
    )
    parser.add_argument(
        "--predictions",
        required=True,
        nargs="+",
        metavar="FILE",
        help="every model's predicted masks (results/predictions/<model>/<sample>.mask.tif)",
    )
    parser.add_argument("--models", nargs="+", required=True, help="models, in table order")
    for option, name in (("--truth", "mask.tif"), ("--classes", "classes.tif"),
                         ("--foregrounds", "foreground.tif")):  # fmt: skip
        parser.add_argument(
            option,
            nargs="+",
            metavar="FILE",
            required=option == "--truth",
            help=f"the test samples' preprocessed {name}",
        )
    parser.add_argument("--split", required=True, type=Path, help="results/split/split.json")
    parser.add_argument("--paper", type=Path, help="resources/paper_results.csv")
    parser.add_argument(
        "--out-prefix",
        required=True,
        type=Path,
        help="output path without extension (writes .csv .parquet .md, _per_sample.csv "
        "_per_sample.parquet, _dice.png _dice.pdf)",
    )
    add_settings_arguments(parser)

    def run(args: Any) -> int:
        pixels = evaluation_settings(settings_from_args(args))
        truth = files_by_sample(
            masks=args.truth, classes=args.classes, foregrounds=args.foregrounds
        )
        run_evaluate(
            masks_by_model(args.predictions),
            args.models,
            truth,
            args.split,
            args.out_prefix,
            args.paper,
            pixels,
        )
        return 0

    parser.set_defaults(func=run)
