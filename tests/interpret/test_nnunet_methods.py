"""The attribution methods: Feature Ablation, Integrated Gradients and its baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ramanseg.config import channel_names
from ramanseg.interpret.nnunet_methods import (
    ablate_channels,
    channel_totals,
    ig_baseline,
    integrated_gradients,
)
from ramanseg.interpret.nnunet_network import SegmentationOutput
from ramanseg.phantom import PhantomSettings, generate_sample
from tests.interpret.nnunet_model import one_thread  # noqa: F401 (fixture)

#: One torch thread for every test here (the fixture also restores the deterministic mode).
pytestmark = pytest.mark.usefixtures("one_thread")


class GlobalChannel(nn.Module):
    """Tumour logit everywhere = 2 x the mean of channel ``channel``; background logit 0."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.channel = channel

    def forward(self, x):
        value = 2.0 * x[:, self.channel].mean(dim=(1, 2))
        tumour = value.view(-1, 1, 1).expand(-1, *x.shape[2:])
        return torch.stack([torch.zeros_like(tumour), tumour], dim=1)


def test_feature_ablation_gives_everything_to_the_channel_that_matters():
    rng = np.random.default_rng(0)
    inputs = torch.from_numpy(rng.normal(size=(1, 4, 8, 8)).astype(np.float32))
    region = np.zeros((8, 8), bool)
    region[2:5, 1:7] = True  # 18 px
    changes = ablate_channels(GlobalChannel(2), inputs, region, (0, 0))
    expected = 2.0 * float(inputs[0, 2][torch.from_numpy(region)].sum()) / 64
    np.testing.assert_allclose(changes, [0.0, 0.0, expected, 0.0], atol=1e-6)
    margin = ablate_channels(GlobalChannel(2), inputs, region, (0, 0), output="margin")
    np.testing.assert_allclose(margin, [0.0, 0.0, expected, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        ablate_channels(GlobalChannel(2), inputs, np.zeros((8, 8), bool), (0, 0))


def test_integrated_gradients_is_complete_on_a_small_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 2, 3, padding=1))
    inputs = torch.randn(1, 3, 12, 12)
    attributions, delta = integrated_gradients(model, inputs, (5, 6), steps=64)
    forward = SegmentationOutput(model, pixel=(5, 6))
    with torch.no_grad():
        difference = float(forward(inputs)[0, 1] - forward(torch.zeros_like(inputs))[0, 1])
    assert attributions.shape == (3, 12, 12)
    assert attributions.sum() == pytest.approx(difference, abs=1e-3)
    assert delta < 1e-3
    # Only the 5 x 5 receptive field of the pixel gets attributions.
    assert np.abs(attributions[:, :3]).max() == 0.0


def test_baselines():
    inputs = torch.randn(1, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ig_baseline(inputs, "zeros"), torch.zeros_like(inputs))
    blurred = ig_baseline(inputs, "blur", sigma=3.0)
    assert blurred.shape == inputs.shape and blurred.std() < inputs.std()
    np.testing.assert_allclose(blurred.mean(dim=(2, 3)), inputs.mean(dim=(2, 3)), atol=1e-5)
    assert torch.equal(ig_baseline(inputs, "noise", seed=3), ig_baseline(inputs, "noise", seed=3))
    with pytest.raises(ValueError, match="baseline"):
        ig_baseline(inputs, "mean")


def test_informative_channels_rank_above_the_far_wings_on_the_phantom(config):
    """A small network trained for about a second on 48 x 48 phantom samples: Integrated
    Gradients puts the CH3 bands on top and the far-wing bands in the bottom half."""
    config["phantom"].update(height=48, width=48)
    names = channel_names(config)
    settings = PhantomSettings.from_config(config)
    samples = [generate_sample(settings, index) for index in range(6)]

    def normalise(stack):  # nnU-Net's per-image, per-channel z-score
        x = stack.astype(np.float32)
        return (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)

    x = torch.from_numpy(np.stack([normalise(s.srs) for s in samples]))
    y = torch.from_numpy(np.stack([s.tissue == 1 for s in samples]).astype(np.int64))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(len(names), 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(150):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x[:5]), y[:5]).backward()
        optimiser.step()
    tumour = y[5].numpy().astype(bool)
    attributions, _ = integrated_gradients(model, x[5:6], None, steps=16, region=tumour)
    totals = dict(zip(names, channel_totals(attributions), strict=True))
    ranking = sorted(names, key=lambda n: -totals[n])
    ch3 = ["Raman 2904", "Raman 2919", "Raman 2933", "Raman 2948", "Raman 2963"]
    wings = ["Raman 2802", "Raman 2817", "Raman 3079", "Raman 3094"]
    assert ranking[0] in ch3
    assert min(totals[n] for n in ch3) > max(totals[n] for n in wings)
    assert all(ranking.index(n) >= len(names) // 2 for n in wings)
