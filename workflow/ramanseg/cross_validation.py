"""Cross-validated evaluation: every training sample predicted by models that never saw it.

The results table (:mod:`ramanseg.evaluate`) rests on the few test samples. With
``cross_validation: true`` the workflow also trains every cross-validated model
once per fold of ``split.json`` (the folds nnU-Net trains on, grouped by patient) and
predicts the fold's own samples, which that training never saw:

* our PyTorch models and the per-pixel baselines train on the split of
  :func:`ramanseg.split.fold_split`: the fold's samples are held out, the next fold's
  pick the epoch (the models that choose one), the other folds' train;
* nnU-Net's folds are already this: its validation predictions of each fold
  (:mod:`ramanseg.nnunet.validation`).

Each training + validation sample is then held out by exactly one fold, so the table is
over all of them (27 samples of 8 patients at the paper's split instead of 5 of 2), with
the same statistics as the test-split table
(:func:`ramanseg.evaluation_report.table_with_statistics`: patient bootstrap intervals and
the paired comparison with ``evaluate.reference_model``).
The folds' models differ (each fold trains its own), so the table measures the training
recipe, not one trained model; that is what cross-validation estimates.

Prediction layout read here (written by the rules)::

    results/predictions/cv/fold<k>/<model>/<sample>.mask.tif

A prediction must come from the fold that held its sample out: a sample predicted by a
fold that trained on it would make the table optimistic, and is an error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ramanseg.catalog import model_label
from ramanseg.errors import InputError
from ramanseg.evaluate import (
    EvaluationSettings,
    add_evaluation_arguments,
    check_reference_model,
    evaluate_models,
    read_patients,
    settings_and_truth_from_args,
)
from ramanseg.figures import table_bytes
from ramanseg.fileio import prefixed, with_suffix, write_files
from ramanseg.predictions import MASK_SUFFIX, parse_prediction_path
from ramanseg.preprocessed import PreprocessedSource

log = logging.getLogger(__name__)

#: The folder of one fold's predictions and models, below ``results/predictions/cv``.
FOLD_PATTERN = re.compile(r"fold(\d+)")
#: The heading of the cross-validated section in results.md.
HEADING = "## Cross-validated evaluation"


def held_out_fold(split: Mapping[str, Any]) -> dict[str, int]:
    """The fold that holds out each sample: ``{sample: fold}``, in the folds' order.

    Raises:
        ValueError: fewer than 2 folds, or a sample held out by two folds.
    """
    folds = split.get("folds") or []
    if len(folds) < 2:
        raise ValueError(
            f"cross-validation needs at least 2 folds (`split.folds`), the split has {len(folds)}"
        )
    fold_of: dict[str, int] = {}
    for number, fold in enumerate(folds):
        for sample in fold["val"]:
            if sample in fold_of:
                raise ValueError(
                    f"sample {sample!r} is held out by folds {fold_of[sample]} and {number}"
                )
            fold_of[sample] = number
    return fold_of


def cv_predictions_by_model(
    paths: Sequence[str | Path], fold_of: Mapping[str, int]
) -> dict[str, dict[str, Path]]:
    """Group the folds' predicted masks by model and sample: ``{model: {sample: path}}``.

    Args:
        paths: ``.../fold<k>/<model>/<sample>.mask.tif`` files.
        fold_of: the fold holding out each sample (:func:`held_out_fold`).

    Raises:
        InputError: a file outside a ``fold<k>`` folder, a sample no fold holds out, a
            sample predicted by a fold other than its own, or predicted twice.
    """
    grouped: dict[str, dict[str, Path]] = {}
    for path in map(Path, paths):
        model, sample, kind = parse_prediction_path(path)
        match = FOLD_PATTERN.fullmatch(path.parent.parent.name)
        if kind != "mask" or match is None:
            raise InputError(
                f"expected a fold's predicted mask (.../fold<k>/<model>/<sample>{MASK_SUFFIX})",
                sample=sample,
                path=path,
                fix="pass the masks in results/predictions/cv/fold<k>/<model>/",
            )
        fold = int(match.group(1))
        if sample not in fold_of:
            raise InputError(
                "this sample is held out by no fold of the split (a test sample?)",
                sample=sample,
                path=path,
                fix="pass only the folds' predictions of their own held-out samples",
            )
        if fold != fold_of[sample]:
            raise InputError(
                f"fold {fold} trained on this sample, which fold {fold_of[sample]} holds out: "
                "its prediction is not cross-validated",
                sample=sample,
                path=path,
                fix=f"pass fold {fold_of[sample]}'s prediction of it",
            )
        if sample in grouped.get(model, {}):
            raise InputError(
                f"model {model!r} has two predictions of this sample",
                sample=sample,
                path=path,
                fix="pass each prediction once",
            )
        grouped.setdefault(model, {})[sample] = path
    return grouped


def fold_table(per_sample: pd.DataFrame) -> pd.DataFrame:
    """Each model's mean Dice per fold (percent): how much the folds' models differ.

    Args:
        per_sample: the cross-validated per-sample metrics (with ``fold``).

    Returns:
        One row per model (in first-appearance order): ``model``, ``label`` and
        ``dice_fold<k>`` per fold.
    """
    rows = []
    for model in dict.fromkeys(per_sample["model"]):
        group = per_sample[per_sample["model"] == model]
        row: dict[str, Any] = {"model": model, "label": model_label(model)}
        for fold in sorted(set(group["fold"])):
            row[f"dice_fold{fold}"] = 100.0 * float(group.loc[group["fold"] == fold, "dice"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_folds(folds: pd.DataFrame) -> str:
    """:func:`fold_table` as Markdown."""
    columns = [column for column in folds.columns if column.startswith("dice_fold")]
    header = ["Model", *(f"fold {column.removeprefix('dice_fold')}" for column in columns)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(columns)) + "|",
    ]
    for row in folds.to_dict("records"):
        lines.append(
            "| " + " | ".join([str(row["label"]), *(f"{row[c]:.1f}" for c in columns)]) + " |"
        )
    return "\n".join(lines) + "\n"


def markdown_cv(
    table: pd.DataFrame,
    fold_of: Mapping[str, int],
    settings: EvaluationSettings,
    folds: pd.DataFrame | None = None,
) -> str:
    """The cross-validated table as a section of results.md (a heading, the table, notes,
    and with ``folds`` (:func:`fold_table`) each model's Dice per fold)."""
    from ramanseg.evaluation_report import markdown_results

    n_folds = len(set(fold_of.values()))
    body = markdown_results(
        table,
        settings.pixels,
        settings.confidence_level,
        settings.resamples,
        settings.seed,
        population="held-out",
        with_paper=False,
        comparisons_file="results_cv_comparisons.csv",
    )
    how = (
        f"Every training and validation sample ({len(fold_of)}) is predicted by the models of "
        f"the one of {n_folds} patient-grouped folds (nnU-Net's `splits_final.json`) that "
        "held it out. Our models and the per-pixel baselines train on the other folds but "
        "one, whose samples pick the epoch; nnU-Net's numbers are its folds' own validation "
        "predictions (trained on every other fold, last epoch). Each fold trains its own "
        "models, so the table measures each training recipe rather than one trained model."
    )
    text = f"{HEADING}\n\n{body}\n{how}\n"
    if folds is not None:
        text += (
            "\nDice per fold (mean over the fold's held-out samples, percent; "
            "results_cv_folds.csv):\n\n" + markdown_folds(folds)
        )
    return text


def run_evaluate_cv(
    predictions: Sequence[str | Path],
    models: Sequence[str],
    truth: PreprocessedSource,
    split: str | Path,
    samplesheet: str | Path,
    out_prefix: str | Path,
    settings: EvaluationSettings | None = None,
) -> pd.DataFrame:
    """Evaluate the folds' predictions of their held-out samples and write the tables.

    Writes, all after everything is computed: ``<prefix>.csv`` / ``.parquet`` / ``.md``
    (the cross-validated table, percent, with patient bootstrap intervals and the paired
    comparison with the reference model), ``<prefix>_per_sample.csv`` / ``.parquet`` (one
    row per model and sample, with its fold and patient), ``<prefix>_comparisons.csv`` /
    ``.parquet`` and ``<prefix>_folds.csv`` / ``.parquet`` (each model's mean Dice per
    fold, :func:`fold_table`).

    Args:
        predictions: every model's masks of its folds' held-out samples
            (``.../fold<k>/<model>/<sample>.mask.tif``).
        models: the models, in table order.
        truth: the training and validation samples' preprocessed files by sample.
        split: ``results/split/split.json`` (its folds).
        samplesheet: the sample sheet (each sample's patient).
        out_prefix: e.g. ``results/evaluation/results_cv``.
        settings: the evaluation settings (default: the schema's defaults).

    Returns:
        The cross-validated table.

    Raises:
        ConfigError: a reference model that is not among ``models``.
        InputError: a bad split, a prediction that is missing, not cross-validated or
            unreadable, or bad ground truth.
    """
    from ramanseg.split import read_split

    settings = settings or EvaluationSettings()
    check_reference_model(settings.reference_model, models)
    try:
        fold_of = held_out_fold(read_split(split))
    except ValueError as error:
        raise InputError(
            str(error), path=split, fix="set `split.folds` to at least 2 and rerun the split"
        ) from None
    samples = list(fold_of)
    patient_of = read_patients(samplesheet, samples)
    per_sample = evaluate_models(
        cv_predictions_by_model(predictions, fold_of), models, truth, samples, settings.pixels
    )
    per_sample.insert(2, "fold", [fold_of[sample] for sample in per_sample["sample"]])
    per_sample.insert(3, "patient", [patient_of[sample] for sample in per_sample["sample"]])
    from ramanseg.evaluation_report import table_with_statistics
    from ramanseg.one_sided import one_sided_runs, with_one_sided_column, with_one_sided_note

    table, comparisons = table_with_statistics(per_sample, patient_of, settings)
    table = table[[column for column in table.columns if not column.startswith("paper_")]]
    flagged = one_sided_runs(per_sample)
    table = with_one_sided_column(table, flagged)
    folds = fold_table(per_sample)
    markdown = markdown_cv(table, fold_of, settings, folds)
    markdown = with_one_sided_note(markdown, flagged)
    write_files(
        {
            **prefixed(with_suffix(out_prefix, "_per_sample"), table_bytes(per_sample)),
            **prefixed(with_suffix(out_prefix, "_folds"), table_bytes(folds)),
            **prefixed(out_prefix, table_bytes(table, markdown, float_format="%.4f")),
            **prefixed(with_suffix(out_prefix, "_comparisons"), table_bytes(comparisons)),
        }
    )
    log.info("cross-validated results:\n%s", markdown)
    return table


def add_commands(subparsers: Any) -> None:
    """Add ``evaluate-cv`` to the ``ramanseg`` command line."""
    parser = subparsers.add_parser(
        "evaluate-cv",
        help="the cross-validated results table: each fold's models on its held-out samples",
        description="Evaluate every model's predictions of the samples its fold held out "
        "and write the cross-validated results table (patient bootstrap intervals, paired "
        "comparisons with the reference model) and its per-sample metrics.",
    )
    add_evaluation_arguments(
        parser,
        predictions_help="the folds' predicted masks "
        "(results/predictions/cv/fold<k>/<model>/<sample>.mask.tif)",
        samples="held-out",
        writes="_per_sample, _comparisons and _folds as .csv .parquet",
    )
    parser.add_argument(
        "--samples", required=True, type=Path, metavar="SHEET", help="the sample sheet"
    )

    def run(args: Any) -> int:
        settings, truth = settings_and_truth_from_args(args)
        run_evaluate_cv(
            args.predictions,
            args.models,
            truth,
            args.split,
            args.samples,
            args.out_prefix,
            settings,
        )
        return 0

    parser.set_defaults(func=run)
