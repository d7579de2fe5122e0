"""RamanSeg's "this looks like that" per slide, and the prototypes' source patches.

A tiny RamanSeg (see tests/models/test_ramanseg_training) trained with projection on the
tiny synthetic data; its residual head is on (two layers), so the head's part of the
tumour margin is not zero.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
import torch.nn.functional as F

from ramanseg.cli import main
from ramanseg.errors import InputError
from ramanseg.interpret.slide_explanation import (
    explain,
    explain_slide,
    region_contributions,
    tumour_regions,
)
from ramanseg.models.inference import model_predictor, sliding_window_probability
from ramanseg.models.prototypes.patches import (
    PATCHES_NAME,
    projection_records,
    read_prototype_patches,
    write_prototype_patches,
)
from ramanseg.models.ramanseg import RamanSeg
from ramanseg.models.registry import load_trained_model
from ramanseg.models.unet import UNet
from ramanseg.preprocessed import read_stack
from ramanseg.settings import ChannelLayout
from tests.interpret import register_commands
from tests.models.test_ramanseg_training import run, tiny_config
from tests.models.test_training import (  # noqa: F401 (fixture)
    CHANNELS,
    single_thread,
    write_dataset,
)

PNG = b"\x89PNG\r\n\x1a\n"
#: The display band of the tiny layout: the Raman band nearest 2930 cm-1.
DISPLAY = "Raman 2850"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny RamanSeg with projection, its source patches written beside it."""
    root = tmp_path_factory.mktemp("slide")
    write_dataset(root, n_train=3, n_val=1, n_test=1)
    from ramanseg.models.data import load_samples

    preprocessed = root / "preprocessed"
    samples = (
        load_samples(preprocessed, ["tr0", "tr1", "tr2"]),
        load_samples(preprocessed, ["va0"]),
    )
    model_dir = root / "ramanseg"
    config = tiny_config()
    run(config, "ramanseg", samples, model_dir)
    stacks = {s: preprocessed / s / "stack.ome.tif" for s in ("tr0", "tr1", "tr2")}
    layout = ChannelLayout.from_config(config)
    write_prototype_patches(model_dir / PATCHES_NAME, projection_records(model_dir), stacks, layout)
    return {"root": root, "model_dir": model_dir, "preprocessed": preprocessed, "config": config}


def slide_mask(shape=(32, 48)) -> np.ndarray:
    """Two tumour regions (10 x 10 and 6 x 5 px) and a 2-pixel speck."""
    mask = np.zeros(shape, np.uint8)
    mask[3:13, 30:40] = 1
    mask[20:26, 5:10] = 1
    mask[28, 44:46] = 1
    return mask


# --- the source patches -----------------------------------------------------------------------


def test_source_patches_are_the_display_band_around_each_source_region(trained):
    model_dir, preprocessed = trained["model_dir"], trained["preprocessed"]
    records = projection_records(model_dir)
    patches = read_prototype_patches(model_dir / PATCHES_NAME)
    assert patches.channel == DISPLAY and len(patches) == len(records) == 4
    band = CHANNELS.index(DISPLAY)
    for record, patch in zip(records, patches.patches, strict=True):
        assert (patch.prototype, patch.prototype_class) == (
            record.prototype,
            record.prototype_class,
        )
        assert patch.sample_id == record.sample_id and patch.bbox == record.bbox
        stack, _ = read_stack(preprocessed / record.sample_id / "stack.ome.tif", record.sample_id)
        y0, y1, x0, x1 = patch.crop_box
        np.testing.assert_allclose(patch.crop, stack[band, y0:y1, x0:x1], atol=1e-3)
        by0, by1, bx0, bx1 = patch.box_in_crop
        assert 0 <= by0 < by1 <= patch.crop.shape[0] and 0 <= bx0 < bx1 <= patch.crop.shape[1]
        assert patch.purity == pytest.approx(record.purity)


def test_prototype_patches_command_and_its_bad_inputs(trained, tmp_path, monkeypatch):
    register_commands(monkeypatch, "ramanseg.models.prototypes.patches")
    model_dir, preprocessed = trained["model_dir"], trained["preprocessed"]
    settings = json.dumps({"channels": trained["config"]["channels"], "interpret": {}})
    stacks = [str(preprocessed / s / "stack.ome.tif") for s in ("tr0", "tr1", "tr2", "va0")]
    out = tmp_path / PATCHES_NAME
    argv = ["prototype-patches", "--model-dir", str(model_dir), "--out", str(out)]
    assert main([*argv, "--stacks", *stacks, "--settings", settings]) == 0
    assert out.read_bytes() == (model_dir / PATCHES_NAME).read_bytes()
    # The configured display channel is the one cropped.
    tpef = json.dumps(
        {"channels": trained["config"]["channels"], "interpret": {"display_channel": "TPEF"}}
    )
    assert main([*argv, "--stacks", *stacks, "--settings", tpef]) == 0
    assert read_prototype_patches(out).channel == "TPEF"
    # A source sample's stack missing: exit 2, naming it, nothing written.
    sources = {r.sample_id for r in projection_records(model_dir)}
    others = [s for s in stacks if s.split("/")[-2] not in sources]
    out.unlink()
    assert main([*argv, "--stacks", *others, "--settings", settings]) == 2
    assert not out.exists()
    # Projection-free RamanSeg (no records): exit 2.
    empty = tmp_path / "noproj"
    empty.mkdir()
    assert (
        main([*argv[:2], str(empty), *argv[3:], "--stacks", *stacks, "--settings", settings]) == 2
    )
    assert not out.exists()


def test_source_patches_refuse_stacks_of_another_size_and_damaged_files(trained, tmp_path):
    records = projection_records(trained["model_dir"])
    layout = ChannelLayout.from_config(trained["config"])
    small = {r.sample_id: np.zeros((4, 16, 16), np.float32) for r in records}
    with pytest.raises(InputError, match="projected onto a 32 x 48 px image"):
        write_prototype_patches(tmp_path / PATCHES_NAME, records, small, layout)
    assert not (tmp_path / PATCHES_NAME).exists()
    (tmp_path / PATCHES_NAME).write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot be read"):
        read_prototype_patches(tmp_path / PATCHES_NAME)
    np.savez(tmp_path / "partial.npz", prototype=np.arange(2))
    with pytest.raises(InputError, match="cannot be read"):
        read_prototype_patches(tmp_path / "partial.npz")


# --- regions and contributions ----------------------------------------------------------------


def test_regions_are_numbered_by_area_and_specks_skipped():
    labels, skipped = tumour_regions(slide_mask(), min_area=16)
    assert skipped == 1
    assert [int((labels == r).sum()) for r in (1, 2)] == [100, 30] and labels.max() == 2
    assert labels[28, 44] == 0
    # Diagonal neighbours are one region (8-connectivity).
    diagonal = np.zeros((6, 6), np.uint8)
    diagonal[1, 1] = diagonal[2, 2] = 1
    assert tumour_regions(diagonal, 1)[0].max() == 1


def blended(model, image, patch_size, window_map):
    """``window_map(output, logits-sized tensor)`` blended as the prediction blends
    probabilities: the independent reference of the closed form."""

    def predict(batch):
        latent = model.latent(batch)
        _, similarities = model.prototype_layer(latent)
        output = model(batch)
        value = window_map(output, similarities)
        size = tuple(batch.shape[2:])
        return F.interpolate(value[:, None], size=size, mode="bilinear", align_corners=False)

    with torch.no_grad():
        return sliding_window_probability(predict, image, patch_size).astype(np.float64)


def margin(output, similarities):
    """The decision margin of the network's own latent logits: tumour minus background."""
    return output.latent_logits[:, 1] - output.latent_logits[:, 0]


def test_contributions_add_up_to_each_regions_tumour_margin(trained):
    model, metadata = load_trained_model(trained["model_dir"])
    patch_size = metadata["patch_size"]
    patches = read_prototype_patches(trained["model_dir"] / PATCHES_NAME)
    image, _ = read_stack(trained["preprocessed"] / "te0" / "stack.ome.tif", "te0")
    explanation = explain(model, image, slide_mask(), patch_size, patches, sample_id="te0")
    regions, table = explanation.regions, explanation.contributions
    assert regions["region"].tolist() == [1, 2] and regions["area_px"].tolist() == [100, 30]
    assert explanation.skipped == 1 and explanation.min_area == model.stride**2
    # The closed form: the margin, blended over the windows, summed over the region.
    logit_margin = blended(model, image, patch_size, margin)
    weight = model.readout.weight[1, :, 0, 0] - model.readout.weight[0, :, 0, 0]
    for region in regions.itertuples():
        inside = explanation.labels == region.region
        rows = table[table["region"] == region.region]
        assert rows["rank"].tolist() == [1, 2, 3, 4]
        assert rows["contribution"].is_monotonic_decreasing
        assert rows["prototype"].is_unique and len(rows) == model.prototype_layer.num_prototypes
        total = rows["contribution"].sum() + region.head_correction
        assert total == pytest.approx(region.tumour_margin, rel=1e-9)
        expected = logit_margin[inside].sum()
        assert region.tumour_margin == pytest.approx(expected, rel=1e-4, abs=1e-4)
        # Each contribution on its own, the first (most for tumour) and the last (most for
        # background): similarity x weight difference, blended and summed.
        for row in (rows.iloc[0], rows.iloc[-1]):
            j = int(row["prototype"])
            own = blended(model, image, patch_size, lambda out, s, j=j: weight[j] * s[:, j])
            assert row["contribution"] == pytest.approx(own[inside].sum(), rel=1e-4)
        # Similarities are positive, so a contribution has its weight difference's sign.
        signs = weight.detach().numpy()[rows["prototype"].to_numpy()]
        assert (rows["contribution"].to_numpy() * signs >= 0).all()
    assert (regions["head_correction"] != 0).all()  # the head is on: its part is reported


def random_ramanseg(**kwargs) -> RamanSeg:
    """A small randomly initialised RamanSeg whose head and readout are not at their init."""
    torch.manual_seed(0)
    model = RamanSeg(
        in_channels=len(CHANNELS), prototypes_per_class=3, prototype_channels=8,
        addon_channels=8, stride=4, base_channels=8, max_channels=16, **kwargs,
    )  # fmt: skip
    with torch.no_grad():
        model.head.convs[-1].weight.normal_(0, 0.05)  # the head's last conv starts at zero
        model.readout.weight.normal_(0, 1)
    return model.eval()


def test_contributions_add_up_to_the_margin_of_the_models_own_output():
    """With logits upsampled, the pixel margin is the forward output's own, ``logits``."""
    model = random_ramanseg(upsample="logits")
    image = np.random.default_rng(1).random((len(CHANNELS), 24, 40), dtype=np.float32)
    mask = np.zeros((24, 40), np.uint8)
    mask[2:20, 5:17] = mask[4:9, 30:38] = 1
    labels, _ = tumour_regions(mask, 1)
    contributions, head = region_contributions(model, image, labels, 16)

    def pixel_margin(output, similarities):
        return output.logits[:, 1] - output.logits[:, 0]

    def predict(batch):
        return pixel_margin(model(batch), None)

    with torch.no_grad():
        expected = sliding_window_probability(predict, image, 16).astype(np.float64)
    for r in range(2):
        summed = expected[labels == r + 1].sum()
        assert contributions[r].sum() + head[r] == pytest.approx(summed, rel=1e-4, abs=1e-3)
    assert (head != 0).all()


def test_the_explanation_depends_only_on_what_the_prediction_depends_on():
    """Adding one vector to both readout rows leaves every softmax, and so every
    prediction, as it was; the margin's contributions must not move either (the tumour
    logit's would)."""
    model = random_ramanseg()
    image = np.random.default_rng(2).random((len(CHANNELS), 24, 24), dtype=np.float32)
    labels = np.zeros((24, 24), np.int32)
    labels[4:16, 6:20] = 1
    before = region_contributions(model, image, labels, 16)
    probability = sliding_window_probability(model_predictor(model, torch.device("cpu")), image, 16)
    with torch.no_grad():
        model.readout.weight += torch.randn(1, *model.readout.weight.shape[1:]) * 3
    after = region_contributions(model, image, labels, 16)
    shifted = sliding_window_probability(model_predictor(model, torch.device("cpu")), image, 16)
    np.testing.assert_allclose(shifted, probability, atol=1e-5)
    np.testing.assert_allclose(after[0], before[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(after[1], before[1], rtol=1e-4, atol=1e-4)


def test_only_a_two_class_model_has_a_margin_to_explain():
    model = random_ramanseg(num_classes=3)
    labels = np.ones((16, 16), np.int32)
    with pytest.raises(ValueError, match="two-class"):
        region_contributions(model, np.zeros((len(CHANNELS), 16, 16), np.float32), labels, 16)


def test_explain_slide_writes_the_figure_and_table(trained, tmp_path, monkeypatch):
    register_commands(monkeypatch, "ramanseg.interpret.slide_explanation")
    stack = trained["preprocessed"] / "te0" / "stack.ome.tif"
    tifffile.imwrite(tmp_path / "te0.mask.tif", slide_mask())
    argv = [
        "explain-slide", "--model-dir", str(trained["model_dir"]), "--stack", str(stack),
        "--mask", str(tmp_path / "te0.mask.tif"), "--out", str(tmp_path / "te0.png"),
        "--table", str(tmp_path / "te0.csv"), "--top-k", "2",
    ]  # fmt: skip
    assert main(argv) == 0
    figure = (tmp_path / "te0.png").read_bytes()
    assert figure.startswith(PNG) and len(figure) > 5000
    table = pd.read_csv(tmp_path / "te0.csv")
    assert set(table["region"]) == {1, 2} and set(table["sample_id"]) == {"te0"}
    sums = table.groupby("region").agg(
        contribution=("contribution", "sum"),
        head=("head_correction", "first"),
        margin=("tumour_margin", "first"),
    )
    np.testing.assert_allclose(sums["contribution"] + sums["head"], sums["margin"], rtol=1e-5)
    assert main(argv) == 0 and (tmp_path / "te0.png").read_bytes() == figure  # deterministic


def test_a_slide_without_tumour_says_so(trained, tmp_path, caplog):
    stack = trained["preprocessed"] / "te0" / "stack.ome.tif"
    speck = np.zeros((32, 48), np.uint8)
    speck[5, 5] = 1
    tifffile.imwrite(tmp_path / "mask.tif", speck)
    with caplog.at_level("INFO"):
        explanation = explain_slide(
            trained["model_dir"], stack, tmp_path / "mask.tif", tmp_path / "none.png",
            table=tmp_path / "none.csv",
        )  # fmt: skip
    assert explanation.regions.empty and explanation.contributions.empty
    assert explanation.skipped == 1
    assert "no tumour region" in caplog.text
    assert (tmp_path / "none.png").read_bytes().startswith(PNG)
    assert pd.read_csv(tmp_path / "none.csv").empty


def test_a_region_the_margin_does_not_carry_is_marked(trained, tmp_path, caplog):
    # A "predicted" region where the model's own margin is negative (the 8 x 8 block of
    # lowest blended margin): the explanation cannot carry it, and says so.
    model, metadata = load_trained_model(trained["model_dir"])
    stack = trained["preprocessed"] / "te0" / "stack.ome.tif"
    image, _ = read_stack(stack, "te0")
    logit_margin = blended(model, image, metadata["patch_size"], margin)
    sums = np.lib.stride_tricks.sliding_window_view(logit_margin, (8, 8)).sum(axis=(2, 3))
    y, x = np.unravel_index(np.argmin(sums), sums.shape)
    assert sums[y, x] < 0  # the tiny model sees background somewhere on the slide
    mask = np.zeros(logit_margin.shape, np.uint8)
    mask[y : y + 8, x : x + 8] = 1
    tifffile.imwrite(tmp_path / "mask.tif", mask)
    with caplog.at_level("WARNING"):
        explanation = explain_slide(
            trained["model_dir"], stack, tmp_path / "mask.tif", tmp_path / "contrary.png"
        )
    assert explanation.regions["tumour_margin"].iloc[0] == pytest.approx(sums[y, x], rel=1e-4)
    assert "region(s) 1 have a summed margin <= 0" in caplog.text
    # The model's own prediction on its regions is carried: no warning.
    caplog.clear()
    own = (logit_margin > 0).astype(np.uint8)
    tifffile.imwrite(tmp_path / "own.tif", own)
    with caplog.at_level("WARNING"):
        result = explain_slide(
            trained["model_dir"], stack, tmp_path / "own.tif", tmp_path / "own.png"
        )
    assert (result.regions["tumour_margin"] > 0).all() and "margin <= 0" not in caplog.text


def test_explain_slide_bad_inputs(trained, tmp_path, monkeypatch):
    register_commands(monkeypatch, "ramanseg.interpret.slide_explanation")
    model_dir = trained["model_dir"]
    stack = trained["preprocessed"] / "te0" / "stack.ome.tif"
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((16, 16), np.uint8))
    tifffile.imwrite(tmp_path / "mask.tif", slide_mask())
    out = tmp_path / "x.png"

    def explain_cli(model=model_dir, stack=stack, mask=tmp_path / "mask.tif"):
        argv = ["explain-slide", "--model-dir", str(model), "--stack", str(stack)]
        return main([*argv, "--mask", str(mask), "--out", str(out)])

    assert explain_cli(mask=tmp_path / "small.tif") == 2  # another size than the slide
    # A stack of other channels than the model's.
    other = tmp_path / "other" / "stack.ome.tif"
    other.parent.mkdir()
    tifffile.imwrite(other, np.zeros((3, 32, 48), np.float32))
    assert explain_cli(stack=other) == 2
    # A model folder without its source patches (projection-free RamanSeg, say).
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model.json", "model.pt"):
        (bare / name).write_bytes((model_dir / name).read_bytes())
    assert explain_cli(model=bare) == 2
    # Another model than RamanSeg: no prototypes to show.
    unet = tmp_path / "unet"
    unet.mkdir()
    architecture = {"in_channels": 4, "out_channels": 1, "levels": 2, "base_channels": 4}
    torch.save(UNet(**architecture).state_dict(), unet / "model.pt")
    metadata = {"model": "unet", "architecture": architecture, "patch_size": 16}
    (unet / "model.json").write_text(json.dumps(metadata))
    assert explain_cli(model=unet) == 2
    with pytest.raises(InputError, match="not RamanSeg"):
        explain_slide(unet, stack, tmp_path / "mask.tif", out)
    assert not out.exists()
    with pytest.raises(InputError, match="source patches do not exist"):
        explain_slide(bare, stack, tmp_path / "mask.tif", out)
