"""Metrics with bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from ramanseg.spectra.metrics import METRICS, bootstrap_metrics, point_metrics


def _predictions(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = np.clip(0.5 + 0.35 * (2 * y - 1) + rng.normal(0, 0.4, n), 0, 1)
    return y, np.stack([1 - score, score], axis=1)


def test_point_metrics_of_a_known_confusion():
    y = np.array([1, 1, 1, 0, 0])
    probabilities = np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.9, 0.1], [0.4, 0.6]])
    metrics = point_metrics(y, probabilities)
    assert metrics["accuracy"] == 0.6
    assert metrics["sensitivity"] == 2 / 3
    assert metrics["specificity"] == 0.5


def test_bootstrap_ci_contains_the_point_estimate_and_narrows_as_n_grows():
    small = bootstrap_metrics(*_predictions(60), resamples=1000, seed=0).set_index("metric")
    large = bootstrap_metrics(*_predictions(1500), resamples=1000, seed=0).set_index("metric")
    for table in (small, large):
        assert list(table.index) == list(METRICS)
        assert (table["ci_low"] <= table["value"]).all()
        assert (table["value"] <= table["ci_high"]).all()
    width_small = small["ci_high"] - small["ci_low"]
    width_large = large["ci_high"] - large["ci_low"]
    assert (width_large < 0.5 * width_small).all()


def test_bootstrap_is_seeded():
    y, p = _predictions(100)
    first = bootstrap_metrics(y, p, resamples=200, seed=3)
    assert first.equals(bootstrap_metrics(y, p, resamples=200, seed=3))
    assert not first.equals(bootstrap_metrics(y, p, resamples=200, seed=4))


def test_multiclass_metrics_are_macro_averages():
    y = np.array([0, 1, 2, 0, 1, 2])
    probabilities = np.eye(3)[[0, 1, 2, 0, 1, 1]]
    metrics = point_metrics(y, probabilities)
    assert np.isclose(metrics["sensitivity"], (1 + 1 + 0.5) / 3)
    assert np.isclose(metrics["f1_macro"], f1_score(y, probabilities.argmax(1), average="macro"))


def test_auc_equals_scikit_learn():
    y, p = _predictions(200, seed=5)
    assert np.isclose(point_metrics(y, p)["auc_roc"], roc_auc_score(y, p[:, 1]))


def test_bootstrap_numbers_are_pinned():
    # Computed before the bootstrap moved to ramanseg.statistics (row_draws,
    # percentile_interval): the same seed must keep giving the same intervals.
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    score = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.2, 0.6, 0.9])
    table = bootstrap_metrics(y, np.stack([1 - score, score], axis=1), 200, seed=3, level=0.9)
    assert list(table["value"]) == [0.75, 0.8125, 0.75, 0.75, 0.75]
    assert list(table["ci_low"]) == [0.5, 0.4375, 0.3836385836385836, 0.32499999999999984,
                                     0.3333333333333333]  # fmt: skip
    assert list(table["ci_high"]) == [1.0] * 5
