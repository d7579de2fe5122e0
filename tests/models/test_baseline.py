"""The per-pixel logistic-regression baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ramanseg.errors import InputError
from ramanseg.models.baseline import (
    fit_pixel_baseline,
    load_baseline,
    predict_baseline,
    sample_pixels,
    save_baseline,
)
from ramanseg.models.training import dice_score
from ramanseg.predictions import read_prediction
from tests.models.test_training import make_sample, preprocessed_files, run_cli, write_dataset


def test_baseline_learns_the_tiny_task(tmp_path):
    model = fit_pixel_baseline([make_sample(f"tr{i}", i) for i in range(3)], seed=0)
    test_samples = [make_sample(f"te{i}", 30 + i) for i in range(3)]
    predict_baseline(model, test_samples, tmp_path)
    for sample in test_samples:
        mask, probability = read_prediction(tmp_path, sample.sample_id)
        assert probability.shape == sample.mask.shape
        assert dice_score(mask, sample.mask) > 0.9
    assert model.coef[0] > 0  # the bright channel is the evidence for tumour


def test_baseline_round_trips_through_json(tmp_path):
    model = fit_pixel_baseline([make_sample("tr0", 0)], max_pixels=500, seed=1)
    assert model.n_pixels == 500 and model.train_samples == ("tr0",)
    save_baseline(model, tmp_path / "model.json")
    assert json.loads((tmp_path / "model.json").read_text())["kind"] == "pixel_logistic_regression"
    loaded = load_baseline(tmp_path / "model.json")
    assert loaded == model
    image = make_sample("x", 5).image
    np.testing.assert_array_equal(loaded.probability(image), model.probability(image))
    with pytest.raises(ValueError, match="fitted on 4 channels"):
        model.probability(image[:3])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="cannot be read"):
        load_baseline(tmp_path / "bad.json")


def test_pixel_subsample_is_seeded_and_capped():
    samples = [make_sample("a", 0), make_sample("b", 1)]
    x1, y1 = sample_pixels(samples, 100, seed=4)
    x2, y2 = sample_pixels(samples, 100, seed=4)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert x1.shape == (100, 4) and not np.array_equal(x1, sample_pixels(samples, 100, 5)[0])
    everything, labels = sample_pixels(samples, 10**6, seed=0)
    assert len(everything) == 2 * 32 * 48
    assert int(labels.sum()) == sum(int(s.mask.sum()) for s in samples)


def test_baseline_needs_both_classes():
    sample = make_sample("a", 0)
    empty = type(sample)("a", sample.image, np.zeros_like(sample.mask), sample.tissue)
    with pytest.raises(ValueError, match="tumour and non-tumour pixels"):
        fit_pixel_baseline([empty])


def test_cli_fits_and_predicts(tmp_path):
    split = write_dataset(tmp_path, n_train=2, n_val=1, n_test=2)
    model_json = tmp_path / "models" / "logreg" / "model.json"
    outdir = tmp_path / "predictions" / "logreg"
    argv = ["fit-baseline", *preprocessed_files(tmp_path, "stacks", "masks", "foregrounds")]
    argv += ["--split", str(split), "--model-out", str(model_json), "--outdir", str(outdir)]
    assert run_cli([*argv, "--settings", '{"seed": 0}']) == 0
    assert load_baseline(model_json).train_samples == ("tr0", "tr1")
    assert sorted(p.name for p in outdir.glob("*.mask.tif")) == ["te0.mask.tif", "te1.mask.tif"]
