"""Both explanation methods find the planted peaks of the synthetic Lorentzian set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ramanseg.spectra.explain import band_importance, gradcam, top_bands, weight_map
from ramanseg.spectra.networks import SpectraCNN
from ramanseg.spectra.preprocessing import PreprocessingSettings, preprocess_spectra
from ramanseg.spectra.synthetic import COMMON_PEAKS, PLANTED_PEAKS, POSITIVE, lorentzian_spectra
from ramanseg.spectra.table import LABEL_COLUMN
from ramanseg.spectra.training import TrainingSettings, probabilities, train_network


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    frame = lorentzian_spectra(260, seed=0)
    bands = [c for c in frame.columns if c not in (LABEL_COLUMN, "group")]
    y = (frame[LABEL_COLUMN] == POSITIVE).to_numpy(np.int64)
    x, wavenumbers = preprocess_spectra(
        frame[bands].to_numpy(), np.array(bands, dtype=float), PreprocessingSettings()
    )
    model = SpectraCNN(x.shape[1])
    # 30 epochs: long enough that the unguided maps drift to the peaks' flanks.
    train_network(
        model, x[:160], y[:160], x[160:210], y[160:210], 2, TrainingSettings(epochs=30, patience=30)
    )
    test = slice(210, None)
    assert (probabilities(model, x[test]).argmax(1) == y[test]).mean() > 0.95
    return model, x[test][y[test] == 1], wavenumbers


def _distance_to_nearest(centres, bands):
    return np.min(np.abs(np.subtract.outer(bands, centres)), axis=1)


@pytest.mark.parametrize("method", [gradcam, weight_map], ids=["gradcam", "weights"])
def test_top5_bands_lie_within_one_fwhm_of_a_planted_peak(trained, method):
    model, positives, wavenumbers = trained
    importance = band_importance(method(model, positives, guided=True))
    top = top_bands(importance, wavenumbers, 5)
    fwhm = np.array([peak.fwhm for peak in PLANTED_PEAKS])
    distance = np.abs(np.subtract.outer(top, [peak.centre for peak in PLANTED_PEAKS]))
    assert (distance <= fwhm).any(axis=1).all(), top


@pytest.mark.parametrize("method", [gradcam, weight_map], ids=["gradcam", "weights"])
def test_background_far_from_every_peak_is_near_zero(trained, method):
    model, positives, wavenumbers = trained
    importance = band_importance(method(model, positives, guided=True))
    peaks = [peak.centre for peak in PLANTED_PEAKS + COMMON_PEAKS]
    background = _distance_to_nearest(peaks, wavenumbers) > 100
    # Stated tolerance: on average under 5 % of the top importance (1).
    assert np.abs(importance[background]).mean() < 0.05
