"""A synthetic stimulated-Raman (SRS) dataset in exactly the workflow's input contract.

The phantom is the demo data and the main test bed of the pipeline: every image is drawn
from a known tissue map, so each later stage can be checked against ground truth. For each
sample it writes

* ``srs/<id>.ome.tif``: an OME-TIFF ``(C, Y, X)`` uint16 stack with one plane per
  configured channel (names in the OME metadata). Raman bands are rendered from per-class
  spectra (:data:`RAMAN_SPECTRA`) at the configured wavenumbers; transmission, TPEF and
  SHG planes from the tissue morphology;
* ``he/<id>.tif``: an RGB uint8 H&E image on the same pixel grid;
* ``annotations/<id>.geojson``: the pathologist's annotations as QuPath exports them;

plus ``samples.tsv`` (the sample sheet) and ``preview.png`` (one sample at a glance).

Tissue model
    Each sample is a tissue section (an irregular blob; the rest is glass slide) made of
    Stroma, with fat (Other), a surface band of squamous Epithelium (most samples), one or
    more Tumor nests (5-50 % of the tissue; in about half of the samples with epithelium
    they grow from it, so tumour and epithelium touch) and, in about half of the samples,
    Necrosis in the centre of the nests (so tumour polygons get holes). Epithelium also
    lines glass holes inside the section, as around a duct. Regions are thresholded multi-scale
    Gaussian noise fields; cells are rendered as nuclei (dots, densest in tumour and
    epithelium), collagen fibres (wavy lines, stroma) and adipocytes (Voronoi membranes,
    fat).

Acquisition model
    Per patient: a spectral shift of the peak positions (uniform, +-4 cm-1) and a gain.
    Per sample: a gain, a smooth multiplicative drift along the scan direction (x, the
    columns; common to all channels with a small per-channel slope), shot noise (Poisson;
    its normal approximation above 100 photo-electrons), read noise (Gaussian), a
    detector offset, and a few saturated pixels (65535 in every Raman band, as a bright
    particle would give). Per channel a fixed detector gain (a smooth responsivity curve).

Informative channels
    Class information lives in the Raman bands on and around the C-H peaks and in two of
    the other channels. Fisher scores (squared mean difference over summed variances,
    per pixel, demo configuration, 32 samples) of tumour vs stroma: 2904-2963 cm-1 (CH3,
    protein; 2919 and 2933 highest, ~4-5), 2846-2890 (CH2, lipid; ~1.1-1.9, and the
    main separation of fat from everything else), SHG (~1.0, collagen: stroma only),
    Transmission (~0.3, morphology: nuclei, density, edges). Tumour vs epithelium is
    deliberately hard: Transmission alike (means within ~4 %), the Raman bands differ by
    a few per cent (3006 / 3021 the most, Fisher ~0.05), TPEF the clearest (~1.3,
    keratinised surface layer brighter). The far-wing bands below ~2820 and above
    ~3070 cm-1 (2802, 2817, 3079, 3094 in the demo configuration) carry a flat baseline,
    Lorentzian tails a few per cent of a peak and noise: they separate tissue from glass
    but barely classes (tumour vs stroma Fisher 0.08-0.28, tumour vs rest < 0.1).

Annotations
    Traced from the ground-truth class map (pixel-corner polygons from
    ``rasterio.features.shapes``, simplified by half a pixel), in pixel coordinates
    (x = column, y = row, origin at the top-left image corner), so rasterising them by
    pixel centres reproduces the ground-truth class map (exactly in every sample we
    checked; the tests demand 95 % of annotated pixels). Stroma and fat in a
    margin band along one image edge are left unannotated, as is the glass. Tumour
    polygons have holes where necrosis is; stroma polygons where nests are. The export
    style rotates with the sample's index (``index % 4``) so that a small dataset holds
    all of them:

    0. QuPath 0.4/0.5: a FeatureCollection, one Feature per class (a MultiPolygon when
       the class has several regions), ``id`` a UUID, ``properties.objectType`` and
       ``properties.classification = {"name", "color"}``;
    1. the same, but one Feature per connected region (Polygons only);
    2. QuPath 0.2: a bare list of Features, ``id`` ``"PathAnnotationObject"``,
       ``classification = {"name", "colorRGB"}`` (packed signed ARGB);
    3. older scripts: a bare list of Features with ``classification`` a plain string.

Determinism
    Everything derives from ``phantom.seed``: the design from ``SeedSequence([seed, 0])``,
    the instrument from ``[seed, 1]``, patient ``p`` from ``[seed, 2, p]`` and sample
    ``i`` (its row in the sample sheet) from ``[seed, 3, i]``, so the output does not
    depend on the number of threads. TIFFs carry no timestamps and a UUID derived from
    the seed; the preview PNG carries no software tag: two runs are byte-identical.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import math
import threading
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio.errors
import rasterio.features
import scipy.fft
import shapely
import tifffile
from scipy import ndimage
from scipy.spatial import cKDTree
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from skimage import morphology

from ramanseg import __version__
from ramanseg.config import (
    CHANNEL_ROLES,
    ConfigError,
    channel_names,
    channel_roles,
    class_names,
    require,
)
from ramanseg.fileio import atomic_path

logger = logging.getLogger(__name__)

#: The tissue classes the phantom draws; the tissue map codes them 1..5 (0 = glass).
TISSUE_CLASSES = ("Tumor", "Necrosis", "Epithelium", "Stroma", "Other")
SLIDE, TUMOR, NECROSIS, EPITHELIUM, STROMA, OTHER = range(6)

#: QuPath's colours for its built-in classes; Epithelium is not built in, so our own.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "Tumor": (200, 0, 0),
    "Necrosis": (50, 50, 50),
    "Epithelium": (0, 150, 200),
    "Stroma": (150, 200, 150),
    "Other": (255, 200, 0),
}

#: Raman spectra of the C-H stretching region, in signal units (1.0 ~ 30000 counts), as
#: ``baseline`` plus Lorentzian ``peaks`` of ``(centre cm-1, half width cm-1, height)``.
#: Positions are the textbook C-H bands: 2850 CH2 symmetric (lipid), 2880 CH2 asymmetric
#: (lipid), 2930 CH3 symmetric (protein), 2955 CH3 asymmetric, 2940 + 2980 collagen
#: (proline/hydroxyproline CH2), 3010 =C-H (unsaturated lipid), 3060 aromatic C-H
#: (phenylalanine). Lipid-rich fat (Other) peaks at 2850, the protein-rich classes at
#: 2930, collagen-rich stroma at 2940. Tumour and epithelium differ by a few per cent in
#: the 2930/2850 ratio and in the 3010 band. ``Nucleus`` (DNA + histones) is mixed in
#: where nuclei are; ``Slide`` is the glass.
RAMAN_SPECTRA: dict[str, dict[str, Any]] = {
    "Tumor": {
        "baseline": 0.04,
        "peaks": (
            (2850.0, 9.0, 0.30),
            (2882.0, 12.0, 0.26),
            (2932.0, 15.0, 0.82),
            (2955.0, 11.0, 0.40),
            (3012.0, 10.0, 0.050),
            (3062.0, 12.0, 0.04),
        ),
    },
    "Epithelium": {
        "baseline": 0.04,
        "peaks": (
            (2850.0, 9.0, 0.31),
            (2882.0, 12.0, 0.27),
            (2932.0, 15.0, 0.80),
            (2955.0, 11.0, 0.39),
            (3012.0, 10.0, 0.075),
            (3062.0, 12.0, 0.04),
        ),
    },
    "Necrosis": {
        "baseline": 0.035,
        "peaks": (
            (2850.0, 9.0, 0.22),
            (2882.0, 12.0, 0.20),
            (2932.0, 15.0, 0.66),
            (2955.0, 11.0, 0.36),
            (3012.0, 10.0, 0.03),
            (3062.0, 12.0, 0.03),
        ),
    },
    "Stroma": {
        "baseline": 0.04,
        "peaks": (
            (2850.0, 9.0, 0.14),
            (2882.0, 12.0, 0.20),
            (2942.0, 14.0, 0.74),
            (2980.0, 12.0, 0.22),
            (3012.0, 10.0, 0.02),
            (3062.0, 12.0, 0.03),
        ),
    },
    "Other": {
        "baseline": 0.04,
        "peaks": (
            (2850.0, 9.0, 1.00),
            (2882.0, 12.0, 0.72),
            (2932.0, 15.0, 0.26),
            (2955.0, 11.0, 0.10),
            (3012.0, 10.0, 0.16),
        ),
    },
    "Nucleus": {
        "baseline": 0.04,
        "peaks": (
            (2850.0, 9.0, 0.12),
            (2882.0, 12.0, 0.14),
            (2932.0, 15.0, 0.95),
            (2962.0, 11.0, 0.42),
            (3012.0, 10.0, 0.02),
            (3062.0, 12.0, 0.05),
        ),
    },
    "Slide": {"baseline": 0.025, "peaks": ()},
}


@dataclass(frozen=True)
class _TissueLook:
    """How one tissue class looks in every modality (all values relative, 0..~1)."""

    density: float  # material per pixel (section thickness x packing)
    nuclei: float  # area fraction covered by nuclei
    nucleus_scale: float  # nucleus size relative to the sample's nucleus size
    tpef: float  # autofluorescence
    shg: float  # fibrillar collagen content (generates SHG)
    hematoxylin: float  # H stain of the cytoplasm / matrix
    eosin: float  # E stain of the cytoplasm / matrix


#: Per-class appearance, indexed by tissue code (0 = glass). Tumour and epithelium have
#: the same density and similar nuclear packing, so they look alike in transmission; their
#: nuclei differ in size and stain (tumour: larger, hyperchromatic).
TISSUE_LOOK: dict[int, _TissueLook] = {
    SLIDE: _TissueLook(0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0),
    TUMOR: _TissueLook(1.0, 0.34, 1.25, 0.22, 0.02, 0.22, 0.50),
    NECROSIS: _TissueLook(0.75, 0.10, 0.6, 0.55, 0.0, 0.05, 0.55),
    EPITHELIUM: _TissueLook(1.0, 0.30, 1.0, 0.27, 0.0, 0.12, 0.70),
    STROMA: _TissueLook(0.9, 0.04, 0.8, 0.28, 1.0, 0.04, 0.80),
    OTHER: _TissueLook(0.85, 0.01, 0.8, 0.06, 0.0, 0.0, 0.04),
}

#: Optical density (log10) of unit hematoxylin and eosin (colour of a thin layer at
#: concentration 1: H ~ RGB(70, 50, 140) blue-purple, E ~ RGB(230, 110, 170) pink).
STAIN_OD = {
    "hematoxylin": np.array([0.56, 0.71, 0.26], dtype=np.float32),
    "eosin": np.array([0.045, 0.365, 0.176], dtype=np.float32),
    "slide": np.array([0.020, 0.021, 0.012], dtype=np.float32),
}

#: Detector model per channel role: counts per unit signal, dark offset, counts per
#: photo-electron (sets the shot noise), read noise (counts, s.d.).
DETECTOR = {
    "raman": {"scale": 30000.0, "offset": 400.0, "counts_per_photon": 40.0, "read": 250.0},
    "transmission": {
        "scale": 42000.0,
        "offset": 300.0,
        "counts_per_photon": 8.0,
        "read": 150.0,
    },
    "tpef": {"scale": 22000.0, "offset": 300.0, "counts_per_photon": 60.0, "read": 200.0},
    "shg": {"scale": 30000.0, "offset": 300.0, "counts_per_photon": 60.0, "read": 200.0},
}
SATURATED = np.iinfo(np.uint16).max
_WARNINGS_LOCK = threading.Lock()

#: Annotation export styles, chosen by ``sample_index % 4`` (see the module docstring).
EXPORT_STYLES = ("qupath-0.4", "qupath-0.4-regions", "qupath-0.2", "string-class")


# --------------------------------------------------------------------------------------
# settings and design


@dataclass(frozen=True)
class PhantomSettings:
    """The ``phantom`` section, checked."""

    patients: int
    samples: int
    height: int
    width: int
    seed: int


def phantom_settings(config: Mapping[str, Any]) -> PhantomSettings:
    """Read and check ``config["phantom"]``.

    Args:
        config: the workflow configuration (at least its ``phantom`` section).

    Raises:
        ConfigError: naming the offending ``phantom.*`` key.
    """
    values = {}
    minimum = {"patients": 1, "samples": 1, "height": 32, "width": 32, "seed": 0}
    for key, low in minimum.items():
        value = require(config, f"phantom.{key}")
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"phantom.{key} must be an integer >= {low}, got {value!r}")
        values[key] = value
    if values["samples"] < values["patients"]:
        raise ConfigError(
            f"phantom.samples ({values['samples']}) must be at least phantom.patients "
            f"({values['patients']}): every patient needs a sample"
        )
    return PhantomSettings(**values)


def phantom_design(config: Mapping[str, Any]) -> pd.DataFrame:
    """Which samples the phantom has and which patient each belongs to.

    Patients ``P01``, ``P02``, ... get between one and a few samples each, unevenly (a
    seeded multinomial over Dirichlet weights, at least one per patient, at most twice
    the average), as real cohorts do. For the demo's 10 patients / 32 samples and seed 0
    this gives sample counts that admit the paper's 19 / 8 / 5 patient-grouped split.
    Cheap: no image is generated.

    Args:
        config: the workflow configuration (``phantom.patients``, ``phantom.samples``,
            ``phantom.seed``).

    Returns:
        A DataFrame with columns ``sample_id``, ``patient_id``, one row per sample, in
        patient order; the row index is the sample's index for :func:`generate_sample`.

    Raises:
        ConfigError: if ``phantom.samples`` < ``phantom.patients`` or a key is invalid.
    """
    settings = phantom_settings(config)
    n_patients, n_samples = settings.patients, settings.samples
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 0]))
    # Cap the count per patient so no single patient dominates a split.
    cap = max(2, math.ceil(2 * n_samples / n_patients))
    counts = np.ones(n_patients, dtype=int)
    weights = rng.dirichlet(np.full(n_patients, 4.0))
    for _ in range(n_samples - n_patients):
        open_ = counts < cap
        # Fall back to uncapped when every patient is at the cap (tiny cohorts).
        p = weights * open_ if open_.any() else weights
        counts[rng.choice(n_patients, p=p / p.sum())] += 1
    width = max(2, len(str(n_patients)))
    rows = []
    for patient, count in enumerate(counts, start=1):
        patient_id = f"P{patient:0{width}d}"
        rows.extend((f"{patient_id}_S{k}", patient_id) for k in range(1, count + 1))
    return pd.DataFrame(rows, columns=["sample_id", "patient_id"])


# --------------------------------------------------------------------------------------
# spectra


def lorentzian(wavenumbers: np.ndarray, centre: float, half_width: float) -> np.ndarray:
    """A Lorentzian line of height 1 at ``centre`` with half width at half maximum."""
    delta = (np.asarray(wavenumbers, dtype=np.float64) - centre) / half_width
    return 1.0 / (1.0 + delta * delta)


def class_spectrum(name: str, wavenumbers: Sequence[float], shift: float = 0.0) -> np.ndarray:
    """The noiseless Raman spectrum of a class (a key of :data:`RAMAN_SPECTRA`).

    Args:
        name: ``Tumor``, ``Necrosis``, ``Epithelium``, ``Stroma``, ``Other``, ``Nucleus``
            or ``Slide``.
        wavenumbers: where to evaluate it (cm-1).
        shift: moves every peak by this many cm-1 (the per-patient calibration shift).

    Returns:
        The spectrum in signal units (1.0 ~ 30000 detector counts), float64.
    """
    if name not in RAMAN_SPECTRA:
        raise ValueError(f"no Raman spectrum for class {name!r}; known: {sorted(RAMAN_SPECTRA)}")
    entry = RAMAN_SPECTRA[name]
    nu = np.asarray(wavenumbers, dtype=np.float64)
    spectrum = np.full(nu.shape, entry["baseline"], dtype=np.float64)
    for centre, half_width, height in entry["peaks"]:
        spectrum += height * lorentzian(nu, centre + shift, half_width)
    return spectrum


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


# --------------------------------------------------------------------------------------
# one sample


@dataclass
class PhantomSample:
    """One generated sample: the files' contents plus the ground truth.

    Attributes:
        sample_id: the sample's id.
        patient_id: its patient.
        srs: ``(C, Y, X)`` uint16 stack, channels as configured.
        he: ``(Y, X, 3)`` uint8 RGB H&E image.
        tissue: ``(Y, X)`` uint8 true tissue map: 0 glass, ``1 + TISSUE_CLASSES.index``.
        class_map: ``(Y, X)`` uint8 annotated class map in configuration order (value
            ``k`` is the ``k``-th class of ``annotations.classes``; 0 = not annotated or
            an ignored class), what a correct reader of :attr:`annotations` produces.
        annotations: the GeoJSON object written to the file (a dict or a list).
        export_style: which of :data:`EXPORT_STYLES` the annotations use.
    """

    sample_id: str
    patient_id: str
    srs: np.ndarray
    he: np.ndarray
    tissue: np.ndarray
    class_map: np.ndarray
    annotations: dict | list
    export_style: str


def _check_classes(config: Mapping[str, Any]) -> list[str]:
    """The configured class names; every phantom class must be known to the reader."""
    names = class_names(config)
    ignore = list(require(config, "annotations").get("ignore", []) or [])
    missing = [name for name in TISSUE_CLASSES if name not in names and name not in ignore]
    if missing:
        raise ConfigError(
            f"annotations.classes must name the phantom's classes {list(TISSUE_CLASSES)} "
            f"(or annotations.ignore list them); missing: {missing}"
        )
    return names


def _check_channels(config: Mapping[str, Any]) -> list[dict]:
    channels = list(require(config, "channels"))
    if not channels:
        raise ConfigError("channels must list at least one channel")
    for i, channel in enumerate(channels):
        role = channel.get("role")
        if role not in CHANNEL_ROLES:
            raise ConfigError(f"channels[{i}].role must be one of {CHANNEL_ROLES}, got {role!r}")
        if role == "raman" and not isinstance(channel.get("wavenumber"), int | float):
            raise ConfigError(f"channels[{i}].wavenumber is required for a Raman channel")
    return channels


def _tissue_map(
    rng: np.random.Generator, h: int, w: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the tissue map.

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
    tumour = _clean(_threshold_fraction(tumour_field, allowed, rng.uniform(0.05, 0.5)), min_area)
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


def _annotated_class_map(
    rng: np.random.Generator, tissue: np.ndarray, names: Sequence[str]
) -> np.ndarray:
    """The class map the pathologist annotated: a margin of stroma / fat is left out."""
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
    lookup = np.zeros(len(TISSUE_CLASSES) + 1, np.uint8)
    for code, name in enumerate(TISSUE_CLASSES, start=1):
        lookup[code] = names.index(name) + 1 if name in names else 0
    class_map = lookup[tissue]
    class_map[margin & np.isin(tissue, [STROMA, OTHER])] = 0
    return class_map


def _render_nuclei(
    rng: np.random.Generator,
    tissue: np.ndarray,
    radius: float,
    coverage: np.ndarray,
    scale: np.ndarray,
) -> np.ndarray:
    """Nuclei as soft discs in [0, 1]: a Poisson point pattern blurred to nucleus size.

    Each nucleus gets its own staining strength and a grainy chromatin texture, so dense
    regions read as crowded individual nuclei rather than a uniform dark mass.

    Args:
        rng: random generator.
        tissue: the tissue map (only its shape is used).
        radius: the base nucleus radius (px).
        coverage: per-pixel target area fraction covered by nuclei.
        scale: per-pixel nucleus size relative to ``radius``.
    """
    nuclei = np.zeros(tissue.shape, np.float32)
    # Two size groups (small and large nuclei) keep the blur separable and cheap.
    for low, high in ((0.0, 1.1), (1.1, np.inf)):
        group = (scale > low) & (scale <= high)
        if not group.any():
            continue
        r = radius * float(np.mean(scale[group]))
        sigma = r / 1.26  # the disc edge (profile 0.45) falls at the radius
        probability = coverage * group / (np.pi * r * r)
        draws = rng.random(tissue.shape, dtype=np.float32)
        strength = rng.uniform(0.6, 1.0, tissue.shape).astype(np.float32)
        points = np.where(draws < probability, strength, 0.0).astype(np.float32)
        blob = ndimage.gaussian_filter(points, sigma) * (2 * np.pi * sigma * sigma)
        # A soft threshold turns Gaussian bumps into discs with a one-pixel soft edge.
        disc = np.clip((blob - 0.25) / 0.35, 0.0, 1.0)
        nuclei = np.maximum(nuclei, disc * np.clip(blob / 0.7, 0.0, 1.0))
    chromatin = 0.7 + 0.3 * rng.random(tissue.shape, dtype=np.float32)
    return np.clip(nuclei * chromatin, 0.0, 1.0)


def _fibres(
    rng: np.random.Generator,
    h: int,
    w: int,
    size: float,
    period: float,
    families: int = 3,
    sharpness: float = 8.0,
    fill: float = 0.6,
) -> np.ndarray:
    """Wavy fibre bundles in [0, 1] (collagen, elastin).

    Each family is a set of roughly parallel wavy lines (the level lines of a tilted
    plane plus a weak smooth distortion: distortion gradients well below 1 keep them
    parallel, larger ones close them into fingerprint whorls). Families of different
    orientation occupy different patches, and the lines break into bundles of finite
    length.

    Args:
        rng: random generator.
        h: rows.
        w: columns.
        size: the image's linear size (px), which sets the patch scale.
        period: fibre spacing (px).
        families: number of orientations.
        sharpness: exponent on the line profile; larger gives thinner fibres.
        fill: the fraction of fibre length kept (breaks elsewhere).
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(0, np.pi)
    patches = np.stack([_smooth_noise(rng, (h, w), [0.08 * size]) for _ in range(families)])
    patches = np.exp(4.0 * (patches - patches.max(axis=0)))
    patches /= patches.sum(axis=0)
    fibres = np.zeros((h, w), np.float32)
    for k in range(families):
        angle = base + k * np.pi / families + rng.normal(0.0, 0.15)
        stream = np.cos(angle) * xx + np.sin(angle) * yy
        stream += 0.02 * size * _smooth_noise(rng, (h, w), [0.06 * size])
        stream += 0.35 * period * _smooth_noise(rng, (h, w), [2.0 * period])
        fibres += patches[k] * np.abs(np.sin(np.pi * stream / period)) ** sharpness
    breaks = _smooth_noise(rng, (h, w), [1.2 * period])
    level = np.quantile(breaks, 1.0 - fill)
    bundles = np.clip((breaks - level) / 0.5, 0.0, 1.0)
    return (fibres * bundles).astype(np.float32)


def _adipocyte_membranes(
    rng: np.random.Generator, mask: np.ndarray, cell_size: float
) -> np.ndarray:
    """Voronoi cell walls of fat cells in [0, 1], only where ``mask`` is true."""
    h, w = mask.shape
    membranes = np.zeros((h, w), np.float32)
    if not mask.any():
        return membranes
    n_seeds = max(4, round(h * w / cell_size**2))
    seeds = rng.random((n_seeds, 2)) * [h, w]
    points = np.argwhere(mask)
    distances, _ = cKDTree(seeds).query(points + 0.5, k=2)
    gap = distances[:, 1] - distances[:, 0]
    membranes[mask] = np.exp(-((gap / 0.9) ** 2))
    return membranes


def _drift(rng: np.random.Generator, w: int, n_channels: int) -> np.ndarray:
    """Column-wise multiplicative drift ``(C, X)``: laser power drifting along the scan."""
    x = (np.arange(w, dtype=np.float32) + 0.5) / w
    slope = rng.uniform(-0.25, 0.25)
    amplitude, frequency, phase = rng.uniform(0.04, 0.12), rng.uniform(0.5, 1.5), rng.uniform(0, 6)
    common = 1.0 + slope * (x - 0.5) + amplitude * np.sin(2 * np.pi * frequency * x + phase)
    per_channel = 1.0 + rng.normal(0.0, 0.04, (n_channels, 1)) * (x - 0.5)
    return (common[None, :] * per_channel).astype(np.float32)


def _detect(
    rng: np.random.Generator, signal: np.ndarray, role: str, gain: float, drift: np.ndarray
) -> np.ndarray:
    """Turn a noiseless signal plane into detector counts (shot + read noise, clipping)."""
    detector = DETECTOR[role]
    gain = detector["scale"] * gain
    electrons = np.maximum(
        signal * drift[None, :] * np.float32(gain / detector["counts_per_photon"]), 0
    )
    # Shot noise: exact Poisson where few photo-electrons are counted; above 100 the
    # normal approximation (skewness < 0.1) is indistinguishable and several times faster.
    z = rng.standard_normal(signal.shape, dtype=np.float32)
    photons = electrons + np.sqrt(electrons) * z
    dim = electrons < 100.0
    photons[dim] = rng.poisson(electrons[dim])
    read = rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(detector["read"])
    counts = detector["offset"] + photons * np.float32(detector["counts_per_photon"]) + read
    return np.clip(np.rint(counts), 0, SATURATED).astype(np.uint16)


def _instrument(seed: int, channels: Sequence[Mapping]) -> np.ndarray:
    """Fixed per-channel detector gains: a smooth responsivity curve over the channels."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    n = len(channels)
    position = np.linspace(0.0, 1.0, n)
    curve = 1.0 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 1.2) * position + rng.uniform(0, 6))
    return curve * rng.uniform(0.96, 1.04, n)


def _patient(seed: int, patient_index: int) -> dict[str, float]:
    """Per-patient spectral shift (cm-1), gain, and H&E stain strengths."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2, patient_index]))
    return {
        "shift": float(rng.uniform(-4.0, 4.0)),
        "gain": float(rng.lognormal(0.0, 0.1)),
        "hematoxylin": float(rng.uniform(0.85, 1.15)),
        "eosin": float(rng.uniform(0.85, 1.15)),
    }


def _per_class(tissue: np.ndarray, field: str) -> np.ndarray:
    """A :data:`TISSUE_LOOK` attribute as an image."""
    lookup = np.array([getattr(TISSUE_LOOK[code], field) for code in range(6)], np.float32)
    return lookup[tissue]


def _feature_id(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _polygons(mask: np.ndarray, min_area: float) -> list[Polygon]:
    """The connected regions of ``mask`` as polygons in pixel-corner coordinates.

    ``rasterio.features.shapes`` traces pixel edges (x = column, y = row); simplifying by
    half a pixel turns the staircases into hand-drawn-like straight runs while keeping
    the pixel-centre rasterisation nearly unchanged.
    """
    polygons = []
    # Pixel coordinates are what we want; rasterio warns that they are not geographic.
    # catch_warnings swaps a process-wide filter list, so threads take turns here.
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        shapes = list(rasterio.features.shapes(mask.astype(np.uint8), mask=mask, connectivity=4))
    for geometry, _ in shapes:
        polygon = shape(geometry).simplify(0.5, preserve_topology=True)
        if polygon.is_empty or polygon.area < min_area:
            continue
        if not polygon.is_valid:
            polygon = shapely.make_valid(polygon)
        polygons.extend(_polygonal_parts(polygon))
    return polygons


def _polygonal_parts(geometry) -> list[Polygon]:
    if isinstance(geometry, Polygon):
        return [geometry] if not geometry.is_empty else []
    parts = []
    for part in getattr(geometry, "geoms", []):
        parts.extend(_polygonal_parts(part))
    return parts


def _merge(polygons: list[Polygon]) -> Polygon | MultiPolygon:
    """One geometry per class: a MultiPolygon of the regions, repaired if they touch."""
    if len(polygons) == 1:
        return polygons[0]
    merged = MultiPolygon(polygons)
    if not merged.is_valid:
        # Regions that meet at a corner can overlap by a sliver after simplification.
        merged = shapely.union_all(polygons)
    return merged


def _rounded(geometry: dict) -> dict:
    """GeoJSON geometry with plain float coordinates rounded to 1/1000 px."""

    def convert(node):
        if isinstance(node, (tuple, list)):
            if node and isinstance(node[0], (int, float)):
                return [round(float(v), 3) for v in node]
            return [convert(child) for child in node]
        return node

    return {"type": geometry["type"], "coordinates": convert(geometry["coordinates"])}


def _argb(color: tuple[int, int, int]) -> int:
    """QuPath 0.2's packed colour: a signed 32-bit ARGB integer."""
    value = (255 << 24) | (color[0] << 16) | (color[1] << 8) | color[2]
    return value - (1 << 32)


def annotation_geojson(
    class_map: np.ndarray,
    names: Sequence[str],
    style: str,
    rng: np.random.Generator,
) -> dict | list:
    """Trace a class map into a QuPath GeoJSON export.

    Args:
        class_map: ``(Y, X)`` class map, value ``k`` the ``k``-th of ``names``, 0 none.
        names: class names in class-map order.
        style: one of :data:`EXPORT_STYLES`.
        rng: random generator for the feature UUIDs.

    Returns:
        The GeoJSON object (a FeatureCollection dict or a bare list of Features).
    """
    if style not in EXPORT_STYLES:
        raise ValueError(f"unknown export style {style!r}; expected one of {EXPORT_STYLES}")
    features = []
    for value, name in enumerate(names, start=1):
        mask = class_map == value
        if not mask.any():
            continue
        regions = _polygons(mask, min_area=1.0)
        if not regions:
            continue
        color = CLASS_COLORS.get(name, (128, 128, 128))
        geometries = regions if style == "qupath-0.4-regions" else [_merge(regions)]
        for geometry in geometries:
            geojson = _rounded(mapping(geometry))
            if style in ("qupath-0.4", "qupath-0.4-regions"):
                features.append(
                    {
                        "type": "Feature",
                        "id": _feature_id(rng),
                        "geometry": geojson,
                        "properties": {
                            "objectType": "annotation",
                            "classification": {"name": name, "color": list(color)},
                        },
                    }
                )
            elif style == "qupath-0.2":
                features.append(
                    {
                        "type": "Feature",
                        "id": "PathAnnotationObject",
                        "geometry": geojson,
                        "properties": {
                            "classification": {"name": name, "colorRGB": _argb(color)},
                            "isLocked": False,
                            "measurements": [],
                        },
                    }
                )
            else:
                features.append(
                    {
                        "type": "Feature",
                        "geometry": geojson,
                        "properties": {"object_type": "annotation", "classification": name},
                    }
                )
    if style.startswith("qupath-0.4"):
        return {"type": "FeatureCollection", "features": features}
    return features


def generate_sample(config: Mapping[str, Any], sample_index: int) -> PhantomSample:
    """Generate one sample of the phantom (images, annotations and ground truth).

    Args:
        config: the workflow configuration (``phantom``, ``channels``, ``annotations``).
        sample_index: the sample's row in :func:`phantom_design`.

    Returns:
        The sample; deterministic for ``phantom.seed`` and ``sample_index``.
    """
    settings = phantom_settings(config)
    design = phantom_design(config)
    if not 0 <= sample_index < len(design):
        raise ValueError(f"sample_index must be in [0, {len(design)}), got {sample_index}")
    channels = _check_channels(config)
    names = _check_classes(config)
    sample_id, patient_id = design.iloc[sample_index][["sample_id", "patient_id"]]
    patient_index = int(patient_id[1:]) - 1
    patient = _patient(settings.seed, patient_index)
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 3, sample_index]))
    h, w = settings.height, settings.width
    size = math.sqrt(h * w)

    tissue, depth, thickness = _tissue_map(rng, h, w)
    class_map = _annotated_class_map(rng, tissue, names)

    # Cell-scale structure.
    radius = float(np.clip(min(h, w) / 150.0, 1.0, 2.5))
    coverage = _per_class(tissue, "nuclei")
    layer = np.clip(depth / np.maximum(thickness, 1.0), 0.0, 1.0)
    epithelium = tissue == EPITHELIUM
    # Squamous epithelium: flat keratinised surface, nuclei crowd towards the basal layer.
    coverage[epithelium] *= 0.35 + 0.9 * layer[epithelium]
    nuclei = _render_nuclei(rng, tissue, radius, coverage, _per_class(tissue, "nucleus_scale"))
    fibres = _fibres(rng, h, w, size, period=max(4.0, 2.5 * radius), fill=0.75)
    elastin = _fibres(
        rng, h, w, size, period=max(6.0, 5.0 * radius), families=2, sharpness=20.0, fill=0.3
    )
    membranes = _adipocyte_membranes(
        rng, tissue == OTHER, cell_size=float(np.clip(0.07 * size, 6, 40))
    )
    keratin = np.where(epithelium, np.exp(-depth / np.maximum(0.35 * thickness, 1.0)), 0.0)

    # Class weights blurred by the optical point spread function.
    weights = np.stack(
        [ndimage.gaussian_filter((tissue == c).astype(np.float32), 0.6) for c in range(6)]
    )
    section = 1.0 + 0.08 * _smooth_noise(rng, (h, w), [0.1 * size, 0.02 * size], [1.0, 0.5])
    density = ndimage.gaussian_filter(_per_class(tissue, "density"), 0.6) * section
    lipid_jitter = 0.03 * _smooth_noise(rng, (h, w), [0.03 * size])

    # Per-class spatial modulation of the class spectrum: collagen fibres in stroma,
    # fat-cell walls (protein) instead of lipid in fat, nuclei displacing cytoplasm.
    modulation = np.ones((6, h, w), np.float32)
    modulation[STROMA] = 0.8 + 0.4 * fibres
    modulation[OTHER] = 1.0 - 0.6 * membranes
    cytoplasm = density * (1.0 - nuclei)
    planes = weights * modulation * cytoplasm[None]
    nucleus_plane = density * nuclei
    wall_plane = weights[OTHER] * density * membranes * 0.5
    lipid_plane = density * lipid_jitter
    slide_plane = weights[SLIDE]

    wavenumbers = np.array([c.get("wavenumber", np.nan) for c in channels], dtype=np.float64)
    shift = patient["shift"]
    spectra = {
        name: class_spectrum(name, np.nan_to_num(wavenumbers), shift) for name in RAMAN_SPECTRA
    }
    class_order = ["Slide", *TISSUE_CLASSES]
    lipid_direction = spectra["Other"] - spectra["Tumor"]

    # Transmission: Beer-Lambert through material, nuclei and scattering at edges.
    smooth_density = ndimage.gaussian_filter(density, 1.0)
    edges = np.hypot(ndimage.sobel(smooth_density, 0), ndimage.sobel(smooth_density, 1)) / 4.0
    transmission = np.exp(
        -(0.35 * density + 0.55 * nuclei * density + 0.5 * edges + 0.3 * membranes)
    )
    tpef = (
        _per_class(tissue, "tpef") * density * (1.0 - 0.45 * nuclei)
        + 0.15 * keratin
        + 0.15 * weights[STROMA] * elastin
    )
    # SHG: fibrillar collagen, i.e. the fibres where the class has collagen (stroma; a
    # trace in tumour), the fat-cell walls, and a faint unspecific floor.
    collagen = np.tensordot(
        np.array([TISSUE_LOOK[code].shg for code in range(6)], np.float32), weights, axes=1
    )
    shg = collagen * (0.12 + fibres) * (0.6 + 0.4 * section)
    shg = shg + 0.08 * weights[OTHER] * membranes + 0.01 * density

    gains = _instrument(settings.seed, channels)
    sample_gain = patient["gain"] * float(rng.lognormal(0.0, 0.05))
    drift = _drift(rng, w, len(channels))
    srs = np.empty((len(channels), h, w), np.uint16)
    for index, channel in enumerate(channels):
        role = channel["role"]
        if role == "raman":
            signal = np.tensordot(
                np.array([spectra[name][index] for name in class_order], np.float32),
                planes,
                axes=1,
            )
            signal += spectra["Nucleus"][index] * nucleus_plane
            signal += spectra["Stroma"][index] * wall_plane
            signal += lipid_direction[index] * lipid_plane
            signal += spectra["Slide"][index] * slide_plane
        elif role == "transmission":
            signal = transmission
        elif role == "tpef":
            signal = tpef
        else:
            signal = shg
        srs[index] = _detect(rng, signal, role, sample_gain * gains[index], drift[index])

    # Bright particles saturate every Raman band at a few pixels.
    raman = np.array([c["role"] == "raman" for c in channels])
    n_hot = max(1, rng.poisson(1.5e-4 * h * w))  # at least one, so every sample has some
    hot_r, hot_c = rng.integers(0, h, n_hot), rng.integers(0, w, n_hot)
    for r, c in zip(hot_r, hot_c, strict=True):
        srs[np.ix_(raman, [r, min(r + 1, h - 1)], [c])] = SATURATED

    he = _render_he(rng, tissue, nuclei, fibres, membranes, keratin, patient)
    style = EXPORT_STYLES[sample_index % len(EXPORT_STYLES)]
    annotations = annotation_geojson(class_map, names, style, rng)
    return PhantomSample(
        sample_id=str(sample_id),
        patient_id=str(patient_id),
        srs=srs,
        he=he,
        tissue=tissue,
        class_map=class_map,
        annotations=annotations,
        export_style=style,
    )


def _render_he(
    rng: np.random.Generator,
    tissue: np.ndarray,
    nuclei: np.ndarray,
    fibres: np.ndarray,
    membranes: np.ndarray,
    keratin: np.ndarray,
    patient: Mapping[str, float],
) -> np.ndarray:
    """The H&E image by Beer-Lambert colour mixing of hematoxylin and eosin."""
    h, w = tissue.shape
    blur = 0.5
    hematoxylin = _per_class(tissue, "hematoxylin")
    eosin = _per_class(tissue, "eosin")
    eosin = np.where(tissue == STROMA, eosin * (0.8 + 0.35 * fibres), eosin)
    eosin = np.where(tissue == OTHER, eosin + 0.8 * membranes, eosin)
    eosin = eosin + 0.45 * keratin
    # Hyperchromatic tumour nuclei stain darker; necrotic debris is pyknotic.
    nuclear_stain = np.select(
        [tissue == TUMOR, tissue == NECROSIS, tissue == SLIDE], [1.15, 0.8, 0.0], 0.95
    )
    hematoxylin = hematoxylin + nuclear_stain * nuclei
    eosin = eosin * (1.0 - 0.5 * nuclei)
    texture = 1.0 + 0.12 * rng.standard_normal((h, w)).astype(np.float32)
    hematoxylin = ndimage.gaussian_filter(hematoxylin * texture, blur) * patient["hematoxylin"]
    eosin = ndimage.gaussian_filter(eosin * texture, blur) * patient["eosin"]
    od = (
        hematoxylin[..., None] * STAIN_OD["hematoxylin"]
        + eosin[..., None] * STAIN_OD["eosin"]
        + STAIN_OD["slide"]
    )
    rgb = 255.0 * np.power(10.0, -od) + rng.normal(0.0, 2.0, (h, w, 3))
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------
# writing


def _ome_uuid(seed: int, sample_index: int) -> str:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 4, sample_index]))
    return f"urn:uuid:{_feature_id(rng)}"


def phantom_file_names(sample_id: str) -> tuple[str, str, str]:
    """The (srs, he, annotations) paths of a synthetic sample, relative to the sheet."""
    return (
        f"srs/{sample_id}.ome.tif",
        f"he/{sample_id}.tif",
        f"annotations/{sample_id}.geojson",
    )


def phantom_samplesheet(config: Mapping[str, Any], outdir: str | Path) -> pd.DataFrame:
    """The sample sheet the phantom will write into ``outdir``, without writing anything.

    Lets the workflow know every sample and file before the data exist.

    Args:
        config: the workflow configuration (``phantom``).
        outdir: the dataset folder.

    Returns:
        The columns of a sample sheet read by :func:`ramanseg.samplesheet.read_samplesheet`
        (paths joined to ``outdir``), indexed by ``sample_id``.
    """
    outdir = Path(outdir)
    table = phantom_design(config)
    for column, index in (("srs", 0), ("he", 1), ("annotations", 2)):
        table[column] = [str(outdir / phantom_file_names(s)[index]) for s in table["sample_id"]]
    return table.set_index("sample_id", drop=False)


def _write_sample(
    config: Mapping[str, Any], sample_index: int, root: Path
) -> tuple[dict[str, str], PhantomSample]:
    """Generate one sample and write its three files under ``root``."""
    sample = generate_sample(config, sample_index)
    seed = phantom_settings(config).seed
    srs_rel, he_rel, annotations_rel = phantom_file_names(sample.sample_id)
    tifffile.imwrite(
        root / srs_rel,
        sample.srs,
        ome=True,
        photometric="minisblack",
        compression="zlib",
        software=f"ramanseg {__version__} phantom",
        metadata={
            "axes": "CYX",
            "Name": sample.sample_id,
            "Channel": {"Name": channel_names(config)},
            # Fixed UUID and creator: tifffile would otherwise write a fresh uuid1.
            "UUID": _ome_uuid(seed, sample_index),
            "Creator": f"ramanseg {__version__} phantom",
        },
    )
    tifffile.imwrite(
        root / he_rel,
        sample.he,
        photometric="rgb",
        compression="zlib",
        software=f"ramanseg {__version__} phantom",
        metadata=None,
    )
    with open(root / annotations_rel, "w") as handle:
        json.dump(sample.annotations, handle, indent=2)
        handle.write("\n")
    row = {
        "sample_id": sample.sample_id,
        "patient_id": sample.patient_id,
        "srs": srs_rel,
        "he": he_rel,
        "annotations": annotations_rel,
    }
    return row, sample


def write_preview(config: Mapping[str, Any], sample: PhantomSample, path: str | Path) -> None:
    """Save a three-panel PNG of one sample: a Raman band near 2930, H&E, annotations.

    Args:
        config: the configuration (channels and classes).
        sample: the sample to show.
        path: the PNG to write (no timestamp or software tag, so byte-reproducible).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = channel_names(config)
    roles = channel_roles(config)
    raman = [i for i, role in enumerate(roles) if role == "raman"]
    if raman:
        wavenumbers = [config["channels"][i]["wavenumber"] for i in raman]
        band = raman[int(np.argmin(np.abs(np.asarray(wavenumbers) - 2930.0)))]
    else:
        band = 0
    image = sample.srs[band].astype(np.float32)
    low, high = np.percentile(image, [1, 99])

    classes = class_names(config)
    overlay = np.zeros((*sample.class_map.shape, 4), np.float32)
    handles = []
    for value, name in enumerate(classes, start=1):
        present = sample.class_map == value
        if not present.any():
            continue
        rgb = np.asarray(CLASS_COLORS.get(name, (128, 128, 128))) / 255.0
        overlay[present] = (*rgb, 0.45)
        handles.append(Patch(facecolor=to_rgba(rgb, 0.6), edgecolor=rgb, label=name))

    figure = Figure(figsize=(12, 4.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)
    shown = axes[0].imshow(image, cmap="magma", vmin=low, vmax=high, interpolation="nearest")
    axes[0].set_title(f"SRS: {names[band]}")
    figure.colorbar(shown, ax=axes[0], fraction=0.046, pad=0.04, label="counts")
    axes[1].imshow(sample.he, interpolation="nearest")
    axes[1].set_title("H&E")
    axes[2].imshow(sample.he, interpolation="nearest")
    axes[2].imshow(overlay, interpolation="nearest")
    for value in range(1, len(classes) + 1):
        if (sample.class_map == value).any():
            axes[2].contour(sample.class_map == value, levels=[0.5], colors="k", linewidths=0.6)
    axes[2].set_title(f"Annotations ({sample.export_style})")
    axes[2].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    for axis in axes:
        axis.set_xlabel("x (px)")
        axis.set_ylabel("y (px)")
    figure.suptitle(f"Synthetic SRS sample {sample.sample_id} (patient {sample.patient_id})")
    figure.tight_layout()
    figure.savefig(path, format="png", metadata={"Software": None})


def write_phantom(config: Mapping[str, Any], outdir: str | Path, threads: int = 1) -> Path:
    """Write the whole synthetic dataset into ``outdir`` (replacing it), atomically.

    Everything is written into a temporary folder beside ``outdir`` that is renamed into
    place at the end, so a failure leaves no partial dataset behind.

    Args:
        config: the workflow configuration (``phantom``, ``channels``, ``annotations``).
        outdir: the dataset folder to create.
        threads: samples generated in parallel; the output does not depend on it.

    Returns:
        The path of the sample sheet, ``outdir/samples.tsv``.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    settings = phantom_settings(config)
    _check_channels(config)
    _check_classes(config)
    design = phantom_design(config)
    outdir = Path(outdir)
    with atomic_path(outdir) as root:
        for folder in ("srs", "he", "annotations"):
            (root / folder).mkdir(parents=True)
        with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(lambda i: _write_sample(config, i, root), range(len(design))))
        rows = [row for row, _ in results]
        sheet = pd.DataFrame(rows, columns=["sample_id", "patient_id", "srs", "he", "annotations"])
        sheet.to_csv(root / "samples.tsv", sep="\t", index=False, lineterminator="\n")
        write_preview(config, results[0][1], root / "preview.png")
        logger.info(
            "phantom: %d samples of %d patients, %dx%d px, %d channels -> %s",
            len(design),
            settings.patients,
            settings.height,
            settings.width,
            len(channel_names(config)),
            outdir,
        )
    return outdir / "samples.tsv"


# --------------------------------------------------------------------------------------
# command line


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _run(args: argparse.Namespace) -> int:
    from ramanseg.cli import settings_from_args

    write_phantom(settings_from_args(args), args.outdir, args.threads)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``phantom`` subcommand."""
    from ramanseg.cli import add_settings_arguments

    parser = subparsers.add_parser(
        "phantom",
        help="write the synthetic SRS demo dataset (sample sheet, OME-TIFFs, H&E, GeoJSON)",
        description=(
            "Write a synthetic stimulated-Raman dataset in the workflow's input contract: "
            "samples.tsv, srs/*.ome.tif, he/*.tif, annotations/*.geojson and preview.png. "
            "Sizes and the seed come from the configuration's `phantom` section."
        ),
    )
    parser.add_argument(
        "--outdir",
        required=True,
        help="the dataset folder to write (replaced atomically if it exists)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="samples generated in parallel (the output does not depend on it; default 1)",
    )
    add_settings_arguments(parser)
    parser.set_defaults(func=_run)
