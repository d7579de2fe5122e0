"""Repeated seeds: how much a model's test Dice moves when only its training seed changes.

With ``seeds: [0, 1, 2]`` the workflow trains every model of the results table once per
seed (the split is ``split.seed``'s and stays the same) and predicts the test samples
with each. What the seed changes:

* our PyTorch models: the initial weights, the patch sampling and the augmentation;
* nnU-Net: the same, in each of its folds (our launcher seeds the global random
  generators with ``seed + fold`` before nnU-Net builds its trainer, whose constructor
  takes no seed: :func:`ramanseg.nnunet.run.train_fold`); a seed's run retrains all folds
  from the main run's preprocessed data, and its test prediction is that run's ensemble;
* the per-pixel baselines: the subsample of training pixels (and the 1D-CNN's weights).

The table gives per model the test Dice of every seed and their mean ± standard
deviation over the seeds (``ddof = 1``: the seeds are a sample of the seeds one could
have chosen), and the same for sensitivity and specificity. A difference between two
models smaller than their spread over seeds is not a difference between the models.

Each model is also compared with the reference model (``evaluate.reference_model``) seed
by seed: with seed *k* both were trained with the same seed and predict the same test
samples, so their difference of mean Dice is paired. The table gives its mean ± standard
deviation over the seeds and in how many seeds the model scored higher.

A seed equal to the global ``seed`` is the main run itself (``results/models/<model>``);
the others are ``results/models/seed<k>/<model>`` (nnU-Net's:
``results/nnunet/seed<k>/trained``), predicted into ``results/predictions/seed<k>/<model>/``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ramanseg.catalog import model_label
from ramanseg.errors import InputError
from ramanseg.evaluate import (
    METRICS,
    add_evaluation_arguments,
    check_reference_model,
    evaluate_models,
    settings_and_truth_from_args,
)
from ramanseg.figures import figure_bytes, new_figure, table_bytes
from ramanseg.fileio import prefixed, with_suffix, write_files
from ramanseg.one_sided import one_sided_runs, with_one_sided_note
from ramanseg.predictions import parse_prediction_path
from ramanseg.preprocessed import PreprocessedSource

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

#: The heading of the repeated-seeds section in results.md.
HEADING = "## Repeated seeds"
METRIC_LABELS = {"dice": "Dice", "sensitivity": "Sensitivity", "specificity": "Specificity"}


def predictions_by_seed(
    paths: Sequence[str | Path], seeds: Sequence[int]
) -> dict[int, dict[str, dict[str, Path]]]:
    """Group predicted masks by seed, model and sample: ``{seed: {model: {sample: path}}}``.

    Args:
        paths: ``.../<model>/<sample>.mask.tif`` files.
        seeds: the training seed of each file's model (as many as ``paths``).

    Raises:
        InputError: lists of different lengths, a file that is not a mask, or one
            (seed, model, sample) given twice.
    """
    if len(paths) != len(seeds):
        raise InputError(
            f"{len(paths)} prediction files but {len(seeds)} seeds",
            fix="give one seed per prediction file (--seeds in the order of --predictions)",
        )
    grouped: dict[int, dict[str, dict[str, Path]]] = {}
    for path, seed in zip(map(Path, paths), seeds, strict=True):
        model, sample, kind = parse_prediction_path(path)
        if kind != "mask":
            raise InputError(
                "expected a predicted mask", sample=sample, path=path, fix="pass the mask files"
            )
        by_sample = grouped.setdefault(int(seed), {}).setdefault(model, {})
        if sample in by_sample:
            raise InputError(
                f"seed {seed} of model {model!r} has two predictions of this sample",
                sample=sample,
                path=path,
                fix="pass each prediction once",
            )
        by_sample[sample] = path
    return grouped


def seed_runs(per_sample: pd.DataFrame) -> pd.DataFrame:
    """Each (model, seed) run's mean metrics over the test samples, in percent.

    Args:
        per_sample: :func:`ramanseg.evaluate.evaluate_models`'s rows with a ``seed`` column.

    Returns:
        ``model``, ``seed``, ``n_samples`` and ``<metric>_mean`` (NaN values left out), in
        the order of first appearance of the models, then by seed.
    """
    rows = []
    for model in dict.fromkeys(per_sample["model"]):
        runs = per_sample[per_sample["model"] == model]
        for seed in sorted(set(runs["seed"])):
            run = runs[runs["seed"] == seed]
            row: dict[str, Any] = {"model": model, "seed": int(seed), "n_samples": len(run)}
            for metric in METRICS:
                values = run[metric].to_numpy(dtype=np.float64)
                values = values[np.isfinite(values)]
                row[f"{metric}_mean"] = 100.0 * values.mean() if values.size else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def seed_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per model: the spread of its runs' mean metrics over the seeds.

    Args:
        runs: the output of :func:`seed_runs`.

    Returns:
        One row per model: ``model``, ``label``, ``n_seeds``, ``seeds`` (e.g. ``"0 1 2"``),
        ``dice_seed<k>`` for every seed, and per metric ``<metric>_mean``, ``<metric>_sd``
        (over the seeds, ``ddof = 1``; NaN with one seed), ``<metric>_min`` and
        ``<metric>_max``; percent.
    """
    rows = []
    for model in dict.fromkeys(runs["model"]):
        group = runs[runs["model"] == model].sort_values("seed")
        row: dict[str, Any] = {
            "model": model,
            "label": model_label(model),
            "n_seeds": len(group),
            "seeds": " ".join(str(seed) for seed in group["seed"]),
        }
        for seed, dice in zip(group["seed"], group["dice_mean"], strict=True):
            row[f"dice_seed{seed}"] = float(dice)
        for metric in METRICS:
            values = group[f"{metric}_mean"].to_numpy(dtype=np.float64)
            values = values[np.isfinite(values)]
            row[f"{metric}_mean"] = float(values.mean()) if values.size else math.nan
            row[f"{metric}_sd"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
            row[f"{metric}_min"] = float(values.min()) if values.size else math.nan
            row[f"{metric}_max"] = float(values.max()) if values.size else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def seed_differences(runs: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per model: its mean Dice minus the reference model's, seed by seed (paired).

    Args:
        runs: the output of :func:`seed_runs`.
        reference: the reference model; one of ``runs``' models.

    Returns:
        One row per model: ``model``, ``reference``, ``dice_diff_mean`` and
        ``dice_diff_sd`` (over the seeds both models were trained with, ``ddof = 1``;
        NaN with one seed), ``dice_diff_min``, ``dice_diff_max``, ``n_paired_seeds`` and
        ``seeds_higher`` (seeds where the model's mean Dice exceeds the reference's);
        percentage points. The reference's own row has differences of 0.

    Raises:
        ValueError: ``reference`` is not among the models of ``runs``.
    """
    dice = runs.pivot(index="seed", columns="model", values="dice_mean")
    if reference not in dice.columns:
        raise ValueError(f"the reference model {reference!r} has no runs")
    rows = []
    for model in dict.fromkeys(runs["model"]):
        difference = (dice[model] - dice[reference]).to_numpy(dtype=np.float64)
        difference = difference[np.isfinite(difference)]
        rows.append(
            {
                "model": model,
                "reference": reference,
                "dice_diff_mean": float(difference.mean()) if difference.size else math.nan,
                "dice_diff_sd": (
                    float(difference.std(ddof=1)) if difference.size > 1 else math.nan
                ),
                "dice_diff_min": float(difference.min()) if difference.size else math.nan,
                "dice_diff_max": float(difference.max()) if difference.size else math.nan,
                "n_paired_seeds": int(difference.size),
                "seeds_higher": int((difference > 0).sum()),
            }
        )
    return pd.DataFrame(rows)


def _difference(row: dict[str, Any]) -> str:
    if row["model"] == row["reference"]:
        return "reference"
    mean, sd = row["dice_diff_mean"], row["dice_diff_sd"]
    if not math.isfinite(mean):
        return "n/a"
    spread = f" ± {sd:.1f}" if math.isfinite(sd) else ""
    return f"{mean:+.1f}{spread} ({row['seeds_higher']} of {row['n_paired_seeds']} higher)"


def _mean_sd(mean: float, sd: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.1f} ± {sd:.1f}" if math.isfinite(sd) else f"{mean:.1f}"


def markdown_seeds(summary: pd.DataFrame, n_samples: int) -> str:
    """The repeated-seeds table as a section of results.md (a heading, the table, notes).

    Args:
        summary: :func:`seed_summary`'s table with :func:`seed_differences`' columns.
        n_samples: the number of test samples.
    """
    reference = model_label(str(summary["reference"].iloc[0]))
    header = [
        "Model",
        "seeds",
        "Dice per seed",
        *(f"{METRIC_LABELS[m]} (over seeds)" for m in METRICS),
        f"Dice − {reference}, paired by seed",
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---", "---"] + ["---:"] * (len(METRICS) + 1)) + "|",
    ]
    for row in summary.to_dict("records"):
        per_seed = ", ".join(f"{row[f'dice_seed{seed}']:.1f}" for seed in str(row["seeds"]).split())
        cells = [str(row["label"]), str(row["seeds"]), per_seed]
        cells += [_mean_sd(row[f"{m}_mean"], row[f"{m}_sd"]) for m in METRICS]
        cells.append(_difference(row))
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        f"Each seed's number is the mean over the {n_samples} test samples (percent); "
        "mean ± standard deviation over the seeds (ddof = 1). Only the training seed "
        "changes (initial weights, patches, augmentation; the per-pixel baselines' "
        "training pixels); the split is the same. nnU-Net is retrained in all its folds "
        "per seed, and each seed's number is that seed's fold ensemble. The last column "
        f"compares each model with {reference} trained with the same seed: the difference "
        "of their mean Dice, mean ± standard deviation over the seeds (percentage points), "
        "and in how many seeds the model scored higher."
    )
    return f"{HEADING}\n\n" + "\n".join(lines) + f"\n\n{note}\n"


def seeds_figure(runs: pd.DataFrame, flagged: pd.DataFrame, reference: str) -> Figure:
    """Each seed's mean test Dice across the models: one line per seed (the runs of one
    seed are paired, as the table's last column pairs them), the mean over the seeds as a
    bar, and a one-sided run (:mod:`ramanseg.one_sided`) as a red cross.

    Args:
        runs: :func:`seed_runs`' table.
        flagged: :func:`ramanseg.one_sided.one_sided_runs` by model and seed.
        reference: the reference model (marked on its axis label).
    """
    from matplotlib.lines import Line2D

    from ramanseg.evaluation_report import PATIENT_COLOURS, legend_line, lines_across_models

    models = list(dict.fromkeys(runs["model"]))
    labels = [
        f"{model_label(m)}\n(reference)" if m == reference else model_label(m) for m in models
    ]
    dice = runs.pivot(index="seed", columns="model", values="dice_mean")[models]
    figure = new_figure(max(5.5, 1.0 * len(models) + 2.5), 4.2)
    axis = figure.subplots()
    colours = [PATIENT_COLOURS[index % len(PATIENT_COLOURS)] for index in range(len(dice))]
    legend = [(legend_line(c), f"seed {seed}") for c, seed in zip(colours, dice.index, strict=True)]
    column = {model: index for index, model in enumerate(models)}
    pairs = zip(flagged["model"], flagged["seed"], strict=True)
    crosses = [(column[model], dice.loc[seed, model]) for model, seed in pairs]
    marker = Line2D([], [], color="red", marker="x", linewidth=0, markersize=7)
    cross = [(marker, "one-sided run")] if crosses else []
    lines_across_models(axis, dice, colours, labels, legend, "mean over seeds", cross)
    if crosses:
        x, y = zip(*crosses, strict=True)
        axis.scatter(x, y, marker="x", s=80, linewidths=2, color="red", zorder=4)
    axis.set_ylabel("mean test Dice of the tumour class (%)")
    axis.set_title(
        f"Test Dice per training seed ({len(dice)} seeds); each line joins one seed's runs",
        fontsize=10,
    )
    return figure


def run_evaluate_seeds(
    predictions: Sequence[str | Path],
    seeds: Sequence[int],
    models: Sequence[str],
    truth: PreprocessedSource,
    split: str | Path,
    out_prefix: str | Path,
    pixels: str = "tissue",
    reference: str | None = None,
) -> pd.DataFrame:
    """Evaluate every seed's test predictions and write the spread over the seeds.

    Writes, after everything is computed: ``<prefix>.csv`` / ``.parquet`` / ``.md`` (per
    model, :func:`seed_summary`), ``<prefix>_runs.csv`` / ``.parquet`` (per model and seed),
    ``<prefix>_per_sample.csv`` / ``.parquet`` and ``<prefix>_dice.png`` / ``.pdf``
    (:func:`seeds_figure`).

    Args:
        predictions: every seed's predicted masks of the test samples.
        seeds: the seed of each file (as many as ``predictions``).
        models: the repeated models, in table order; each needs every seed's predictions.
        truth: the test samples' preprocessed files by sample.
        split: ``results/split/split.json`` (the test samples).
        out_prefix: e.g. ``results/evaluation/results_seeds``.
        pixels: ``evaluate.pixels``.
        reference: ``evaluate.reference_model``, the model every other is compared with
            seed by seed; by default the first of ``models``.

    Returns:
        The per-model table.

    Raises:
        ConfigError: a reference model that is not among ``models``.
        InputError: a missing or bad prediction or ground truth, or a bad split.
    """
    from ramanseg.split import read_split

    reference = models[0] if reference is None else reference
    check_reference_model(reference, models)

    samples = list(read_split(split)["test"])
    grouped = predictions_by_seed(predictions, seeds)
    frames = []
    for seed in sorted(grouped):
        per_sample = evaluate_models(grouped[seed], models, truth, samples, pixels)
        per_sample.insert(1, "seed", seed)
        frames.append(per_sample)
    per_sample = pd.concat(frames, ignore_index=True)
    # Model by model (in table order), then by seed.
    rank = per_sample["model"].map({model: index for index, model in enumerate(models)})
    per_sample = per_sample.iloc[np.lexsort((per_sample["seed"], rank))].reset_index(drop=True)
    runs = seed_runs(per_sample)
    runs.insert(1, "label", [model_label(model) for model in runs["model"]])
    summary = seed_summary(runs).merge(seed_differences(runs, reference), on="model")
    flagged = one_sided_runs(per_sample, ("model", "seed"))
    summary["one_sided_seeds"] = [
        " ".join(str(seed) for seed in flagged.loc[flagged["model"] == model, "seed"])
        for model in summary["model"]
    ]
    markdown = markdown_seeds(summary, len(samples))
    markdown = with_one_sided_note(markdown, flagged)
    write_files(
        {
            **prefixed(with_suffix(out_prefix, "_per_sample"), table_bytes(per_sample)),
            **prefixed(with_suffix(out_prefix, "_runs"), table_bytes(runs)),
            **prefixed(out_prefix, table_bytes(summary, markdown, float_format="%.4f")),
            **prefixed(
                with_suffix(out_prefix, "_dice"),
                figure_bytes(seeds_figure(runs, flagged, reference)),
            ),
        }
    )
    log.info("repeated seeds:\n%s", markdown)
    return summary


def add_commands(subparsers: Any) -> None:
    """Add ``evaluate-seeds`` to the ``ramanseg`` command line."""
    parser = subparsers.add_parser(
        "evaluate-seeds",
        help="the spread of each model's test metrics over its training seeds",
        description="Evaluate the test predictions of every model trained with each seed "
        "and write, per model, each seed's test Dice and the mean ± sd over the seeds.",
    )
    add_evaluation_arguments(
        parser,
        predictions_help="the seeds' predicted masks",
        samples="test",
        writes="_runs and _per_sample as .csv .parquet, _dice as .png .pdf",
    )
    parser.add_argument(
        "--seeds",
        required=True,
        nargs="+",
        type=int,
        help="the training seed of each --predictions file, in the same order",
    )

    def run(args: Any) -> int:
        settings, truth = settings_and_truth_from_args(args)
        run_evaluate_seeds(
            args.predictions,
            args.seeds,
            args.models,
            truth,
            args.split,
            args.out_prefix,
            settings.pixels,
            settings.reference_model,
        )
        return 0

    parser.set_defaults(func=run)
