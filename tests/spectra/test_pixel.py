"""The per-pixel 1D-CNN: trained on pixels with a planted tumour signature in two Raman
bands, it predicts tumour maps and its top bands include the planted ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ramanseg.config import ConfigError
from ramanseg.models.data import Sample
from ramanseg.spectra.pixel import (
    pixel_band_importance,
    predict_sample,
    raman_bands,
    train_pixel_model,
)
from tests.sample_files import write_preprocessed_files

PLANTED = (8, 9)  # 2918.8 and 2933.4 cm-1 in the demo's channel list


def _sample(index: int, config) -> Sample:
    rng = np.random.default_rng(index)
    channels = len(config["channels"])
    image = rng.uniform(0.2, 0.6, (channels, 24, 24)).astype(np.float32)
    mask = np.zeros((24, 24), np.uint8)
    mask[4:14, 6 + index % 4 : 18] = 1
    for band in PLANTED:
        image[band][mask == 1] += 0.3
    return Sample(f"S{index}", image, mask, np.ones_like(mask), ())


@pytest.fixture(scope="module")
def trained(demo_config):
    torch.set_num_threads(1)
    config = {**demo_config, "spectra": {**demo_config["spectra"]}}
    config["spectra"]["pixel_model"] = {
        **demo_config["spectra"]["pixel_model"],
        "pixels": 3000,
        "epochs": 8,
    }
    train = [_sample(i, config) for i in range(3)]
    model, history, fisher = train_pixel_model(train, [_sample(3, config)], config)
    return config, model, history, fisher


def test_the_planted_bands_have_the_highest_fisher_scores(trained):
    config, _, _, fisher = trained
    _, wavenumbers = raman_bands(config)
    top = fisher.nlargest(2, "fisher")["wavenumber"]
    assert set(top) == {wavenumbers[i] for i in PLANTED}


def test_prediction_finds_the_tumour(trained):
    config, model, _, _ = trained
    sample = _sample(5, config)
    probability = predict_sample(model, sample, config)
    assert probability.shape == (24, 24) and probability.dtype == np.float32
    assert ((probability >= 0.5) == (sample.mask == 1)).mean() > 0.9


def test_top5_bands_include_the_planted_bands(trained):
    config, model, _, fisher = trained
    importance = pixel_band_importance(model, [_sample(6, config)], fisher, config)
    _, wavenumbers = raman_bands(config)
    for column in ("gradcam", "weights", "integrated_gradients", "integrated_gradients_abs"):
        top = set(importance.nlargest(5, column)["wavenumber"])
        assert {wavenumbers[i] for i in PLANTED} <= top, (column, top)


def test_a_channel_list_without_raman_bands_is_a_config_error(demo_config):
    config = {**demo_config, "channels": [{"name": "t", "role": "transmission"}]}
    with pytest.raises(ConfigError, match="2\\+ Raman channels"):
        raman_bands(config)


def _write_preprocessed(root, config, ids):
    names = [channel["name"] for channel in config["channels"]]
    for index, sample_id in enumerate(ids):
        write_preprocessed_files(root / "preprocessed" / sample_id, _sample(index, config), names)


def test_cli_trains_predicts_the_test_set_and_explains(tmp_path, demo_config):
    import json

    from ramanseg.cli import main

    split = {"train": ["a", "b"], "val": ["c"], "test": ["d", "e"], "folds": []}
    _write_preprocessed(
        tmp_path, demo_config, [i for key in ("train", "val", "test") for i in split[key]]
    )
    (tmp_path / "split.json").write_text(json.dumps(split))
    spectra = {**demo_config["spectra"]}
    spectra["pixel_model"] = {**spectra["pixel_model"], "pixels": 500, "epochs": 1}
    settings = {"seed": 0, "channels": demo_config["channels"], "spectra": spectra}
    argv = ["spectra-pixel-model", "--split", str(tmp_path / "split.json")]
    for option, name in (
        ("--stacks", "stack.ome.tif"),
        ("--masks", "mask.tif"),
        ("--foregrounds", "foreground.tif"),
    ):
        argv += [option, *map(str, sorted((tmp_path / "preprocessed").glob(f"*/{name}")))]
    argv += ["--model-dir", str(tmp_path / "model"), "--outdir", str(tmp_path / "pred")]
    assert main([*argv, "--settings", json.dumps(settings)]) == 0
    written = sorted(p.name for p in (tmp_path / "pred").glob("*.tif"))
    assert written == ["d.mask.tif", "d.probability.tif", "e.mask.tif", "e.probability.tif"]
    metadata = json.loads((tmp_path / "model" / "model.json").read_text())
    assert set(metadata["top_5_bands"]) >= {"gradcam", "weights", "integrated_gradients_abs"}
    assert (tmp_path / "model" / "band_importance.png").stat().st_size > 1000
