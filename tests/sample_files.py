"""Small, valid input files in the input contract, for the tests of the readers and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile

HEADER = ("sample_id", "patient_id", "srs", "he", "annotations")
#: The demo configuration's channel count, and a small image.
CHANNELS, HEIGHT, WIDTH = 24, 16, 20


def geojson(class_name: str = "Tumor", *, properties: object = None) -> dict:
    """A QuPath FeatureCollection with one 8 x 8 square of ``class_name``."""
    ring = [[2, 2], [10, 2], [10, 10], [2, 10], [2, 2]]
    if properties is None:
        properties = {"objectType": "annotation", "classification": {"name": class_name}}
    feature = {
        "type": "Feature",
        "id": "f-1",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": properties,
    }
    return {"type": "FeatureCollection", "features": [feature]}


def write_sample(directory: Path, sample_id: str, *, he: bool = True) -> tuple[str, str, str]:
    """Write a valid sample's files under ``directory``; return their names (srs, he, ann)."""
    rng = np.random.default_rng(0)
    srs = f"{sample_id}.ome.tif"
    tifffile.imwrite(
        directory / srs,
        rng.integers(0, 4000, (CHANNELS, HEIGHT, WIDTH), dtype=np.uint16),
        ome=True,
        photometric="minisblack",
        metadata={"axes": "CYX"},
    )
    he_name = ""
    if he:
        he_name = f"{sample_id}_he.tif"
        tifffile.imwrite(
            directory / he_name,
            rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8),
            photometric="rgb",
        )
    annotations = f"{sample_id}.geojson"
    (directory / annotations).write_text(json.dumps(geojson()))
    return srs, he_name, annotations


def write_sheet(directory: Path, rows: list[tuple[str, ...]], name: str = "samples.tsv") -> Path:
    """A sample sheet with ``rows`` (tuples of the five fields) under ``directory``."""
    sheet = directory / name
    lines = ["\t".join(HEADER)] + ["\t".join(row) for row in rows]
    sheet.write_text("\n".join(lines) + "\n")
    return sheet


def valid_dataset(directory: Path, n_samples: int = 2, *, last_without_he: bool = True) -> Path:
    """A sheet of ``n_samples`` valid samples under ``directory``, the last one without an
    H&E if ``last_without_he``."""
    rows = []
    for index in range(n_samples):
        sample_id = f"S{index + 1}"
        files = write_sample(
            directory, sample_id, he=not (last_without_he and index == n_samples - 1)
        )
        rows.append((sample_id, f"P{index % 2 + 1}", *files))
    return write_sheet(directory, rows)


def write_preprocessed_files(folder: Path, sample, channel_names) -> None:
    """Write a ``Sample`` (image, mask, tissue) as the preprocessing's stack, mask and
    foreground files in ``folder`` (created), for the tests of the stages that read them."""
    folder.mkdir(parents=True)
    tifffile.imwrite(
        folder / "stack.ome.tif",
        sample.image,
        ome=True,
        photometric="minisblack",
        metadata={"axes": "CYX", "Channel": {"Name": list(channel_names)}},
    )
    tifffile.imwrite(folder / "mask.tif", sample.mask)
    tifffile.imwrite(folder / "foreground.tif", sample.tissue)
