"""The prediction-file owner: writing, naming, and the readers' checks."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from ramanseg.errors import InputError
from ramanseg.predictions import (
    masks_by_model,
    parse_prediction_path,
    read_predicted_mask,
    read_prediction,
    write_prediction,
)


def test_round_trip_and_names(tmp_path):
    probability = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    mask_path, probability_path = write_prediction(tmp_path / "unet", "S-1", probability)
    mask, read_back = read_prediction(tmp_path / "unet", "S-1")
    np.testing.assert_array_equal(mask, probability >= 0.5)
    np.testing.assert_array_equal(read_back, probability)
    assert parse_prediction_path(mask_path) == ("unet", "S-1", "mask")
    assert parse_prediction_path(probability_path) == ("unet", "S-1", "probability")
    assert masks_by_model([mask_path]) == {"unet": {"S-1": mask_path}}
    with pytest.raises(InputError, match="expected a predicted mask"):
        masks_by_model([probability_path])
    with pytest.raises(InputError, match="is not a prediction file"):
        parse_prediction_path(tmp_path / "unet" / "S-1.tif")


def test_bad_prediction_files_are_clear_errors(tmp_path):
    mask_path, probability_path = write_prediction(
        tmp_path / "unet", "S1", np.zeros((3, 4), np.float32)
    )
    tifffile.imwrite(mask_path, np.full((3, 4), 3, np.uint8))
    with pytest.raises(InputError, match="0 and 1 only") as caught:
        read_predicted_mask(mask_path, "S1", "rerun predict_model")
    assert caught.value.sample == "S1" and caught.value.path == mask_path
    tifffile.imwrite(mask_path, np.zeros((3, 4), np.uint8))
    tifffile.imwrite(probability_path, np.full((3, 4), 2.0, np.float32))
    with pytest.raises(InputError, match=r"values in \[0, 1\]"):
        read_prediction(tmp_path / "unet", "S1")
    mask_path.unlink()
    with pytest.raises(InputError, match="predicted mask does not exist"):
        read_prediction(tmp_path / "unet", "S1")
