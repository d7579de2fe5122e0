"""The overlay figure of a slide's predictions, and the ``overlay`` command."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from ramanseg.cli import main
from ramanseg.io import write_ome_tiff
from ramanseg.overlay import render_overlay, write_overlay_png
from ramanseg.predictions import write_prediction

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def slide(shape=(48, 64)) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A display band and two models' masks (one empty)."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = (rows + cols).astype(np.float32) / (shape[0] + shape[1])
    unet = np.zeros(shape, np.uint8)
    unet[10:30, 20:50] = 1
    return image, {"unet": unet, "ramanseg": np.zeros(shape, np.uint8)}


def red_pixels(png: bytes) -> int:
    """Pixels drawn in the tumour colour (strongly red), where a mask is outlined / filled."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((rgb[..., 0] - rgb[..., 1] > 60) & (rgb[..., 0] - rgb[..., 2] > 60)).sum())


def test_one_panel_per_model_deterministic(tmp_path):
    image, masks = slide()
    out = write_overlay_png(tmp_path / "S1" / "overlay.png", image, masks, title="sample S1")
    png = out.read_bytes()
    assert png[:8] == PNG_MAGIC
    assert render_overlay(image, masks, title="sample S1") == png
    width, _ = Image.open(out).size
    one = render_overlay(image, {"unet": masks["unet"]}, title="sample S1")
    assert Image.open(io.BytesIO(one)).size[0] < width  # a panel per model
    assert red_pixels(one) > 100  # the mask is drawn
    empty = render_overlay(image, {"ramanseg": masks["ramanseg"]}, title="sample S1")
    assert red_pixels(empty) == 0


def test_large_and_tall_images_and_many_models():
    image = np.random.default_rng(0).random((1500, 300)).astype(np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[100:900, 50:200] = 1
    png = render_overlay(image, {f"m{i}": mask for i in range(4)}, title="t")
    assert png[:8] == PNG_MAGIC and red_pixels(png) > 100
    full = render_overlay(image, {"m": np.ones(image.shape, np.uint8)}, title="t")
    assert full[:8] == PNG_MAGIC


def test_bad_arguments():
    image, masks = slide()
    with pytest.raises(ValueError, match="no predicted mask"):
        render_overlay(image, {}, title="t")
    with pytest.raises(ValueError, match="shape"):
        render_overlay(image, {"unet": masks["unet"][:10]}, title="t")
    with pytest.raises(ValueError, match="2-D"):
        render_overlay(image[None], masks, title="t")


@pytest.fixture()
def slide_files(tmp_path, config):
    """A preprocessed stack of the demo's channels and two models' prediction files."""
    image, masks = slide()
    names = [channel["name"] for channel in config["channels"]]
    stack = np.repeat(image[None], len(names), axis=0)
    stack_path = tmp_path / "preprocessed" / "S1" / "stack.ome.tif"
    stack_path.parent.mkdir(parents=True)
    write_ome_tiff(stack_path, stack, names)
    mask_paths = {}
    for model, mask in masks.items():
        mask_paths[model], _ = write_prediction(
            tmp_path / "predictions" / model, "S1", mask.astype(np.float32)
        )
    settings = json.dumps({"channels": config["channels"]})
    return stack_path, mask_paths, settings


def test_cli_overlay(slide_files, tmp_path):
    stack, masks, settings = slide_files
    out = tmp_path / "predict" / "S1" / "overlay.png"
    args = ["overlay", "--sample", "S1", "--stack", str(stack), "--out", str(out)]
    # A mask given as MODEL=PATH, and one whose model is its folder's name.
    masks_args = ["--masks", f"U-Net={masks['unet']}", str(masks["ramanseg"])]
    assert main([*args, *masks_args, "--settings", settings]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC and red_pixels(out.read_bytes()) > 100


def test_cli_bad_inputs_exit_2_and_write_nothing(slide_files, tmp_path, capsys):
    stack, masks, settings = slide_files
    out = tmp_path / "overlay.png"
    args = ["overlay", "--sample", "S1", "--stack", str(stack), "--out", str(out)]
    args += ["--settings", settings, "--masks"]
    small = tmp_path / "small" / "S1.mask.tif"
    small.parent.mkdir()
    tifffile.imwrite(small, np.zeros((8, 8), np.uint8))
    bad = {
        "the slide's stack": [f"unet={small}"],
        "given twice": [f"unet={masks['unet']}", f"unet={masks['ramanseg']}"],
        "not a mask": [str(masks["unet"]).replace(".mask.", ".probability.")],
        "does not exist": [f"unet={tmp_path / 'none.mask.tif'}"],
        "not a prediction file": [str(stack)],
    }
    for message, mask_args in bad.items():
        assert main([*args, *mask_args]) == 2, message
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error
    assert main([*args, str(masks["unet"]), "--channel", "nope"]) == 2
    assert "'nope' is not a channel" in capsys.readouterr().err
    assert not out.exists()
