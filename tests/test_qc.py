"""The QC figure, drawn from a sample's preprocessed files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from ramanseg.cli import main
from ramanseg.errors import InputError
from ramanseg.preprocess import preprocess_sample
from ramanseg.qc import draw_qc_figure, qc_channel, read_stack_channel
from tests.preprocess import CHANNELS, SHAPE, make_sample

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def small_config(config) -> dict:
    config["channels"] = [dict(channel) for channel in CHANNELS]
    return config


@pytest.fixture()
def preprocessed(tmp_path, small_config):
    """A preprocessed sample: (its folder, its H&E image)."""
    srs, he, annotations = make_sample(tmp_path)
    outdir = tmp_path / "preprocessed" / "S1"
    preprocess_sample("S1", srs, he, annotations, small_config, outdir)
    return outdir, he


def test_qc_channel_is_the_raman_band_nearest_2930():
    channels = [
        {"name": "a", "role": "raman", "wavenumber": 2850.0},
        {"name": "b", "role": "raman", "wavenumber": 2940.0},
        {"name": "c", "role": "tpef"},
    ]
    assert qc_channel({"channels": channels}) == 1
    no_wavenumbers = [{"name": "t", "role": "tpef"}, {"name": "r", "role": "raman"}]
    assert qc_channel({"channels": no_wavenumbers}) == 1
    assert qc_channel({"channels": [{"name": "t", "role": "tpef"}]}) == 0


def test_draw_qc_figure_reads_the_preprocessed_files(preprocessed, small_config, tmp_path):
    outdir, he = preprocessed
    out = tmp_path / "figures" / "qc.png"
    assert draw_qc_figure("S1", outdir, he, small_config, out) == out
    assert out.read_bytes()[:8] == PNG_MAGIC
    with Image.open(out) as image:
        assert image.size == (1300, 460)
    again = tmp_path / "figures" / "again.png"
    draw_qc_figure("S1", outdir, he, small_config, again)
    assert again.read_bytes() == out.read_bytes()
    # Without an H&E image the middle panel shows the SRS foreground instead.
    without_he = tmp_path / "figures" / "no_he.png"
    draw_qc_figure("S1", outdir, None, small_config, without_he)
    assert without_he.read_bytes()[:8] == PNG_MAGIC
    assert without_he.read_bytes() != out.read_bytes()


def test_read_stack_channel_reads_one_page(preprocessed):
    outdir, _ = preprocessed
    stack = tifffile.imread(outdir / "stack.ome.tif")
    channel = read_stack_channel(outdir / "stack.ome.tif", "S1", 1, len(CHANNELS))
    assert channel.dtype == np.float32
    np.testing.assert_array_equal(channel, stack[1])


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("missing_stack", "preprocessed stack does not exist"),
        ("missing_foreground", "tissue foreground file does not exist"),
        ("damaged_foreground", "tissue foreground file cannot be read as TIFF"),
        ("fewer_channels", r"shape \(3, 32, 40\), but the configuration lists 4 channels"),
        ("damaged_stack", "preprocessed stack cannot be read"),
        ("unknown_class", "class map must hold labels 0 to 5"),
        ("smaller_classes", r"class map has shape \(16, 40\), but the stack is 32 x 40"),
    ],
)
def test_bad_preprocessed_files_are_clear_errors(
    preprocessed, small_config, tmp_path, damage, match
):
    outdir, he = preprocessed
    if damage == "missing_stack":
        bad = outdir / "stack.ome.tif"
        bad.unlink()
    elif damage == "missing_foreground":
        bad = outdir / "foreground.tif"
        bad.unlink()
    elif damage == "damaged_foreground":
        bad = outdir / "foreground.tif"
        bad.write_bytes(b"not a TIFF file")
    elif damage == "fewer_channels":
        bad = outdir / "stack.ome.tif"
        tifffile.imwrite(bad, np.zeros((3, *SHAPE), np.float32), ome=True)
    elif damage == "damaged_stack":
        bad = outdir / "stack.ome.tif"
        bad.write_bytes(b"not a TIFF file")
    elif damage == "unknown_class":
        bad = outdir / "classes.tif"
        tifffile.imwrite(bad, np.full(SHAPE, 9, np.uint8))
    else:
        bad = outdir / "classes.tif"
        tifffile.imwrite(bad, np.zeros((16, SHAPE[1]), np.uint8))
    out = tmp_path / "figures" / "qc.png"
    with pytest.raises(InputError, match=match) as caught:
        draw_qc_figure("S1", outdir, he, small_config, out)
    assert caught.value.sample == "S1" and caught.value.path == bad
    assert caught.value.fix
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_an_h_and_e_of_another_size_is_a_clear_error(preprocessed, small_config, tmp_path):
    outdir, _ = preprocessed
    he = tmp_path / "other_he.tif"
    tifffile.imwrite(he, np.zeros((SHAPE[0] + 1, SHAPE[1], 3), np.uint8), photometric="rgb")
    out = tmp_path / "figures" / "qc.png"
    with pytest.raises(InputError, match="registered to the SRS pixel grid") as caught:
        draw_qc_figure("S1", outdir, he, small_config, out)
    assert caught.value.path == he
    assert not out.exists()


def test_cli_qc_figure(preprocessed, small_config, tmp_path, capsys):
    outdir, he = preprocessed
    settings = json.dumps(
        {"channels": small_config["channels"], "annotations": small_config["annotations"]}
    )
    out = tmp_path / "figures" / "qc.png"
    args = ["qc-figure", "--sample", "S1", "--preprocessed", str(outdir), "--he", str(he)]
    assert main([*args, "--out", str(out), "--settings", settings]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC
    missing = ["qc-figure", "--sample", "S1", "--preprocessed", str(tmp_path / "none")]
    assert main([*missing, "--out", str(tmp_path / "x.png"), "--settings", settings]) == 2
    error = capsys.readouterr().err
    assert "sample 'S1'" in error and "stack.ome.tif" in error
    assert not (tmp_path / "x.png").exists()
