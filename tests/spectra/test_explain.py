"""Both explanation methods find the planted peaks of the synthetic Lorentzian set, over
several seeds (data, initialisation and batch order)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ramanseg.config import ConfigError, validate_config
from ramanseg.spectra.experiment import explain_block
from ramanseg.spectra.explain import (
    _to_bands,
    class_importance,
    gradcam,
    receptive_field_offsets,
    top_bands,
)
from ramanseg.spectra.networks import SpectraCNN
from ramanseg.spectra.preprocessing import PreprocessingSettings, preprocess_spectra
from ramanseg.spectra.synthetic import COMMON_PEAKS, PLANTED_PEAKS, POSITIVE, lorentzian_spectra
from ramanseg.spectra.table import LABEL_COLUMN
from ramanseg.spectra.training import TrainingSettings, probabilities, train_network

# Both methods passed on seeds 0-5 (and 9 more trainings); the test trains three. On the
# last block, or without the receptive-field offsets, they miss on some of these seeds.
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module", params=SEEDS, ids=[f"seed{s}" for s in SEEDS])
def trained(request):
    seed = request.param
    torch.set_num_threads(1)
    frame = lorentzian_spectra(260, seed=seed)
    bands = [c for c in frame.columns if c not in (LABEL_COLUMN, "group")]
    y = (frame[LABEL_COLUMN] == POSITIVE).to_numpy(np.int64)
    x, wavenumbers = preprocess_spectra(
        frame[bands].to_numpy(), np.array(bands, dtype=float), PreprocessingSettings()
    )
    torch.manual_seed(seed)
    model = SpectraCNN(x.shape[1])
    # 30 epochs: long enough that the last block's maps drift to the peaks' flanks.
    settings = TrainingSettings(epochs=30, patience=30, seed=seed)
    train_network(model, x[:160], y[:160], x[160:210], y[160:210], 2, settings)
    x_test, y_test = x[210:], y[210:]
    assert (probabilities(model, x_test).argmax(1) == y_test).mean() > 0.95
    return model, x_test, y_test == 1, wavenumbers


@pytest.fixture(scope="module")
def importance(trained):
    model, x, positive, _ = trained
    return class_importance(model, x, positive)


def _within_one_fwhm_of_a_planted_peak(bands):
    fwhm = np.array([peak.fwhm for peak in PLANTED_PEAKS])
    distance = np.abs(np.subtract.outer(bands, [peak.centre for peak in PLANTED_PEAKS]))
    return (distance <= fwhm).any(axis=1)


@pytest.mark.parametrize("name", ["gradcam", "weights"])
def test_top5_bands_lie_within_one_fwhm_of_a_planted_peak(trained, importance, name):
    top = top_bands(importance[name], trained[3], 5)
    assert _within_one_fwhm_of_a_planted_peak(top).all(), top


@pytest.mark.parametrize(("name", "tolerance"), [("gradcam", 0.3), ("weights", 0.05)])
def test_background_far_from_every_peak_is_near_zero(trained, importance, name, tolerance):
    peaks = [peak.centre for peak in PLANTED_PEAKS + COMMON_PEAKS]
    background = np.min(np.abs(np.subtract.outer(trained[3], peaks)), axis=1) > 100
    # Stated tolerance: the mean |importance| there, against the top importance (1).
    # Grad-CAM's is looser (0.02-0.29 on seeds 0-5): its channel weights are per spectrum,
    # so the features' resting activation does not cancel fully between the classes.
    assert np.abs(importance[name][background]).mean() < tolerance


def test_maps_sit_at_the_centre_of_the_bands_a_position_pools():
    # 3 positions pooled by 4 over 13 bands: centres 1.5, 5.5, 9.5; the bands beyond
    # the last centre keep its value.
    maps = np.array([[0.0, 4.0, 0.0]])
    bands = _to_bands(maps, 4, 13)[0]
    assert bands[[1, 3, 5, 6, 9, 12]] == pytest.approx([0, 1.5, 3.5, 3.5, 0.5, 0])


def test_default_block_is_the_deepest_at_band_resolution():
    assert SpectraCNN(1200).band_resolution_block() == 1
    assert SpectraCNN(21, min_pooled_length=64).band_resolution_block() == 5
    assert SpectraCNN(1200).block_stride(5) == 16


def test_offsets_find_where_a_channel_looks():
    """A one-channel first block whose kernel weighs only the band 5 to the right of its
    centre: the channel's input lies 5 bands right of its position."""
    model = SpectraCNN(64, kernels=(11, 1, 1, 1, 1), channels=(1, 1, 1, 1, 1))
    with torch.no_grad():
        conv = model.blocks[0][0]
        conv.weight.zero_()
        conv.weight[0, 0, 10] = 1.0
        conv.bias.zero_()
    spectra = np.random.default_rng(0).uniform(0.5, 1.5, (20, 64))
    assert receptive_field_offsets(model, spectra, block=1).tolist() == [5]


def test_a_block_outside_the_network_is_refused():
    model = SpectraCNN(64)
    with pytest.raises(ValueError, match="blocks 1 to 5"):
        gradcam(model, np.zeros((2, 64)), block=6)


@pytest.mark.parametrize(("value", "expected"), [(None, None), (3, 3)])
def test_explain_block_is_read_from_the_config(config, value, expected):
    config["spectra"]["explain_block"] = value
    assert explain_block(validate_config(config)) == expected


@pytest.mark.parametrize("value", [0, 6, "first"])
def test_an_explain_block_outside_the_network_is_a_config_error(config, value):
    config["spectra"]["explain_block"] = value
    with pytest.raises(ConfigError, match="explain_block"):
        validate_config(config)
