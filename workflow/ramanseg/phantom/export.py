"""The annotations as QuPath exports them: a class map traced into GeoJSON."""

from __future__ import annotations

import threading
import uuid
import warnings
from collections.abc import Sequence

import numpy as np
import rasterio.errors
import rasterio.features
import shapely
from shapely.geometry import MultiPolygon, Polygon, box, mapping, shape

from ramanseg.phantom.tissue import CLASS_COLORS

_WARNINGS_LOCK = threading.Lock()

#: Annotation export styles, chosen by ``sample_index % 4`` (see :mod:`ramanseg.phantom`).
EXPORT_STYLES = ("qupath-0.4", "qupath-0.4-regions", "qupath-0.2", "string-class")


def _feature_id(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _polygons(mask: np.ndarray, min_area: float) -> list[Polygon]:
    """The connected regions of ``mask`` as polygons in pixel-corner coordinates.

    ``rasterio.features.shapes`` traces pixel edges (x = column, y = row); simplifying by
    half a pixel turns the staircases into hand-drawn-like straight runs while keeping
    the pixel-centre rasterisation nearly unchanged.
    """
    polygons = []
    # Pixel coordinates are what we want; rasterio warns that they are not geographic.
    # catch_warnings swaps a process-wide filter list, so threads take turns here.
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        shapes = list(rasterio.features.shapes(mask.astype(np.uint8), mask=mask, connectivity=4))
    for geometry, _ in shapes:
        polygon = shape(geometry).simplify(0.5, preserve_topology=True)
        if polygon.is_empty or polygon.area < min_area:
            continue
        if not polygon.is_valid:
            polygon = shapely.make_valid(polygon)
        polygons.extend(_polygonal_parts(polygon))
    return polygons


def _polygonal_parts(geometry) -> list[Polygon]:
    if isinstance(geometry, Polygon):
        return [geometry] if not geometry.is_empty else []
    parts = []
    for part in getattr(geometry, "geoms", []):
        parts.extend(_polygonal_parts(part))
    return parts


def _merge(polygons: list[Polygon]) -> Polygon | MultiPolygon:
    """One geometry per class: a MultiPolygon of the regions, repaired if they touch."""
    if len(polygons) == 1:
        return polygons[0]
    merged = MultiPolygon(polygons)
    if not merged.is_valid:
        # Regions that meet at a corner can overlap by a sliver after simplification.
        merged = shapely.union_all(polygons)
    return merged


def _rounded(geometry: dict) -> dict:
    """GeoJSON geometry with plain float coordinates rounded to 1/1000 px."""

    def convert(node):
        if isinstance(node, (tuple, list)):
            if node and isinstance(node[0], (int, float)):
                return [round(float(v), 3) for v in node]
            return [convert(child) for child in node]
        return node

    return {"type": geometry["type"], "coordinates": convert(geometry["coordinates"])}


def _argb(color: tuple[int, int, int]) -> int:
    """QuPath 0.2's packed colour: a signed 32-bit ARGB integer."""
    value = (255 << 24) | (color[0] << 16) | (color[1] << 8) | color[2]
    return value - (1 << 32)


def annotation_geojson(
    class_map: np.ndarray,
    names: Sequence[str],
    style: str,
    rng: np.random.Generator,
) -> dict | list:
    """Trace a class map into a QuPath GeoJSON export.

    Args:
        class_map: ``(Y, X)`` class map, value ``k`` the ``k``-th of ``names``, 0 none.
        names: class names in class-map order.
        style: one of :data:`EXPORT_STYLES`.
        rng: random generator for the feature UUIDs.

    Returns:
        The GeoJSON object (a FeatureCollection dict or a bare list of Features).
    """
    if style not in EXPORT_STYLES:
        raise ValueError(f"unknown export style {style!r}; expected one of {EXPORT_STYLES}")
    features = []
    for value, name in enumerate(names, start=1):
        mask = class_map == value
        if not mask.any():
            continue
        regions = _polygons(mask, min_area=1.0)
        if not regions:
            continue
        color = CLASS_COLORS.get(name, (128, 128, 128))
        geometries = regions if style == "qupath-0.4-regions" else [_merge(regions)]
        for geometry in geometries:
            geojson = _rounded(mapping(geometry))
            if style in ("qupath-0.4", "qupath-0.4-regions"):
                features.append(
                    {
                        "type": "Feature",
                        "id": _feature_id(rng),
                        "geometry": geojson,
                        "properties": {
                            "objectType": "annotation",
                            "classification": {"name": name, "color": list(color)},
                        },
                    }
                )
            elif style == "qupath-0.2":
                features.append(
                    {
                        "type": "Feature",
                        "id": "PathAnnotationObject",
                        "geometry": geojson,
                        "properties": {
                            "classification": {"name": name, "colorRGB": _argb(color)},
                            "isLocked": False,
                            "measurements": [],
                        },
                    }
                )
            else:
                features.append(
                    {
                        "type": "Feature",
                        "geometry": geojson,
                        "properties": {"object_type": "annotation", "classification": name},
                    }
                )
    if style.startswith("qupath-0.4"):
        return {"type": "FeatureCollection", "features": features}
    return features


def unclassified_feature(class_map: np.ndarray, style: str, rng: np.random.Generator) -> dict:
    """A region of interest drawn without a class: the box around the annotated pixels.

    QuPath writes an unclassified annotation without ``classification``; a reader skips
    it (``annotations.unclassified: ignore``), so the truth's class map is unchanged.

    Args:
        class_map: the annotated class map (its extent sets the box).
        style: one of :data:`EXPORT_STYLES`, the form of the sample's other features.
        rng: random generator for the feature's UUID.

    Returns:
        The GeoJSON Feature.
    """
    rows, columns = np.nonzero(class_map)
    if rows.size == 0:
        rows, columns = np.array([0, class_map.shape[0] - 1]), np.array([0, class_map.shape[1] - 1])
    roi = box(columns.min(), rows.min(), columns.max() + 1, rows.max() + 1)
    geometry = _rounded(mapping(roi))
    if style in ("qupath-0.4", "qupath-0.4-regions"):
        return {
            "type": "Feature",
            "id": _feature_id(rng),
            "geometry": geometry,
            "properties": {"objectType": "annotation"},
        }
    if style == "qupath-0.2":
        return {
            "type": "Feature",
            "id": "PathAnnotationObject",
            "geometry": geometry,
            "properties": {"isLocked": False, "measurements": []},
        }
    return {"type": "Feature", "geometry": geometry, "properties": {"object_type": "annotation"}}
