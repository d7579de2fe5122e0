"""Reading SRS stacks and H&E images as users bring them; writing OME-TIFF and masks."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tifffile

from ramanseg.errors import InputError
from ramanseg.io import he_header, read_he, read_srs, srs_header, write_mask, write_ome_tiff
from ramanseg.settings import Channel, ChannelLayout

NAMES = ["Raman 2850", "Raman 2930", "TPEF"]
#: Three channels, as ``ChannelLayout.from_config`` builds them from a configuration.
CHANNELS = ChannelLayout(
    (Channel("Raman 2850", "raman", 2850.0), Channel("Raman 2930", "raman", 2930.0),
     Channel("TPEF", "tpef"))
)  # fmt: skip


def _stack(dtype=np.uint16) -> np.ndarray:
    values = np.arange(3 * 8 * 9).reshape(3, 8, 9) * 7
    return values.astype(dtype)


def test_plain_multipage_tiff_any_dtype(tmp_path):
    for dtype in (np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64):
        path = tmp_path / f"srs_{np.dtype(dtype).name}.tif"
        stack = _stack(np.uint8) if dtype == np.uint8 else _stack(dtype)
        tifffile.imwrite(path, stack, photometric="minisblack")
        image = read_srs(path, CHANNELS, "S1", nonfinite="reject")
        assert image.data.dtype == np.float32
        assert image.data.shape == (3, 8, 9)
        np.testing.assert_array_equal(image.data, stack.astype(np.float32))
        assert image.source_dtype == np.dtype(dtype).name
        assert image.nonfinite_repaired == 0


def test_ome_tiff_with_singleton_axes(tmp_path):
    path = tmp_path / "srs.ome.tif"
    stack = _stack()
    tifffile.imwrite(path, stack[np.newaxis, :, np.newaxis], ome=True, metadata={"axes": "TCZYX"})
    image = read_srs(path, CHANNELS, "S1", nonfinite="reject")
    np.testing.assert_array_equal(image.data, stack.astype(np.float32))


def test_three_channel_stack_stored_as_samples_is_channels_first(tmp_path):
    # tifffile stores a (3, Y, X) uint16 array as planar samples (axes "SYX") and a
    # (Y, X, 3) one as contiguous samples ("YXS"): both are the same 3 channels.
    stack = _stack()
    tifffile.imwrite(tmp_path / "planar.tif", stack, photometric="rgb", planarconfig="separate")
    tifffile.imwrite(tmp_path / "contig.tif", np.moveaxis(stack, 0, -1), photometric="rgb")
    for name in ("planar.tif", "contig.tif"):
        image = read_srs(tmp_path / name, CHANNELS, "S1", nonfinite="reject")
        np.testing.assert_array_equal(image.data, stack.astype(np.float32))


def test_wrong_channel_count_names_file_and_both_counts(tmp_path):
    path = tmp_path / "srs.tif"
    tifffile.imwrite(path, np.zeros((5, 8, 9), np.uint16), photometric="minisblack")
    with pytest.raises(InputError) as caught:
        read_srs(path, CHANNELS, "S7", nonfinite="reject")
    message = str(caught.value)
    assert "'S7'" in message and str(path) in message
    assert "5 channels" in message and "lists 3 channels" in message
    assert caught.value.fix and "channels" in caught.value.fix


def test_two_dimensional_and_four_dimensional_images_are_rejected(tmp_path):
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((8, 9), np.uint16))
    with pytest.raises(InputError, match=r"2-D with shape \(8, 9\)"):
        read_srs(tmp_path / "flat.tif", CHANNELS, "S1", nonfinite="reject")
    tifffile.imwrite(
        tmp_path / "4d.tif", np.zeros((2, 3, 8, 9), np.uint16), photometric="minisblack"
    )
    with pytest.raises(InputError, match=r"shape \(2, 3, 8, 9\).*expected a 3-D stack"):
        read_srs(tmp_path / "4d.tif", CHANNELS, "S1", nonfinite="reject")


def test_single_channel_configuration_accepts_a_2d_image(tmp_path):
    one_channel = ChannelLayout(CHANNELS.channels[:1])
    tifffile.imwrite(tmp_path / "flat.tif", np.ones((8, 9), np.uint16))
    image = read_srs(tmp_path / "flat.tif", one_channel, "S1", nonfinite="reject")
    assert image.data.shape == (1, 8, 9)


def _stack_with_nonfinite(tmp_path):
    stack = _stack(np.float32)
    stack[0, 0, 0] = np.nan
    stack[0, 1, 1] = np.inf
    stack[2, 3, 3] = -np.inf
    path = tmp_path / "srs.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    return path, stack


def test_nonfinite_values_rejected_with_count(tmp_path):
    path, _ = _stack_with_nonfinite(tmp_path)
    with pytest.raises(InputError) as caught:
        read_srs(path, CHANNELS, "S3", nonfinite="reject")
    message = str(caught.value)
    assert "3 NaN or infinite values" in message
    assert "'Raman 2850': 2" in message and "'TPEF': 1" in message
    assert "'S3'" in message and str(path) in message
    assert "nonfinite: repair" in caught.value.fix


def test_nonfinite_values_repaired_with_channel_median(tmp_path):
    path, stack = _stack_with_nonfinite(tmp_path)
    image = read_srs(path, CHANNELS, "S3", nonfinite="repair")
    assert image.nonfinite_repaired == 3
    assert np.isfinite(image.data).all()
    median0 = np.median(stack[0][np.isfinite(stack[0])])
    median2 = np.median(stack[2][np.isfinite(stack[2])])
    assert image.data[0, 0, 0] == median0 and image.data[0, 1, 1] == median0
    assert image.data[2, 3, 3] == median2
    untouched = np.isfinite(stack)
    np.testing.assert_array_equal(image.data[untouched], stack[untouched])


def test_float64_beyond_float32_range_counts_as_nonfinite(tmp_path):
    stack = _stack(np.float64)
    stack[1, 2, 2] = 1e300
    tifffile.imwrite(tmp_path / "srs.tif", stack, photometric="minisblack")
    with pytest.raises(InputError, match="1 NaN or infinite"):
        read_srs(tmp_path / "srs.tif", CHANNELS, "S1", nonfinite="reject")


def test_channel_without_finite_values_cannot_be_repaired(tmp_path):
    stack = _stack(np.float32)
    stack[1] = np.nan
    tifffile.imwrite(tmp_path / "srs.tif", stack, photometric="minisblack")
    with pytest.raises(InputError, match="'Raman 2930' has no finite value"):
        read_srs(tmp_path / "srs.tif", CHANNELS, "S1", nonfinite="repair")


def test_missing_and_damaged_files(tmp_path):
    with pytest.raises(InputError, match="SRS file does not exist") as caught:
        read_srs(tmp_path / "nope.tif", CHANNELS, "S9", nonfinite="reject")
    assert "'S9'" in str(caught.value) and "sample sheet" in caught.value.fix
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(InputError, match="no readable TIFF image"):
        read_srs(tmp_path / "broken.tif", CHANNELS, "S9", nonfinite="reject")
    (tmp_path / "text.tif").write_text("not a tiff")
    with pytest.raises(InputError, match="cannot be read as TIFF"):
        read_srs(tmp_path / "text.tif", CHANNELS, "S9", nonfinite="reject")
    with pytest.raises(InputError, match="H&E file does not exist"):
        read_he(tmp_path / "nope.tif", "S9", (8, 9))


def test_he_rgb_rgba_and_uint16(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    np.testing.assert_array_equal(read_he(tmp_path / "rgb.tif", "S1", (8, 9)), rgb)

    rgba = np.concatenate([rgb, np.full((8, 9, 1), 77, np.uint8)], axis=2)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(read_he(tmp_path / "rgba.tif", "S1", (8, 9)), rgb)

    # uint16 -> round(v / 257): 65535 -> 255, 257 -> 1, 128 -> 0, 129 -> 1
    wide = np.zeros((8, 9, 3), np.uint16)
    wide[0, 0] = [65535, 257, 128]
    wide[0, 1] = [129, 0, 0]
    tifffile.imwrite(tmp_path / "wide.tif", wide, photometric="rgb")
    he = read_he(tmp_path / "wide.tif", "S1", (8, 9))
    assert he.dtype == np.uint8
    assert he[0, 0].tolist() == [255, 1, 0] and he[0, 1].tolist() == [1, 0, 0]


def test_he_png(tmp_path):
    import imageio.v3 as iio

    rgb = np.random.default_rng(1).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "he.png", rgb)
    np.testing.assert_array_equal(read_he(tmp_path / "he.png", "S1", (8, 9)), rgb)


def test_he_size_mismatch_names_both_shapes(tmp_path):
    tifffile.imwrite(tmp_path / "he.tif", np.zeros((10, 12, 3), np.uint8), photometric="rgb")
    with pytest.raises(InputError) as caught:
        read_he(tmp_path / "he.tif", "S4", (8, 9))
    message = str(caught.value)
    assert "10 x 12" in message and "8 x 9" in message and "'S4'" in message
    assert "register" in caught.value.fix


def test_he_grayscale_is_rejected(tmp_path):
    tifffile.imwrite(tmp_path / "gray.tif", np.zeros((8, 9), np.uint8))
    with pytest.raises(InputError, match=r"shape \(8, 9\); expected an RGB image"):
        read_he(tmp_path / "gray.tif", "S1", (8, 9))


def test_write_ome_tiff_names_roundtrip_and_deterministic(tmp_path):
    stack = np.random.default_rng(2).random((3, 8, 9)).astype(np.float32)
    path = tmp_path / "S1" / "stack.ome.tif"
    write_ome_tiff(path, stack, NAMES)
    first = path.read_bytes()
    write_ome_tiff(path, stack, NAMES)
    assert path.read_bytes() == first
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        assert tif.series[0].axes == "CYX"
        channels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]["Channel"]
    assert [channel["Name"] for channel in channels] == NAMES
    np.testing.assert_array_equal(read_srs(path, CHANNELS, "S1", nonfinite="reject").data, stack)
    assert sorted(p.name for p in path.parent.iterdir()) == ["stack.ome.tif"]


def test_write_ome_tiff_refuses_mismatched_names_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="2 channel names for an array with 3 channels"):
        write_ome_tiff(tmp_path / "out" / "stack.ome.tif", np.zeros((3, 4, 4)), NAMES[:2])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_write_mask(tmp_path):
    write_mask(tmp_path / "m.tif", np.eye(4, dtype=bool))
    mask = tifffile.imread(tmp_path / "m.tif")
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, np.eye(4, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"0\.\.255"):
        write_mask(tmp_path / "bad.tif", np.full((2, 2), 300))
    with pytest.raises(ValueError, match="2-D"):
        write_mask(tmp_path / "bad.tif", np.zeros((2, 2, 2), np.uint8))
    assert not (tmp_path / "bad.tif").exists()


# Channels last (issue 13, defect 5): with axes metadata it just works; without it, the
# contract (channels first) holds and a stack that looks channels last is an error.


def _channels_last(height=8, width=9) -> tuple[np.ndarray, np.ndarray]:
    stack = np.arange(3 * height * width, dtype=np.uint16).reshape(3, height, width)
    return stack, np.ascontiguousarray(np.moveaxis(stack, 0, -1))


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(
            lambda path, data: tifffile.imwrite(
                path, data, ome=True, photometric="rgb", planarconfig="contig"
            ),
            id="ome-YXS",
        ),
        pytest.param(
            lambda path, data: tifffile.imwrite(
                path, data, photometric="minisblack", metadata={"axes": "YXC"}
            ),
            id="tifffile-YXC",
        ),
        pytest.param(
            lambda path, data: tifffile.imwrite(
                path, data, photometric="minisblack", planarconfig="contig", metadata=None
            ),
            id="interleaved-samples",
        ),
    ],
)
def test_channels_last_with_axes_metadata_is_transposed(tmp_path, write):
    stack, last = _channels_last()
    write(tmp_path / "srs.tif", last)
    np.testing.assert_array_equal(
        read_srs(tmp_path / "srs.tif", CHANNELS, "S1", nonfinite="reject").data, stack
    )
    assert srs_header(tmp_path / "srs.tif", CHANNELS, "S1") == (3, 8, 9)


def test_channels_last_without_metadata_is_an_error_with_a_hint(tmp_path):
    _, last = _channels_last()
    tifffile.imwrite(tmp_path / "srs.tif", last, photometric="minisblack", metadata=None)
    for check in (functools.partial(read_srs, nonfinite="reject"), srs_header):
        with pytest.raises(InputError, match="looks channels last") as caught:
            check(tmp_path / "srs.tif", CHANNELS, "S5")
        assert "'S5'" in str(caught.value) and "srs.tif" in str(caught.value)
        assert "transpose the stack to channels first" in caught.value.fix


def test_ambiguous_shape_without_metadata_reads_channels_first_with_a_warning(tmp_path, caplog):
    # (C, Y, X) with X == C, or (Y, X, C) with Y == C (defect 5: read silently before):
    # nothing in the file tells them apart, so the contract decides, loudly.
    stack = np.arange(3 * 8 * 3, dtype=np.uint16).reshape(3, 8, 3)
    tifffile.imwrite(tmp_path / "srs.tif", stack, photometric="minisblack", metadata=None)
    with caplog.at_level("WARNING", logger="ramanseg.io"):
        image = read_srs(tmp_path / "srs.tif", CHANNELS, "S1", nonfinite="reject")
    np.testing.assert_array_equal(image.data, stack)
    assert "read channels first" in caplog.text and "'S1'" in caplog.text
    assert "axes 'YXC'" in caplog.text


def test_srs_header_matches_the_reader_without_reading_pixels(tmp_path):
    tifffile.imwrite(tmp_path / "srs.tif", _stack(), photometric="minisblack")
    assert srs_header(tmp_path / "srs.tif", CHANNELS, "S1") == (3, 8, 9)
    tifffile.imwrite(tmp_path / "five.tif", np.zeros((5, 8, 9), np.uint16))
    with pytest.raises(InputError, match="5 channels"):
        srs_header(tmp_path / "five.tif", CHANNELS, "S1")
    with pytest.raises(InputError, match="does not exist"):
        srs_header(tmp_path / "nope.tif", CHANNELS, "S1")


def test_he_header_checks_rgb_and_grid_without_reading_pixels(tmp_path):
    rgb = np.zeros((8, 9, 3), np.uint8)
    tifffile.imwrite(tmp_path / "he.tif", rgb, photometric="rgb")
    assert he_header(tmp_path / "he.tif", "S1", (8, 9)) == (8, 9)
    assert he_header(tmp_path / "he.tif", "S1", None) == (8, 9)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb")
    assert he_header(tmp_path / "planar.tif", "S1", (8, 9)) == (8, 9)
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "he.png", rgb)
    assert he_header(tmp_path / "he.png", "S1", (8, 9)) == (8, 9)
    with pytest.raises(InputError, match=r"is 8 x 9 pixels .* SRS stack is 8 x 10"):
        he_header(tmp_path / "he.tif", "S1", (8, 10))
    tifffile.imwrite(tmp_path / "gray.tif", np.zeros((8, 9), np.uint8))
    with pytest.raises(InputError, match=r"expected an RGB image"):
        he_header(tmp_path / "gray.tif", "S1", (8, 9))
