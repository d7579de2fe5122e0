"""The tissue map: where glass, stroma, fat, epithelium, tumour, necrosis (and, in the
``immune_cells`` variant, lymphocyte aggregates) are, and which of it the pathologist
annotated."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.fft
from scipy import ndimage
from skimage import morphology

#: The tissue classes the phantom draws; the tissue map codes them 1..5 (0 = glass).
TISSUE_CLASSES = ("Tumor", "Necrosis", "Epithelium", "Stroma", "Other")
SLIDE, TUMOR, NECROSIS, EPITHELIUM, STROMA, OTHER = range(6)
#: Classes drawn only in the samples of a variant (``phantom.variants.immune_cells``);
#: the tissue map codes them from 6 on.
EXTRA_CLASSES = ("Immune cells",)
IMMUNE = 6
#: The class name of each tissue code (the glass, code 0, has none).
CODE_CLASSES = (None, *TISSUE_CLASSES, *EXTRA_CLASSES)

#: QuPath's colours for its built-in classes; Epithelium is not built in, so our own.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "Tumor": (200, 0, 0),
    "Necrosis": (50, 50, 50),
    "Epithelium": (0, 150, 200),
    "Stroma": (150, 200, 150),
    "Other": (255, 200, 0),
    "Immune cells": (160, 90, 160),
}

# --------------------------------------------------------------------------------------
# random fields


def _smooth_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    scales: Sequence[float],
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """Gaussian-filtered white noise summed over scales, zero mean and unit s.d.

    Filtering in Fourier space costs the same for every scale (a spatial filter of a
    100 px sigma would not); the noise is drawn on a padded grid and cropped so the
    periodic boundary of the FFT does not show.

    Args:
        rng: the random generator.
        shape: output shape (rows, columns).
        scales: Gaussian sigmas in pixels, one per octave.
        weights: relative amplitude of each octave (each octave is unit variance first).
    """
    weights = [1.0] * len(scales) if weights is None else list(weights)
    pad = math.ceil(2 * max(scales))
    h, w = shape[0] + 2 * pad, shape[1] + 2 * pad
    spectrum = scipy.fft.rfft2(rng.standard_normal((h, w), dtype=np.float32))
    fy2, fx2 = scipy.fft.fftfreq(h) ** 2, scipy.fft.rfftfreq(w) ** 2
    fx2_full = scipy.fft.fftfreq(w) ** 2
    kernel = np.zeros((h, fx2.size), np.float32)
    for sigma, weight in zip(scales, weights, strict=True):
        # The Gaussian transfer function is separable, so is its Parseval norm (the
        # variance of filtered unit white noise is the mean squared gain over the grid).
        c = 2.0 * np.pi**2 * sigma**2
        gy, gx = np.exp(-c * fy2), np.exp(-c * fx2)
        norm = math.sqrt(np.mean(gy**2) * np.mean(np.exp(-2.0 * c * fx2_full)))
        kernel += np.outer(weight * gy / norm, gx).astype(np.float32)
    field = scipy.fft.irfft2(spectrum * kernel, s=(h, w))
    field = field[pad : pad + shape[0], pad : pad + shape[1]]
    field -= field.mean()
    field /= field.std() + 1e-12
    return field.astype(np.float32)


def _threshold_fraction(field: np.ndarray, region: np.ndarray, fraction: float) -> np.ndarray:
    """The ``fraction`` of ``region`` where ``field`` is highest."""
    if not region.any() or fraction <= 0:
        return np.zeros_like(region)
    level = np.quantile(field[region], 1.0 - min(fraction, 1.0))
    return region & (field >= level)


def _clean(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop specks and fill pinholes smaller than ``min_area`` pixels."""
    mask = morphology.remove_small_objects(mask, max_size=min_area - 1)
    return morphology.remove_small_holes(mask, max_size=min_area - 1)


def _tissue_map(
    rng: np.random.Generator, h: int, w: int, tumour_shrink: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the tissue map.

    Args:
        rng: the sample's random generator.
        h: rows.
        w: columns.
        tumour_shrink: shrinks the tumour share (5-50 % of the tissue) by this fraction.

    Returns:
        ``tissue`` (uint8 codes), ``depth`` (distance to the glass in px, the surface
        depth used for the epithelium's layering) and the epithelium thickness map.
    """
    size = math.sqrt(h * w)
    min_area = max(6, round(4e-4 * h * w))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    # Tissue section: a noisy blob covering 65-90 % of the field, off centre.
    cy, cx = h * rng.uniform(0.35, 0.65), w * rng.uniform(0.35, 0.65)
    radial = ((yy - cy) / h) ** 2 + ((xx - cx) / w) ** 2
    field = _smooth_noise(rng, (h, w), [0.12 * size, 0.04 * size], [1.0, 0.35]) - 6.0 * radial
    tissue_mask = _threshold_fraction(field, np.ones((h, w), bool), rng.uniform(0.65, 0.9))
    labels, n = ndimage.label(tissue_mask)
    if n > 1:
        # Keep the main piece and sizeable fragments, as a mounted section would.
        areas = np.bincount(labels.ravel())[1:]
        keep = np.flatnonzero(areas >= 0.05 * areas.max()) + 1
        tissue_mask = np.isin(labels, keep)
    tissue_mask = _clean(tissue_mask, min_area)
    # Distance to the glass; the image border is not a tissue surface, so pad with tissue.
    depth = ndimage.distance_transform_edt(np.pad(tissue_mask, 1, constant_values=True))
    depth = depth[1:-1, 1:-1].astype(np.float32)

    tissue = np.where(tissue_mask, STROMA, SLIDE).astype(np.uint8)

    # Epithelium: a surface band along part of the tissue edge, ridged thickness.
    thickness = np.zeros((h, w), np.float32)
    epithelium = np.zeros((h, w), bool)
    if rng.random() < 0.8 and (~tissue_mask).any():
        angle = rng.uniform(0, 2 * np.pi)
        side = (np.cos(angle) * (xx - w / 2) + np.sin(angle) * (yy - h / 2)) / size
        side = side + 0.25 * _smooth_noise(rng, (h, w), [0.1 * size])
        t0 = rng.uniform(0.045, 0.08) * size
        ridges = _smooth_noise(rng, (h, w), [0.025 * size])
        thickness = np.maximum(t0 * (1.0 + 0.45 * ridges), 1.5).astype(np.float32)
        epithelium = tissue_mask & (side > rng.uniform(-0.1, 0.1)) & (depth <= thickness)
        epithelium = _clean(epithelium, min_area)
        tissue[epithelium] = EPITHELIUM

    # Fat (Other): lobules in the stroma.
    if rng.random() < 0.75:
        fat_field = _smooth_noise(rng, (h, w), [0.07 * size, 0.025 * size], [1.0, 0.3])
        fat = _threshold_fraction(fat_field, tissue == STROMA, rng.uniform(0.05, 0.25))
        tissue[_clean(fat, min_area)] = OTHER

    # Tumour nests; in some samples invading from the epithelium.
    tumour_field = _smooth_noise(rng, (h, w), [0.06 * size, 0.02 * size], [1.0, 0.3])
    if epithelium.any() and rng.random() < 0.5:
        near = ndimage.distance_transform_edt(~epithelium).astype(np.float32)
        tumour_field += 1.5 * np.exp(-near / (0.08 * size))
    allowed = tissue_mask & ~epithelium
    tumour = _clean(
        _threshold_fraction(tumour_field, allowed, (1.0 - tumour_shrink) * rng.uniform(0.05, 0.5)),
        min_area,
    )
    tumour &= allowed
    if tumour.sum() < min_area:
        # Tiny or unlucky images: a nest at the deepest point of the tissue.
        r, c = np.unravel_index(np.argmax(np.where(allowed, depth, -1)), (h, w))
        tumour = allowed & (np.hypot(yy - r, xx - c) <= max(3.0, 0.08 * size))
    tissue[tumour] = TUMOR

    # Necrosis: the core of the larger nests, always inside a rim of viable tumour.
    if rng.random() < 0.55:
        inside = ndimage.distance_transform_edt(tumour).astype(np.float32)
        rim = max(2.0, 0.02 * size)
        core = inside / (inside.max() + 1e-6) + 0.25 * _smooth_noise(rng, (h, w), [0.03 * size])
        necrosis = tumour & (inside > rim + 1) & (core > 0.55)
        necrosis = morphology.remove_small_objects(necrosis, max_size=min_area - 1)
        tissue[necrosis] = NECROSIS
    return tissue, depth, thickness


def add_immune_aggregates(rng: np.random.Generator, tissue: np.ndarray) -> np.ndarray:
    """Lymphocyte aggregates in the stroma, most of them near the tumour.

    Args:
        rng: the random generator (the sample's variant stream, so the rest of the
            sample is drawn as without aggregates).
        tissue: the tissue map of :func:`_tissue_map`.

    Returns:
        A copy of ``tissue`` with the aggregates coded :data:`IMMUNE`; unchanged if the
        sample has no stroma.
    """
    h, w = tissue.shape
    size = math.sqrt(h * w)
    min_area = max(6, round(4e-4 * h * w))
    stroma = tissue == STROMA
    if not stroma.any():
        return tissue.copy()
    field = _smooth_noise(rng, (h, w), [0.03 * size])
    if (tissue == TUMOR).any():
        # Immune cells gather at the invasive front.
        near = ndimage.distance_transform_edt(tissue != TUMOR).astype(np.float32)
        field += 1.5 * np.exp(-near / (0.08 * size))
    aggregates = _clean(_threshold_fraction(field, stroma, rng.uniform(0.06, 0.12)), min_area)
    aggregates &= stroma
    if aggregates.sum() < min_area:
        # Little stroma: one aggregate where the field is highest.
        r, c = np.unravel_index(np.argmax(np.where(stroma, field, -np.inf)), (h, w))
        yy, xx = np.mgrid[0:h, 0:w]
        aggregates = stroma & (np.hypot(yy - r, xx - c) <= max(3.0, 0.05 * size))
    tissue = tissue.copy()
    tissue[aggregates] = IMMUNE
    return tissue


def _annotated_class_map(
    rng: np.random.Generator, tissue: np.ndarray, names: Sequence[str]
) -> np.ndarray:
    """The class map the pathologist annotated: a margin of stroma / fat is left out
    (immune aggregates are annotated wherever they are)."""
    h, w = tissue.shape
    side = rng.integers(4)
    fraction = rng.uniform(0.08, 0.18)
    margin = np.zeros((h, w), bool)
    if side == 0:
        margin[:, : max(1, round(fraction * w))] = True
    elif side == 1:
        margin[:, w - max(1, round(fraction * w)) :] = True
    elif side == 2:
        margin[: max(1, round(fraction * h)), :] = True
    else:
        margin[h - max(1, round(fraction * h)) :, :] = True
    lookup = np.zeros(len(CODE_CLASSES), np.uint8)
    for code, name in enumerate(CODE_CLASSES[1:], start=1):
        lookup[code] = names.index(name) + 1 if name in names else 0
    class_map = lookup[tissue]
    class_map[margin & np.isin(tissue, [STROMA, OTHER])] = 0
    return class_map
