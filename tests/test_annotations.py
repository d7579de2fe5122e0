"""QuPath GeoJSON as QuPath writes it: reading, rasterising, and bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ramanseg.annotations import (
    check_annotation_file,
    rasterize_annotations,
    read_qupath_geojson,
)
from ramanseg.errors import InputError
from ramanseg.settings import AnnotationSettings

# Class-map values in the demo configuration: Tumor 1, Necrosis 2, Epithelium 3,
# Stroma 4, Other 5; Tumor and Necrosis are the foreground.
TUMOR, NECROSIS, EPITHELIUM, STROMA = 1, 2, 3, 4


def square(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def feature(geometry: dict, classification: object = "Tumor", **extra) -> dict:
    """A feature as QuPath 0.4+ exports it; ``classification=None`` leaves it out."""
    properties: dict = {"objectType": "annotation"}
    if isinstance(classification, str):
        properties["classification"] = {"name": classification, "color": [200, 0, 0]}
    elif classification is not None:
        properties["classification"] = classification
    properties.update(extra)
    return {
        "type": "Feature",
        "id": "0b6c7a43-6a9e-4c64-8ad4-4f1f0d1c2f1a",
        "geometry": geometry,
        "properties": properties,
    }


def polygon(*rings) -> dict:
    return {"type": "Polygon", "coordinates": list(rings)}


def write(tmp_path, document, name="annotations.geojson"):
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document, indent=2))
    return path


def collection(*features) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


def rasterize(tmp_path, document, config, shape=(32, 32)):
    path = write(tmp_path, document)
    parsed = read_qupath_geojson(path, "S1")
    class_map, mask = rasterize_annotations(
        parsed, shape, AnnotationSettings.from_config(config), "S1", path
    )
    return parsed, class_map, mask


def test_square_with_hole_covers_exactly_84_pixels(tmp_path, config):
    # Pixel centres (c + 0.5, r + 0.5): the 10 x 10 square holds 100 of them, the 4 x 4
    # hole 16, so 84 remain.
    document = collection(feature(polygon(square(2, 3, 12, 13), square(5, 6, 9, 10))))
    _, class_map, mask = rasterize(tmp_path, document, config)
    assert (class_map == TUMOR).sum() == 84
    assert (class_map != 0).sum() == 84
    assert mask.sum() == 84 and mask.dtype == np.uint8 and class_map.dtype == np.uint8
    assert class_map[3, 2] == TUMOR and class_map[12, 11] == TUMOR  # corners inside
    assert class_map[6, 5] == 0 and class_map[9, 8] == 0  # hole
    assert class_map[13, 2] == 0 and class_map[3, 12] == 0  # just outside


def test_multipolygon_of_two_squares_with_a_hole(tmp_path, config):
    geometry = {
        "type": "MultiPolygon",
        "coordinates": [
            [square(0, 0, 3, 3)],  # 9 pixels
            [square(10, 10, 16, 16), square(12, 12, 14, 14)],  # 36 - 4 = 32 pixels
        ],
    }
    _, class_map, mask = rasterize(tmp_path, collection(feature(geometry, "Necrosis")), config)
    assert (class_map == NECROSIS).sum() == 41
    assert mask.sum() == 41


def test_pixel_centre_rule(tmp_path, config):
    # (0.4..2.6)^2 contains the centres 0.5, 1.5, 2.5 on each axis: 9 pixels;
    # (0.6..2.4)^2 only the centre 1.5: 1 pixel.
    document = collection(
        feature(polygon(square(0.4, 0.4, 2.6, 2.6)), "Stroma"),
        feature(polygon(square(10.6, 10.6, 12.4, 12.4)), "Stroma"),
    )
    _, class_map, mask = rasterize(tmp_path, document, config)
    assert (class_map[:5, :5] == STROMA).sum() == 9
    assert (class_map[8:, 8:] == STROMA).sum() == 1 and class_map[11, 11] == STROMA
    assert mask.sum() == 0  # Stroma is background


def test_bare_list_as_qupath_02_writes_it(tmp_path, config):
    document = [
        {
            "type": "Feature",
            "id": "PathAnnotationObject",
            "geometry": polygon(square(0, 0, 4, 4)),
            "properties": {
                "classification": {"name": "Tumor", "colorRGB": -3670016},
                "isLocked": False,
                "measurements": [],
            },
        },
        {
            "type": "Feature",
            "id": "PathDetectionObject",  # a detection: not an annotation
            "geometry": polygon(square(10, 10, 14, 14)),
            "properties": {"classification": {"name": "Tumor", "colorRGB": -3670016}},
        },
    ]
    parsed, class_map, _ = rasterize(tmp_path, document, config)
    assert (class_map == TUMOR).sum() == 16
    assert parsed.skipped_non_annotation == 1


def test_single_feature_and_string_classification(tmp_path, config):
    single = feature(polygon(square(0, 0, 2, 3)), None)
    single["properties"]["classification"] = "Epithelium"  # older exports: a plain string
    _, class_map, _ = rasterize(tmp_path, single, config)
    assert (class_map == EPITHELIUM).sum() == 6


def test_unclassified_points_lines_and_detections_are_skipped_and_counted(tmp_path, config):
    document = collection(
        feature(polygon(square(0, 0, 4, 4)), None),  # no classification
        feature({"type": "Point", "coordinates": [5, 5]}),
        feature({"type": "LineString", "coordinates": [[0, 0], [5, 5]]}),
        feature(None),  # QuPath writes "geometry": null for some objects
        feature(polygon(square(0, 0, 4, 4)), "Tumor", objectType="detection"),
        feature(polygon(square(20, 20, 22, 22)), "Tumor"),
    )
    config["annotations"]["unclassified"] = "ignore"
    parsed, class_map, _ = rasterize(tmp_path, document, config)
    assert parsed.skipped_unclassified == 1
    assert parsed.skipped_non_polygon == 3
    assert parsed.skipped_non_annotation == 1
    assert parsed.skipped == 5
    assert len(parsed.annotations) == 1 and parsed.annotations[0].feature_index == 5
    assert (class_map == TUMOR).sum() == 4


def test_geometry_collection_contributes_its_polygons(tmp_path, config):
    geometry = {
        "type": "GeometryCollection",
        "geometries": [
            polygon(square(0, 0, 2, 2)),
            {"type": "LineString", "coordinates": [[0, 0], [9, 9]]},
            {"type": "MultiPolygon", "coordinates": [[square(5, 5, 8, 8)]]},
        ],
    }
    _, class_map, _ = rasterize(tmp_path, collection(feature(geometry)), config)
    assert (class_map == TUMOR).sum() == 4 + 9


def test_later_features_win_where_they_overlap(tmp_path, config):
    stroma = feature(polygon(square(0, 0, 10, 10)), "Stroma")
    tumour = feature(polygon(square(2, 2, 5, 5)), "Tumor")
    _, class_map, mask = rasterize(tmp_path, collection(stroma, tumour), config)
    assert (class_map == TUMOR).sum() == 9 and (class_map == STROMA).sum() == 91
    assert mask.sum() == 9
    _, class_map, mask = rasterize(tmp_path, collection(tumour, stroma), config)
    assert (class_map == STROMA).sum() == 100 and mask.sum() == 0


def test_self_intersecting_polygon_is_repaired(tmp_path, config):
    # A bow tie (0,0)-(10,10)-(10,0)-(0,10): two triangles meeting at (5, 5).
    bowtie = polygon([[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]])
    parsed, class_map, _ = rasterize(tmp_path, collection(feature(bowtie)), config)
    assert parsed.repaired_invalid == 1
    assert parsed.annotations[0].geometry.is_valid
    assert parsed.annotations[0].geometry.area == pytest.approx(50.0)
    # The triangles are |y - 5| < |x - 5|. Pixel centres on the two diagonals lie exactly
    # on an edge (GDAL decides those by its half-open rule); all others must match.
    y, x = np.mgrid[0:10, 0:10] + 0.5
    off_edges = np.abs(y - 5) != np.abs(x - 5)
    inside = np.abs(y - 5) < np.abs(x - 5)
    np.testing.assert_array_equal((class_map[:10, :10] == TUMOR)[off_edges], inside[off_edges])
    assert off_edges.sum() == 80 and inside.sum() == 40


def test_ignored_class_is_left_out(tmp_path, config):
    config["annotations"]["ignore"] = ["Region*"]
    document = collection(
        feature(polygon(square(0, 0, 30, 30)), "Region*"),
        feature(polygon(square(0, 0, 2, 2)), "Tumor"),
    )
    _, class_map, _ = rasterize(tmp_path, document, config)
    assert (class_map != 0).sum() == 4


def test_unknown_class_names_the_class_and_the_known_ones(tmp_path, config):
    path = write(tmp_path, collection(feature(polygon(square(0, 0, 4, 4)), "Lymphocyte")))
    parsed = read_qupath_geojson(path, "S5")
    with pytest.raises(InputError) as caught:
        rasterize_annotations(parsed, (32, 32), AnnotationSettings.from_config(config), "S5", path)
    message = str(caught.value)
    assert "unknown class 'Lymphocyte'" in message
    assert "'Tumor', 'Necrosis', 'Epithelium', 'Stroma', 'Other'" in message
    assert "'S5'" in message and str(path) in message
    assert "annotations.classes" in caught.value.fix and "annotations.ignore" in caught.value.fix


def test_invalid_json_reports_the_position(tmp_path):
    text = '{\n  "type": "FeatureCollection",\n  "features": [\n    {"type": "Feature",,}\n'
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        read_qupath_geojson(path, "S2")
    message = str(caught.value)
    assert "not valid JSON" in message and "line 4, column 24" in message
    assert "'S2'" in message and str(path) in message


def test_wrong_top_level_object(tmp_path):
    path = write(tmp_path, polygon(square(0, 0, 1, 1)))
    with pytest.raises(InputError, match="top level is an object of type 'Polygon'"):
        read_qupath_geojson(path, "S2")


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="annotation file does not exist"):
        read_qupath_geojson(tmp_path / "missing.geojson", "S2")


def test_polygon_partly_outside_is_clipped(tmp_path, config):
    # 4 x 4 square at (30, 30)..(34, 34) on a 32 x 32 image: 2 x 2 pixels remain.
    _, class_map, _ = rasterize(
        tmp_path, collection(feature(polygon(square(30, 30, 34, 34)))), config
    )
    assert (class_map == TUMOR).sum() == 4


def test_polygon_entirely_outside_is_an_error(tmp_path, config):
    path = write(tmp_path, collection(feature(polygon(square(40, 0, 50, 10)))))
    parsed = read_qupath_geojson(path, "S6")
    with pytest.raises(InputError, match="entirely outside the image") as caught:
        rasterize_annotations(parsed, (32, 32), AnnotationSettings.from_config(config), "S6", path)
    assert "'S6'" in str(caught.value) and "pixel coordinates" in caught.value.fix


def test_coordinates_far_outside_suggest_another_coordinate_system(tmp_path, config):
    # Drawn in microns (or on the full slide): ten times the image size.
    path = write(tmp_path, collection(feature(polygon(square(10, 10, 320, 320)))))
    parsed = read_qupath_geojson(path, "S6")
    with pytest.raises(InputError, match=r"far outside the image.*coordinate system"):
        rasterize_annotations(parsed, (32, 32), AnnotationSettings.from_config(config), "S6", path)


def test_no_annotations_give_empty_maps(tmp_path, config):
    _, class_map, mask = rasterize(tmp_path, collection(), config, shape=(5, 7))
    assert class_map.shape == (5, 7) and not class_map.any() and not mask.any()


# Unclassified features (issue 13, defect 6): never dropped silently.

UNCLASSIFIED = {
    "no classification": lambda f: f["properties"].pop("classification"),
    "classification null": lambda f: f["properties"].update(classification=None),
    "classification without name": lambda f: f["properties"].update(
        classification={"color": [1, 2, 3]}
    ),
    "properties null": lambda f: f.update(properties=None),
}


@pytest.mark.parametrize("variant", list(UNCLASSIFIED))
def test_unclassified_polygon_is_an_error_by_default(tmp_path, config, variant):
    unclassified = feature(polygon(square(0, 0, 4, 4)), "Tumor")
    UNCLASSIFIED[variant](unclassified)
    document = collection(feature(polygon(square(8, 8, 10, 10))), unclassified)
    path = write(tmp_path, document)
    parsed = read_qupath_geojson(path, "S3")
    with pytest.raises(InputError, match=r"1 polygon feature.* have no class") as caught:
        rasterize_annotations(parsed, (32, 32), AnnotationSettings.from_config(config), "S3", path)
    message = str(caught.value)
    assert "feature 1 (id 0b6c7a43" in message
    assert "'S3'" in message and str(path) in message
    assert "annotations.unclassified: ignore" in caught.value.fix
    assert [
        str(p) for p in check_annotation_file(path, AnnotationSettings.from_config(config), "S3")
    ] == [message]


def test_unclassified_polygon_is_skipped_with_a_warning_when_ignored(tmp_path, config, caplog):
    document = collection(feature(polygon(square(0, 0, 4, 4)), None))
    config["annotations"]["unclassified"] = "ignore"
    with caplog.at_level("WARNING", logger="ramanseg.annotations"):
        parsed, class_map, _ = rasterize(tmp_path, document, config)
    assert parsed.counts()["skipped_unclassified"] == 1 and not class_map.any()
    assert "1 polygon feature(s) without a class skipped" in caplog.text


@pytest.mark.parametrize(
    ("properties", "match"),
    [
        ({"classification": 5}, r"feature 0 \(id .*\): invalid classification.*number \(5\)"),
        ({"classification": {"name": 5}}, r"invalid classification: `classification.name`"),
        ("Tumor", r"feature 0 \(id .*\): `properties` is a JSON string \('Tumor'\)"),
    ],
)
def test_invalid_classification_types_are_always_errors(tmp_path, config, properties, match):
    bad = feature(polygon(square(0, 0, 4, 4)))
    bad["properties"] = properties
    path = write(tmp_path, collection(bad))
    config["annotations"]["unclassified"] = "ignore"
    with pytest.raises(InputError, match=match) as caught:
        read_qupath_geojson(path, "S4")
    assert "'S4'" in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize("value", ["NaN", "Infinity"])
def test_nonfinite_coordinates_are_an_error(tmp_path, value):
    text = json.dumps(collection(feature(polygon(square(0, 0, 4, 4)))))
    path = write(tmp_path, text.replace("[4, 0]", f"[{value}, 0]", 1))
    with pytest.raises(InputError, match=r"feature 0 \(id .*\) has NaN or infinite") as caught:
        read_qupath_geojson(path, "S4")
    assert "'S4'" in str(caught.value) and str(path) in str(caught.value)


def test_byte_order_mark_is_accepted(tmp_path, config):
    path = tmp_path / "bom.geojson"
    document = [feature(polygon(square(0, 0, 2, 2)), "Tumor")]  # a bare list, too
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(document).encode())
    parsed = read_qupath_geojson(path, "S1")
    assert len(parsed.annotations) == 1 and parsed.annotations[0].class_name == "Tumor"
    assert check_annotation_file(path, AnnotationSettings.from_config(config), "S1") == []


def test_check_annotation_file_reports_every_unknown_class(tmp_path, config):
    document = collection(
        feature(polygon(square(0, 0, 2, 2)), "Lymphocyte"),
        feature(polygon(square(4, 4, 6, 6)), "Fat"),
        feature(polygon(square(8, 8, 9, 9)), "Lymphocyte"),
    )
    problems = check_annotation_file(
        write(tmp_path, document), AnnotationSettings.from_config(config), "S1"
    )
    assert [p.problem.split(": unknown class ")[1].split(";")[0] for p in problems] == [
        "'Lymphocyte'",
        "'Fat'",
    ]
