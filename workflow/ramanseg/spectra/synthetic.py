"""Synthetic Lorentzian spectra with planted discriminative peaks (the feature-visualisation
paper's check): explanations are right when they fall on the planted peaks.

Every spectrum is a sum of Lorentzian peaks on a smooth fluorescence-like baseline with
Gaussian noise. Both classes share the common peaks (random amplitudes); the
discriminative peaks (:data:`PLANTED_PEAKS`) are present only in class 1. Each group (a
"patient") has its own small peak shift and baseline, so grouped splits matter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ramanseg.spectra.table import spectra_frame


@dataclass(frozen=True)
class Peak:
    """A Lorentzian peak.

    Attributes:
        centre: position in cm-1.
        fwhm: full width at half maximum in cm-1.
        amplitude: height at the centre.
    """

    centre: float
    fwhm: float
    amplitude: float


#: Peaks of both classes (amplitudes vary per spectrum by +-30 %).
COMMON_PEAKS = (Peak(1004.0, 8.0, 1.0), Peak(1450.0, 20.0, 1.2), Peak(1660.0, 24.0, 1.0))
#: Peaks only class 1 has: the ground truth of the explanation check.
PLANTED_PEAKS = (Peak(850.0, 12.0, 0.6), Peak(1300.0, 14.0, 0.6))
#: The label of the spectra with the planted peaks.
POSITIVE = "planted"
#: The synthetic axis: 1200 points, 600-1799 cm-1 (the paper's Table 1 input length).
WAVENUMBERS = np.arange(600.0, 1800.0, 1.0)


def lorentzian(x: np.ndarray, peak: Peak) -> np.ndarray:
    """A Lorentzian line of height ``peak.amplitude`` at ``peak.centre``."""
    half = peak.fwhm / 2.0
    return peak.amplitude * half**2 / ((x - peak.centre) ** 2 + half**2)


def lorentzian_spectra(
    n_spectra: int = 600,
    n_groups: int = 20,
    noise: float = 0.05,
    seed: int = 0,
    wavenumbers: np.ndarray = WAVENUMBERS,
) -> pd.DataFrame:
    """The synthetic set as a spectra table (:mod:`ramanseg.spectra.table` contract).

    Args:
        n_spectra: how many spectra (half per class, rounded).
        n_groups: how many groups; each spectrum belongs to one, both classes in each.
        noise: the standard deviation of the Gaussian noise (peak heights are ~1).
        seed: the random seed; the set is a pure function of the arguments.
        wavenumbers: the axis in cm-1.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(wavenumbers, dtype=np.float64)
    labels = np.arange(n_spectra) % 2
    groups = rng.integers(0, n_groups, n_spectra)
    group_shift = rng.uniform(-2.0, 2.0, n_groups)
    group_tilt = rng.uniform(0.2, 0.8, n_groups)
    span = (x - x.min()) / (x.max() - x.min())
    spectra = np.empty((n_spectra, len(x)))
    for index in range(n_spectra):
        group = groups[index]
        # A broad, smooth fluorescence background: a tilt plus a wide hump.
        baseline = group_tilt[group] * span + rng.uniform(0.2, 0.6) * np.exp(
            -(((span - rng.uniform(0.3, 0.7)) / 0.4) ** 2)
        )
        signal = baseline
        peaks = COMMON_PEAKS + (PLANTED_PEAKS if labels[index] else ())
        for peak in peaks:
            shifted = Peak(
                peak.centre + group_shift[group],
                peak.fwhm,
                peak.amplitude * rng.uniform(0.7, 1.3),
            )
            signal = signal + lorentzian(x, shifted)
        spectra[index] = signal + rng.normal(0.0, noise, len(x))
    names = np.where(labels == 1, POSITIVE, "background")
    return spectra_frame(spectra, x, names, [f"g{group:02d}" for group in groups])
