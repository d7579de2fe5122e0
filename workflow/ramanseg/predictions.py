"""The shared prediction format, written by every model so evaluation treats all alike.

For model ``M`` and test sample ``S`` the files are::

    results/predictions/M/S.mask.tif         uint8 (Y, X), 1 = foreground (tumour)
    results/predictions/M/S.probability.tif  float32 (Y, X), foreground probability in [0, 1]

The mask is the probability thresholded at 0.5 unless a model's own rule differs (an
nnU-Net ensemble's argmax over averaged class probabilities is the same thing for two
classes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from ramanseg.fileio import atomic_path

MASK_SUFFIX = ".mask.tif"
PROBABILITY_SUFFIX = ".probability.tif"


def prediction_paths(directory: str | Path, sample_id: str) -> tuple[Path, Path]:
    """The (mask, probability) paths of one sample's prediction in ``directory``."""
    directory = Path(directory)
    return directory / f"{sample_id}{MASK_SUFFIX}", directory / f"{sample_id}{PROBABILITY_SUFFIX}"


def write_prediction(
    directory: str | Path, sample_id: str, probability: np.ndarray, threshold: float = 0.5
) -> tuple[Path, Path]:
    """Write one sample's foreground probability and the mask derived from it.

    Args:
        directory: ``results/predictions/<model>``.
        sample_id: the sample.
        probability: foreground probability, shape (Y, X), values in [0, 1].
        threshold: probability at or above which a pixel is foreground.

    Returns:
        The (mask, probability) paths written.

    Raises:
        ValueError: if ``probability`` is not 2-D, not finite, or outside [0, 1].
    """
    probability = np.asarray(probability, dtype=np.float32)
    if probability.ndim != 2:
        raise ValueError(f"probability must be 2-D (Y, X), got shape {probability.shape}")
    if not np.isfinite(probability).all():
        raise ValueError(f"probability of sample {sample_id!r} has non-finite values")
    if probability.min() < 0 or probability.max() > 1:
        raise ValueError(f"probability of sample {sample_id!r} is outside [0, 1]")
    mask_path, probability_path = prediction_paths(directory, sample_id)
    mask = (probability >= threshold).astype(np.uint8)
    with atomic_path(probability_path) as tmp:
        tifffile.imwrite(tmp, probability, compression="zlib")
    with atomic_path(mask_path) as tmp:
        tifffile.imwrite(tmp, mask, compression="zlib")
    return mask_path, probability_path


def read_prediction(directory: str | Path, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one sample's (mask, probability) as written by :func:`write_prediction`."""
    mask_path, probability_path = prediction_paths(directory, sample_id)
    return tifffile.imread(mask_path), tifffile.imread(probability_path)
