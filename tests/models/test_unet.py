"""The U-Net and UNETR baselines: shapes, configuration, and the U-Net learning a tiny task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ramanseg.config import ConfigError
from ramanseg.models.inference import model_predictor, sliding_window_probability
from ramanseg.models.training import (
    TrainingSettings,
    configure_reproducibility,
    dice_score,
    get_model_entry,
    train,
)
from ramanseg.models.unet import UNet
from ramanseg.models.unetr import UNETR2d, unetr_architecture
from tests.models.test_training import make_sample, single_thread  # noqa: F401 (fixture)


def tiny_config(**unet) -> dict:
    section = {
        "epochs": 8,
        "levels": 4,
        "base_channels": 8,
        # Far above the paper's 1e-4, so that the tiny task is learnt in a few seconds.
        "learning_rate": 3e-3,
        "weight_decay": 1e-3,
    }
    section.update(unet)
    return {
        "seed": 0,
        "deterministic": True,
        "device": "cpu",
        "models": {
            "training": {"patch_size": 32, "batch_size": 4, "patches_per_epoch": 48},
            "unet": section,
            "unetr": {
                "epochs": 1,
                "feature_size": 4,
                "hidden_size": 24,
                "learning_rate": 1e-3,
                "weight_decay": 1e-3,
            },
        },
    }


@pytest.mark.parametrize("size", [(64, 64), (37, 50), (8, 8)])
def test_unet_output_has_the_input_shape(size):
    model = UNet(in_channels=4, levels=4, base_channels=2).eval()
    assert len(model.down) == 4
    with torch.no_grad():
        output = model(torch.rand(2, 4, *size))
    assert output.shape == (2, 1, *size)


def test_unet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="levels must be a positive integer"):
        UNet(in_channels=4, levels=0)


def test_unet_entry_reads_its_configuration_section():
    entry = get_model_entry("unet")
    config = tiny_config(learning_rate=1e-4, weight_decay=1e-3, base_channels=6)
    architecture = entry.architecture(config, "unet", 24)
    assert architecture == {"in_channels": 24, "out_channels": 1, "levels": 4, "base_channels": 6}
    model = entry.build(**architecture)
    strategy = entry.strategy(config, "unet", model)
    optimizer = strategy.build_optimizer(model, 1)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["lr"] == 1e-4
    assert optimizer.param_groups[0]["weight_decay"] == 1e-3
    assert strategy.epochs == 8
    del config["models"]["unet"]["levels"]
    with pytest.raises(ConfigError, match=r"models\.unet\.levels"):
        entry.architecture(config, "unet", 24)


def test_unet_learns_the_tiny_task(tmp_path):
    config = tiny_config()
    train_samples = [make_sample(f"tr{i}", i) for i in range(4)]
    val_samples = [make_sample("va0", 20)]
    test_samples = [make_sample(f"te{i}", 30 + i) for i in range(3)]
    entry = get_model_entry("unet")
    architecture = entry.architecture(config, "unet", 4)
    settings = TrainingSettings.from_config(config)
    configure_reproducibility(settings.seed, settings.deterministic, torch.device("cpu"))
    model = entry.build(**architecture)
    result = train(
        model,
        entry.strategy(config, "unet", model),
        train_samples,
        val_samples,
        settings,
        tmp_path,
        model_name="unet",
        architecture=architecture,
        progress=False,
    )
    model.load_state_dict(torch.load(result.weights, weights_only=True))
    predictor = model_predictor(model, torch.device("cpu"))
    dice = [
        dice_score(sliding_window_probability(predictor, s.image, 32) >= 0.5, s.mask)
        for s in test_samples
    ]
    assert min(dice) > 0.8, dice
    assert result.val_dice > 0.8


def test_unetr_rejects_a_patch_size_not_a_multiple_of_16():
    with pytest.raises(ValueError, match="img_size must be a positive multiple of 16"):
        UNETR2d(in_channels=4, img_size=40, feature_size=4, hidden_size=24)
    config = tiny_config()
    config["models"]["training"]["patch_size"] = 40
    with pytest.raises(ValueError, match=r"models\.training\.patch_size is 40.*multiple of 16"):
        unetr_architecture(config, "unetr", 4)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        UNETR2d(in_channels=4, img_size=32, hidden_size=20)


def test_unetr_shapes_and_a_training_epoch(tmp_path):
    config = tiny_config()
    entry = get_model_entry("unetr")
    architecture = entry.architecture(config, "unetr", 4)
    assert architecture == {"in_channels": 4, "img_size": 32, "feature_size": 4, "hidden_size": 24}
    configure_reproducibility(0, True, torch.device("cpu"))
    model = entry.build(**architecture)
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 4, 32, 32)).shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="built for 32 x 32 inputs"):
        model(torch.rand(1, 4, 48, 48))
    settings = TrainingSettings.from_config(config, patches_per_epoch=8)
    result = train(
        model,
        entry.strategy(config, "unetr", model),
        [make_sample("tr0", 0)],
        [make_sample("va0", 1)],
        settings,
        tmp_path,
        model_name="unetr",
        architecture=architecture,
        progress=False,
    )
    assert np.isfinite(result.history[0]["train_loss"])
