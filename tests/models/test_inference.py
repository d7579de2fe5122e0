"""Sliding-window prediction: exact reconstruction, blending, padding, output files, speed."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
import torch

from ramanseg.models import cli as models_cli
from ramanseg.models.inference import (
    BLEND_MODES,
    blending_weights,
    foreground_probability,
    measure_throughput,
    predict_samples,
    sliding_window_probability,
    window_starts,
)
from ramanseg.models.unet import UNet
from ramanseg.predictions import read_prediction
from tests.models.test_training import make_sample, single_thread  # noqa: F401 (fixture)


def channel_zero(batch: torch.Tensor) -> torch.Tensor:
    """An identity-like predictor: the "probability" is the input's first channel."""
    return batch[:, 0]


@pytest.mark.parametrize("blend", BLEND_MODES)
@pytest.mark.parametrize(
    ("shape", "patch", "overlap"),
    [
        ((37, 53), 16, 0.5),  # not a multiple of the stride
        ((32, 48), 16, 0.5),  # a multiple
        ((30, 41), 16, 0.3),  # stride 11
        ((10, 12), 16, 0.5),  # smaller than a window: padded
        ((16, 40), 16, 0.0),  # no overlap
    ],
)
def test_identity_model_is_reconstructed_exactly(shape, patch, overlap, blend):
    image = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    result = sliding_window_probability(
        channel_zero, image, patch, overlap=overlap, blend=blend, batch_size=3
    )
    assert result.shape == shape and result.dtype == np.float32
    np.testing.assert_array_equal(result, image[0])


def test_blending_weights_average_a_constant_to_itself():
    image = np.zeros((1, 45, 29), dtype=np.float32)

    def constant(batch: torch.Tensor) -> torch.Tensor:
        return torch.full((len(batch), 1, 16, 16), 0.7)  # (N, 1, P, P) is accepted too

    for blend in BLEND_MODES:
        result = sliding_window_probability(constant, image, 16, blend=blend)
        np.testing.assert_allclose(result, 0.7, rtol=1e-6)


def test_blending_weights_are_positive_and_peak_in_the_centre():
    for blend in BLEND_MODES:
        weights = blending_weights(16, blend)
        assert weights.shape == (16, 16) and (weights > 0).all() and weights.max() == 1.0
        assert weights[7, 7] == weights.max() and weights[0, 0] == weights.min()
    assert blending_weights(16, "gaussian")[0, 0] < 1e-3 < blending_weights(16, "linear")[0, 0]
    with pytest.raises(ValueError, match="blend mode"):
        blending_weights(16, "cosine")


def test_window_starts_cover_the_image():
    assert window_starts(37, 16, 8) == [0, 8, 16, 21]
    assert window_starts(32, 16, 8) == [0, 8, 16]
    assert window_starts(16, 16, 8) == [0]
    for length, stride in [(37, 8), (100, 7), (17, 16)]:
        covered = np.zeros(length, bool)
        for start in window_starts(length, 16, stride):
            covered[start : start + 16] = True
        assert covered.all()
    with pytest.raises(ValueError, match="smaller than the window"):
        window_starts(10, 16, 8)


def test_bad_arguments_raise_value_errors():
    image = np.zeros((1, 20, 20), dtype=np.float32)
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_probability(channel_zero, image, 16, overlap=1.0)
    with pytest.raises(ValueError, match=r"\(C, Y, X\)"):
        sliding_window_probability(channel_zero, image[0], 16)
    with pytest.raises(ValueError, match="predictor returned shape"):
        sliding_window_probability(lambda b: b[:, 0, :8], image, 16)


def test_foreground_probability_of_model_outputs():
    model = torch.nn.Identity()
    logit = torch.zeros(1, 1, 2, 2)
    assert torch.equal(foreground_probability(model, logit), torch.full((1, 2, 2), 0.5))
    two = torch.stack([torch.zeros(1, 2, 2), torch.full((1, 2, 2), 100.0)], dim=1)
    assert torch.allclose(foreground_probability(model, two), torch.ones(1, 2, 2))

    class Output(NamedTuple):
        logits: torch.Tensor
        latent: torch.Tensor

    assert torch.allclose(foreground_probability(model, Output(two, logit)), torch.ones(1, 2, 2))

    class Own(torch.nn.Module):
        def foreground_probability(self, output):
            return output["p"]

    own = foreground_probability(Own(), {"p": torch.full((1, 2, 2), 0.25)})
    assert torch.equal(own, torch.full((1, 2, 2), 0.25))
    with pytest.raises(ValueError, match="cannot read a foreground probability"):
        foreground_probability(model, torch.zeros(1, 3, 2, 2))


def test_predict_samples_writes_the_shared_format(tmp_path):
    model = UNet(in_channels=4, levels=2, base_channels=2).eval()
    samples = [make_sample("te0", 0), make_sample("te1", 1, height=20, width=12)]
    run = predict_samples(model, samples, tmp_path, 16, torch.device("cpu"))
    assert [p.name for p in run.masks] == ["te0.mask.tif", "te1.mask.tif"]
    timing = run.timing()
    assert timing["megapixels"] == pytest.approx((32 * 48 + 20 * 12) / 1e6)
    assert timing["samples"] == 2 and timing["megapixels_per_second"] > 0
    mask, probability = read_prediction(tmp_path, "te1")
    assert mask.shape == probability.shape == (20, 12)
    assert ((probability >= 0) & (probability <= 1)).all()
    np.testing.assert_array_equal(mask, (probability >= 0.5).astype(np.uint8))


def test_measure_throughput_reports_megapixels_per_second():
    model = UNet(in_channels=4, levels=2, base_channels=2).eval()
    speed = measure_throughput(
        model, 4, 16, torch.device("cpu"), height=32, width=32, repeats=2, warmup=0
    )
    assert speed["megapixels"] == pytest.approx(32 * 32 / 1e6)
    assert speed["megapixels_per_second"] == pytest.approx(speed["megapixels"] / speed["seconds"])
    with pytest.raises(ValueError, match="repeats"):
        measure_throughput(model, 4, 16, torch.device("cpu"), repeats=0)


def test_cli_blend_choices_match_the_inference_module():
    assert models_cli.BLEND_MODES == BLEND_MODES
