"""QuPath GeoJSON annotations: reading them as QuPath writes them, and rasterising them.

QuPath (0.2 to 0.6) exports annotations in several shapes, all accepted here:

* a ``FeatureCollection``, a bare JSON list of ``Feature`` objects, or a single
  ``Feature``;
* the class in ``properties.classification.name`` (with ``color`` or ``colorRGB``
  beside it), or, in older exports, ``properties.classification`` as a plain string;
* annotation objects only: a feature whose ``properties.objectType`` is present and is
  not ``"annotation"`` (detections, cells, tiles, TMA cores) is skipped and counted, as is
  a QuPath 0.2 feature whose ``id`` is ``PathDetectionObject``, ``PathCellObject`` or
  ``PathTileObject``;
* ``Polygon`` and ``MultiPolygon`` geometries with holes; from a ``GeometryCollection``
  the polygons are taken and the rest dropped; features with no polygon at all (``Point``,
  ``LineString``, a null geometry) are skipped and counted;
* features without a classification (no ``classification``, ``null``, one without a
  name, or ``"properties": null``) follow ``annotations.unclassified`` in the
  configuration: ``error`` (the default: a tumour drawn without a class would silently
  become background) or ``ignore`` (skipped with a logged warning, counted in
  ``qc.json``); a classification of another type (a number, say) is always an error;
* the file may start with a UTF-8 byte-order mark;
* coordinates must be finite: NaN or infinite coordinates are an error;
* invalid polygons (self-intersections, as a freehand brush can make) are repaired with
  :func:`shapely.make_valid` (``method="structure"``, which keeps the area enclosed by
  each ring and removes the area of holes) and counted.

Coordinates are SRS pixel coordinates with QuPath's convention: x to the right, y down,
(0, 0) the top-left corner of the top-left pixel.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio.features
import rasterio.transform
import shapely
from shapely.geometry import shape as geometry_from_geojson
from shapely.geometry.base import BaseGeometry

from ramanseg.errors import InputError
from ramanseg.settings import AnnotationSettings

log = logging.getLogger(__name__)

_NON_ANNOTATION_IDS = frozenset({"PathDetectionObject", "PathCellObject", "PathTileObject"})
#: A feature reaching further outside the image than this many image widths (heights) is
#: taken as drawn in another coordinate system (microns, or another image's pixels).
FAR_OUTSIDE_IMAGE_SIZES = 1.0


@dataclass(frozen=True)
class Annotation:
    """One classified annotation.

    Attributes:
        class_name: the QuPath class name, e.g. ``"Tumor"``.
        geometry: a valid shapely ``Polygon`` or ``MultiPolygon`` in pixel coordinates.
        feature_index: position of the feature in the file (0-based), for messages.
        feature_id: the feature's ``id`` if it has one, for messages.
    """

    class_name: str
    geometry: BaseGeometry
    feature_index: int
    feature_id: str | None = None

    def describe(self) -> str:
        """A short reference to the feature for messages."""
        where = _describe_feature(self.feature_index, self.feature_id)
        return f"{where}, class {self.class_name!r}"


def _describe_feature(index: int, feature_id: str | None) -> str:
    """``feature 3`` or ``feature 3 (id ...)``: how messages name a feature."""
    return f"feature {index}" + (f" (id {feature_id})" if feature_id else "")


@dataclass
class AnnotationFile:
    """The classified annotations of one GeoJSON file and what was skipped on reading.

    Attributes:
        annotations: the classified polygonal annotations, in file order.
        skipped_unclassified: polygon features without a classification.
        unclassified_features: those features, described for messages (index and id).
        skipped_non_polygon: features without any polygon (points, lines, null geometry).
        skipped_non_annotation: detection, cell, tile and TMA-core objects.
        skipped_empty: polygons with no area, even after repair.
        repaired_invalid: invalid polygons repaired with ``shapely.make_valid``.
    """

    annotations: list[Annotation] = field(default_factory=list)
    skipped_unclassified: int = 0
    unclassified_features: list[str] = field(default_factory=list)
    skipped_non_polygon: int = 0
    skipped_non_annotation: int = 0
    skipped_empty: int = 0
    repaired_invalid: int = 0

    @property
    def skipped(self) -> int:
        """All features skipped on reading."""
        return (
            self.skipped_unclassified
            + self.skipped_non_polygon
            + self.skipped_non_annotation
            + self.skipped_empty
        )

    def counts(self) -> dict[str, int]:
        """The counts as a plain dictionary (for the QC report)."""
        return {
            "classified": len(self.annotations),
            "skipped_unclassified": self.skipped_unclassified,
            "skipped_non_polygon": self.skipped_non_polygon,
            "skipped_non_annotation": self.skipped_non_annotation,
            "skipped_empty": self.skipped_empty,
            "repaired_invalid": self.repaired_invalid,
        }


def _features(document: Any, path: Path, sample_id: str) -> list[Any]:
    """The list of features of a FeatureCollection, a bare list or a single Feature."""
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        kind = document.get("type")
        if kind == "FeatureCollection" and isinstance(document.get("features"), list):
            return document["features"]
        if kind == "Feature":
            return [document]
        found = f"an object of type {kind!r}" if kind else "an object without `type`"
    else:
        found = f"a JSON {type(document).__name__}"
    raise InputError(
        f"is not a QuPath GeoJSON export: the top level is {found}, expected a "
        "FeatureCollection, a list of Features or a Feature",
        sample=sample_id,
        path=path,
        fix="export the annotations from QuPath with File > Export objects as GeoJSON",
    )


def _class_name(properties: Mapping[str, Any]) -> str | None:
    """The class name of a QuPath feature, or None if it has no classification.

    Raises:
        TypeError: the classification (or its name) is neither a string nor an object.
    """
    classification = properties.get("classification")
    if classification is None:
        return None
    if isinstance(classification, str):
        return classification.strip() or None
    if not isinstance(classification, Mapping):
        raise TypeError(f"`classification` is a JSON {_json_type(classification)}")
    name = classification.get("name")
    if isinstance(name, str) and name.strip():
        return name.strip()
    if name is not None and not isinstance(name, str):
        raise TypeError(f"`classification.name` is a JSON {_json_type(name)}")
    names = classification.get("names")  # QuPath 0.5+ also lists the class parts
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        return ": ".join(names)
    return None


def _json_type(value: Any) -> str:
    """The JSON type of a parsed value, for messages (``number``, ``array``, ...)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return f"number ({value!r})"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return f"string ({value!r})" if isinstance(value, str) else "null"


def _is_annotation_object(feature: Mapping[str, Any], properties: Mapping[str, Any]) -> bool:
    object_type = properties.get("objectType")
    if object_type is not None:
        return object_type == "annotation"
    return feature.get("id") not in _NON_ANNOTATION_IDS


def _polygonal_part(geometry: BaseGeometry) -> BaseGeometry | None:
    """The polygons of a geometry as one (Multi)Polygon; None if it has none."""
    if isinstance(geometry, shapely.Polygon | shapely.MultiPolygon):
        return geometry
    if isinstance(geometry, shapely.GeometryCollection):
        polygons = [
            part
            for item in geometry.geoms
            if (part := _polygonal_part(item)) is not None and not part.is_empty
        ]
        if not polygons:
            return None
        return shapely.union_all(polygons)
    return None


def read_qupath_geojson(path: str | Path, sample_id: str) -> AnnotationFile:
    """Read the classified polygon annotations of a QuPath GeoJSON export.

    See the module docstring for the accepted variants and what is skipped. Classes are
    not checked here (that needs the configuration): see :func:`rasterize_annotations`.

    Args:
        path: the GeoJSON file.
        sample_id: the sample, for error messages.

    Returns:
        The annotations in file order and the counts of skipped / repaired features.

    Raises:
        InputError: a missing file, a file that is not UTF-8 JSON (with the line and
            column of the first error), a document that is not a Feature list, or a
            feature whose geometry cannot be built.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            "the annotation file does not exist",
            sample=sample_id,
            path=path,
            fix="check the `annotations` path in the sample sheet (relative to the sheet)",
        )
    fix_export = "export the annotations again from QuPath (File > Export objects as GeoJSON)"
    try:
        # utf-8-sig: Windows tools write a byte-order mark, which plain utf-8 rejects.
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as error:
        raise InputError(
            f"the annotation file is not UTF-8 text ({error})",
            sample=sample_id,
            path=path,
            fix=fix_export,
        ) from error
    except json.JSONDecodeError as error:
        raise InputError(
            f"the annotation file is not valid JSON: {error.msg} at line {error.lineno}, "
            f"column {error.colno} (character {error.pos})",
            sample=sample_id,
            path=path,
            fix=fix_export,
        ) from error

    result = AnnotationFile()
    for index, feature in enumerate(_features(document, path, sample_id)):
        if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
            raise InputError(
                f"item {index} of the annotation file is not a GeoJSON Feature",
                sample=sample_id,
                path=path,
                fix=fix_export,
            )
        feature_id = feature.get("id")
        feature_id = str(feature_id) if feature_id is not None else None
        where = _describe_feature(index, feature_id)
        properties = feature.get("properties")
        if properties is None:
            properties = {}
        elif not isinstance(properties, Mapping):
            raise InputError(
                f"{where}: `properties` is a JSON {_json_type(properties)}, not an object "
                "(QuPath writes the class as properties.classification.name)",
                sample=sample_id,
                path=path,
                fix='write the class as "properties": {"classification": {"name": ...}}, '
                "or export the annotations again from QuPath",
            )
        if not _is_annotation_object(feature, properties):
            result.skipped_non_annotation += 1
            continue
        geometry_json = feature.get("geometry")
        if not geometry_json:
            result.skipped_non_polygon += 1
            continue
        try:
            with np.errstate(invalid="ignore"):  # NaN coordinates: reported below
                geometry = geometry_from_geojson(geometry_json)
        except Exception as error:  # shapely raises several types for malformed coordinates
            raise InputError(
                f"feature {index} has a geometry that cannot be read "
                f"({type(error).__name__}: {error})",
                sample=sample_id,
                path=path,
                fix=fix_export,
            ) from error
        polygons = _polygonal_part(geometry)
        if polygons is None:
            result.skipped_non_polygon += 1
            continue
        if not np.isfinite(shapely.get_coordinates(polygons)).all():
            raise InputError(
                f"{where} has NaN or infinite coordinates",
                sample=sample_id,
                path=path,
                fix="redraw or delete that annotation in QuPath and export again",
            )
        try:
            class_name = _class_name(properties)
        except TypeError as error:
            raise InputError(
                f"{where}: invalid classification: {error}; expected a class name",
                sample=sample_id,
                path=path,
                fix='write the class as "classification": {"name": "Tumor"} (or the plain '
                "string), or set the class in QuPath and export again",
            ) from error
        if class_name is None:
            result.skipped_unclassified += 1
            result.unclassified_features.append(where)
            continue
        if not polygons.is_valid:
            polygons = _polygonal_part(shapely.make_valid(polygons, method="structure"))
            result.repaired_invalid += 1
        if polygons is None or polygons.is_empty or polygons.area == 0:
            result.skipped_empty += 1
            continue
        result.annotations.append(Annotation(class_name, polygons, index, feature_id))
    return result


def class_problems(
    annotations: Sequence[Annotation] | AnnotationFile,
    settings: AnnotationSettings,
    sample_id: str,
    path: str | Path | None,
) -> tuple[list[Annotation], list[InputError]]:
    """Check the annotations' classes against the configuration.

    A class in ``annotations.classes`` is kept, one in ``annotations.ignore`` dropped,
    any other is a problem (one per class name, naming its first feature). Given an
    :class:`AnnotationFile`, its features without a class are a problem under
    ``annotations.unclassified: error`` (the default) and are logged as a warning under
    ``ignore``.

    Args:
        annotations: the annotations, or the result of :func:`read_qupath_geojson`.
        settings: the ``annotations`` settings.
        sample_id: the sample, for messages.
        path: the annotation file, for messages.

    Returns:
        ``(kept, problems)``: the annotations of configured classes, in file order, and
        every problem found (empty if none).
    """
    known = settings.class_names
    problems: list[InputError] = []
    if isinstance(annotations, AnnotationFile):
        unclassified = annotations.unclassified_features
        if unclassified and settings.unclassified == "error":
            listed = ", ".join(unclassified[:5]) + (" ..." if len(unclassified) > 5 else "")
            problems.append(
                InputError(
                    f"{len(unclassified)} polygon feature(s) have no class: {listed}; a region "
                    "drawn without a class would silently become background",
                    sample=sample_id,
                    path=path,
                    fix="set a class on those annotations in QuPath and export again, or set "
                    "`annotations.unclassified: ignore` in the configuration to skip them",
                )
            )
        elif unclassified:
            log.warning(
                "sample %r, file %r: %d polygon feature(s) without a class skipped "
                "(annotations.unclassified: ignore): %s",
                sample_id,
                None if path is None else str(path),
                len(unclassified),
                ", ".join(unclassified),
            )
        annotations = annotations.annotations
    kept, unknown = [], {}
    for annotation in annotations:
        if annotation.class_name in known:
            kept.append(annotation)
        elif annotation.class_name not in settings.ignore:
            unknown.setdefault(annotation.class_name, annotation)
    for name, first in unknown.items():
        problems.append(
            InputError(
                f"{first.describe()}: unknown class {name!r}; the configured classes are "
                f"{', '.join(map(repr, known))}",
                sample=sample_id,
                path=path,
                fix=f"add {name!r} to `annotations.classes` (with label 0 or 1) or to "
                "`annotations.ignore` in the configuration",
            )
        )
    return kept, problems


def check_annotation_file(
    path: str | Path,
    settings: AnnotationSettings,
    sample_id: str,
    shape: tuple[int, int] | None = None,
) -> list[InputError]:
    """Every problem of a GeoJSON file that :func:`rasterize_annotations` would raise.

    Reading, classes, unclassified features and, if ``shape`` is given, the extent
    (:func:`check_extent`, whose first problem only is reported); nothing is rasterised.

    Args:
        path: the GeoJSON file.
        settings: the ``annotations`` settings.
        sample_id: the sample, for messages.
        shape: (Y, X) of the SRS image, or None to skip the extent check.

    Returns:
        The problems found, each an :class:`InputError` (empty if none).
    """
    try:
        parsed = read_qupath_geojson(path, sample_id)
    except InputError as error:
        return [error]
    kept, problems = class_problems(parsed, settings, sample_id, path)
    if shape is not None:
        try:
            check_extent(kept, shape, sample_id, path)
        except InputError as error:
            problems.append(error)
    return problems


def check_extent(
    annotations: Sequence[Annotation],
    shape: tuple[int, int],
    sample_id: str,
    path: str | Path | None,
) -> int:
    """Check that the annotations lie on the image; return how many reach beyond it.

    The image covers ``[0, X] x [0, Y]`` in pixel coordinates. A feature partly outside
    is accepted (rasterisation keeps only the part on the image: it is clipped); a
    feature with no area on the image, or reaching further outside than
    ``FAR_OUTSIDE_IMAGE_SIZES`` times the image size, is an error: both mean the
    annotations belong to another image or another coordinate system. (Coordinates in
    microns go unnoticed when the pixel size is below 1 um: they then fall on the image,
    too small. The QC figure shows it.)

    Args:
        annotations: the annotations.
        shape: (Y, X) of the image.
        sample_id: the sample, for error messages.
        path: the annotation file, for error messages.

    Returns:
        The number of features partly outside the image (clipped).

    Raises:
        InputError: for a feature entirely or far outside the image.
    """
    height, width = shape
    image = shapely.box(0, 0, width, height)
    margin_x, margin_y = FAR_OUTSIDE_IMAGE_SIZES * width, FAR_OUTSIDE_IMAGE_SIZES * height
    fix = (
        "export the annotations in the pixel coordinates of the SRS image (not microns, not "
        "the coordinates of a larger slide image) and check that the file belongs to this "
        "sample"
    )
    clipped = 0
    for annotation in annotations:
        min_x, min_y, max_x, max_y = annotation.geometry.bounds
        where = (
            f"{annotation.describe()} spans x {min_x:g}..{max_x:g}, y {min_y:g}..{max_y:g}, "
            f"but the image is {width} x {height} pixels (x 0..{width}, y 0..{height})"
        )
        if (
            min_x < -margin_x
            or min_y < -margin_y
            or max_x > width + margin_x
            or (max_y > height + margin_y)
        ):
            raise InputError(
                f"{where}: far outside the image, which suggests another coordinate system",
                sample=sample_id,
                path=path,
                fix=fix,
            )
        if annotation.geometry.intersection(image).area == 0:
            raise InputError(
                f"{where}: entirely outside the image", sample=sample_id, path=path, fix=fix
            )
        if min_x < 0 or min_y < 0 or max_x > width or max_y > height:
            clipped += 1
    return clipped


def rasterize_annotations(
    annotations: Sequence[Annotation] | AnnotationFile,
    shape: tuple[int, int],
    settings: AnnotationSettings,
    sample_id: str,
    path: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise annotations into a class map and the binary tumour mask.

    Rasterisation is GDAL's, through :func:`rasterio.features.rasterize` with the identity
    transform and ``all_touched=False``: pixel (row ``r``, column ``c``) covers
    ``[c, c + 1] x [r, r + 1]`` and belongs to a polygon when its centre
    ``(c + 0.5, r + 0.5)`` lies inside it (holes excluded). So a 10 x 10 square with
    integer corners covers exactly 100 pixels, and a 4 x 4 hole in it removes 16.

    Class map values: 0 = not annotated, ``1 + i`` for the i-th class of
    ``annotations.classes``. Where features overlap, the later feature in
    the file wins, as in QuPath's drawing order. Features of a class listed in
    ``annotations.ignore`` are left out; features without a class (known only from an
    :class:`AnnotationFile`) follow ``annotations.unclassified`` (see
    :func:`class_problems`). Parts outside the image are clipped (see
    :func:`check_extent`). The mask is 1 where the class's label in
    ``annotations.classes`` is 1 (the paper: Tumor and Necrosis), else 0.

    Args:
        annotations: the annotations, or the result of :func:`read_qupath_geojson`.
        shape: (Y, X) of the SRS image.
        settings: the ``annotations`` settings (classes, ignored classes, unclassified
            features).
        sample_id: the sample, for error messages.
        path: the annotation file, for error messages.

    Returns:
        ``(class_map, mask)``, both uint8 arrays of ``shape``.

    Raises:
        InputError: an unknown class, features without a class under
            ``annotations.unclassified: error``, or a feature entirely or far outside the
            image.
    """
    kept, problems = class_problems(annotations, settings, sample_id, path)
    if problems:
        raise problems[0]
    check_extent(kept, shape, sample_id, path)
    height, width = shape
    value_of = {name: settings.class_value(name) for name in settings.labels}
    if kept:
        class_map = rasterio.features.rasterize(
            [(a.geometry, value_of[a.class_name]) for a in kept],
            out_shape=(height, width),
            fill=0,
            transform=rasterio.transform.IDENTITY,
            all_touched=False,
            dtype=np.uint8,
        )
    else:
        class_map = np.zeros((height, width), dtype=np.uint8)
    label_of_value = np.zeros(256, dtype=np.uint8)
    for name, label in settings.labels.items():
        label_of_value[value_of[name]] = label
    return class_map, label_of_value[class_map]
