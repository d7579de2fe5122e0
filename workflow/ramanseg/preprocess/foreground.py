"""Tissue (foreground) detection: k-means on the H&E image, or on the SRS stack without one."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from ramanseg.preprocess.common import CACHE_BLOCK, PreprocessWarning
from ramanseg.preprocess.normalize import exact_percentiles

#: Pixels drawn (seeded, without replacement) to fit k-means; all pixels are then assigned.
KMEANS_SAMPLE_SIZE = 20_000
#: k-means restarts, fixed so that results do not depend on scikit-learn's default.
KMEANS_N_INIT = 3
#: The total Raman intensity is clipped at this percentile before clustering, and floored
#: at these fractions of its median and of the clip (:func:`srs_tissue_feature`).
SRS_CLIP_PERCENTILE = 99.0
SRS_FLOOR_OF_MEDIAN = 0.05
SRS_FLOOR_OF_CLIP = 1e-4
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
    rows = max(1, CACHE_BLOCK // width)
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


def srs_tissue_feature(stack: np.ndarray, roles: Sequence[str]) -> np.ndarray:
    """The per-pixel feature :func:`foreground_from_srs` clusters: a robust log intensity.

    With ``T`` the total Raman intensity (the sum of the raw Raman channels; all channels
    if none has the role ``raman``), ``h`` its ``SRS_CLIP_PERCENTILE``-th percentile and
    ``m`` its median::

        floor   = max(SRS_FLOOR_OF_MEDIAN m, SRS_FLOOR_OF_CLIP h)
        feature = ln(clip(T, floor, h))

    Why each part: saturated pixels (a bright particle: 65535 in every band) lie far
    above the tissue on a linear scale, and two k-means clusters then split them from
    everything else (80 such pixels in a 128^2 image left 0.5 % "tissue"). Clipping at
    the percentile flattens up to ``100 - SRS_CLIP_PERCENTILE`` % of them into the
    brightest tissue; the logarithm keeps more of them (a few per cent) closer to the
    tissue than the glass is, and stops k-means from splitting bright tissue (fat,
    dense stroma) from pale tissue instead of tissue from glass. The floor makes glass
    one tight group where its signal is near zero or negative (offset-subtracted data);
    it follows the median, not ``h``, which saturated pixels can raise; its second term
    keeps it positive when most of the image is glass at zero.

    Args:
        stack: raw (C, Y, X) stack, before normalisation.
        roles: the role of each channel.

    Returns:
        float64 array (Y, X); constant where the total has no positive percentile ``h``.
    """
    raman = [c for c, role in enumerate(roles) if role == "raman"] or list(range(len(stack)))
    total = np.zeros(stack.shape[1:], dtype=np.float64)
    for c in raman:
        total += stack[c]
    median, high = (float(v) for v in exact_percentiles(total, [50.0, SRS_CLIP_PERCENTILE]))
    if not high > 0:
        return np.zeros(total.shape)
    floor = max(SRS_FLOOR_OF_MEDIAN * median, SRS_FLOOR_OF_CLIP * high)
    np.clip(total, floor, high, out=total)
    return np.log(total, out=total)


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

    k-means (as in :func:`foreground_from_he`) on one feature per pixel, the clipped log
    of the total Raman intensity (:func:`srs_tissue_feature`). Tissue gives a strong C-H
    stretching signal, bare glass almost none, so the cluster with the lowest centre is
    background and the others are tissue. On the phantom's 32 samples with the H&E
    dropped and 3 % of the pixels saturated, the tissue found agrees with the true tissue
    map to Dice >= 0.99, also with the glass's offset subtracted from the stack.

    A feature with fewer distinct values than clusters (a constant image, or a total
    with no positive signal) cannot be clustered; then every pixel counts as tissue and
    a :class:`PreprocessWarning` says so.

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
    feature = srs_tissue_feature(stack, roles)
    values = feature.reshape(-1)[_subsample(feature.size, sample_size, seed)]
    centres = _fit_kmeans(values[:, np.newaxis], values, n_clusters, seed, threads)
    if centres is None:
        warnings.warn(
            f"the total Raman intensity has fewer than {n_clusters} distinct positive levels; "
            "every pixel is taken as tissue",
            PreprocessWarning,
            stacklevel=2,
        )
        return np.ones(stack.shape[1:], dtype=bool)
    # Nearest centre in one dimension: cut at the midpoints between sorted centres. The
    # lowest centre (index 0 after sorting) is the background.
    ordered = np.sort(centres[:, 0])
    cuts = (ordered[1:] + ordered[:-1]) / 2.0
    return (np.searchsorted(cuts, feature) > 0).reshape(stack.shape[1:])


def check_foreground_fraction(
    foreground: np.ndarray, plausible_range: Sequence[float], source: str
) -> bool:
    """Whether the tissue fraction is implausible, with a :class:`PreprocessWarning` if so.

    A fraction outside ``plausible_range`` (config ``preprocess.foreground_fraction``)
    is almost always a failed tissue detection (a few bright pixels taken as the tissue,
    or the whole image), not a real section: the drift correction, which averages over
    the tissue, is then wrong too.

    Args:
        foreground: bool (Y, X) tissue mask.
        plausible_range: ``[low, high]``, fractions of the image.
        source: where the mask came from, ``he`` or ``srs``, for the message.

    Returns:
        True if the fraction is below ``low`` or above ``high``.
    """
    low, high = (float(v) for v in plausible_range)
    fraction = np.count_nonzero(foreground) / foreground.size
    if low <= fraction <= high:
        return False
    fix = (
        "check the H&E image and its registration"
        if source == "he"
        else "add the sample's H&E image (more reliable than the Raman intensity)"
    )
    warnings.warn(
        f"IMPLAUSIBLE TISSUE DETECTION: {100 * fraction:.1f} % of the image is tissue, "
        f"outside the plausible {100 * low:g}-{100 * high:g} % "
        f"(`preprocess.foreground_fraction`), found from the "
        f"{'H&E image' if source == 'he' else 'total Raman intensity'}; the foreground "
        f"mask and the drift correction rest on it. Look at the QC figure; {fix}, or "
        "change `preprocess.foreground_clusters`",
        PreprocessWarning,
        stacklevel=2,
    )
    return True
