"""The model registry, and rebuilding a trained model from its folder."""

from __future__ import annotations

import json

import pytest
import torch

from ramanseg.models.checkpoint import METADATA_NAME
from ramanseg.models.registry import get_model_entry, load_trained_model
from ramanseg.models.unet import UNet
from tests.models.test_training import (  # noqa: F401 (fixtures)
    CHANNELS,
    single_thread,
    tiny_run,
)


def test_registry_knows_the_baselines():
    assert get_model_entry("unet").build is UNet
    assert get_model_entry("unetr").build.__name__ == "UNETR2d"
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        get_model_entry("nope")


def test_model_json_rebuilds_the_model(tmp_path, samples):
    result = tiny_run(tmp_path / "run", *samples, epochs=1)
    metadata = json.loads((tmp_path / "run" / METADATA_NAME).read_text())
    assert metadata["model"] == "unet" and metadata["in_channels"] == 4
    assert metadata["channel_names"] == list(CHANNELS)
    assert metadata["selected_epoch"] == result.selected_epoch == 1
    model, loaded = load_trained_model(tmp_path / "run")
    assert loaded == metadata and not model.training
    state = torch.load(result.weights, weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
