"""Image formation: cells, the SRS stack through the detector model, and the H&E image."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ramanseg.phantom.spectra import RAMAN_SPECTRA, class_spectrum
from ramanseg.phantom.tissue import (
    EPITHELIUM,
    IMMUNE,
    NECROSIS,
    OTHER,
    SLIDE,
    STROMA,
    TISSUE_CLASSES,
    TUMOR,
    _smooth_noise,
)
from ramanseg.settings import ChannelLayout


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

#: Lymphocyte aggregates (the ``Immune cells`` variant class): the area fraction covered
#: by nuclei and their size relative to the sample's nucleus size (small, round, dense).
IMMUNE_NUCLEI = 0.5
IMMUNE_NUCLEUS_SCALE = 0.7

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


def _instrument(seed: int, channels: ChannelLayout) -> np.ndarray:
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


def render_images(
    rng: np.random.Generator,
    tissue: np.ndarray,
    depth: np.ndarray,
    thickness: np.ndarray,
    channels: ChannelLayout,
    patient: Mapping[str, float],
    seed: int,
    tumour_mixing: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Render a tissue map as an SRS stack and an H&E image.

    Args:
        rng: the sample's random generator (drawn from in a fixed order).
        tissue: the tissue map (codes of :mod:`ramanseg.phantom.tissue`; immune
            aggregates are drawn as stroma with dense small nuclei).
        depth: the distance to the glass (px), from the tissue map.
        thickness: the epithelium's thickness map (px), from the tissue map.
        channels: the configured channels (role, wavenumber).
        patient: the patient's shift, gain and stain strengths (:func:`_patient`).
        seed: ``phantom.seed``, for the instrument's fixed channel gains.
        tumour_mixing: the fraction of the tumour's Raman spectrum that is epithelial.

    Returns:
        The ``(C, Y, X)`` uint16 SRS stack and the ``(Y, X, 3)`` uint8 H&E image.
    """
    h, w = tissue.shape
    size = math.sqrt(h * w)
    immune = tissue == IMMUNE
    if immune.any():
        # Lymphocyte aggregates are stroma crowded with small round nuclei (below).
        tissue = np.where(immune, STROMA, tissue).astype(tissue.dtype)

    # Cell-scale structure.
    radius = float(np.clip(min(h, w) / 150.0, 1.0, 2.5))
    coverage = _per_class(tissue, "nuclei")
    nucleus_scale = _per_class(tissue, "nucleus_scale")
    coverage[immune], nucleus_scale[immune] = IMMUNE_NUCLEI, IMMUNE_NUCLEUS_SCALE
    layer = np.clip(depth / np.maximum(thickness, 1.0), 0.0, 1.0)
    epithelium = tissue == EPITHELIUM
    # Squamous epithelium: flat keratinised surface, nuclei crowd towards the basal layer.
    coverage[epithelium] *= 0.35 + 0.9 * layer[epithelium]
    nuclei = _render_nuclei(rng, tissue, radius, coverage, nucleus_scale)
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

    wavenumbers = np.array(
        [np.nan if c.wavenumber is None else c.wavenumber for c in channels.channels],
        dtype=np.float64,
    )
    shift = patient["shift"]
    spectra = {
        name: class_spectrum(name, np.nan_to_num(wavenumbers), shift) for name in RAMAN_SPECTRA
    }
    class_order = ["Slide", *TISSUE_CLASSES]
    lipid_direction = spectra["Other"] - spectra["Tumor"]
    if tumour_mixing:
        # After the lipid direction, so only the tumour's own spectrum moves.
        spectra["Tumor"] = (1.0 - tumour_mixing) * spectra["Tumor"] + tumour_mixing * spectra[
            "Epithelium"
        ]

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

    gains = _instrument(seed, channels)
    sample_gain = patient["gain"] * float(rng.lognormal(0.0, 0.05))
    drift = _drift(rng, w, len(channels))
    srs = np.empty((len(channels), h, w), np.uint16)
    for index, channel in enumerate(channels.channels):
        role = channel.role
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
    raman = np.array([role == "raman" for role in channels.roles])
    n_hot = max(1, rng.poisson(1.5e-4 * h * w))  # at least one, so every sample has some
    hot_r, hot_c = rng.integers(0, h, n_hot), rng.integers(0, w, n_hot)
    for r, c in zip(hot_r, hot_c, strict=True):
        srs[np.ix_(raman, [r, min(r + 1, h - 1)], [c])] = SATURATED

    he = _render_he(rng, tissue, nuclei, fibres, membranes, keratin, patient)
    return srs, he


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
