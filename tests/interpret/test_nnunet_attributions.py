"""nnU-Net attributions: Grad-CAM per fold and the ensemble's attributions through
explain(), the settings, and the command end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from ramanseg.config import ConfigError, validate_config
from ramanseg.interpret import interpret_settings
from ramanseg.interpret.nnunet_attributions import explain
from ramanseg.interpret.nnunet_methods import (
    ablate_channels,
    gradcam_maps,
    ig_baseline,
    integrated_gradients,
    resolve_layer,
)
from ramanseg.interpret.nnunet_network import MeanOfModels, NetworkInput, prepare_network
from ramanseg.interpret.nnunet_target import Target
from ramanseg.predictions import write_prediction
from tests.interpret import register_commands
from tests.interpret.nnunet_model import one_thread, tiny_resenc_unet  # noqa: F401 (fixture)

#: One torch thread for every test here (the fixture also restores the deterministic mode).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_gradcam_per_fold_and_the_mean_on_a_resenc_unet():
    networks = [prepare_network(tiny_resenc_unet(seed)) for seed in range(3)]
    inputs = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    assert resolve_layer(networks[0], "auto", inputs, min_size=8) == ("encoder.stages.2", (8, 8))
    assert resolve_layer(networks[0], "auto", inputs) == ("encoder.stages.1", (16, 16))
    assert resolve_layer(networks[0], "encoder.stages.0", inputs) == ("encoder.stages.0", (32, 32))
    with pytest.raises(ConfigError, match="not a module"):
        resolve_layer(networks[0], "encoder.stages.9", inputs)
    maps = gradcam_maps(networks, inputs, "encoder.stages.1", (10, 12))
    assert maps.shape == (3, 32, 32)
    assert not np.allclose(maps[0], maps[1])  # different folds, different maps
    one = gradcam_maps(networks[1:2], inputs, "encoder.stages.1", (10, 12))
    np.testing.assert_allclose(one[0], maps[1])
    # Through explain(): maps in image coordinates (crop offset 2, 3) and their mean.
    network_input = NetworkInput(inputs, offset=(2, 3), size=(32, 32), image_shape=(36, 40))
    settings = interpret_settings(
        validate_config(
            {"interpret": {"gradcam_layer": "encoder.stages.1", "ig_steps": 4}}, partial=True
        )
    )
    target = Target("S", 12, 15, "configured", 0, 0.0, 0.5)
    region = np.zeros((36, 40), bool)
    region[20:30, 20:30] = True
    result = explain(networks, network_input, target, settings, region)
    assert result.gradcam.shape == (3, 36, 40)
    np.testing.assert_allclose(result.gradcam[:, 2:34, 3:35], maps)
    assert np.isnan(result.gradcam[:, :2]).all() and np.isnan(result.gradcam[:, :, 35:]).all()
    mean = result.gradcam.mean(axis=0)
    np.testing.assert_allclose(mean[2:34, 3:35], maps.mean(axis=0))
    assert result.ig.shape == (4, 32, 32)
    assert result.ablation.shape == (4,) and result.ablation_pixels == 100
    # Computed fold by fold, they equal the attributions of the ensemble itself.
    ensemble = MeanOfModels(networks)
    baseline = ig_baseline(inputs, "blur", 8.0)
    expected_ig, _ = integrated_gradients(ensemble, inputs, (10, 12), steps=4, baseline=baseline)
    np.testing.assert_allclose(result.ig, expected_ig, rtol=1e-4, atol=1e-6)
    cropped = region[2:34, 3:35]
    expected_ablation = ablate_channels(ensemble, inputs, cropped, (10, 12))
    np.testing.assert_allclose(result.ablation, expected_ablation, rtol=1e-4, atol=1e-6)
    # The ensemble is the mean of the folds' logits.
    with torch.no_grad():
        expected = torch.stack([n(inputs) for n in networks]).mean(dim=0)
        torch.testing.assert_close(MeanOfModels(networks)(inputs), expected)


def test_settings_are_typed_from_the_validated_config():
    def settings(section):
        return interpret_settings(validate_config({"interpret": section}, partial=True))

    assert settings({}).target_pixel is None and settings({}).ig_steps == 32
    assert settings({"sample": "A", "target_pixel": [3, 4]}).target_pixel == (3, 4)
    # The schema is the validator of each value; check_config_semantics of their relations.
    for bad in (
        {"target_pixel": [1, 2]},  # a pixel without a sample
        {"sample": "A", "target_pixel": [1]},
        {"ig_steps": 1},
        {"output": "probability"},
        {"ig_baseline": "mean"},
        {"colour": "red"},
    ):
        with pytest.raises(ConfigError, match="interpret"):
            validate_config({"interpret": bad}, partial=True)


# --------------------------------------------------------------------------------------------
# The command, on a randomly initialised nnU-Net model folder.


def _files(folder, option, name):
    return [option, *map(str, sorted(folder.glob(f"*/{name}")))]


def test_interpret_nnunet_command_end_to_end(tmp_path, monkeypatch):
    from ramanseg.cli import main
    from ramanseg.nnunet.run import trained_model_dir
    from tests.interpret.nnunet_model import configure_nnunet_for_test, write_model_folder

    register_commands(monkeypatch, "ramanseg.interpret")
    nnunet_dir = configure_nnunet_for_test(monkeypatch, tmp_path / "nnunet")
    settings = {
        "seed": 0,
        "device": "cpu",
        "channels": [
            {"name": f"band {c}", "role": "raman", "wavenumber": 2900.0 + 10 * c} for c in range(4)
        ],
        "annotations": {"classes": {"Tumor": 1, "Epithelium": 0, "Stroma": 0}},
        "nnunet": {
            "dataset_id": 999,
            "trainer": "nnUNetTrainer",
            "planner": "nnUNetPlannerResEncM",
            "configuration": "2d",
        },
        "interpret": {"ig_steps": 4, "internal_batch_size": 4, "gradcam_layer": "auto"},
    }
    model_dir = trained_model_dir(999, "nnUNetTrainer", "nnUNetPlannerResEncM", "2d")
    write_model_folder(model_dir, channels=4, size=32, folds=(0, 1))
    rng = np.random.default_rng(0)
    preprocessed, predictions = tmp_path / "preprocessed", tmp_path / "predictions"
    for sample in ("A", "B"):
        folder = preprocessed / sample
        folder.mkdir(parents=True)
        tifffile.imwrite(folder / "stack.ome.tif", rng.random((4, 32, 32), dtype=np.float32))
        truth = np.zeros((32, 32), np.uint8)
        truth[4:12, 4:12] = 1
        classes = np.full((32, 32), 3, np.uint8)
        classes[truth == 1] = 1
        classes[16:28, 16:28] = 2  # epithelium
        tifffile.imwrite(folder / "mask.tif", truth)
        tifffile.imwrite(folder / "classes.tif", classes)
        tifffile.imwrite(folder / "foreground.tif", np.ones((32, 32), np.uint8))
        probability = np.where(truth == 1, 0.9, 0.1).astype(np.float32)
        if sample == "B":
            probability[18:25, 18:25] = 0.8  # the false positive over the epithelium
        write_prediction(predictions, sample, probability)
    split = tmp_path / "split.json"
    folds = [{"train": [], "val": []}] * 2
    split.write_text(json.dumps({"train": [], "val": [], "test": ["A", "B"], "folds": folds}))
    outdir = tmp_path / "interpret"
    argv = [
        "interpret-nnunet",
        "--nnunet-dir",
        str(nnunet_dir),
        *_files(preprocessed, "--stacks", "stack.ome.tif"),
        *_files(preprocessed, "--truth", "mask.tif"),
        *_files(preprocessed, "--classes", "classes.tif"),
        *_files(preprocessed, "--foregrounds", "foreground.tif"),
        "--predictions",
        *map(str, sorted(predictions.glob("*.tif"))),
        "--split",
        str(split),
        "--outdir",
        str(outdir),
        "--settings",
        json.dumps(settings),
    ]
    assert main(argv) == 0
    summary = json.loads((outdir / "target.json").read_text())
    assert summary["target"]["sample"] == "B"
    assert (summary["target"]["y"], summary["target"]["x"]) == (21, 21)
    assert summary["layer"] == "encoder.stages.1" and summary["folds"] == [0, 1]
    assert summary["feature_ablation"]["pixels"] == 144
    for name in ("gradcam_folds", "gradcam_mean", "integrated_gradients", "feature_ablation"):
        assert (outdir / f"{name}.png").read_bytes().startswith(b"\x89PNG")
        assert (outdir / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    table = (outdir / "integrated_gradients.csv").read_text().splitlines()
    assert table[0] == "channel,name,role,ig_abs_sum,rank,ig_sum" and len(table) == 5
    first = {path.name: path.read_bytes() for path in sorted(outdir.iterdir())}
    assert len(first) == 11
    assert main(argv) == 0  # a rerun gives identical files
    assert {path.name: path.read_bytes() for path in sorted(outdir.iterdir())} == first
