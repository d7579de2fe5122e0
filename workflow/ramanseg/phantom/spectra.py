"""Raman spectra of the phantom's tissue classes in the C-H stretching region."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

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
