"""Wrapping nnU-Net's networks for Captum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ramanseg.interpret.nnunet_network import SegmentationOutput
from tests.interpret.nnunet_model import one_thread  # noqa: F401 (fixture)

#: One torch thread for every test here (the fixture also restores the deterministic mode).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_segmentation_output_pixel_region_and_margin():
    logits = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4)

    class Fixed(nn.Module):
        def forward(self, x):
            return [logits + 0 * x.sum(), logits]  # deep supervision: the first is used

    x = torch.zeros(1, 1, 3, 4)
    assert SegmentationOutput(Fixed(), pixel=(1, 2))(x).tolist() == [[6.0, 18.0]]
    region = np.zeros((3, 4), bool)
    region[0, :2] = True
    assert SegmentationOutput(Fixed(), region=region)(x).tolist() == [[1.0, 25.0]]
    assert SegmentationOutput(Fixed(), pixel=(1, 2), output="margin")(x).tolist() == [[12.0]]
    with pytest.raises(ValueError, match="exactly one"):
        SegmentationOutput(Fixed())
