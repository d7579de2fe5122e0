"""The results table's statistics: the patient bootstrap and the paired comparisons."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ramanseg.statistics import (
    COMPARISON_COLUMNS,
    bootstrap_means,
    metric_intervals,
    paired_comparison,
    paired_comparisons,
    patient_bootstrap_interval,
    patient_draws,
    percentile_interval,
    row_draws,
    smallest_wilcoxon_p,
    wilcoxon_p,
)


def _cohort(n_patients: int, samples_per_patient: int = 2, seed: int = 1):
    """Per-sample values with a per-patient offset (samples of a patient are correlated)."""
    rng = np.random.default_rng(seed)
    values, patients = [], []
    for patient in range(n_patients):
        offset = rng.normal(80.0, 8.0)
        for _ in range(samples_per_patient):
            values.append(offset + rng.normal(0.0, 2.0))
            patients.append(f"P{patient:03d}")
    return np.array(values), patients


def test_the_bootstrap_draws_whole_patients():
    # P1 has four samples at 0, P2 one at 100. Drawing two patients with replacement gives
    # (P1, P1) -> 0, (P2, P2) -> 100, (P1, P2) -> 100 / 5 = 20, and nothing else; drawing
    # samples independently would give 25, 40, 60, ...
    values = [0.0, 0.0, 0.0, 0.0, 100.0]
    patients = ["P1", "P1", "P1", "P1", "P2"]
    draws = patient_draws(2, 500, seed=0)
    assert draws.shape == (500, 2) and (draws.sum(axis=1) == 2).all()
    replicates = bootstrap_means(values, patients, draws, ["P1", "P2"])
    assert set(np.round(replicates, 9)) == {0.0, 20.0, 100.0}
    interval = patient_bootstrap_interval(values, patients, resamples=500, seed=0)
    assert interval.estimate == pytest.approx(20.0)
    assert (interval.low, interval.high) == (0.0, 100.0)
    assert (interval.n_samples, interval.n_patients) == (5, 2) and not interval.degenerate


def test_one_patient_gives_a_degenerate_interval():
    interval = patient_bootstrap_interval([0.7, 0.9, 0.8], ["P1"] * 3, resamples=200, seed=0)
    assert interval.degenerate
    assert interval.low == interval.high == interval.estimate == pytest.approx(0.8)


@pytest.mark.filterwarnings("error")  # SciPy warns on all-zero differences; we do not ask it
def test_identical_models_differ_by_zero_with_p_one():
    values, patients = _cohort(6)
    result = paired_comparison(values, values.copy(), patients, resamples=300, seed=0)
    assert result.difference.estimate == 0.0
    assert result.difference.low <= 0.0 <= result.difference.high
    assert result.p_value == 1.0


def test_intervals_narrow_as_the_number_of_patients_grows():
    widths = []
    for n_patients in (4, 16, 64):
        values, patients = _cohort(n_patients)
        interval = patient_bootstrap_interval(values, patients, resamples=1000, seed=0)
        widths.append(interval.high - interval.low)
    assert widths[0] > widths[1] > widths[2] > 0
    # About 1 / sqrt(patients): 16x the patients, a quarter of the width, roughly.
    assert widths[2] < 0.5 * widths[0]


def test_the_bootstrap_is_deterministic_for_a_seed_and_ignores_row_order():
    values, patients = _cohort(8)
    first = patient_bootstrap_interval(values, patients, resamples=400, seed=3)
    assert patient_bootstrap_interval(values, patients, resamples=400, seed=3) == first
    order = np.random.default_rng(0).permutation(len(values))
    shuffled = patient_bootstrap_interval(
        values[order], [patients[i] for i in order], resamples=400, seed=3
    )
    assert shuffled.low == pytest.approx(first.low) and shuffled.high == pytest.approx(first.high)
    other = patient_bootstrap_interval(values, patients, resamples=400, seed=4)
    assert (other.low, other.high) != (first.low, first.high)


def test_undefined_values_are_left_out():
    # A sensitivity is NaN on a sample without tumour: the interval is over the others.
    interval = patient_bootstrap_interval(
        [50.0, math.nan, 70.0, math.nan], ["P1", "P1", "P2", "P3"], resamples=300, seed=0
    )
    assert interval.estimate == pytest.approx(60.0)
    assert (interval.n_samples, interval.n_patients) == (2, 2)
    assert 50.0 <= interval.low < interval.high <= 70.0
    nothing = patient_bootstrap_interval([math.nan], ["P1"], resamples=10)
    assert math.isnan(nothing.estimate) and nothing.n_samples == 0


def test_wilcoxon_p_values():
    assert wilcoxon_p([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(0.0625)  # all of one sign
    assert wilcoxon_p([0.0, 0.0]) == 1.0
    assert math.isnan(wilcoxon_p([]))
    assert smallest_wilcoxon_p(5) == 0.0625 and smallest_wilcoxon_p(6) == 0.03125


def test_a_clear_improvement_on_many_patients_is_found():
    values, patients = _cohort(20)
    better = values + 3.0 + np.random.default_rng(5).normal(0.0, 0.5, values.size)
    result = paired_comparison(better, values, patients, resamples=500, seed=0)
    assert result.difference.estimate == pytest.approx(3.0, abs=0.3)
    difference = result.difference
    assert 0.0 < difference.low < difference.estimate < difference.high  # excludes 0
    assert result.p_value < 1e-6


def _per_sample():
    samples = ["A", "B", "C", "D"]
    patient_of = {"A": "P1", "B": "P1", "C": "P2", "D": "P3"}
    rows = []
    for model, dice in (
        ("nnunet", [0.8, 0.9, 0.7, 0.6]),
        ("unet", [0.8, 0.9, 0.7, 0.6]),
        ("logreg", [0.4, 0.5, 0.3, 0.2]),
    ):
        for sample, value in zip(samples, dice, strict=True):
            rows.append({"model": model, "sample": sample, "dice": value, "sensitivity": value})
    return pd.DataFrame(rows), patient_of


def test_comparison_table_against_the_reference():
    per_sample, patient_of = _per_sample()
    table = paired_comparisons(per_sample, patient_of, "nnunet", resamples=200, seed=0)
    assert tuple(table.columns) == COMPARISON_COLUMNS
    assert list(table["model"]) == ["unet", "logreg"]
    unet = table.iloc[0]
    assert (unet.mean_difference, unet.ci_low, unet.ci_high, unet.p_value) == (0, 0, 0, 1)
    logreg = table.iloc[1]
    assert logreg.mean_difference == pytest.approx(-40.0)  # percentage points
    assert logreg.ci_low == pytest.approx(-40.0) and logreg.ci_high == pytest.approx(-40.0)
    assert logreg.p_value == pytest.approx(0.125)  # 4 samples, all lower: 2 / 2**4
    assert (logreg.n_samples, logreg.n_patients, logreg.resamples) == (4, 3, 200)
    with pytest.raises(ValueError, match="reference model 'unetr'"):
        paired_comparisons(per_sample, patient_of, "unetr")


def test_metric_intervals_per_model_share_the_draws():
    per_sample, patient_of = _per_sample()
    intervals = metric_intervals(per_sample, patient_of, ["dice", "sensitivity"], 300, seed=0)
    assert list(intervals["model"]) == ["nnunet", "unet", "logreg"]
    assert (intervals["n_patients"] == 3).all() and not intervals["ci_degenerate"].any()
    nnunet, unet, logreg = intervals.to_dict("records")
    assert nnunet["dice_ci_low"] == unet["dice_ci_low"]  # same values, same draws
    # logreg is nnunet - 40 on every sample: the same draws shift its interval by 40.
    assert logreg["dice_ci_low"] == pytest.approx(nnunet["dice_ci_low"] - 40.0)
    assert logreg["dice_ci_high"] == pytest.approx(nnunet["dice_ci_high"] - 40.0)
    assert nnunet["dice_ci_low"] < 75.0 < nnunet["dice_ci_high"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one resample"):
        patient_draws(1, 0, seed=0)
    with pytest.raises(ValueError, match="confidence level"):
        patient_bootstrap_interval([1.0], ["P1"], level=95)
    with pytest.raises(ValueError, match="2 values for 3 patient ids"):
        bootstrap_means([1.0, 2.0], ["a", "b", "c"], np.ones((1, 3), int), ["a", "b", "c"])


def _coverage(n_patients: int, by_patient: bool, simulations: int = 200) -> float:
    """How often the 95 % interval holds the true mean (0) of correlated clustered data."""
    rng = np.random.default_rng(1)
    hits = 0
    for simulation in range(simulations):
        values: list[float] = []
        patients: list[str] = []
        for patient in range(n_patients):
            offset = rng.normal(0.0, 1.0)  # the patient's own level: its samples move together
            count = int(rng.integers(1, 5))
            values += list(offset + rng.normal(0.0, 0.3, count))
            patients += [f"P{patient}"] * count
        clusters = patients if by_patient else [str(i) for i in range(len(values))]
        interval = patient_bootstrap_interval(values, clusters, 400, seed=simulation)
        hits += interval.low <= 0.0 <= interval.high
    return hits / simulations


def test_resampling_patients_keeps_the_coverage_that_resampling_samples_loses():
    # 30 patients of 1-4 correlated samples: treating samples as independent gives an
    # interval far too narrow (about 73 % coverage); the patient bootstrap about 93 %.
    assert _coverage(30, by_patient=True) >= 0.88
    assert _coverage(30, by_patient=False) <= 0.82


def test_percentile_interval_leaves_undefined_replicates_out():
    replicates = [*np.arange(101.0), math.nan, math.inf, -math.inf]
    assert np.allclose(percentile_interval(replicates, 0.9), (5.0, 95.0))
    assert percentile_interval([3.0], 0.95) == (3.0, 3.0)
    low, high = percentile_interval([math.nan, math.nan], 0.95)
    assert math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="confidence level"):
        percentile_interval([1.0, 2.0], 1.0)


def test_row_draws_resample_rows_with_replacement_by_seed():
    draws = list(row_draws(7, 50, seed=3))
    assert len(draws) == 50 and all(d.shape == (7,) for d in draws)
    assert min(d.min() for d in draws) == 0 and max(d.max() for d in draws) == 6
    assert any(len(set(d)) < 7 for d in draws)  # with replacement
    assert all((a == b).all() for a, b in zip(draws, row_draws(7, 50, seed=3), strict=True))
    assert not all((a == b).all() for a, b in zip(draws, row_draws(7, 50, seed=4), strict=True))
    # The spectra stage's intervals were drawn this way before they shared this function.
    rng = np.random.default_rng(3)
    assert all((d == rng.integers(0, 7, 7)).all() for d in draws)
    with pytest.raises(ValueError, match="resample"):
        next(row_draws(7, 0, seed=0))
    with pytest.raises(ValueError, match="row"):
        next(row_draws(0, 10, seed=0))
