"""The skin-cancer paper's spectral preprocessing chain, step by step and configurable.

In the paper's order (section 2.2): wavelet denoising (PyWavelets; Daubechies-4, level 3,
soft universal threshold), Savitzky–Golay smoothing (``scipy.signal.savgol_filter``;
window 21, order 3), standard normal variate (SNV), asymmetric least-squares baseline
removal (pybaselines; λ 1e6, p 0.01), then cropping to a wavenumber range. Each step has
its section in ``spectra.preprocessing`` with ``enabled``. A setting that cannot apply to
the data (a 21-point window on a 21-band spectrum, a wavelet level beyond what the
spectrum's length allows) is a :class:`~ramanseg.config.ConfigError` naming the key and
the largest value that fits; nothing is adapted silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ramanseg.config import ConfigError

#: The paper's settings (section 2.2); the ``spectra.preprocessing`` section overrides them.
PAPER_PREPROCESSING: dict[str, dict[str, Any]] = {
    "wavelet": {"enabled": True, "wavelet": "db4", "level": 3},
    "savgol": {"enabled": True, "window": 21, "order": 3},
    "snv": {"enabled": True},
    "als": {"enabled": True, "lam": 1.0e6, "p": 0.01},
    "crop": {"enabled": False, "range": [600.0, 1800.0]},
}


@dataclass(frozen=True)
class PreprocessingSettings:
    """The chain's settings, one mapping per step (keys as in :data:`PAPER_PREPROCESSING`).

    Attributes:
        steps: step name -> its settings, each with ``enabled``.
        key: the configuration key the settings came from, for error messages.
    """

    steps: dict[str, dict[str, Any]] = field(default_factory=lambda: PAPER_PREPROCESSING)
    key: str = "spectra.preprocessing"

    @classmethod
    def from_config(
        cls, section: Mapping[str, Any] | None, key: str = "spectra.preprocessing"
    ) -> PreprocessingSettings:
        """The paper's settings overridden by ``section`` (a step's keys merge).

        Args:
            section: the ``spectra.preprocessing`` mapping (or a dataset's own), or None.
            key: where ``section`` lives in the configuration, for error messages.
        """
        steps = {name: dict(values) for name, values in PAPER_PREPROCESSING.items()}
        for name, values in (section or {}).items():
            if name not in steps:
                raise ConfigError(
                    f"{key}.{name}: unknown preprocessing step; the steps are {', '.join(steps)}"
                )
            steps[name].update(values)
        return cls(steps=steps, key=key)

    def enabled(self, step: str) -> bool:
        """Whether ``step`` runs."""
        return bool(self.steps[step]["enabled"])


def wavelet_denoise(spectra: np.ndarray, wavelet: str = "db4", level: int = 3) -> np.ndarray:
    """Wavelet denoising: soft-threshold the detail coefficients (Donoho's universal threshold).

    The noise level comes from the finest detail coefficients (median absolute deviation
    / 0.6745), per spectrum; the approximation coefficients are kept.

    Args:
        spectra: ``(n, bands)`` spectra.
        wavelet: a PyWavelets discrete wavelet name.
        level: the decomposition level.
    """
    import pywt

    spectra = np.asarray(spectra, dtype=np.float64)
    bands = spectra.shape[1]
    coefficients = pywt.wavedec(spectra, wavelet, level=level, axis=1)
    finest = coefficients[-1]
    sigma = np.median(np.abs(finest), axis=1, keepdims=True) / 0.6745
    threshold = sigma * np.sqrt(2.0 * np.log(bands))
    denoised = [coefficients[0]] + [
        pywt.threshold(detail, threshold, mode="soft") for detail in coefficients[1:]
    ]
    return pywt.waverec(denoised, wavelet, axis=1)[:, :bands]


def savgol(spectra: np.ndarray, window: int = 21, order: int = 3) -> np.ndarray:
    """Savitzky–Golay smoothing along the bands (``scipy.signal.savgol_filter``, interp mode).

    Args:
        spectra: ``(n, bands)`` spectra.
        window: the window length (odd).
        order: the polynomial order (< window).
    """
    from scipy.signal import savgol_filter

    return savgol_filter(np.asarray(spectra, dtype=np.float64), window, order, axis=1)


def snv(spectra: np.ndarray) -> np.ndarray:
    """Standard normal variate: each spectrum minus its mean, over its standard deviation.

    A flat spectrum (standard deviation 0) becomes zeros rather than NaN.

    Args:
        spectra: ``(n, bands)`` spectra.
    """
    spectra = np.asarray(spectra, dtype=np.float64)
    centred = spectra - spectra.mean(axis=1, keepdims=True)
    sd = spectra.std(axis=1, keepdims=True)
    return np.divide(centred, sd, out=np.zeros_like(centred), where=sd > 0)


def als_baseline(
    spectra: np.ndarray, wavenumbers: np.ndarray, lam: float = 1e6, p: float = 0.01
) -> np.ndarray:
    """The asymmetric least-squares baseline of each spectrum (pybaselines ``asls``).

    Args:
        spectra: ``(n, bands)`` spectra.
        wavenumbers: ``(bands,)`` the x axis.
        lam: the smoothness penalty λ.
        p: the asymmetry (weight of points above the baseline).

    Returns:
        ``(n, bands)`` baselines; subtract them to correct.
    """
    from pybaselines import Baseline

    fitter = Baseline(x_data=np.asarray(wavenumbers, dtype=np.float64))
    spectra = np.asarray(spectra, dtype=np.float64)
    return np.stack([fitter.asls(row, lam=lam, p=p)[0] for row in spectra])


def check_preprocessing(settings: PreprocessingSettings, wavenumbers: np.ndarray) -> None:
    """Fail before any work if a step's setting cannot apply to spectra on ``wavenumbers``.

    Args:
        settings: the chain's settings.
        wavenumbers: the spectra's wavenumber axis (before cropping).

    Raises:
        ConfigError: naming the key, what is wrong and the largest value that fits.
    """
    import pywt

    bands = len(wavenumbers)
    key = settings.key
    if settings.enabled("wavelet"):
        step = settings.steps["wavelet"]
        try:
            wavelet = pywt.Wavelet(step["wavelet"])
        except ValueError as error:
            raise ConfigError(
                f"{key}.wavelet.wavelet: {step['wavelet']!r} is not a PyWavelets discrete "
                f"wavelet ({error})"
            ) from None
        most = pywt.dwt_max_level(bands, wavelet.dec_len)
        if not 1 <= int(step["level"]) <= most:
            raise ConfigError(
                f"{key}.wavelet.level: level {step['level']} does not fit a {bands}-band "
                f"spectrum with {wavelet.name} (at most {most}); lower it, or set "
                f"{key}.wavelet.enabled: false"
            )
    if settings.enabled("savgol"):
        step = settings.steps["savgol"]
        window, order = int(step["window"]), int(step["order"])
        if window % 2 == 0:
            raise ConfigError(f"{key}.savgol.window must be odd, got {window}")
        if window > bands:
            raise ConfigError(
                f"{key}.savgol.window: a {window}-point window does not fit a {bands}-band "
                f"spectrum; use an odd window of at most {bands - (bands + 1) % 2}, or set "
                f"{key}.savgol.enabled: false"
            )
        if order >= window:
            raise ConfigError(
                f"{key}.savgol.order ({order}) must be smaller than the window ({window})"
            )
    if settings.enabled("crop"):
        low, high = (float(value) for value in settings.steps["crop"]["range"])
        kept = int(np.count_nonzero((wavenumbers >= low) & (wavenumbers <= high)))
        if low >= high or kept < 2:
            raise ConfigError(
                f"{key}.crop.range: [{low:g}, {high:g}] keeps {kept} of the bands "
                f"({wavenumbers.min():g}-{wavenumbers.max():g} cm-1); give a [low, high] "
                "range that overlaps them"
            )


def preprocess_spectra(
    spectra: np.ndarray, wavenumbers: np.ndarray, settings: PreprocessingSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Run the enabled steps in the paper's order.

    Args:
        spectra: ``(n, bands)`` raw spectra.
        wavenumbers: ``(bands,)`` their wavenumbers in cm-1, increasing.
        settings: the chain's settings.

    Returns:
        The preprocessed spectra (float32) and their wavenumbers (cropped if cropping is on).

    Raises:
        ConfigError: a setting does not fit the spectra (:func:`check_preprocessing`).
    """
    wavenumbers = np.asarray(wavenumbers, dtype=np.float64)
    check_preprocessing(settings, wavenumbers)
    out = np.asarray(spectra, dtype=np.float64)
    steps = settings.steps
    if settings.enabled("wavelet"):
        out = wavelet_denoise(out, steps["wavelet"]["wavelet"], int(steps["wavelet"]["level"]))
    if settings.enabled("savgol"):
        out = savgol(out, int(steps["savgol"]["window"]), int(steps["savgol"]["order"]))
    if settings.enabled("snv"):
        out = snv(out)
    if settings.enabled("als"):
        step = steps["als"]
        out = out - als_baseline(out, wavenumbers, float(step["lam"]), float(step["p"]))
    if settings.enabled("crop"):
        low, high = (float(value) for value in steps["crop"]["range"])
        keep = (wavenumbers >= low) & (wavenumbers <= high)
        out, wavenumbers = out[:, keep], wavenumbers[keep]
    return out.astype(np.float32), wavenumbers
