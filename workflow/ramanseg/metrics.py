"""Overlap metrics shared by the bottleneck experiment, training and validation."""

from __future__ import annotations

import numpy as np


def dice_score(prediction: np.ndarray, target: np.ndarray) -> float:
    """Hard Dice of two binary masks; 1.0 when both are empty.

    Args:
        prediction: predicted mask (bool or 0 / 1).
        target: ground-truth mask of the same shape.

    Returns:
        ``2 |P & T| / (|P| + |T|)``.

    Raises:
        ValueError: if the shapes differ.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"shapes differ: {prediction.shape} and {target.shape}")
    prediction = prediction.astype(bool)
    target = target.astype(bool)
    total = int(prediction.sum()) + int(target.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(prediction, target).sum()) / total
