"""nnU-Net attributions: target choice, Captum wrappers, Grad-CAM, IG, Feature Ablation, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from ramanseg.config import ConfigError, channel_names
from ramanseg.interpret import interpret_settings
from ramanseg.interpret.nnunet_attributions import (
    MeanOfModels,
    NetworkInput,
    SegmentationOutput,
    Target,
    ablate_channels,
    channel_totals,
    deepest_pixel,
    explain,
    gradcam_maps,
    ig_baseline,
    integrated_gradients,
    prepare_network,
    resolve_layer,
    select_target,
)
from ramanseg.phantom import generate_sample
from ramanseg.predictions import write_prediction
from tests.interpret import extend_schema, register_commands


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread; the command's deterministic mode is switched back afterwards."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def tiny_resenc_unet(seed: int, channels: int = 4) -> nn.Module:
    """A 3-stage ResidualEncoderUNet as nnU-Net builds it (InstanceNorm, LeakyReLU in place)."""
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    torch.manual_seed(seed)
    return ResidualEncoderUNet(
        input_channels=channels,
        n_stages=3,
        features_per_stage=[4, 8, 8],
        conv_op=nn.Conv2d,
        kernel_sizes=3,
        strides=[1, 2, 2],
        n_blocks_per_stage=[1, 1, 1],
        num_classes=2,
        n_conv_per_stage_decoder=[1, 1],
        conv_bias=True,
        norm_op=nn.InstanceNorm2d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
        deep_supervision=False,
    )


# --------------------------------------------------------------------------------------------
# The target pixel.


def test_deepest_pixel_counts_the_image_border_as_outside():
    region = np.zeros((9, 9), bool)
    region[2:7, 2:7] = True  # 5 x 5: the centre (4, 4) is 3 px from the outside
    assert deepest_pixel(region) == (4, 4, 3.0)
    region[2:7, 1:8] = True  # 5 x 7: columns 3, 4, 5 tie at 3 px; the first one wins
    assert deepest_pixel(region) == (4, 3, 3.0)
    edge = np.zeros((5, 5), bool)
    edge[:, :3] = True  # touches three borders, which count as outside: rows 1-3 of
    # column 1 are 2 px from the outside (the first of them wins)
    assert deepest_pixel(edge) == (1, 1, 2.0)
    with pytest.raises(ValueError, match="non-empty"):
        deepest_pixel(np.zeros((3, 3), bool))


def _two_samples():
    truth = {"A": np.zeros((10, 10), bool), "B": np.zeros((10, 10), bool)}
    truth["A"][:2, :2] = True
    predicted = {"A": np.zeros((10, 10), np.uint8), "B": np.zeros((10, 10), np.uint8)}
    predicted["A"][5:8, 5:8] = 1  # a 3 x 3 false positive: 9 px, centre (6, 6)
    predicted["B"][1:6, 2:7] = 1  # a 5 x 5 false positive: 25 px, centre (3, 4)
    predicted["B"][9, 9] = 1  # on glass: outside the tissue, not counted
    tissue = {s: np.ones((10, 10), bool) for s in truth}
    tissue["B"][9, 9] = False
    probability = {s: predicted[s].astype(np.float32) * 0.9 for s in truth}
    return truth, predicted, tissue, probability


def test_auto_target_is_the_deepest_pixel_of_the_largest_false_positive_area():
    truth, predicted, tissue, probability = _two_samples()
    target = select_target(["A", "B"], predicted, probability, truth, tissue)
    assert (target.sample, target.y, target.x) == ("B", 3, 4)
    assert target.rule == "deepest false positive"
    assert target.false_positive_area == 25
    assert target.depth == 3.0
    assert target.probability == pytest.approx(0.9)
    # Only A has the ablation class: A is chosen.
    only_a = select_target(
        ["A", "B"], predicted, probability, truth, tissue, eligible={"A": True, "B": False}
    )
    assert (only_a.sample, only_a.y, only_a.x) == ("A", 6, 6)
    configured = select_target(
        ["A", "B"], predicted, probability, truth, tissue, sample="A", pixel=(1, 8)
    )
    assert (configured.sample, configured.y, configured.x, configured.rule) == (
        "A",
        1,
        8,
        "configured",
    )
    with pytest.raises(ValueError, match="outside the image"):
        select_target(["A"], predicted, probability, truth, tissue, sample="A", pixel=(10, 0))
    with pytest.raises(ValueError, match="not a test sample"):
        select_target(["A"], predicted, probability, truth, tissue, sample="C")


def test_without_false_positives_the_most_probable_negative_is_explained():
    truth, _, tissue, _ = _two_samples()
    predicted = {s: np.zeros((10, 10), np.uint8) for s in truth}
    probability = {s: np.zeros((10, 10), np.float32) for s in truth}
    probability["A"][0, 0] = 0.95  # a true tumour pixel: not a negative
    probability["A"][7, 3] = 0.4
    probability["B"][2, 2] = 0.3
    target = select_target(["A", "B"], predicted, probability, truth, tissue)
    assert (target.sample, target.y, target.x) == ("A", 7, 3)
    assert target.rule == "most probable negative"


# --------------------------------------------------------------------------------------------
# Wrappers and attributions.


class GlobalChannel(nn.Module):
    """Tumour logit everywhere = 2 x the mean of channel ``channel``; background logit 0."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.channel = channel

    def forward(self, x):
        value = 2.0 * x[:, self.channel].mean(dim=(1, 2))
        tumour = value.view(-1, 1, 1).expand(-1, *x.shape[2:])
        return torch.stack([torch.zeros_like(tumour), tumour], dim=1)


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
    samples = [generate_sample(config, index) for index in range(6)]

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
        {"interpret": {"gradcam_layer": "encoder.stages.1", "ig_steps": 4}}
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


def test_settings_are_checked():
    assert interpret_settings({}).target_pixel is None
    assert interpret_settings(
        {"interpret": {"sample": "A", "target_pixel": [3, 4]}}
    ).target_pixel == (3, 4)
    for bad in (
        {"target_pixel": [1, 2]},  # a pixel without a sample
        {"sample": "A", "target_pixel": [1]},
        {"ig_steps": 1},
        {"output": "probability"},
        {"ig_baseline": "mean"},
        {"colour": "red"},
    ):
        with pytest.raises(ConfigError, match="interpret"):
            interpret_settings({"interpret": bad})


# --------------------------------------------------------------------------------------------
# The command, on a randomly initialised nnU-Net model folder.


def test_interpret_nnunet_command_end_to_end(tmp_path, monkeypatch):
    from ramanseg.cli import main
    from ramanseg.nnunet.environment import configure_nnunet
    from ramanseg.nnunet.run import trained_model_dir
    from tests.interpret.nnunet_model import write_model_folder

    register_commands(monkeypatch, "ramanseg.interpret")
    extend_schema(monkeypatch)
    for name in (
        "nnUNet_raw",
        "nnUNet_preprocessed",
        "nnUNet_results",
        "nnUNet_extTrainer",
        "nnUNet_def_n_proc",
        "nnUNet_n_proc_DA",
        "nnUNet_compile",
    ):
        monkeypatch.setenv(name, "")  # restored (or removed) after the test
    nnunet_dir = tmp_path / "nnunet"
    configure_nnunet(nnunet_dir)
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
    split.write_text(json.dumps({"test": ["A", "B"], "folds": [{}, {}]}))
    outdir = tmp_path / "interpret"
    argv = [
        "interpret-nnunet",
        "--nnunet-dir",
        str(nnunet_dir),
        "--preprocessed",
        str(preprocessed),
        "--predictions",
        str(predictions),
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
