"""The training settings and the Dice loss the baselines train with."""

from __future__ import annotations

import pytest
import torch

from ramanseg.models.strategy import TrainingSettings, soft_dice_loss
from tests.models.test_training import tiny_settings


def test_settings_from_config_and_validation(config):
    settings = TrainingSettings.from_config(config)
    assert settings.patch_size == config["models"]["training"]["patch_size"]
    assert settings.seed == config["seed"] and settings.device == config["device"]
    with pytest.raises(ValueError, match="overlap"):
        tiny_settings(overlap=1.0)
    with pytest.raises(ValueError, match="batch_size"):
        tiny_settings(batch_size=0)


def test_soft_dice_loss():
    target = torch.tensor([[[0, 1], [1, 1]]])
    assert soft_dice_loss(target.float(), target).item() == pytest.approx(0.0)
    # A batch without tumour: smoothing keeps it defined and rewards predicting nothing.
    empty = torch.zeros(1, 2, 2, dtype=torch.int64)
    assert soft_dice_loss(torch.zeros(1, 2, 2), empty).item() == pytest.approx(0.0)
    assert soft_dice_loss(torch.full((1, 2, 2), 0.5), empty).item() == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="differs"):
        soft_dice_loss(torch.zeros(1, 3, 3), empty)
