"""Shared fixtures of the phantom tests: the demo configuration, a tiny one, its dataset."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest
import rasterio.features

from ramanseg import phantom
from ramanseg.config import load_config_files, validate_config
from tests.conftest import DEMO_CONFIG

#: The sample sheet's columns, in the input contract's order.
SHEET_COLUMNS = ["sample_id", "patient_id", "srs", "he", "annotations"]


def typed(config: dict) -> phantom.PhantomSettings:
    """The phantom's settings from a configuration, validated as a command validates it."""
    return phantom.PhantomSettings.from_config(validate_config(config))


@pytest.fixture(scope="module")
def demo() -> dict:
    """The demo configuration (not to be changed: tests change deep copies)."""
    return load_config_files([DEMO_CONFIG])


@pytest.fixture(scope="module")
def tiny(demo) -> dict:
    """3 patients, 4 samples, non-square 48 x 64 images: all four export styles."""
    config = copy.deepcopy(demo)
    config["phantom"].update(patients=3, samples=4, height=48, width=64, seed=3)
    return config


@pytest.fixture(scope="module")
def dataset(tiny, tmp_path_factory) -> Path:
    """The tiny dataset, written once per module."""
    outdir = tmp_path_factory.mktemp("phantom") / "data"
    sheet = phantom.write_phantom(typed(tiny), outdir, threads=2)
    assert sheet == outdir / "samples.tsv"
    return outdir


def features_of(document) -> list[dict]:
    """The features of a FeatureCollection or a bare list of Features."""
    if isinstance(document, list):
        return document
    assert document["type"] == "FeatureCollection"
    return document["features"]


def class_name_of(feature: dict) -> str:
    """The class of a classified feature, in any of the export styles."""
    classification = feature["properties"]["classification"]
    return classification if isinstance(classification, str) else classification["name"]


def rasterise(document, names: list[str], shape_yx: tuple[int, int]) -> np.ndarray:
    """A minimal reader: burn each feature's class value by pixel centres, file order."""
    pairs = [
        (feature["geometry"], names.index(class_name_of(feature)) + 1)
        for feature in features_of(document)
    ]
    return rasterio.features.rasterize(pairs, out_shape=shape_yx, fill=0, dtype="uint8")


def file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative path."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
