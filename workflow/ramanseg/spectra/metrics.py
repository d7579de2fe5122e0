"""Classification metrics of the skin-cancer paper (section 2.5) with seeded bootstrap 95 %
confidence intervals (its Table 2: 1000 resamples of the test set).

For two classes, sensitivity and specificity are those of class 1 (the positive class);
for more, they are macro averages over the classes (one class against the rest), as are
F1 and the AUC-ROC (one-vs-rest).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("accuracy", "auc_roc", "f1_macro", "sensitivity", "specificity")


def _auc(positive: np.ndarray, score: np.ndarray) -> float:
    """The AUC-ROC as the Mann-Whitney statistic (ties count half); NaN for one class."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.nan
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def point_metrics(y: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """The metrics of one set of predictions (NumPy only: the bootstrap calls it 1000 times).

    Args:
        y: ``(n,)`` true class indices.
        probabilities: ``(n, classes)`` predicted class probabilities.

    Returns:
        metric name -> value (AUC-ROC NaN when ``y`` lacks a class it needs).
    """
    n_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    matrix = np.bincount(y * n_classes + predicted, minlength=n_classes**2).reshape(
        n_classes, n_classes
    )
    true_positive = np.diag(matrix).astype(np.float64)
    positives = matrix.sum(axis=1)
    predicted_positives = matrix.sum(axis=0)
    negatives = len(y) - positives
    true_negative = len(y) - positives - predicted_positives + true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = true_positive / positives
        specificity = true_negative / negatives
        f1 = np.nan_to_num(2 * true_positive / (positives + predicted_positives))
    if n_classes == 2:
        auc = _auc(y == 1, probabilities[:, 1])
        sensitivity, spec = recall[1], specificity[1]
    else:
        auc = float(np.mean([_auc(y == c, probabilities[:, c]) for c in range(n_classes)]))
        sensitivity, spec = np.nanmean(recall), np.nanmean(specificity)
    return {
        "accuracy": float((predicted == y).mean()),
        "auc_roc": auc,
        "f1_macro": float(f1.mean()),
        "sensitivity": float(sensitivity),
        "specificity": float(spec),
    }


def bootstrap_metrics(
    y: np.ndarray,
    probabilities: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Each metric with a percentile bootstrap confidence interval.

    Args:
        y: ``(n,)`` true class indices.
        probabilities: ``(n, classes)`` predicted class probabilities.
        resamples: bootstrap resamples of the spectra (with replacement).
        seed: the resampling seed (same seed, same interval).
        level: the interval's coverage.

    Returns:
        One row per metric: metric, value, ci_low, ci_high. A resample where a metric is
        undefined (AUC of one class) is left out of that metric's interval.
    """
    from ramanseg.statistics import percentile_interval, row_draws

    point = point_metrics(y, probabilities)
    replicates = [
        point_metrics(y[rows], probabilities[rows]) for rows in row_draws(len(y), resamples, seed)
    ]
    table = []
    for name in METRICS:
        low, high = percentile_interval([replicate[name] for replicate in replicates], level)
        table.append({"metric": name, "value": point[name], "ci_low": low, "ci_high": high})
    return pd.DataFrame(table)


def confusion(y: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """The row-normalised confusion matrix (rows: true classes, columns: predicted)."""
    from sklearn.metrics import confusion_matrix

    n_classes = probabilities.shape[1]
    return confusion_matrix(
        y, probabilities.argmax(axis=1), labels=np.arange(n_classes), normalize="true"
    )
