"""Statistics of the results table: patient bootstrap confidence intervals, paired comparisons.

The test samples of one patient are not independent (same tissue, same acquisition, same
spectral shift), so every interval here resamples **patients**, not samples or pixels: a
*cluster bootstrap*. Each replicate draws as many patients as there are, with
replacement, takes all the test samples of every drawn patient (a patient drawn twice
counts twice) and computes the mean over those samples. The interval is the percentile
interval of the replicates (``level`` 0.95: the 2.5th and 97.5th percentiles).

* With one patient every replicate is that patient: the interval collapses to the point
  estimate. It is *degenerate*, says nothing about the spread, and is reported as such
  (:attr:`Interval.degenerate`), never as an interval.
* With few patients (2-3 in the demo's test split) the percentile interval has few
  distinct replicate values and is too narrow rather than too wide: it is a description
  of the data at hand, not a guarantee. Simulated (``tests/test_statistics.py``: patients
  of 1-4 samples that share a patient level), a nominal 95 % interval held the true mean
  73 % of the time with 3 patients, 89 % with 10 and 93 % with 30; the same bootstrap over
  samples, ignoring the patients, only 70 % with 30 patients.
* Undefined values (NaN, e.g. a sensitivity on a sample without tumour) are left out of
  each replicate's mean; a replicate whose drawn samples are all undefined is left out of
  the interval.

Paired comparisons of a model against a reference model use the same samples for both:

* the **paired patient bootstrap** of the mean per-sample difference (model - reference),
  with the same patient draws for every model (one seed), so the comparisons share their
  replicates;
* the **Wilcoxon signed-rank test** (two-sided, SciPy, exact for small samples without
  ties) on the per-sample differences. It treats samples as independent, which samples of
  one patient are not; the bootstrap interval is the one that respects patients. With
  ``n`` samples its smallest possible p-value is ``2 / 2**n`` (0.0625 for 5 samples), so a
  5-sample test set can never give p < 0.05 (:func:`smallest_wilcoxon_p`). Identical
  values (all differences 0) give p = 1: the statistic equals its expectation under the
  null hypothesis.

The package's other bootstrap, over independent rows (the spectra stage's test spectra,
:func:`ramanseg.spectra.metrics.bootstrap_metrics`), draws its rows with :func:`row_draws`
and takes the same :func:`percentile_interval`.

Every function is deterministic for a given seed: the replicates depend only on the seed,
the number of resamples and the set of patients (sorted), not on the order of the rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: The default number of bootstrap replicates (``evaluate.bootstrap_resamples``).
DEFAULT_RESAMPLES = 2000
#: The default confidence level of the intervals (``evaluate.confidence_level``).
DEFAULT_LEVEL = 0.95


#: The columns of ``results_comparisons.csv``.
COMPARISON_COLUMNS = (
    "model",
    "reference",
    "metric",
    "mean_difference",
    "ci_low",
    "ci_high",
    "confidence_level",
    "ci_degenerate",
    "p_value",
    "n_samples",
    "n_patients",
    "resamples",
)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its patient bootstrap percentile interval.

    Attributes:
        estimate: the mean over the samples (NaN values left out).
        low: the interval's lower end (NaN when nothing is defined).
        high: the interval's upper end.
        n_samples: the samples with a defined value.
        n_patients: the patients those samples come from.
    """

    estimate: float
    low: float
    high: float
    n_samples: int
    n_patients: int

    @property
    def degenerate(self) -> bool:
        """Fewer than two patients: resampling patients cannot show any spread."""
        return self.n_patients < 2


@dataclass(frozen=True)
class Comparison:
    """A model against the reference model on the same samples.

    Attributes:
        difference: the paired difference (model - reference), with its patient bootstrap
            interval; ``difference.estimate`` is the mean per-sample difference.
        p_value: the two-sided Wilcoxon signed-rank p-value on the per-sample differences
            (1 when every difference is 0; NaN without samples).
    """

    difference: Interval
    p_value: float


def _check_draws(resamples: int, units: int, unit: str) -> None:
    if resamples < 1:
        raise ValueError(f"the bootstrap needs at least one resample, got {resamples}")
    if units < 1:
        raise ValueError(f"the bootstrap needs at least one {unit}")


def patient_draws(n_patients: int, resamples: int, seed: int) -> np.ndarray:
    """How often each patient is drawn in each bootstrap replicate.

    Args:
        n_patients: the number of patients (the columns; callers order them by sorted id,
            so that the draws do not depend on the order of the rows).
        resamples: the number of replicates (at least 1).
        seed: the random seed.

    Returns:
        int array ``(resamples, n_patients)``; each row sums to ``n_patients`` (as many
        patients drawn as there are, with replacement).

    Raises:
        ValueError: no patients, or fewer than one resample.
    """
    _check_draws(resamples, n_patients, "patient")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=resamples)


def _patient_sums(
    values: np.ndarray, patients: Sequence[str], order: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Per patient (in ``order``): the sum and the count of the defined values."""
    index = {patient: i for i, patient in enumerate(order)}
    columns = np.array([index[p] for p in patients], dtype=np.intp)
    defined = np.isfinite(values)
    sums = np.bincount(columns[defined], weights=values[defined], minlength=len(order))
    counts = np.bincount(columns[defined], minlength=len(order)).astype(np.float64)
    return sums, counts


def bootstrap_means(
    values: Sequence[float], patients: Sequence[str], draws: np.ndarray, order: Sequence[str]
) -> np.ndarray:
    """The mean of ``values`` in each patient bootstrap replicate.

    Args:
        values: one value per sample (NaN: undefined, left out).
        patients: each sample's patient id.
        draws: :func:`patient_draws` for ``len(order)`` patients.
        order: the patient ids of the columns of ``draws``.

    Returns:
        float array ``(len(draws),)``; NaN for a replicate without any defined value.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(patients),):
        raise ValueError(f"{values.size} values for {len(patients)} patient ids")
    sums, counts = _patient_sums(values, patients, order)
    totals = draws @ sums
    sizes = draws @ counts
    return np.where(sizes > 0, totals / np.where(sizes > 0, sizes, 1.0), math.nan)


def _interval(
    values: np.ndarray, patients: Sequence[str], replicates: np.ndarray, level: float
) -> Interval:
    defined = np.isfinite(values)
    n_samples = int(defined.sum())
    n_patients = len({p for p, ok in zip(patients, defined, strict=True) if ok})
    if not n_samples:
        return Interval(math.nan, math.nan, math.nan, 0, 0)
    estimate = float(values[defined].mean())
    low, high = percentile_interval(replicates, level)
    if n_patients < 2 or math.isnan(low):
        # Every replicate is the one patient: the point itself (its floating-point sums
        # may differ from the mean in the last bit, which must not look like a spread).
        return Interval(estimate, estimate, estimate, n_samples, n_patients)
    return Interval(estimate, low, high, n_samples, n_patients)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"the confidence level must be between 0 and 1, got {level}")


def percentile_interval(replicates: Sequence[float], level: float) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates (every bootstrap of the package).

    Args:
        replicates: the statistic in each replicate (NaN or infinite: undefined in that
            replicate, left out).
        level: the confidence level, e.g. 0.95 (the 2.5th and 97.5th percentiles).

    Returns:
        ``(low, high)``; ``(NaN, NaN)`` when no replicate is defined.

    Raises:
        ValueError: a level outside (0, 1).
    """
    _check_level(level)
    replicates = np.asarray(replicates, dtype=np.float64)
    kept = replicates[np.isfinite(replicates)]
    if not kept.size:
        return math.nan, math.nan
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(kept, [tail, 100.0 - tail])
    return float(low), float(high)


def row_draws(n_rows: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The rows of each replicate of a bootstrap over independent rows (not patients).

    For rows that are independent of one another, such as the spectra of the spectra
    stage's test sets; the results table's samples are not (:func:`patient_draws`).

    Args:
        n_rows: the number of rows.
        resamples: the number of replicates (at least 1).
        seed: the random seed (same seed, same replicates).

    Yields:
        int array ``(n_rows,)`` per replicate: as many rows as there are, drawn with
        replacement.

    Raises:
        ValueError: no rows, or fewer than one resample.
    """
    _check_draws(resamples, n_rows, "row")
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield rng.integers(0, n_rows, n_rows)


def patient_bootstrap_interval(
    values: Sequence[float],
    patients: Sequence[str],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> Interval:
    """The mean of per-sample values with its patient (cluster) bootstrap interval.

    Args:
        values: one value per sample (NaN: undefined, left out).
        patients: each sample's patient id.
        resamples: the number of bootstrap replicates.
        seed: the random seed.
        level: the confidence level, e.g. 0.95.

    Returns:
        The estimate and its percentile interval; degenerate with one patient.

    Raises:
        ValueError: mismatched lengths, no samples, a level outside (0, 1).
    """
    _check_level(level)
    order = sorted(set(patients))
    draws = patient_draws(len(order), resamples, seed)
    values = np.asarray(values, dtype=np.float64)
    return _interval(values, patients, bootstrap_means(values, patients, draws, order), level)


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (NaN left out).

    Zero differences are dropped (Wilcoxon's convention); all of them 0 gives p = 1.

    Returns:
        The p-value; NaN without any defined difference.
    """
    from scipy.stats import wilcoxon

    differences = np.asarray(differences, dtype=np.float64)
    differences = differences[np.isfinite(differences)]
    if not differences.size:
        return math.nan
    if not np.any(differences):  # SciPy says 1 too, with a division-by-zero warning
        return 1.0
    return float(wilcoxon(differences, zero_method="wilcox", alternative="two-sided").pvalue)


def smallest_wilcoxon_p(n_samples: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon test can give on ``n_samples``."""
    return min(1.0, 2.0 ** (1 - n_samples)) if n_samples > 0 else math.nan


def paired_comparison(
    values: Sequence[float],
    reference: Sequence[float],
    patients: Sequence[str],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> Comparison:
    """A model's per-sample values against the reference model's on the same samples.

    Args:
        values: the model's value per sample.
        reference: the reference model's value on the same samples, same order.
        patients: each sample's patient id.
        resamples: the number of bootstrap replicates.
        seed: the random seed (the same for every model: the comparisons share draws).
        level: the confidence level.

    Returns:
        The mean difference with its paired patient bootstrap interval, and the Wilcoxon
        p-value. Samples where either value is undefined are left out of both.
    """
    values = np.asarray(values, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if values.shape != reference.shape:
        raise ValueError(f"{values.size} values against {reference.size} reference values")
    differences = values - reference
    return Comparison(
        patient_bootstrap_interval(differences, patients, resamples, seed, level),
        wilcoxon_p(differences),
    )


def _written(interval: Interval) -> tuple[float, float]:
    """The interval's ends as the tables write them: NaN when degenerate, so that no file
    shows a zero-width interval that looks like certainty."""
    return (math.nan, math.nan) if interval.degenerate else (interval.low, interval.high)


def metric_intervals(
    per_sample: pd.DataFrame,
    patient_of: dict[str, str],
    metrics: Sequence[str],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    scale: float = 100.0,
) -> pd.DataFrame:
    """Every model's mean of every metric with its patient bootstrap interval.

    Every model and metric uses the same patient draws (one seed).

    Args:
        per_sample: one row per (model, sample) with a column per metric.
        patient_of: each sample's patient id.
        metrics: the metric columns.
        resamples: the number of bootstrap replicates.
        seed: the random seed.
        level: the confidence level.
        scale: a factor for the values (100: percent, as the table prints them).

    Returns:
        One row per model (first-appearance order): ``model``, ``n_patients``,
        ``ci_degenerate`` (fewer than two patients) and for each metric
        ``<metric>_ci_low``, ``<metric>_ci_high`` (NaN when degenerate) and
        ``<metric>_n_patients`` (the patients of the samples where the metric is defined;
        below 2 the interval is degenerate).
    """
    rows = []
    for model in dict.fromkeys(per_sample["model"]):
        group = per_sample[per_sample["model"] == model]
        patients = [patient_of[sample] for sample in group["sample"]]
        row: dict[str, object] = {"model": model, "n_patients": len(set(patients))}
        row["ci_degenerate"] = row["n_patients"] < 2
        for metric in metrics:
            values = group[metric].to_numpy(dtype=np.float64) * scale
            interval = patient_bootstrap_interval(values, patients, resamples, seed, level)
            low, high = _written(interval)
            row[f"{metric}_ci_low"] = low
            row[f"{metric}_ci_high"] = high
            # Fewer than the model's patients where the metric is undefined on some samples.
            row[f"{metric}_n_patients"] = interval.n_patients
        rows.append(row)
    return pd.DataFrame(rows)


def paired_comparisons(
    per_sample: pd.DataFrame,
    patient_of: dict[str, str],
    reference: str,
    metric: str = "dice",
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    scale: float = 100.0,
) -> pd.DataFrame:
    """Every other model against ``reference`` on ``metric``, sample by sample.

    Args:
        per_sample: one row per (model, sample) with the ``metric`` column.
        patient_of: each sample's patient id.
        reference: the reference model; it must be among ``per_sample``'s models.
        metric: the compared metric.
        resamples: the number of bootstrap replicates.
        seed: the random seed.
        level: the confidence level.
        scale: a factor for the values (100: differences in percentage points).

    Returns:
        One row per model other than the reference (first-appearance order): ``model``,
        ``reference``, ``metric``, ``mean_difference``, ``ci_low``, ``ci_high`` (NaN when
        degenerate), ``confidence_level``, ``ci_degenerate``, ``p_value`` (Wilcoxon), ``n_samples``,
        ``n_patients``, ``resamples``.

    Raises:
        ValueError: the reference is not evaluated, or a model lacks one of its samples.
    """
    models = list(dict.fromkeys(per_sample["model"]))
    if reference not in models:
        raise ValueError(f"the reference model {reference!r} is not among {models}")
    # pivot raises ValueError on a (model, sample) pair listed twice; a sample one of the
    # two models lacks is NaN and left out of that comparison.
    table = per_sample.pivot(index="sample", columns="model", values=metric)
    rows = []
    for model in models:
        if model == reference:
            continue
        pair = table[[model, reference]].dropna()
        patients = [patient_of[sample] for sample in pair.index]
        if len(pair) == 0:
            result = Comparison(Interval(math.nan, math.nan, math.nan, 0, 0), math.nan)
        else:
            result = paired_comparison(
                pair[model].to_numpy() * scale,
                pair[reference].to_numpy() * scale,
                patients,
                resamples,
                seed,
                level,
            )
        rows.append(
            {
                "model": model,
                "reference": reference,
                "metric": metric,
                "mean_difference": result.difference.estimate,
                "ci_low": _written(result.difference)[0],
                "ci_high": _written(result.difference)[1],
                "confidence_level": level,
                "ci_degenerate": result.difference.degenerate,
                "p_value": result.p_value,
                "n_samples": result.difference.n_samples,
                "n_patients": result.difference.n_patients,
                "resamples": resamples,
            }
        )
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
