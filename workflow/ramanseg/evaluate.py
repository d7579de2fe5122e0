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

Beside them (:mod:`ramanseg.statistics`): each mean's confidence interval from a bootstrap
that resamples the test samples' **patients** (taken from the sample sheet), and each
model's Dice against a reference model (``evaluate.reference_model``): the mean paired
difference with its paired patient bootstrap interval and the Wilcoxon signed-rank test on
the per-sample Dice (``<prefix>_comparisons.csv``). The Markdown and the figures are drawn
with the table by :mod:`ramanseg.evaluation_report`.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ramanseg import statistics
from ramanseg.catalog import producing_rule
from ramanseg.config import ConfigError
from ramanseg.errors import InputError
from ramanseg.figures import figure_bytes, table_bytes
from ramanseg.fileio import prefixed, with_suffix, write_files
from ramanseg.predictions import MASK_SUFFIX, masks_by_model, read_predicted_mask
from ramanseg.preprocessed import (
    PreprocessedFiles,
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
DEFAULT_REFERENCE = "nnunet"
METRICS = ("dice", "sensitivity", "specificity")


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


@dataclass(frozen=True)
class EvaluationSettings:
    """The evaluation's settings, from the validated configuration.

    Attributes:
        pixels: ``evaluate.pixels``: the pixels counted (see the module docstring).
        resamples: ``evaluate.bootstrap_resamples``: bootstrap replicates per interval.
        reference_model: ``evaluate.reference_model``: the model the others are compared
            with.
        confidence_level: ``evaluate.confidence_level``: of every interval; ``1 - level``
            is also the significance level of the Wilcoxon mark.
        seed: the global ``seed``: the bootstrap's patient draws.
    """

    pixels: str = DEFAULT_PIXELS
    resamples: int = statistics.DEFAULT_RESAMPLES
    reference_model: str = DEFAULT_REFERENCE
    confidence_level: float = statistics.DEFAULT_LEVEL
    seed: int = 0


def evaluation_settings(config: Mapping[str, Any]) -> EvaluationSettings:
    """The ``evaluate`` settings and the ``seed`` of a validated configuration.

    Missing keys take the schema's defaults (a partial ``--settings`` has them filled in).

    Raises:
        ConfigError: an unknown ``evaluate.pixels``.
    """
    section = config.get("evaluate") or {}
    pixels = section.get("pixels", DEFAULT_PIXELS)
    if pixels not in PIXEL_SETS:
        raise ConfigError(f"evaluate.pixels must be one of {PIXEL_SETS}, got {pixels!r}")
    return EvaluationSettings(
        pixels=pixels,
        resamples=int(section.get("bootstrap_resamples", statistics.DEFAULT_RESAMPLES)),
        reference_model=str(section.get("reference_model", DEFAULT_REFERENCE)),
        confidence_level=float(section.get("confidence_level", statistics.DEFAULT_LEVEL)),
        seed=int(config.get("seed", 0)),
    )


def check_reference_model(reference: str, models: Sequence[str]) -> None:
    """Fail unless the reference model is one of the evaluated models.

    Raises:
        ConfigError: naming ``evaluate.reference_model`` and the models it may be.
    """
    if reference not in models:
        raise ConfigError(
            f"evaluate.reference_model is {reference!r}, which is not an evaluated model; "
            f"set it to one of {', '.join(models)}"
        )


def read_patients(
    sheet: str | Path, samples: Sequence[str], split: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """Each test sample's patient, from the sample sheet (the bootstrap's clusters).

    Args:
        sheet: the sample sheet (read by :func:`ramanseg.samplesheet.read_samplesheet`,
            without checking the data files, which the evaluation does not open).
        samples: the test samples.
        split: the split (:func:`ramanseg.split.read_split`); when it records the test
            patients, they must be the sheet's patients of the test samples.

    Returns:
        ``{sample: patient}`` for every test sample.

    Raises:
        InputError: a test sample missing from the sheet, or a sheet whose patients of the
            test samples differ from the split's (the sheet changed after the split).
    """
    from ramanseg.samplesheet import read_samplesheet

    table = read_samplesheet(sheet, check_files=False)
    rerun = (
        "evaluate with the sample sheet the split was made from, or rerun the split "
        "(`snakemake` does both when the sheet changed)"
    )
    missing = [sample for sample in samples if sample not in table.index]
    if missing:
        raise InputError(
            f"{len(missing)} evaluated sample(s) of the split are not in the sample sheet "
            f"({', '.join(missing)}), so their patients are unknown",
            sample=missing[0],
            path=sheet,
            fix=rerun,
        )
    patient_of = {sample: str(table.loc[sample, "patient_id"]) for sample in samples}
    recorded = ((split or {}).get("patients") or {}).get("test")
    if recorded is not None and sorted(set(patient_of.values())) != sorted(recorded):
        raise InputError(
            f"the sample sheet puts the test samples in patients "
            f"{sorted(set(patient_of.values()))}, the split file in {sorted(recorded)}",
            path=sheet,
            fix=rerun,
        )
    return patient_of


def run_evaluate(
    predictions: Mapping[str, Mapping[str, Path]],
    models: Sequence[str],
    truth: PreprocessedSource,
    split: str | Path,
    samplesheet: str | Path,
    out_prefix: str | Path,
    paper: str | Path | None = None,
    settings: EvaluationSettings | None = None,
    sections: Sequence[str | Path] = (),
) -> pd.DataFrame:
    """Evaluate the models and write the per-sample metrics, the results table and the plots.

    Writes, all after everything is computed:

    * ``<prefix>_per_sample.csv`` / ``.parquet``: one row per (model, sample) with the
      sample's patient, the confusion counts and the metrics (fractions);
    * ``<prefix>.csv`` / ``.parquet`` / ``.md``: the results table, percent, ours with
      patient bootstrap intervals and the paired comparison with the reference model,
      and the paper's side by side;
    * ``<prefix>_comparisons.csv`` / ``.parquet``: each model's Dice against the reference
      (:func:`ramanseg.statistics.paired_comparisons`);
    * ``<prefix>_dice.png`` / ``.pdf``: ours vs the paper's Dice per model;
    * ``<prefix>_paired.png`` / ``.pdf``: every sample's Dice across the models;
    * ``<prefix>_forest.png`` / ``.pdf``: the intervals of the means and the differences.

    Args:
        predictions: each model's predicted-mask files by sample.
        models: the models to evaluate, in table order.
        truth: the test samples' preprocessed files by sample (or their parent folder).
        split: ``results/split/split.json``.
        samplesheet: the sample sheet (each test sample's patient).
        out_prefix: e.g. ``results/evaluation/results``.
        paper: ``resources/paper_results.csv`` (``None``: no paper columns' values).
        settings: the evaluation settings (default: the schema's defaults).
        sections: Markdown files appended to ``<prefix>.md`` in this order (the
            cross-validated and repeated-seed tables).

    Returns:
        The results table.

    Raises:
        ConfigError: a reference model that is not among ``models``.
        InputError: missing or bad predictions, ground truth, split or sample sheet, or
            a missing section.
    """
    # The report module draws from this module's tables (and imports it).
    from ramanseg.evaluation_report import (
        dice_figure,
        forest_figure,
        markdown_results,
        paired_figure,
        read_paper_results,
        table_with_statistics,
    )
    from ramanseg.one_sided import one_sided_runs, with_one_sided_column, with_one_sided_note
    from ramanseg.split import read_split

    settings = settings or EvaluationSettings()
    check_reference_model(settings.reference_model, models)
    split_data = read_split(split)
    samples = list(split_data["test"])
    patient_of = read_patients(samplesheet, samples, split_data)
    paper_table = read_paper_results(paper) if paper is not None else None
    per_sample = evaluate_models(predictions, models, truth, samples, settings.pixels)
    per_sample.insert(2, "patient", [patient_of[sample] for sample in per_sample["sample"]])
    table, comparisons = table_with_statistics(per_sample, patient_of, settings, paper_table)
    flagged = one_sided_runs(per_sample)
    table = with_one_sided_column(table, flagged)
    markdown = markdown_results(
        table, settings.pixels, settings.confidence_level, settings.resamples, settings.seed
    )
    markdown = with_one_sided_note(markdown, flagged)
    for section in map(Path, sections):
        if not section.is_file():
            raise InputError(
                "a section of results.md does not exist",
                path=section,
                fix="run the rule that writes it (evaluate_cv, evaluate_seeds)",
            )
        markdown += "\n" + section.read_text(encoding="utf-8")
    files = {
        **prefixed(with_suffix(out_prefix, "_per_sample"), table_bytes(per_sample)),
        **prefixed(out_prefix, table_bytes(table, markdown, float_format="%.4f")),
        **prefixed(with_suffix(out_prefix, "_comparisons"), table_bytes(comparisons)),
        **prefixed(
            with_suffix(out_prefix, "_dice"), figure_bytes(dice_figure(table, settings.pixels))
        ),
        **prefixed(
            with_suffix(out_prefix, "_paired"),
            figure_bytes(paired_figure(per_sample, table, settings.reference_model)),
        ),
        **prefixed(
            with_suffix(out_prefix, "_forest"),
            figure_bytes(forest_figure(table, settings.confidence_level)),
        ),
    }
    write_files(files)
    log.info(
        "results on %d test samples of %d patients:\n%s",
        len(samples),
        len(set(patient_of.values())),
        markdown,
    )
    return table


def add_evaluation_arguments(
    parser: argparse.ArgumentParser, *, predictions_help: str, samples: str, writes: str
) -> None:
    """Add the options every evaluation command takes (``evaluate``, ``evaluate-cv``,
    ``evaluate-seeds``): ``--predictions``, ``--models``, the ground truth (``--truth``,
    ``--classes``, ``--foregrounds``), ``--split``, ``--out-prefix`` and the settings.

    Args:
        parser: the command's parser.
        predictions_help: what the ``--predictions`` files are.
        samples: whose ground truth it is, e.g. ``"test"`` (``"the test samples'
            preprocessed mask.tif"``).
        writes: the files ``--out-prefix`` names besides ``.csv .parquet .md``.
    """
    from ramanseg.cli import add_settings_arguments

    parser.add_argument(
        "--predictions", required=True, nargs="+", metavar="FILE", help=predictions_help
    )
    parser.add_argument("--models", nargs="+", required=True, help="models, in table order")
    for option, name in (("--truth", "mask.tif"), ("--classes", "classes.tif"),
                         ("--foregrounds", "foreground.tif")):  # fmt: skip
        parser.add_argument(
            option,
            nargs="+",
            metavar="FILE",
            required=option == "--truth",
            help=f"the {samples} samples' preprocessed {name}",
        )
    parser.add_argument("--split", required=True, type=Path, help="results/split/split.json")
    parser.add_argument(
        "--out-prefix",
        required=True,
        type=Path,
        help=f"output path without extension (writes .csv .parquet .md, {writes})",
    )
    add_settings_arguments(parser)


def settings_and_truth_from_args(
    args: argparse.Namespace,
) -> tuple[EvaluationSettings, dict[str, PreprocessedFiles]]:
    """The settings and the ground-truth files of :func:`add_evaluation_arguments`' options.

    Args:
        args: the parsed command line.

    Raises:
        ConfigError: bad evaluation settings.
        InputError: a ground-truth file of the wrong kind, or two of one kind for one
            sample.
    """
    from ramanseg.cli import settings_from_args

    settings = evaluation_settings(settings_from_args(args))
    truth = files_by_sample(masks=args.truth, classes=args.classes, foregrounds=args.foregrounds)
    return settings, truth


def add_commands(subparsers: Any) -> None:
    """Add ``evaluate`` to the ``ramanseg`` command line."""
    parser = subparsers.add_parser(
        "evaluate",
        help="per-sample Dice, sensitivity, specificity and the results table (section 4)",
        description="Compare every model's test-set predictions with the ground truth and "
        "write the per-sample metrics, the results table (with patient bootstrap confidence "
        "intervals and paired comparisons with a reference model) beside the paper's "
        "numbers, and its figures.",
    )
    add_evaluation_arguments(
        parser,
        predictions_help="every model's predicted masks "
        "(results/predictions/<model>/<sample>.mask.tif)",
        samples="test",
        writes="_per_sample, _comparisons (.csv .parquet), _dice, _paired, _forest (.png .pdf)",
    )
    parser.add_argument(
        "--samples",
        required=True,
        type=Path,
        metavar="SHEET",
        help="the sample sheet (each test sample's patient, for the patient bootstrap)",
    )
    parser.add_argument("--paper", type=Path, help="resources/paper_results.csv")
    parser.add_argument(
        "--sections",
        nargs="+",
        type=Path,
        default=(),
        metavar="MD",
        help="Markdown appended to <prefix>.md (results_cv.md, results_seeds.md)",
    )

    def run(args: Any) -> int:
        settings, truth = settings_and_truth_from_args(args)
        run_evaluate(
            masks_by_model(args.predictions),
            args.models,
            truth,
            args.split,
            args.samples,
            args.out_prefix,
            args.paper,
            settings,
            args.sections,
        )
        return 0

    parser.set_defaults(func=run)
