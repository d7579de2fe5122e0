"""The QC figure, drawn from a sample's preprocessed files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from ramanseg.cli import main
from ramanseg.config import display_channel_index
from ramanseg.errors import InputError
from ramanseg.preprocess import preprocess_sample
from ramanseg.preprocessed import PreprocessedFiles, read_stack_channel
from ramanseg.qc import draw_qc_figure
from tests.preprocess import CHANNELS, SHAPE, make_sample, typed_settings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def small_config(config) -> dict:
    config["channels"] = [dict(channel) for channel in CHANNELS]
    return config


def qc_settings(config: dict) -> dict:
    """The settings :func:`draw_qc_figure` takes, as the ``qc-figure`` command builds them."""
    typed = typed_settings(config)
    return {"channels": typed["channels"], "annotations": typed["annotations"]}


@pytest.fixture()
def preprocessed(tmp_path, small_config):
    """A preprocessed sample: (its folder, its H&E image)."""
    srs, he, annotations = make_sample(tmp_path)
    outdir = tmp_path / "preprocessed" / "S1"
    preprocess_sample("S1", srs, he, annotations, outdir, **typed_settings(small_config))
    return PreprocessedFiles.in_folder(outdir), he


def test_the_display_channel_is_the_raman_band_nearest_2930():
    channels = [
        {"name": "a", "role": "raman", "wavenumber": 2850.0},
        {"name": "b", "role": "raman", "wavenumber": 2940.0},
        {"name": "c", "role": "tpef"},
    ]
    assert display_channel_index({"channels": channels}) == 1
    no_wavenumbers = [{"name": "t", "role": "tpef"}, {"name": "r", "role": "raman"}]
    assert display_channel_index({"channels": no_wavenumbers}) == 1
    assert display_channel_index({"channels": [{"name": "t", "role": "tpef"}]}) == 0


def test_draw_qc_figure_reads_the_preprocessed_files(preprocessed, small_config, tmp_path):
    files, he = preprocessed
    out = tmp_path / "figures" / "qc.png"
    assert draw_qc_figure("S1", files, he, out, **qc_settings(small_config)) == out
    assert out.read_bytes()[:8] == PNG_MAGIC
    with Image.open(out) as image:
        assert image.size == (1300, 460)
    again = tmp_path / "figures" / "again.png"
    draw_qc_figure("S1", files, he, again, **qc_settings(small_config))
    assert again.read_bytes() == out.read_bytes()
    # Without an H&E image the middle panel shows the SRS foreground instead.
    without_he = tmp_path / "figures" / "no_he.png"
    draw_qc_figure("S1", files, None, without_he, **qc_settings(small_config))
    assert without_he.read_bytes()[:8] == PNG_MAGIC
    assert without_he.read_bytes() != out.read_bytes()


def test_read_stack_channel_reads_one_page(preprocessed):
    files, _ = preprocessed
    stack = tifffile.imread(files.stack)
    channel = read_stack_channel(files.stack, "S1", 1, len(CHANNELS))
    assert channel.dtype == np.float32
    np.testing.assert_array_equal(channel, stack[1])


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("missing_stack", "preprocessed stack does not exist"),
        ("missing_foreground", "tissue foreground file does not exist"),
        ("damaged_foreground", "tissue foreground file cannot be read as TIFF"),
        ("fewer_channels", "stack has 3 channels, but the configuration lists 4"),
        ("damaged_stack", "preprocessed stack cannot be read"),
        ("unknown_class", "class map must hold labels 0 to 5"),
        ("smaller_classes", r"class map has shape \(16, 40\); expected 32 x 40, as the stack"),
    ],
)
def test_bad_preprocessed_files_are_clear_errors(
    preprocessed, small_config, tmp_path, damage, match
):
    files, he = preprocessed
    outdir = files.stack.parent
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
        draw_qc_figure("S1", files, he, out, **qc_settings(small_config))
    assert caught.value.sample == "S1" and caught.value.path == bad
    assert caught.value.fix
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_an_h_and_e_of_another_size_is_a_clear_error(preprocessed, small_config, tmp_path):
    files, _ = preprocessed
    he = tmp_path / "other_he.tif"
    tifffile.imwrite(he, np.zeros((SHAPE[0] + 1, SHAPE[1], 3), np.uint8), photometric="rgb")
    out = tmp_path / "figures" / "qc.png"
    with pytest.raises(InputError, match="registered to the SRS pixel grid") as caught:
        draw_qc_figure("S1", files, he, out, **qc_settings(small_config))
    assert caught.value.path == he
    assert not out.exists()


def test_cli_qc_figure(preprocessed, small_config, tmp_path, capsys):
    files, he = preprocessed
    settings = json.dumps(
        {"channels": small_config["channels"], "annotations": small_config["annotations"]}
    )
    out = tmp_path / "figures" / "qc.png"
    inputs = ["--stack", str(files.stack), "--classes", str(files.classes)]
    inputs += ["--foreground", str(files.foreground)]
    args = ["qc-figure", "--sample", "S1", *inputs, "--he", str(he)]
    assert main([*args, "--out", str(out), "--settings", settings]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC
    # Without --he (a sample whose sheet row has no H&E): the figure is drawn too.
    no_he = tmp_path / "figures" / "no_he.png"
    assert main(["qc-figure", "--sample", "S1", *inputs, "--out", str(no_he), "--settings",
                 settings]) == 0  # fmt: skip
    missing = ["qc-figure", "--sample", "S1", "--stack", str(tmp_path / "none" / "stack.ome.tif")]
    missing += ["--classes", str(files.classes), "--foreground", str(files.foreground)]
    assert main([*missing, "--out", str(tmp_path / "x.png"), "--settings", settings]) == 2
    error = capsys.readouterr().err
    assert "sample 'S1'" in error and "stack.ome.tif" in error
    assert not (tmp_path / "x.png").exists()
