"""The spectral preprocessing chain: each step against its definition or its library."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import savgol_filter

from ramanseg.config import ConfigError
from ramanseg.spectra.preprocessing import (
    PreprocessingSettings,
    als_baseline,
    preprocess_spectra,
    savgol,
    snv,
    wavelet_denoise,
)
from ramanseg.spectra.synthetic import WAVENUMBERS, Peak, lorentzian


def test_snv_gives_mean_0_and_sd_1_per_spectrum():
    rng = np.random.default_rng(0)
    spectra = rng.gamma(2.0, 3.0, (10, 300)) * rng.uniform(0.1, 10.0, (10, 1)) + 5.0
    out = snv(spectra)
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=1), 1.0, atol=1e-12)


def test_snv_of_a_flat_spectrum_is_zero_not_nan():
    assert np.array_equal(snv(np.full((1, 5), 3.0)), np.zeros((1, 5)))


def test_savgol_step_equals_scipy():
    rng = np.random.default_rng(1)
    spectra = rng.normal(size=(4, 200))
    expected = np.stack([savgol_filter(row, 21, 3) for row in spectra])
    np.testing.assert_allclose(savgol(spectra, 21, 3), expected, rtol=0, atol=1e-12)


def test_als_recovers_a_planted_baseline_under_lorentzian_peaks():
    x = WAVENUMBERS
    span = (x - x.min()) / (x.max() - x.min())
    baseline = 2.0 + 1.5 * span + 0.8 * np.exp(-(((span - 0.4) / 0.35) ** 2))
    peaks = sum(
        lorentzian(x, Peak(c, w, a))
        for c, w, a in [(850, 12, 1.0), (1004, 8, 2.0), (1300, 14, 1.0), (1660, 24, 1.5)]
    )
    rng = np.random.default_rng(2)
    spectrum = baseline + peaks + rng.normal(0, 0.01, x.size)
    fitted = als_baseline(spectrum[None], x, lam=1e6, p=0.01)[0]
    # Stated tolerance: within 5 % of the tallest peak everywhere (the Lorentzian tails lift
    # ALS a little), 2 % on average.
    error = np.abs(fitted - baseline)
    assert error.max() < 0.05 * 2.0, error.max()
    assert error.mean() < 0.02 * 2.0, error.mean()


def test_wavelet_denoising_reduces_noise_and_keeps_peaks():
    x = WAVENUMBERS
    clean = lorentzian(x, Peak(1004, 10, 1.0)) + lorentzian(x, Peak(1450, 20, 1.0))
    noisy = clean + np.random.default_rng(3).normal(0, 0.05, (8, x.size))
    out = wavelet_denoise(noisy, "db4", 3)
    assert out.shape == noisy.shape
    assert np.sqrt(((out - clean) ** 2).mean()) < 0.6 * np.sqrt(((noisy - clean) ** 2).mean())
    assert out[:, 404].mean() > 0.8


def test_chain_runs_in_order_and_crops():
    spectra = np.random.default_rng(4).normal(10, 1, (3, WAVENUMBERS.size))
    settings = PreprocessingSettings.from_config({"crop": {"enabled": True, "range": [700, 1700]}})
    out, wavenumbers = preprocess_spectra(spectra, WAVENUMBERS, settings)
    assert out.dtype == np.float32
    assert wavenumbers.min() == 700 and wavenumbers.max() == 1700
    assert out.shape == (3, 1001)


def test_a_window_longer_than_the_spectrum_is_a_config_error_naming_the_key():
    spectra = np.ones((2, 21))
    with pytest.raises(ConfigError, match=r"spectra\.preprocessing\.savgol\.window.*at most 21"):
        preprocess_spectra(
            spectra,
            np.arange(21.0),
            PreprocessingSettings.from_config(
                {"wavelet": {"enabled": False}, "savgol": {"window": 23}}
            ),
        )


def test_a_wavelet_level_too_deep_for_the_spectrum_is_a_config_error():
    with pytest.raises(ConfigError, match=r"spectra\.preprocessing\.wavelet\.level"):
        preprocess_spectra(np.ones((2, 21)), np.arange(21.0), PreprocessingSettings())


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"savgol": {"window": 20}}, "savgol.window"),
        ({"savgol": {"order": 21}}, "savgol.order"),
        ({"crop": {"enabled": True, "range": [2000, 3000]}}, "crop.range"),
        ({"wavelet": {"wavelet": "nope"}}, "wavelet.wavelet"),
        ({"smooth": {}}, "preprocessing.smooth"),
    ],
)
def test_settings_that_cannot_apply_name_their_key(section, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        preprocess_spectra(
            np.ones((2, 300)),
            np.linspace(600, 1800, 300),
            PreprocessingSettings.from_config(section),
        )
