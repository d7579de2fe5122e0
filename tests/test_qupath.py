"""Predicted masks as QuPath GeoJSON: round trip through our own reader, specks, validity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
import tifffile
from shapely.geometry import shape

from ramanseg.annotations import rasterize_annotations, read_qupath_geojson
from ramanseg.cli import main
from ramanseg.qupath import mask_to_features, remove_specks, write_qupath_geojson
from ramanseg.settings import AnnotationSettings


def tumour_mask() -> np.ndarray:
    """A mask with a region with holes, a region on the border, a diagonal shape."""
    mask = np.zeros((64, 80), dtype=np.uint8)
    mask[5:30, 5:35] = 1
    mask[10:20, 10:20] = 0  # a hole
    mask[22:25, 25:29] = 0  # a second hole
    mask[14:16, 14:16] = 1  # an island in the hole: a region of its own
    mask[40:64, 60:80] = 1  # touches the bottom and right borders
    mask[0:3, 50:80] = 1  # touches the top and right borders
    rows, cols = np.mgrid[0:64, 0:80]
    mask[(np.abs(rows - (cols - 2)) < 3) & (rows > 35) & (cols < 55)] = 1  # a diagonal band
    for i in range(8):  # a one-pixel diagonal line: pixels touching at corners only
        mask[50 + i, 5 + i] = 1
    return mask


def read_back(path, shape_yx) -> np.ndarray:
    """Our own reader and rasteriser, as the workflow reads an annotation file."""
    settings = AnnotationSettings(labels={"Tumor": 1}, ignore=frozenset(), unclassified="error")
    annotations = read_qupath_geojson(path, "S1")
    assert annotations.repaired_invalid == 0
    _, mask = rasterize_annotations(annotations, shape_yx, settings, "S1", path)
    return mask


def test_round_trip_gives_the_mask(tmp_path):
    mask = tumour_mask()
    path = tmp_path / "unet.geojson"
    count = write_qupath_geojson(path, mask, min_area_px=0, object_id_seed="S1/unet")
    assert count == 6  # frame with holes, island, two border regions, band, line
    np.testing.assert_array_equal(read_back(path, mask.shape), mask)
    kinds = {f["geometry"]["type"] for f in json.loads(path.read_text())["features"]}
    assert kinds == {"Polygon", "MultiPolygon"}


def test_features_as_qupath_exports_them(tmp_path):
    path = tmp_path / "out.geojson"
    write_qupath_geojson(path, tumour_mask(), min_area_px=4, color=(10, 20, 30))
    document = json.loads(path.read_text())
    assert document["type"] == "FeatureCollection"
    ids = set()
    for feature in document["features"]:
        assert feature["type"] == "Feature"
        assert feature["properties"] == {
            "objectType": "annotation",
            "classification": {"name": "Tumor", "color": [10, 20, 30]},
        }
        ids.add(feature["id"])
        geometry = shape(feature["geometry"])
        assert geometry.is_valid and geometry.area > 0
        for polygon in getattr(geometry, "geoms", [geometry]):  # GeoJSON's right-hand rule
            assert polygon.exterior.is_ccw
            assert all(not ring.is_ccw for ring in polygon.interiors)
    assert len(ids) == len(document["features"])
    shapes = [shape(feature["geometry"]) for feature in document["features"]]
    (frame,) = [s for s in shapes if s.geom_type == "Polygon" and len(s.interiors)]
    assert len(frame.interiors) == 2 and frame.area == 25 * 30 - 100 - 12


def test_ids_are_deterministic_and_unique_per_seed():
    mask = tumour_mask()
    ids = [f["id"] for f in mask_to_features(mask, min_area_px=0, object_id_seed="S1/unet")]
    again = [f["id"] for f in mask_to_features(mask, min_area_px=0, object_id_seed="S1/unet")]
    other = [f["id"] for f in mask_to_features(mask, min_area_px=0, object_id_seed="S1/nnunet")]
    assert ids == again and not set(ids) & set(other)


def test_specks_are_dropped_and_small_holes_filled(tmp_path):
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[5:25, 5:25] = 1
    mask[10, 10] = 0  # a one-pixel hole: filled
    mask[15:20, 15:20] = 0  # a 25-pixel hole: kept
    mask[30:32, 30:32] = 1  # a 4-pixel speck: dropped
    mask[35, 35] = mask[36, 36] = 1  # 2 pixels touching at a corner: one speck
    mask[0:2, 38:40] = 1  # a 4-pixel speck in a corner
    cleaned = remove_specks(mask, min_area_px=5)
    expected = np.zeros_like(mask)
    expected[5:25, 5:25] = 1
    expected[15:20, 15:20] = 0
    np.testing.assert_array_equal(cleaned, expected.astype(bool))
    path = tmp_path / "out.geojson"
    assert write_qupath_geojson(path, mask, min_area_px=5) == 1
    np.testing.assert_array_equal(read_back(path, mask.shape), expected)


def test_a_predicted_mask_round_trips_within_one_percent(tmp_path):
    """A mask with scattered specks, as a model predicts: the file gives the mask without
    its specks exactly, and >= 99 % of the predicted pixels."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:128, 0:128]
    blob = ((rows - 60) ** 2 / 40**2 + (cols - 70) ** 2 / 25**2) < 1
    noise = rng.random(blob.shape) < 0.005
    mask = (blob ^ noise).astype(np.uint8)
    path = tmp_path / "out.geojson"
    write_qupath_geojson(path, mask, min_area_px=10)
    read = read_back(path, mask.shape)
    np.testing.assert_array_equal(read, remove_specks(mask, 10))
    assert (read == mask).mean() >= 0.99
    for feature in json.loads(path.read_text())["features"]:
        assert shapely.is_valid(shape(feature["geometry"]))


def test_random_masks_round_trip_exactly_with_valid_geometry(tmp_path):
    """Random pixel patterns: holes touching regions at corners, regions touching the
    border, nested islands: always valid, always the cleaned mask back."""
    rng = np.random.default_rng(1)
    path = tmp_path / "random.geojson"
    for _ in range(60):
        mask = rng.random((rng.integers(1, 25), rng.integers(1, 25))) < rng.uniform(0.2, 0.7)
        min_area_px = int(rng.integers(0, 6))
        write_qupath_geojson(path, mask, min_area_px=min_area_px)
        for feature in json.loads(path.read_text())["features"]:
            assert shape(feature["geometry"]).is_valid
        expected = remove_specks(mask, min_area_px)
        np.testing.assert_array_equal(read_back(path, mask.shape), expected)


def test_empty_mask_gives_an_empty_collection(tmp_path):
    path = tmp_path / "empty.geojson"
    assert write_qupath_geojson(path, np.zeros((16, 16), np.uint8), min_area_px=4) == 0
    assert json.loads(path.read_text()) == {"type": "FeatureCollection", "features": []}
    assert read_qupath_geojson(path, "S1").annotations == []
    only_specks = np.zeros((16, 16), np.uint8)
    only_specks[3, 3] = 1
    assert mask_to_features(only_specks, min_area_px=2) == []


def test_full_mask_is_one_square():
    features = mask_to_features(np.ones((8, 6), np.uint8), min_area_px=0)
    assert features[0]["geometry"] == {
        "type": "Polygon",
        "coordinates": [[[0, 0], [6, 0], [6, 8], [0, 8], [0, 0]]],
    }


@pytest.mark.parametrize(
    "kwargs",
    [{"min_area_px": -1}, {"min_area_px": 0, "class_name": " "},
     {"min_area_px": 0, "color": (0, 0, 256)}, {"min_area_px": 0, "color": (1, 2)}],
)  # fmt: skip
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        mask_to_features(np.ones((4, 4)), **kwargs)
    with pytest.raises(ValueError, match="2-D"):
        mask_to_features(np.ones((2, 4, 4)), min_area_px=0)


def test_cli_writes_geojson(tmp_path):
    mask = tumour_mask()
    mask_path = tmp_path / "S1.mask.tif"
    tifffile.imwrite(mask_path, mask)
    out = tmp_path / "predict" / "S1" / "unet.geojson"
    argv = ["mask-to-geojson", "--mask", str(mask_path), "--sample", "S1", "--model", "unet"]
    assert main([*argv, "--out", str(out), "--min-area", "0"]) == 0
    np.testing.assert_array_equal(read_back(out, mask.shape), mask)
    features = json.loads(out.read_text())["features"]
    assert [f["id"] for f in features] == [
        f["id"] for f in mask_to_features(mask, min_area_px=0, object_id_seed="S1/unet")
    ]


def test_cli_bad_mask_exits_2_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "S1.mask.tif"
    tifffile.imwrite(bad, np.full((8, 8), 3, np.uint8))
    out = tmp_path / "out.geojson"
    argv = ["mask-to-geojson", "--mask", str(bad), "--sample", "S1", "--out", str(out)]
    assert main([*argv, "--min-area", "0"]) == 2
    error = capsys.readouterr().err
    assert "sample 'S1'" in error and "0 and 1" in error and "Traceback" not in error
    assert not out.exists()
    missing = ["mask-to-geojson", "--mask", str(tmp_path / "none.tif"), "--sample", "S1"]
    assert main([*missing, "--out", str(out), "--min-area", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [bad]


@pytest.mark.parametrize(
    "bad", [["--min-area", "-3"], ["--min-area", "2", "--class-name", " "],
            ["--min-area", "2", "--color", "0", "0", "300"]],
)  # fmt: skip
def test_cli_rejects_bad_options(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["mask-to-geojson", "--mask", "m.tif", "--sample", "S1", "--out", "o.geojson", *bad])
    assert exit_info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
