"""The synthetic HSRS cell phantom: fields of cells imaged over the C-H region, with truth.

Each field is an :class:`~ramanseg.hsrs.stack.HsrsStack` with four classes:
background (water), cytoplasm, nucleus and lipid droplets. A class is a mixture of four
pure spectra, each a sum of Lorentzian bands (centre, half width at half maximum, in
cm-1) from the SRS literature on the C-H stretching region:

* lipid: CH2 symmetric stretch 2850, CH2 asymmetric / Fermi resonance 2885, CH3 2930,
  =C-H 3010;
* protein: CH3 symmetric stretch 2935 (the protein band), CH2 2880, CH3 asymmetric 2970;
* nucleic acid (DNA): the band near 2960 that SRS separates DNA with (Lu et al., PNAS
  2015), and a weaker CH2 band at 2890;
* water: the low-wavenumber wing of the O-H stretch (a broad band at 3250) and a flat
  non-resonant background.

The class compositions (concentration of each pure spectrum) vary smoothly across a
field and from cell to cell; the images are blurred by a Gaussian point-spread function
and get shot noise (Poisson) and detector noise (Gaussian). Everything is drawn from one
seeded generator: the same settings give the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ramanseg.hsrs.stack import HsrsStack

CLASS_NAMES = ("background", "cytoplasm", "nucleus", "lipid_droplet")
BACKGROUND, CYTOPLASM, NUCLEUS, LIPID_DROPLET = range(4)
#: The pure spectra: (amplitude, centre cm-1, half width at half maximum cm-1) per band.
PURE_SPECTRA: dict[str, tuple[tuple[float, float, float], ...]] = {
    "lipid": ((1.0, 2850, 9), (0.65, 2885, 12), (0.25, 2930, 15), (0.12, 3010, 8)),
    "protein": ((0.35, 2880, 14), (1.0, 2935, 16), (0.30, 2970, 12)),
    "dna": ((1.0, 2960, 14), (0.30, 2890, 15)),
    "water": ((1.0, 3250, 200),),
}
#: Flat non-resonant background added to the water spectrum.
WATER_OFFSET = 0.25
#: Concentration of each pure spectrum in each class (before the smooth variation).
COMPOSITION: dict[str, dict[str, float]] = {
    "background": {"water": 0.5},
    "cytoplasm": {"protein": 1.0, "lipid": 0.12, "water": 0.4},
    "nucleus": {"protein": 0.7, "dna": 0.8, "lipid": 0.04, "water": 0.4},
    "lipid_droplet": {"lipid": 2.5, "protein": 0.1, "water": 0.1},
}


@dataclass(frozen=True)
class CellPhantomSettings:
    """Settings of the cell phantom (config section ``hsrs.cells``).

    Attributes:
        fields: the number of fields (images).
        size: the side of a square field in pixels.
        bands: the number of spectral bands.
        wavenumber_range: the first and last band's wavenumber in cm-1.
        cells_per_field: the number of cells in a field.
        photons: the expected photon count of the protein peak in cytoplasm (sets the
            shot noise; higher is cleaner).
        read_noise: the detector noise, in photons (standard deviation).
        psf_sigma: the point-spread function's standard deviation in pixels.
        seed: the seed.
    """

    fields: int = 3
    size: int = 128
    bands: int = 40
    wavenumber_range: tuple[float, float] = (2800.0, 3050.0)
    cells_per_field: int = 5
    photons: float = 60.0
    read_noise: float = 3.0
    psf_sigma: float = 0.8
    seed: int = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CellPhantomSettings:
        """The settings from the validated workflow configuration (``hsrs.cells``)."""
        section = dict(config["hsrs"]["cells"])
        section["wavenumber_range"] = tuple(float(v) for v in section["wavenumber_range"])
        return cls(**section)

    @property
    def wavenumbers(self) -> np.ndarray:
        """The band centres, uniformly spaced."""
        return np.linspace(*self.wavenumber_range, self.bands)


def lorentzian(wavenumbers: np.ndarray, center: float, hwhm: float) -> np.ndarray:
    """A Lorentzian band of peak height 1.

    Args:
        wavenumbers: where to evaluate it.
        center: the band centre.
        hwhm: its half width at half maximum.
    """
    return hwhm**2 / ((np.asarray(wavenumbers, dtype=np.float64) - center) ** 2 + hwhm**2)


def pure_spectra(wavenumbers: np.ndarray) -> dict[str, np.ndarray]:
    """The pure spectra (lipid, protein, dna, water) on a band grid."""
    spectra = {
        name: sum(a * lorentzian(wavenumbers, c, w) for a, c, w in bands)
        for name, bands in PURE_SPECTRA.items()
    }
    spectra["water"] = spectra["water"] + WATER_OFFSET
    return spectra


def class_spectra(wavenumbers: np.ndarray) -> np.ndarray:
    """(classes, bands) the mean spectrum of each class (its composition of pure spectra)."""
    pure = pure_spectra(wavenumbers)
    return np.array(
        [sum(c * pure[n] for n, c in COMPOSITION[name].items()) for name in CLASS_NAMES]
    )


def _ellipse(shape: tuple[int, int], center, axes, angle: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    dy, dx = yy - center[0], xx - center[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dx * cos + dy * sin) / axes[1]
    v = (-dx * sin + dy * cos) / axes[0]
    return u**2 + v**2 <= 1


def field_labels(settings: CellPhantomSettings, rng: np.random.Generator) -> np.ndarray:
    """The truth of one field: cells with a nucleus and lipid droplets in the cytoplasm.

    Args:
        settings: the phantom's settings.
        rng: the generator.

    Returns:
        int16 (size, size), values in ``CLASS_NAMES`` order.
    """
    size = settings.size
    shape = (size, size)
    labels = np.zeros(shape, dtype=np.int16)
    scale = size / 128  # cell sizes are set for 128 px fields
    for _ in range(settings.cells_per_field):
        axes = rng.uniform(16, 26, 2) * scale
        center = rng.uniform(0.12 * size, 0.88 * size, 2)
        angle = rng.uniform(0, np.pi)
        cell = _ellipse(shape, center, axes, angle)
        labels[cell] = CYTOPLASM
        # The nucleus: off-centre, a third to a half of the cell.
        nucleus_axes = axes * rng.uniform(0.35, 0.5, 2)
        offset = rng.uniform(-0.25, 0.25, 2) * axes
        nucleus = _ellipse(shape, center + offset, nucleus_axes, rng.uniform(0, np.pi))
        labels[cell & nucleus] = NUCLEUS
        # Lipid droplets: small discs in the cytoplasm, away from the nucleus.
        cytoplasm = np.argwhere(cell & ~ndimage.binary_dilation(nucleus, iterations=3))
        for _ in range(int(rng.integers(5, 13))):
            if not len(cytoplasm):
                break
            y, x = cytoplasm[rng.integers(len(cytoplasm))]
            radius = rng.uniform(1.6, 3.8) * scale
            droplet = _ellipse(shape, (y, x), (radius, radius), 0.0)
            labels[droplet & cell] = LIPID_DROPLET
    return labels


def _smooth_field(rng: np.random.Generator, shape, sigma: float, amplitude: float) -> np.ndarray:
    """A smooth random field around 1 (relative variation of about ``amplitude``)."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    noise /= noise.std() + 1e-12
    return np.clip(1 + amplitude * noise, 0.2, None)


def make_field(settings: CellPhantomSettings, index: int) -> HsrsStack:
    """One field of the phantom.

    Args:
        settings: the phantom's settings.
        index: the field's index; each field has its own generator (seed, index), so a
            field does not change when the number of fields does.

    Returns:
        The field: cube float32 (bands, size, size) in photons, wavenumbers, labels.
    """
    rng = np.random.default_rng([settings.seed, index])
    labels = field_labels(settings, rng)
    wavenumbers = settings.wavenumbers
    pure = pure_spectra(wavenumbers)
    shape = labels.shape
    # Concentration maps of each pure spectrum: the class's composition, varying smoothly
    # within the field, then blurred by the point-spread function.
    cube = np.zeros((settings.bands, *shape))
    for name, spectrum in pure.items():
        concentration = np.zeros(shape)
        for value, class_name in enumerate(CLASS_NAMES):
            amount = COMPOSITION[class_name].get(name, 0.0)
            if amount:
                concentration[labels == value] = amount
        concentration *= _smooth_field(rng, shape, sigma=8, amplitude=0.15)
        concentration = ndimage.gaussian_filter(concentration, settings.psf_sigma)
        cube += spectrum[:, None, None] * concentration[None]
    expected = cube * settings.photons
    noisy = rng.poisson(expected) + rng.normal(0, settings.read_noise, expected.shape)
    return HsrsStack(
        cube=noisy.astype(np.float32),
        wavenumbers=wavenumbers,
        labels=labels,
        class_names=CLASS_NAMES,
        source=f"ramanseg.hsrs.cells seed={settings.seed} field={index}",
    )


def make_cell_phantom(settings: CellPhantomSettings) -> list[HsrsStack]:
    """Every field of the phantom.

    Args:
        settings: the phantom's settings.

    Returns:
        ``settings.fields`` stacks.
    """
    return [make_field(settings, index) for index in range(settings.fields)]
