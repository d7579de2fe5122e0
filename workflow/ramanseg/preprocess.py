"""Per-sample preprocessing (paper section 3.1).

For one sample: read the SRS stack, the H&E image and the QuPath annotations; rasterise
the annotations into a class map and the binary tumour mask; find the tissue
(foreground) by k-means on the H&E image; correct the column-wise intensity drift with
the mean spectral profile of the foreground; normalise each channel between its
percentiles. Outputs, in ``results/preprocessed/<sample>/``:

* ``stack.ome.tif``: the normalised float32 stack (C, Y, X) with channel names;
* ``classes.tif``: the class map (0 = not annotated, 1 + index in ``annotations.classes``);
* ``mask.tif``: the binary mask (1 = foreground class, the paper's Tumor and Necrosis);
* ``foreground.tif``: the tissue mask (1 = tissue);
* ``qc.json``: counts and warnings for the sample.

The QC figure (the paper's Figure 1) is drawn from these files by :mod:`ramanseg.qc`.

**Order of the steps.** The paper lists normalisation before drift correction; we
correct the drift first, on the raw intensities. The drift (laser power and detection
gain wandering during the scan) multiplies the raw signal, so a multiplicative
column-wise correction is exact there; after percentile normalisation the values are
shifted, scaled and clipped to [0, 1], so the drift is no longer a pure factor and a
correction would push values out of [0, 1] again. Correcting first also keeps the
percentiles from being widened by the drift, and the stack written is exactly in [0, 1]
as the paper describes.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from ramanseg.annotations import (
    AnnotationFile,
    check_extent,
    rasterize_annotations,
    read_qupath_geojson,
)
from ramanseg.config import channel_names, channel_roles, display_channel_index, require
from ramanseg.fileio import json_bytes, write_files, write_json
from ramanseg.io import (
    CLASSES_NAME,
    FOREGROUND_NAME,
    MASK_NAME,
    QC_JSON_NAME,
    STACK_NAME,
    read_he,
    read_srs,
    write_mask,
    write_ome_tiff,
)
from ramanseg.preprocessed import PreprocessedFiles
from ramanseg.qc import draw_qc_figure

log = logging.getLogger(__name__)

#: Pixels drawn (seeded, without replacement) to fit k-means; all pixels are then assigned.
KMEANS_SAMPLE_SIZE = 20_000
#: k-means restarts, fixed so that results do not depend on scikit-learn's default.
KMEANS_N_INIT = 3
#: Columns with fewer foreground pixels than this are too noisy to estimate the drift and
#: take the value interpolated from their neighbours.
MIN_COLUMN_PIXELS = 10

#: Arrays up to this size are simply partitioned by :func:`_order_statistics`.
_SELECT_MIN_SIZE = 100_000
#: Size of the random sample that brackets the wanted ranks in :func:`_order_statistics`,
#: and the bracket's half-width in standard deviations of a sampled rank.
_SELECT_SAMPLE = 32_768
_SELECT_SIGMAS = 5.0
#: Values per block of the passes that work block by block (512 KiB of float32, which
#: stays in a core's L2 cache for the next step).
_CACHE_BLOCK = 131_072
#: Optical densities below this (transmission above 89 %, 8-bit values above ~228) count
#: as bare glass whatever their exact value. Flooring them makes the glass one tight
#: cluster despite scanner noise, which on a log scale would otherwise spread it enough for
#: k-means with three or more clusters to split the glass instead of the tissue.
OD_FLOOR = 0.05
#: The k-means feature of each 8-bit intensity I: ln(max(OD, OD_FLOOR)) with the optical
#: density OD = -log10((I + 1) / 256) (Beer-Lambert).
_LOG_OD_LUT = np.log(
    np.maximum(-np.log10((np.arange(256, dtype=np.float64) + 1.0) / 256.0), OD_FLOOR)
).astype(np.float32)


class PreprocessWarning(UserWarning):
    """Something in a sample worth a look, but not an error (recorded in ``qc.json``)."""


def _map_channels(function: Callable[[int], Any], n_channels: int, threads: int) -> list[Any]:
    """``[function(c) for c in range(n_channels)]``, on ``threads`` threads (numpy
    releases the GIL in the per-channel work)."""
    if threads <= 1 or n_channels <= 1:
        return [function(c) for c in range(n_channels)]
    with ThreadPoolExecutor(max_workers=min(threads, n_channels)) as pool:
        return list(pool.map(function, range(n_channels)))


# --------------------------------------------------------------------------- normalisation


@functools.lru_cache(maxsize=8)
def _sample_positions(n: int, m: int) -> np.ndarray:
    """``m`` random positions in ``range(n)`` (seeded), in memory order for a fast gather;
    cached, as every channel of a stack uses the same."""
    positions = np.random.default_rng(0).integers(0, n, m)
    positions.sort()
    positions.flags.writeable = False
    return positions


def _order_statistics(values: np.ndarray, ranks: Sequence[int]) -> np.ndarray:
    """The ``ranks``-th smallest of ``values`` (1-D, finite), exactly, in one pass.

    The values at a few positions of a random sample (seeded; its draw only affects the
    speed) bracket each wanted rank between two thresholds that hold it with near
    certainty: ``_SELECT_SIGMAS`` standard deviations of a sampled rank on either side.
    One pass over the data, block by block so that a block is still in the cache for
    every bracket, counts the values below each bracket and gathers those inside it;
    only these (about 1 % of the data for each bracket at 2048^2 pixels) are partitioned.
    A bracket that misses its rank after all falls back to partitioning everything, so
    the result is exact whatever the sample. For the 5th and 95th percentiles of a
    2048^2 channel this takes about 10 ms, against 17-19 ms for a pass per tail and 52 ms
    for ``np.partition``.

    Args:
        values: 1-D array of finite values.
        ranks: 0-based ranks into the sorted values.

    Returns:
        The order statistics, in the order of ``ranks``.
    """
    n = values.size
    wanted = sorted(set(ranks))
    if n <= _SELECT_MIN_SIZE:
        return np.partition(values, wanted)[list(ranks)]
    m = _SELECT_SAMPLE
    positions = _sample_positions(n, m)
    # [first, last] sample ranks around each wanted rank; overlapping ones merged.
    brackets: list[list[Any]] = []
    for rank in wanted:
        fraction = rank / (n - 1)
        spread = _SELECT_SIGMAS * math.sqrt(max(fraction * (1 - fraction), 1.0 / m) / m)
        first = math.floor((fraction - spread) * m) - 1
        last = math.ceil((fraction + spread) * m) + 1
        if brackets and first <= brackets[-1][1]:
            brackets[-1][1] = max(brackets[-1][1], last)
            brackets[-1][2].append(rank)
        else:
            brackets.append([first, last, [rank]])
    ends = sorted({k for first, last, _ in brackets for k in (first, last) if 0 <= k < m})
    sample = np.partition(values[positions], ends) if ends else values[:0]
    # None: the bracket is open on that side; open on both, it is everything.
    bounds = [
        (sample[first] if first >= 0 else None, sample[last] if last < m else None)
        for first, last, _ in brackets
    ]
    whole = [low is None and high is None for low, high in bounds]
    below = [0] * len(bounds)
    inside: list[list[np.ndarray]] = [[] for _ in bounds]
    block_size = min(n, _CACHE_BLOCK)
    at_least, at_most = np.empty(block_size, bool), np.empty(block_size, bool)
    for start in range(0, n, block_size):
        block = values[start : start + block_size]
        keep, upper = at_least[: block.size], at_most[: block.size]
        for j, (low, high) in enumerate(bounds):
            if whole[j]:
                continue
            if low is None:
                np.less_equal(block, high, out=keep)
            else:
                np.greater_equal(block, low, out=keep)
                below[j] += block.size - np.count_nonzero(keep)
                if high is not None:
                    np.less_equal(block, high, out=upper)
                    np.logical_and(keep, upper, out=keep)
            # np.compress rather than a boolean index: about three times faster here.
            inside[j].append(np.compress(keep, block))
    found: dict[int, Any] = {}
    missed: list[int] = []
    for (_, _, in_bracket), count, parts, is_whole in zip(
        brackets, below, inside, whole, strict=True
    ):
        candidates = values[:0] if is_whole else np.concatenate(parts)
        if not is_whole and count <= in_bracket[0] and in_bracket[-1] < count + candidates.size:
            shifted = [rank - count for rank in in_bracket]
            found.update(zip(in_bracket, np.partition(candidates, shifted)[shifted], strict=True))
        else:
            missed += in_bracket
    if missed:
        found.update(zip(missed, np.partition(values, missed)[missed], strict=True))
    return np.array([found[rank] for rank in ranks], dtype=values.dtype)


def exact_percentiles(values: np.ndarray, percentiles: Sequence[float]) -> np.ndarray:
    """``np.percentile(values, percentiles)`` (method ``linear``), bit for bit, faster.

    Uses numpy's own arithmetic: ``v = (n - 1) * (q / 100)``, ``i = floor(v)``,
    ``g = v - i``, ``d = x[i + 1] - x[i]`` in the data's type, then ``x[i] + d g`` for
    ``g < 0.5`` and ``x[i + 1] - d (1 - g)`` otherwise (numpy's ``_lerp``), where ``x`` is
    the sorted data; the order statistics come from :func:`_order_statistics`. The
    values must be finite. ``tests/test_preprocess.py`` checks the equality with numpy.

    Args:
        values: array of finite values (any shape; flattened).
        percentiles: percentages in [0, 100].

    Returns:
        float64 array, one value per percentile.
    """
    flat = values.reshape(-1)
    n = flat.size
    q = np.true_divide(np.asarray(percentiles, dtype=np.float64), 100)
    virtual = (n - 1) * q
    previous = np.floor(virtual)
    following = previous + 1
    previous[virtual >= n - 1] = following[virtual >= n - 1] = n - 1
    previous[virtual < 0] = following[virtual < 0] = 0
    gamma = virtual - previous
    ranks = [int(r) for pair in zip(previous, following, strict=True) for r in pair]
    stats = _order_statistics(flat, ranks).reshape(len(q), 2)
    result = np.empty(len(q), dtype=np.float64)
    for i in range(len(q)):
        low, high = stats[i]
        difference = high - low
        if gamma[i] >= 0.5:
            result[i] = high - difference * (1 - gamma[i])
        else:
            result[i] = low + difference * gamma[i]
    return result


def percentile_ranges(
    stack: np.ndarray,
    roles: Sequence[str],
    percentiles: Mapping[str, Sequence[float]],
    *,
    threads: int = 1,
) -> np.ndarray:
    """The intensity range ``[lo, hi]`` of each channel from its role's percentiles.

    ``lo[c] = np.percentile(stack[c], p_lo(role[c]))`` and likewise ``hi`` with
    numpy's default ``linear`` method, over all pixels of the channel (computed by
    :func:`exact_percentiles`, which gives the same numbers faster).

    Args:
        stack: (C, Y, X) array.
        roles: the role of each channel (``raman``, ``transmission``, ``tpef``, ``shg``).
        percentiles: ``{role: [p_lo, p_hi]}`` in percent (config ``preprocess.percentiles``).
        threads: channels processed in parallel.

    Returns:
        float64 array (C, 2) of ``[lo, hi]``.

    Raises:
        ValueError: a role without percentiles, a range outside [0, 100] or not
            increasing, or ``roles`` of the wrong length.
    """
    if len(roles) != stack.shape[0]:
        raise ValueError(f"{len(roles)} roles for a stack of {stack.shape[0]} channels")
    q = []
    for role in roles:
        if role not in percentiles:
            raise ValueError(f"no `preprocess.percentiles` entry for channel role {role!r}")
        p_lo, p_hi = (float(v) for v in percentiles[role])
        if not 0.0 <= p_lo < p_hi <= 100.0:
            raise ValueError(
                f"`preprocess.percentiles.{role}` must satisfy 0 <= low < high <= 100, "
                f"got [{p_lo:g}, {p_hi:g}]"
            )
        q.append((p_lo, p_hi))
    ranges = _map_channels(lambda c: exact_percentiles(stack[c], q[c]), len(roles), threads)
    return np.asarray(ranges, dtype=np.float64).reshape(len(roles), 2)


def scale_to_ranges(
    stack: np.ndarray,
    ranges: np.ndarray,
    *,
    names: Sequence[str] | None = None,
    threads: int = 1,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Map each channel's ``[lo, hi]`` to [0, 1], clipping values outside.

    ``out[c] = clip((stack[c] - lo[c]) / (hi[c] - lo[c]), 0, 1)`` in float32. Where
    ``hi == lo`` (a constant channel, or one where most pixels share one value) the
    formula is undefined; such a channel becomes ``1`` above ``hi`` and ``0`` elsewhere,
    the limit of the clipped formula, so a constant channel is all zeros. A
    :class:`PreprocessWarning` names it.

    Args:
        stack: (C, Y, X) array.
        ranges: (C, 2) array of ``[lo, hi]`` from :func:`percentile_ranges`.
        names: channel names, for the warning.
        threads: channels processed in parallel.
        out: float32 array of the stack's shape for the result; may be ``stack`` itself.

    Returns:
        float32 array (C, Y, X) with values in [0, 1].
    """
    if out is None:
        out = np.empty(stack.shape, dtype=np.float32)

    def scale(c: int) -> None:
        lo, hi = np.float32(ranges[c, 0]), np.float32(ranges[c, 1])
        if hi > lo:
            np.subtract(stack[c], lo, out=out[c], dtype=np.float32)
            np.divide(out[c], hi - lo, out=out[c])
            np.clip(out[c], 0.0, 1.0, out=out[c])
        else:
            np.greater(stack[c], hi, out=out[c])

    _map_channels(scale, stack.shape[0], threads)
    for c in np.flatnonzero(ranges[:, 1] <= ranges[:, 0]):
        label = repr(names[c]) if names is not None else f"{c}"
        warnings.warn(
            f"channel {label} has an empty percentile range (low = high = {ranges[c, 0]:g}): "
            "it is constant or nearly so and is set to 0 (1 above the range)",
            PreprocessWarning,
            stacklevel=2,
        )
    return out


def normalize_percentiles(
    stack: np.ndarray,
    roles: Sequence[str],
    percentiles: Mapping[str, Sequence[float]],
    *,
    names: Sequence[str] | None = None,
    threads: int = 1,
) -> np.ndarray:
    """Percentile-normalise each channel to [0, 1] (paper section 3.1).

    For channel ``c`` with role ``r`` and percentiles ``[p_lo, p_hi]`` =
    ``percentiles[r]`` (the paper: Raman 5-95, TPEF and SHG 1-99)::

        lo = np.percentile(stack[c], p_lo)      # numpy's "linear" method
        hi = np.percentile(stack[c], p_hi)
        out[c] = clip((stack[c] - lo) / (hi - lo), 0, 1)

    so values below ``lo`` map to 0 and values above ``hi`` to 1. A constant channel
    (``hi == lo``) becomes zeros, with a :class:`PreprocessWarning`.

    Args:
        stack: (C, Y, X) array.
        roles: the role of each channel.
        percentiles: ``{role: [p_lo, p_hi]}`` (config ``preprocess.percentiles``).
        names: channel names, for warnings.
        threads: channels processed in parallel.

    Returns:
        float32 array (C, Y, X) in [0, 1].

    Raises:
        ValueError: see :func:`percentile_ranges`.
    """
    ranges = percentile_ranges(stack, roles, percentiles, threads=threads)
    return scale_to_ranges(stack, ranges, names=names, threads=threads)


# ------------------------------------------------------------------------------ foreground


def _subsample(n: int, sample_size: int, seed: int) -> np.ndarray | slice:
    """Rows to fit k-means on: ``sample_size`` of ``n`` drawn without replacement
    (seeded, sorted for memory locality), or all of them."""
    if n <= sample_size:
        return slice(None)
    return np.sort(np.random.default_rng(seed).choice(n, size=sample_size, replace=False))


def _fit_kmeans(
    features: np.ndarray, keys: np.ndarray, n_clusters: int, seed: int, threads: int
) -> np.ndarray | None:
    """k-means centres (n_clusters, d) of ``features`` (n, d); scikit-learn, seeded.

    ``keys`` (one scalar per row, equal for equal rows) counts the distinct rows; with
    fewer than ``n_clusters`` of them k-means is undefined and None is returned.
    """
    if np.unique(keys).size < n_clusters:
        return None
    kmeans = KMeans(n_clusters=n_clusters, n_init=KMEANS_N_INIT, random_state=seed)
    # scikit-learn's OpenMP threads would take every core; keep to the job's share.
    with threadpool_limits(limits=max(1, threads)):
        kmeans.fit(features.astype(np.float64))
    return kmeans.cluster_centers_


def foreground_from_he(
    he: np.ndarray,
    n_clusters: int = 2,
    seed: int = 0,
    *,
    sample_size: int = KMEANS_SAMPLE_SIZE,
    threads: int = 1,
) -> np.ndarray:
    """Tissue pixels of an H&E image by k-means (paper section 3.1).

    Each RGB channel is turned into an optical density ``OD = -log10((I + 1) / 256)``
    (Beer-Lambert: stain absorbance, bare glass near 0), and pixels are clustered on
    ``ln(max(OD, OD_FLOOR))`` per channel. The logarithm matters: in linear OD, dense
    nuclei (OD ~1) lie further from pale eosin-stained stroma (OD ~0.3) than stroma from
    glass (OD ~0.03), so two clusters split nuclei from everything else; on a log scale
    glass is the outlying group and two clusters separate glass from tissue. k-means
    (scikit-learn, ``n_init`` fixed, ``random_state=seed``) is fitted on ``sample_size``
    pixels drawn with a seeded generator, and every pixel is assigned to its nearest
    centre. The cluster with the smallest total density (the brightest, least stained:
    the slide background) is background; every other cluster is tissue. With more than
    two clusters, tissue is split by stain (haematoxylin, eosin) and all of it kept.

    An image with fewer distinct colours than clusters cannot be clustered; then every
    pixel counts as tissue and a :class:`PreprocessWarning` says so. A section that fills
    the whole image (no glass) still yields two clusters, the lighter tissue being called
    background: check the QC figure.

    Args:
        he: uint8 RGB image (Y, X, 3).
        n_clusters: number of k-means clusters (config ``preprocess.foreground_clusters``).
        seed: random seed for the subsample and k-means.
        sample_size: pixels used to fit k-means.
        threads: threads for k-means.

    Returns:
        bool array (Y, X), True for tissue.

    Raises:
        ValueError: for ``n_clusters < 2`` or an image that is not uint8 (Y, X, 3).
    """
    if n_clusters < 2:
        raise ValueError(f"`preprocess.foreground_clusters` must be at least 2, got {n_clusters}")
    if he.ndim != 3 or he.shape[2] != 3 or he.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image (Y, X, 3), got {he.dtype} {he.shape}")
    rgb = he.reshape(-1, 3)[_subsample(he.shape[0] * he.shape[1], sample_size, seed)]
    keys = (rgb[:, 0].astype(np.int32) << 16) | (rgb[:, 1].astype(np.int32) << 8) | rgb[:, 2]
    centres = _fit_kmeans(_LOG_OD_LUT[rgb], keys, n_clusters, seed, threads)
    if centres is None:
        warnings.warn(
            f"the H&E image has fewer than {n_clusters} distinct colours; every pixel is "
            "taken as tissue",
            PreprocessWarning,
            stacklevel=2,
        )
        return np.ones(he.shape[:2], dtype=bool)
    return _tissue_by_nearest_centre(he, centres)


def _tissue_by_nearest_centre(he: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """True where a pixel's nearest k-means centre is not the background one.

    The background centre is the one with the smallest total density. The squared
    distance to a centre is a sum over the three colour channels of a function of an
    8-bit value, so it comes from three 256-entry tables per centre, far faster than
    distances on a float (N, 3) array. With two centres only the difference of the two
    distances matters, which is three lookups per pixel in all. Rows go in blocks, so
    that numpy's conversion of the 8-bit indices stays in the cache (twice as fast).
    Ties go to the background.

    Args:
        he: uint8 RGB image (Y, X, 3).
        centres: (k, 3) centres in the feature space of ``_LOG_OD_LUT``.

    Returns:
        bool array (Y, X).
    """
    background = int(np.argmin(centres.sum(axis=1)))
    # (k, 3, 256) squared distances per channel and 8-bit value, in float64.
    distance_lut = (_LOG_OD_LUT[np.newaxis, np.newaxis, :] - centres[:, :, np.newaxis]) ** 2
    if len(centres) == 2:
        # tissue where d(other) - d(background) < 0
        tables = (distance_lut[1 - background] - distance_lut[background])[np.newaxis]
    else:
        tables = distance_lut
    tables = tables.astype(np.float32)
    height, width = he.shape[:2]
    rows = max(1, _CACHE_BLOCK // width)
    scores = np.empty((len(tables), rows, width), dtype=np.float32)
    term = np.empty((rows, width), dtype=np.float32)
    tissue = np.empty((height, width), dtype=bool)
    for start in range(0, height, rows):
        block = he[start : start + rows]
        n = block.shape[0]
        for k, table in enumerate(tables):
            score = scores[k, :n]
            np.take(table[0], block[..., 0], out=score)
            for channel in (1, 2):
                score += np.take(table[channel], block[..., channel], out=term[:n])
        if len(tables) == 1:
            np.less(scores[0, :n], 0.0, out=tissue[start : start + n])
        else:
            nearest = np.argmin(scores[:, :n], axis=0)
            np.not_equal(nearest, background, out=tissue[start : start + n])
    return tissue


def foreground_from_srs(
    stack: np.ndarray,
    roles: Sequence[str],
    n_clusters: int = 2,
    seed: int = 0,
    *,
    sample_size: int = KMEANS_SAMPLE_SIZE,
    threads: int = 1,
) -> np.ndarray:
    """Tissue pixels from the SRS stack, for samples without an H&E image.

    k-means (as in :func:`foreground_from_he`) on one feature per pixel: the total Raman
    intensity, the sum of the raw Raman channels (all channels if none has the role
    ``raman``). Tissue gives a strong C-H stretching signal, bare glass almost none, so
    the cluster with the lowest centre is background and the others are tissue.

    Args:
        stack: raw (C, Y, X) stack, before normalisation.
        roles: the role of each channel.
        n_clusters: number of k-means clusters.
        seed: random seed.
        sample_size: pixels used to fit k-means.
        threads: threads for k-means.

    Returns:
        bool array (Y, X), True for tissue.

    Raises:
        ValueError: for ``n_clusters < 2``.
    """
    if n_clusters < 2:
        raise ValueError(f"`preprocess.foreground_clusters` must be at least 2, got {n_clusters}")
    raman = [c for c, role in enumerate(roles) if role == "raman"] or list(range(len(stack)))
    total = np.zeros(stack.shape[1:], dtype=np.float64)
    for c in raman:
        total += stack[c]
    values = total.reshape(-1)[_subsample(total.size, sample_size, seed)]
    centres = _fit_kmeans(values[:, np.newaxis], values, n_clusters, seed, threads)
    if centres is None:
        warnings.warn(
            f"the total Raman intensity takes fewer than {n_clusters} distinct values; every "
            "pixel is taken as tissue",
            PreprocessWarning,
            stacklevel=2,
        )
        return np.ones(stack.shape[1:], dtype=bool)
    # Nearest centre in one dimension: cut at the midpoints between sorted centres. The
    # lowest centre (index 0 after sorting) is the background.
    ordered = np.sort(centres[:, 0])
    cuts = (ordered[1:] + ordered[:-1]) / 2.0
    return (np.searchsorted(cuts, total) > 0).reshape(stack.shape[1:])


# ---------------------------------------------------------------------------------- drift


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
        _map_channels(lambda c: np.einsum("yx,yx->x", stack[c], weights), n_channels, threads),
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
    _map_channels(lambda c: np.multiply(stack[c], gain32[c], out=corrected[c]), n_channels, threads)
    profile = DriftProfile(
        column_means=column_means, reference=reference, gain=gain, measured_columns=measured
    )
    return corrected, profile


# ------------------------------------------------------------------------------ per sample

OUTPUT_FILES = (STACK_NAME, CLASSES_NAME, MASK_NAME, FOREGROUND_NAME, QC_JSON_NAME)


def _annotation_file_counts(
    parsed: AnnotationFile, config: Mapping[str, Any], clipped: int
) -> dict[str, int]:
    counts = parsed.counts()
    ignore = set(require(config, "annotations").get("ignore") or [])
    ignored = sum(a.class_name in ignore for a in parsed.annotations)
    counts["skipped_ignored_class"] = ignored
    counts["rasterised"] = counts["classified"] - ignored
    counts["clipped_to_image"] = clipped
    counts["skipped_total"] = parsed.skipped + ignored
    return counts


def preprocess_sample(
    sample_id: str,
    srs_path: str | Path,
    he_path: str | Path | None,
    annotations_path: str | Path,
    config: Mapping[str, Any],
    outdir: str | Path,
    *,
    threads: int = 1,
) -> dict[str, Any]:
    """Preprocess one sample and write its outputs (see the module docstring).

    All results are computed before anything is written; each file is then written
    atomically, and if writing one fails the files already written by this call are
    removed. So after an error ``outdir`` holds none of this call's outputs.

    Args:
        sample_id: the sample id.
        srs_path: the SRS stack.
        he_path: the H&E image, or None / "" for a sample without one (the foreground
            then comes from :func:`foreground_from_srs`).
        annotations_path: the QuPath GeoJSON export.
        config: the workflow configuration (``channels``, ``annotations``,
            ``preprocess``, ``seed``).
        outdir: the output folder, ``results/preprocessed/<sample_id>``.
        threads: channels processed in parallel.

    Returns:
        The QC report written to ``qc.json``.

    Raises:
        InputError: for any problem with the sample's files (see :func:`read_srs`,
            :func:`read_he`, :func:`read_qupath_geojson`, :func:`rasterize_annotations`).
    """
    started = time.perf_counter()
    outdir = Path(outdir)
    names = channel_names(config)
    roles = channel_roles(config)
    settings = require(config, "preprocess")
    percentiles = require(config, "preprocess.percentiles")
    n_clusters = int(settings.get("foreground_clusters", 2))
    seed = int(config.get("seed", 0))
    classes = require(config, "annotations.classes")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PreprocessWarning)
        srs = read_srs(srs_path, config, sample_id)
        shape = srs.data.shape[1:]
        he = read_he(he_path, sample_id, shape) if he_path else None
        parsed = read_qupath_geojson(annotations_path, sample_id)
        class_map, mask = rasterize_annotations(parsed, shape, config, sample_id, annotations_path)
        clipped = check_extent(
            [a for a in parsed.annotations if a.class_name in classes],
            shape,
            sample_id,
            annotations_path,
        )
        if clipped:
            warnings.warn(
                f"{clipped} annotation feature(s) reach beyond the image and are clipped",
                PreprocessWarning,
                stacklevel=1,
            )
        if he is not None:
            foreground = foreground_from_he(he, n_clusters, seed, threads=threads)
        else:
            foreground = foreground_from_srs(srs.data, roles, n_clusters, seed, threads=threads)
        if settings.get("drift_correction", True):
            # In place: the raw stack is not needed again, and this saves a copy of it.
            stack, profile = correct_column_drift(
                srs.data, foreground, names=names, threads=threads, out=srs.data
            )
        else:
            stack, profile = srs.data, None
        ranges = percentile_ranges(stack, roles, percentiles, threads=threads)
        normalised = scale_to_ranges(stack, ranges, names=names, threads=threads, out=stack)
        empty_mask = not mask.any()
        if empty_mask:
            foreground_names = [n for n, label in classes.items() if label == 1]
            warnings.warn(
                f"the mask is empty: no pixel of a foreground class "
                f"({', '.join(foreground_names)}) is annotated",
                PreprocessWarning,
                stacklevel=1,
            )
        if srs.nonfinite_repaired:
            warnings.warn(
                f"{srs.nonfinite_repaired} NaN or infinite values replaced by their channel median",
                PreprocessWarning,
                stacklevel=1,
            )
    messages = [str(w.message) for w in caught if issubclass(w.category, PreprocessWarning)]
    for other in caught:  # recording caught every warning: pass the others on unchanged
        if not issubclass(other.category, PreprocessWarning):
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    for message in messages:
        log.warning("sample %s: %s", sample_id, message)

    n_pixels = class_map.size
    # A count per label: several times faster than np.bincount, which widens every uint8.
    class_counts = [np.count_nonzero(class_map == label) for label in range(len(classes) + 1)]
    qc: dict[str, Any] = {
        "sample_id": sample_id,
        "inputs": {
            "srs": str(srs_path),
            "he": str(he_path) if he_path else None,
            "annotations": str(annotations_path),
        },
        "shape": list(srs.data.shape),
        "source_dtype": srs.source_dtype,
        "foreground_source": "he" if he is not None else "srs",
        "foreground_fraction": np.count_nonzero(foreground) / n_pixels,
        "mask_fraction": np.count_nonzero(mask) / n_pixels,
        "unannotated_fraction": float(class_counts[0] / n_pixels),
        "class_fractions": {
            name: float(class_counts[i + 1] / n_pixels) for i, name in enumerate(classes)
        },
        "empty_mask": bool(empty_mask),
        "nonfinite_repaired": int(srs.nonfinite_repaired),
        "features": _annotation_file_counts(parsed, config, clipped),
        "drift_correction": None
        if profile is None
        else {
            "gain_min": float(profile.gain.min()),
            "gain_max": float(profile.gain.max()),
            "measured_column_fraction": float(profile.measured_columns.mean()),
        },
        "percentile_ranges": {
            name: [float(ranges[c, 0]), float(ranges[c, 1])] for c, name in enumerate(names)
        },
        "qc_channel": names[display_channel_index(config)],
        "warnings": messages,
    }

    write_files(
        {
            outdir / STACK_NAME: lambda p: write_ome_tiff(p, normalised, names),
            outdir / CLASSES_NAME: lambda p: write_mask(p, class_map),
            outdir / MASK_NAME: lambda p: write_mask(p, mask),
            outdir / FOREGROUND_NAME: lambda p: write_mask(p, foreground.astype(np.uint8)),
            outdir / QC_JSON_NAME: json_bytes(qc),
        }
    )
    log.info(
        "sample %s: preprocessed in %.1f s (tissue %.1f %%, mask %.1f %%)",
        sample_id,
        time.perf_counter() - started,
        100 * qc["foreground_fraction"],
        100 * qc["mask_fraction"],
    )
    return qc


# ------------------------------------------------------------------------------ benchmark


def _synthetic_bench_inputs(
    folder: Path, size: int, n_channels: int, seed: int
) -> tuple[Path, Path, Path, list[dict[str, Any]]]:
    """A uint16 stack with tissue and a column drift, its H&E and one annotated square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    tissue = ((yy - 0.5) ** 2 + (xx - 0.5) ** 2) < 0.16
    drift = (1.0 + 0.3 * np.sin(2 * np.pi * xx[0])).astype(np.float32)
    stack = np.empty((n_channels, size, size), dtype=np.uint16)
    for c in range(n_channels):
        level = np.where(tissue, 2000.0 + 40.0 * c, 200.0).astype(np.float32)
        noisy = level * drift + rng.normal(0.0, 50.0, (size, size)).astype(np.float32)
        stack[c] = np.clip(noisy, 0, 65535).astype(np.uint16)
    he = np.where(tissue[..., None], np.array([170, 90, 160]), np.array([240, 238, 242]))
    he = np.clip(he + rng.normal(0, 6, he.shape), 0, 255).astype(np.uint8)
    import tifffile

    srs_path, he_path, geojson_path = folder / "srs.tif", folder / "he.tif", folder / "a.geojson"
    tifffile.imwrite(srs_path, stack, photometric="minisblack", metadata={"axes": "CYX"})
    tifffile.imwrite(he_path, he, photometric="rgb")
    lo, hi = 0.35 * size, 0.65 * size
    square = [[lo, lo], [hi, lo], [hi, hi], [lo, hi], [lo, lo]]
    geojson_path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {"type": "Polygon", "coordinates": [square]},
                        "properties": {
                            "objectType": "annotation",
                            "classification": {"name": "Tumor"},
                        },
                    }
                ],
            }
        )
    )
    n_raman = n_channels - 3 if n_channels >= 4 else n_channels
    channels = [
        {"name": f"Raman {2802 + 14 * i}", "role": "raman", "wavenumber": 2802.0 + 14.6 * i}
        for i in range(n_raman)
    ]
    channels += [
        {"name": name, "role": role}
        for name, role in [("Transmission", "transmission"), ("TPEF", "tpef"), ("SHG", "shg")]
    ][: n_channels - n_raman]
    return srs_path, he_path, geojson_path, channels


def benchmark_preprocess(
    config: Mapping[str, Any],
    *,
    size: int = 2048,
    n_channels: int = 24,
    repeats: int = 3,
    threads: int = 1,
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Time :func:`preprocess_sample` against just reading and writing the same stack.

    One synthetic sample (uint16 ``n_channels x size x size`` with tissue and a column
    drift, its H&E and one annotated square) is written once. Then the baseline
    (``read_srs`` + ``write_ome_tiff`` of the float32 stack: the I/O every preprocessing
    run must do) and the full preprocessing are timed ``repeats`` times each in this
    process, in alternating order (AB BA AB ...), after one untimed warm-up run of each
    (imports, caches, first touch of memory); each run's output is deleted right after
    it. The medians of wall-clock and of CPU time and their ratios are reported, and the
    ratio of the fastest runs of each. The QC figure, drawn from the preprocessed files
    by its own workflow step, is timed after each preprocessing run and reported beside
    it (``qc_figure_seconds``, and ``ratio_with_qc_figure`` for both steps together).

    Args:
        config: the workflow configuration (``annotations``, ``preprocess``; the channel
            list is replaced by a synthetic one of ``n_channels`` channels).
        size: image side in pixels.
        n_channels: channels of the synthetic stack.
        repeats: timed runs of each.
        threads: passed to :func:`preprocess_sample`.
        workdir: folder for the temporary files (default: the system's).

    Returns:
        The timings, the ratio and the settings.

    Raises:
        ValueError: for ``repeats < 1``, ``size < 16`` or ``n_channels < 1``.
    """
    if repeats < 1 or size < 16 or n_channels < 1:
        raise ValueError(
            f"need repeats >= 1, size >= 16 and channels >= 1; got {repeats}, {size}, {n_channels}"
        )
    with tempfile.TemporaryDirectory(prefix="ramanseg-bench-", dir=workdir) as name:
        folder = Path(name)
        srs_path, he_path, geojson_path, channels = _synthetic_bench_inputs(
            folder, size, n_channels, int(config.get("seed", 0))
        )
        bench_config = dict(config)
        bench_config["channels"] = channels
        bench_names = [ch["name"] for ch in channels]

        def run_baseline(outdir: Path) -> None:
            srs = read_srs(srs_path, bench_config, "bench")
            write_ome_tiff(outdir / STACK_NAME, srs.data, bench_names)

        def run_preprocess(outdir: Path) -> None:
            preprocess_sample(
                "bench", srs_path, he_path, geojson_path, bench_config, outdir, threads=threads
            )

        runs = {"baseline": run_baseline, "preprocess": run_preprocess}
        wall: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        qc_times: list[float] = []
        # Run 0 is a warm-up (imports, font cache, first touch of memory) and not timed.
        # The order alternates and every output is deleted at once, so that neither side
        # always writes into the memory the other has just freed: on a virtual machine a
        # write into pages freed seconds ago can take several times longer.
        for repeat in range(repeats + 1):
            order = list(runs) if repeat % 2 == 0 else list(reversed(runs))
            for name in order:
                outdir = folder / f"{name}{repeat}"
                start, start_cpu = time.perf_counter(), time.process_time()
                runs[name](outdir)
                elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
                if name == "preprocess":
                    start_qc = time.perf_counter()
                    draw_qc_figure(
                        "bench", PreprocessedFiles.in_folder(outdir), he_path, bench_config,
                        outdir / "qc.png",
                    )  # fmt: skip
                    if repeat:
                        qc_times.append(time.perf_counter() - start_qc)
                shutil.rmtree(outdir)
                if repeat:
                    wall[name].append(elapsed)
                    cpu[name].append(elapsed_cpu)
    baseline_times, preprocess_times = wall["baseline"], wall["preprocess"]
    baseline_cpu, preprocess_cpu = cpu["baseline"], cpu["preprocess"]
    baseline = float(np.median(baseline_times))
    preprocess = float(np.median(preprocess_times))
    qc_figure = float(np.median(qc_times))
    return {
        "size": size,
        "channels": n_channels,
        "repeats": repeats,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "baseline": "read_srs + write_ome_tiff of the float32 stack",
        "baseline_seconds": baseline,
        "preprocess_seconds": preprocess,
        "ratio": preprocess / baseline,
        # Noise on a shared or virtual machine only ever adds time, so the fastest runs
        # are the steadiest estimate of each side's own cost.
        "ratio_of_minima": min(preprocess_times) / min(baseline_times),
        "qc_figure_seconds": qc_figure,
        "ratio_with_qc_figure": (preprocess + qc_figure) / baseline,
        # CPU time of this process (user + system): less disturbed by other processes.
        "baseline_cpu_seconds": float(np.median(baseline_cpu)),
        "preprocess_cpu_seconds": float(np.median(preprocess_cpu)),
        "cpu_ratio": float(np.median(preprocess_cpu) / np.median(baseline_cpu)),
        "baseline_runs": baseline_times,
        "preprocess_runs": preprocess_times,
        "qc_figure_runs": qc_times,
    }


# ------------------------------------------------------------------------------------ CLI


def add_commands(subparsers: Any) -> None:
    """Add ``preprocess`` and ``bench-preprocess`` to the ``ramanseg`` command line."""
    from ramanseg.cli import add_settings_arguments, settings_from_args

    parser = subparsers.add_parser(
        "preprocess",
        help="preprocess one sample (paper section 3.1)",
        description="Read one sample's SRS stack, H&E image and QuPath annotations; write "
        "the normalised stack, class map, mask, foreground and QC report.",
    )
    parser.add_argument("--sample", required=True, help="sample id")
    parser.add_argument("--srs", required=True, help="SRS stack (TIFF / OME-TIFF)")
    parser.add_argument(
        "--he", default="", help="H&E image registered to the SRS grid; empty for none"
    )
    parser.add_argument("--annotations", required=True, help="QuPath GeoJSON export")
    parser.add_argument("--outdir", required=True, help="output folder for this sample")
    parser.add_argument("--threads", type=int, default=1, help="threads (default 1)")
    add_settings_arguments(parser)

    def run_preprocess(args: Any) -> int:
        config = settings_from_args(args)
        preprocess_sample(
            args.sample, args.srs, args.he or None, args.annotations, config, args.outdir,
            threads=args.threads,
        )  # fmt: skip
        return 0

    parser.set_defaults(func=run_preprocess)

    bench = subparsers.add_parser(
        "bench-preprocess",
        help="time preprocessing of a synthetic stack against reading and writing it",
    )
    bench.add_argument("--size", type=int, default=2048, help="image side (default 2048)")
    bench.add_argument("--channels", type=int, default=24, help="channels (default 24)")
    bench.add_argument("--repeats", type=int, default=3, help="timed runs (default 3)")
    bench.add_argument("--threads", type=int, default=1, help="threads (default 1)")
    bench.add_argument("--out", required=True, help="JSON report")
    add_settings_arguments(bench)

    def run_bench(args: Any) -> int:
        config = settings_from_args(args)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        report = benchmark_preprocess(
            config, size=args.size, n_channels=args.channels, repeats=args.repeats,
            threads=args.threads, workdir=out.parent,
        )  # fmt: skip
        write_json(out, report)
        log.info(
            "preprocess %.2f s, read + write %.2f s: ratio %.2f (QC figure %.2f s more)",
            report["preprocess_seconds"],
            report["baseline_seconds"],
            report["ratio"],
            report["qc_figure_seconds"],
        )
        return 0

    bench.set_defaults(func=run_bench)
