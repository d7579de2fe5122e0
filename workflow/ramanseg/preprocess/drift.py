"""Column-wise drift correction with the mean spectral profile of the tissue."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ramanseg.preprocess.common import PreprocessWarning, map_channels

#: Columns with fewer foreground pixels than this are too noisy to estimate the drift and
#: take the value interpolated from their neighbours.
MIN_COLUMN_PIXELS = 10


@dataclass(frozen=True)
class DriftProfile:
    """The column-wise drift estimate of :func:`correct_column_drift`.

    Attributes:
        column_means: (C, X) ``m~[c, x]``, the foreground mean of each column (measured or
            interpolated).
        reference: (C,) ``r[c]``, the mean over all foreground pixels.
        gain: (C, X) the factor applied, ``r[c] / m~[c, x]`` (1 where not corrected).
        measured_columns: (C, X) bool, True where ``m~`` was measured, False where
            interpolated.
    """

    column_means: np.ndarray
    reference: np.ndarray
    gain: np.ndarray
    measured_columns: np.ndarray


def correct_column_drift(
    stack: np.ndarray,
    foreground: np.ndarray,
    *,
    min_column_pixels: int = MIN_COLUMN_PIXELS,
    names: Sequence[str] | None = None,
    threads: int = 1,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, DriftProfile]:
    """Correct a column-wise intensity drift with the mean spectral profile of the tissue.

    With ``F`` the foreground mask and ``n[x]`` its pixel count in column ``x``::

        m[c, x]   = sum_y stack[c, y, x] F[y, x] / n[x]       (column mean of the tissue)
        r[c]      = sum_{y,x} stack[c, y, x] F[y, x] / sum_x n[x]   (tissue mean)
        out[c, y, x] = stack[c, y, x] * r[c] / m~[c, x]

    ``m~ = m`` in the columns where it is measured: at least ``min_column_pixels``
    foreground pixels and ``m > 0``. In the other columns (no or too little tissue)
    ``m~`` is linearly interpolated between the nearest measured columns, and held
    constant beyond the first and last (``np.interp``). No smoothing along x: each
    measured column is corrected by its own mean. A channel with no measured column, or
    with ``r <= 0`` (the correction is multiplicative and needs a positive signal), is
    left unchanged (gain 1) with a :class:`PreprocessWarning`; so is every channel when
    there is no foreground at all.

    Afterwards every measured column has the same tissue mean ``r[c]``: a drift that
    multiplies the signal by ``d[x]`` is removed exactly.

    Args:
        stack: raw (C, Y, X) stack (float32).
        foreground: bool (Y, X) tissue mask.
        min_column_pixels: fewest foreground pixels for a column to be measured.
        names: channel names, for warnings.
        threads: channels processed in parallel.
        out: float32 array of the stack's shape for the result; may be ``stack`` itself.

    Returns:
        ``(corrected, profile)``: float32 (C, Y, X) and the :class:`DriftProfile`.

    Raises:
        ValueError: if the mask's shape is not the stack's (Y, X).
    """
    n_channels, height, width = stack.shape
    if foreground.shape != (height, width):
        raise ValueError(f"foreground {foreground.shape} does not match stack {stack.shape}")
    weights = foreground.astype(np.float32)
    count = foreground.sum(axis=0)
    # Column sums over the foreground, accumulated in the stack's float32: the relative
    # error (below 1e-4 even for 2048 rows) is far below any drift worth correcting.
    sums = np.asarray(
        map_channels(lambda c: np.einsum("yx,yx->x", stack[c], weights), n_channels, threads),
        dtype=np.float64,
    ).reshape(n_channels, width)
    total = int(count.sum())
    reference = sums.sum(axis=1) / total if total else np.zeros(n_channels)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / count
    measured = (count >= max(1, min_column_pixels))[np.newaxis, :] & (means > 0)
    column_means = np.ones((n_channels, width))
    gain = np.ones((n_channels, width))
    columns = np.arange(width)
    skipped = []
    for c in range(n_channels):
        if not measured[c].any() or reference[c] <= 0:
            skipped.append(c)
            measured[c] = False
            continue
        column_means[c] = np.interp(columns, columns[measured[c]], means[c, measured[c]])
        gain[c] = reference[c] / column_means[c]
    if total == 0:
        warnings.warn(
            "no foreground pixels: the drift correction is skipped",
            PreprocessWarning,
            stacklevel=2,
        )
    elif skipped:
        labels = ", ".join(repr(names[c]) if names is not None else str(c) for c in skipped)
        warnings.warn(
            f"channels {labels}: no column with at least {min_column_pixels} foreground "
            "pixels and a positive mean; the drift correction leaves them unchanged",
            PreprocessWarning,
            stacklevel=2,
        )
    gain32 = gain.astype(np.float32)
    corrected = np.empty(stack.shape, dtype=np.float32) if out is None else out
    map_channels(lambda c: np.multiply(stack[c], gain32[c], out=corrected[c]), n_channels, threads)
    profile = DriftProfile(
        column_means=column_means, reference=reference, gain=gain, measured_columns=measured
    )
    return corrected, profile
