"""Predicted masks as QuPath GeoJSON: the one owner of the GeoJSON the workflow writes.

QuPath imports the file with *File > Import objects* or by drag and drop onto the image.
The file is written as QuPath 0.4 / 0.5 export objects as GeoJSON::

    {"type": "FeatureCollection", "features": [
      {"type": "Feature", "id": "<uuid>",
       "geometry": {"type": "Polygon", "coordinates": [[[x, y], ...], <holes>...]},
       "properties": {"objectType": "annotation",
                      "classification": {"name": "Tumor", "color": [200, 0, 0]}}}, ...]}

* one feature per tumour region: a region is a set of 8-connected mask pixels; a region
  whose pixels touch only at corners is a ``MultiPolygon`` of its 4-connected parts (the
  parts meet at points only, which keeps the geometry valid);
* holes are the polygons' interior rings;
* specks are dropped before vectorising: regions of fewer than ``min_area_px`` pixels are
  removed and holes of fewer than ``min_area_px`` pixels are filled (both are noise when a
  slide is reviewed in QuPath);
* coordinates are integer pixel corners in SRS pixel coordinates, QuPath's convention that
  :mod:`ramanseg.annotations` reads: x to the right, y down, (0, 0) the top-left corner of
  the top-left pixel. Pixel ``(r, c)`` is the square ``[c, c + 1] x [r, r + 1]``, so reading
  the file back with :func:`ramanseg.annotations.read_qupath_geojson` and rasterising it
  with :func:`ramanseg.annotations.rasterize_annotations` gives the cleaned mask exactly;
* rings follow the GeoJSON right-hand rule (RFC 7946: exterior counter-clockwise, holes
  clockwise, in the coordinates as written);
* each ``id`` is a UUID derived from ``object_id_seed`` (the sample and model) and the
  feature's position, so the same mask always gives the same file and the features of
  different slides or models never share an id.

Vectorisation is GDAL's polygonize through :func:`rasterio.features.shapes`, which traces
pixel edges; connected components come from :func:`scipy.ndimage.label`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio.features
import rasterio.transform
import shapely
from scipy import ndimage
from shapely.geometry.polygon import orient

from ramanseg.fileio import write_files

log = logging.getLogger(__name__)

#: QuPath's class name and colour of the predicted foreground (QuPath's own Tumor colour).
DEFAULT_CLASS_NAME = "Tumor"
DEFAULT_COLOR = (200, 0, 0)

#: The namespace of the features' UUIDs (uuid5 of the project's name).
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/ramanseg/ramanseg/qupath")

_FOREGROUND_CONNECTIVITY = np.ones((3, 3), dtype=bool)  # 8-connected regions
_BACKGROUND_CONNECTIVITY = ndimage.generate_binary_structure(2, 1)  # 4-connected holes


def _as_mask(mask: np.ndarray) -> np.ndarray:
    """``mask`` as a bool (Y, X) array.

    Raises:
        ValueError: the mask is not 2-D.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D (Y, X), got shape {mask.shape}")
    return mask != 0


def remove_specks(mask: np.ndarray, min_area_px: int) -> np.ndarray:
    """Drop regions and fill holes of fewer than ``min_area_px`` pixels.

    Regions are 8-connected; holes are the 4-connected background components that do not
    touch the image border (the complementary connectivity, so that every hole is enclosed
    by one region).

    Args:
        mask: (Y, X), non-zero = foreground.
        min_area_px: the smallest region or hole kept, in pixels (0 or 1 keeps everything).

    Returns:
        The cleaned mask, bool (Y, X).
    """
    mask = _as_mask(mask)
    if min_area_px <= 1 or not mask.size:
        return mask.copy()
    labels, _ = ndimage.label(mask, structure=_FOREGROUND_CONNECTIVITY)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_area_px
    keep[0] = False
    cleaned = keep[labels]
    holes, _ = ndimage.label(~cleaned, structure=_BACKGROUND_CONNECTIVITY)
    sizes = np.bincount(holes.ravel())
    small = sizes < min_area_px
    small[0] = False
    border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    small[border] = False
    return cleaned | small[holes]


def _integer_coordinates(geometry: dict[str, Any]) -> dict[str, Any]:
    """A GeoJSON geometry with its coordinates as ints (GDAL traces pixel corners)."""

    def convert(item: Any) -> Any:
        if isinstance(item, float):
            return int(item) if item.is_integer() else item
        return [convert(part) for part in item]

    return {"type": geometry["type"], "coordinates": convert(geometry["coordinates"])}


def _region_geometries(mask: np.ndarray) -> list[shapely.Polygon | shapely.MultiPolygon]:
    """One valid geometry per 8-connected region of ``mask``, in raster-scan order."""
    labels, count = ndimage.label(mask, structure=_FOREGROUND_CONNECTIVITY)
    if count == 0:
        return []
    parts: list[list[shapely.Polygon]] = [[] for _ in range(count)]
    # connectivity=4: GDAL joins pixels across edges only, so each polygon is simple.
    for geometry, value in rasterio.features.shapes(
        labels.astype(np.int32),
        mask=labels > 0,
        connectivity=4,
        transform=rasterio.transform.IDENTITY,
    ):
        parts[int(value) - 1].append(orient(shapely.geometry.shape(geometry), sign=1.0))
    regions = []
    for polygons in parts:
        region = polygons[0] if len(polygons) == 1 else shapely.MultiPolygon(polygons)
        if not region.is_valid:  # not expected from GDAL's traces; repaired to be safe
            region = shapely.make_valid(region, method="structure")
        regions.append(region)
    return regions


def feature_id(object_id_seed: str, index: int) -> str:
    """The UUID of feature ``index`` of the file for ``object_id_seed`` (deterministic)."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{object_id_seed}/{index}"))


def mask_to_features(
    mask: np.ndarray,
    *,
    min_area_px: int,
    class_name: str = DEFAULT_CLASS_NAME,
    color: Sequence[int] = DEFAULT_COLOR,
    object_id_seed: str = "",
) -> list[dict[str, Any]]:
    """The regions of a binary mask as QuPath annotation features.

    Args:
        mask: (Y, X), non-zero = foreground (a predicted tumour mask).
        min_area_px: regions and holes of fewer pixels are dropped / filled
            (:func:`remove_specks`); 0 or 1 keeps every pixel.
        class_name: the QuPath class of every feature.
        color: the class colour, ``(r, g, b)`` in 0-255.
        object_id_seed: makes the features' ids unique to this file, e.g.
            ``"<sample>/<model>"``.

    Returns:
        GeoJSON ``Feature`` objects, one per region, in raster-scan order of the regions.

    Raises:
        ValueError: a mask that is not 2-D, a negative ``min_area_px``, an empty class
            name or a colour that is not three integers in 0-255.
    """
    if min_area_px < 0:
        raise ValueError(f"min_area_px must be >= 0, got {min_area_px}")
    if not class_name.strip():
        raise ValueError("class_name must not be empty")
    rgb = [int(value) for value in color]
    if len(rgb) != 3 or any(not 0 <= value <= 255 for value in rgb):
        raise ValueError(f"color must be three integers in 0-255, got {list(color)}")
    cleaned = remove_specks(mask, min_area_px)
    return [
        {
            "type": "Feature",
            "id": feature_id(object_id_seed, index),
            "geometry": _integer_coordinates(shapely.geometry.mapping(region)),
            "properties": {
                "objectType": "annotation",
                "classification": {"name": class_name, "color": rgb},
            },
        }
        for index, region in enumerate(_region_geometries(cleaned))
    ]


def write_qupath_geojson(
    path: str | Path,
    mask: np.ndarray,
    *,
    min_area_px: int,
    class_name: str = DEFAULT_CLASS_NAME,
    color: Sequence[int] = DEFAULT_COLOR,
    object_id_seed: str = "",
) -> int:
    """Write a mask's regions as a QuPath GeoJSON FeatureCollection (atomically).

    An empty mask (or one of specks only) gives a FeatureCollection without features,
    which QuPath imports as nothing.

    Args:
        path: the ``.geojson`` file to write.
        mask: (Y, X), non-zero = foreground.
        min_area_px: see :func:`mask_to_features`.
        class_name: see :func:`mask_to_features`.
        color: see :func:`mask_to_features`.
        object_id_seed: see :func:`mask_to_features`.

    Returns:
        The number of features written.
    """
    features = mask_to_features(
        mask,
        min_area_px=min_area_px,
        class_name=class_name,
        color=color,
        object_id_seed=object_id_seed,
    )
    document = {"type": "FeatureCollection", "features": features}
    # Compact: a slide's outlines have many vertices, one per line would be bulky.
    text = json.dumps(document, separators=(",", ":")) + "\n"
    write_files({Path(path): text.encode()})
    log.info("%d %s region(s) written to %s", len(features), class_name, path)
    return len(features)


def add_commands(subparsers: Any) -> None:
    """Add ``mask-to-geojson`` to the ``ramanseg`` command line."""
    from ramanseg.fileio import check_output_folder
    from ramanseg.predictions import read_predicted_mask

    parser = subparsers.add_parser(
        "mask-to-geojson",
        help="write a predicted mask's tumour regions as QuPath GeoJSON",
        description="Vectorise a predicted mask (<sample>.mask.tif) into QuPath annotations "
        "(File > Import objects in QuPath, or drag the file onto the image): one feature "
        "per region, with holes, specks dropped.",
    )
    parser.add_argument("--mask", required=True, help="the predicted mask (0 / 1 TIFF)")
    parser.add_argument("--sample", required=True, help="sample id (messages, feature ids)")
    parser.add_argument("--out", required=True, help="the .geojson file to write")
    parser.add_argument(
        "--min-area",
        type=_non_negative_int,
        required=True,
        metavar="PX",
        help="drop regions and fill holes smaller than this many pixels",
    )
    parser.add_argument(
        "--model", default="", help="model name, to keep feature ids unique per model"
    )
    parser.add_argument(
        "--class-name",
        type=_class_name,
        default=DEFAULT_CLASS_NAME,
        help="QuPath class (default: %(default)s)",
    )
    parser.add_argument(
        "--color",
        type=_channel_value,
        nargs=3,
        default=list(DEFAULT_COLOR),
        metavar=("R", "G", "B"),
        help="class colour, 0-255 each (default: %(default)s)",
    )

    def run(args: Any) -> int:
        out = Path(args.out)
        check_output_folder(out.parent, args.sample, "--out")
        fix = f"rerun the prediction that writes {args.mask}"
        mask = read_predicted_mask(args.mask, args.sample, fix)
        seed = f"{args.sample}/{args.model}" if args.model else args.sample
        write_qupath_geojson(
            out,
            mask,
            min_area_px=args.min_area,
            class_name=args.class_name,
            color=args.color,
            object_id_seed=seed,
        )
        return 0

    parser.set_defaults(func=run)


def _non_negative_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _class_name(text: str) -> str:
    import argparse

    if not text.strip():
        raise argparse.ArgumentTypeError("a class name must not be empty")
    return text


def _channel_value(text: str) -> int:
    import argparse

    value = _non_negative_int(text)
    if value > 255:
        raise argparse.ArgumentTypeError(f"must be in 0-255, got {value}")
    return value
