"""Tests of :mod:`ramanseg.preprocess`, and the small sample files they share."""

from __future__ import annotations

import copy
import json

import numpy as np
import tifffile

from ramanseg.config import validate_config
from ramanseg.settings import AnnotationSettings, ChannelLayout, PreprocessSettings

CHANNELS = [
    {"name": "Raman 2850", "role": "raman", "wavenumber": 2850.0},
    {"name": "Raman 2930", "role": "raman", "wavenumber": 2930.0},
    {"name": "TPEF", "role": "tpef"},
    {"name": "SHG", "role": "shg"},
]
SHAPE = (32, 40)
#: The tissue of the synthetic sample: rows 4..27, columns 6..33.
TISSUE = (slice(4, 28), slice(6, 34))


def with_small_channels(config: dict) -> dict:
    """A copy of ``config`` with the four :data:`CHANNELS` of the small samples."""
    config = copy.deepcopy(config)
    config["channels"] = [dict(channel) for channel in CHANNELS]
    return config


def typed_settings(config: dict) -> dict:
    """The keyword arguments of :func:`ramanseg.preprocess.preprocess_sample` built from a
    configuration, as the ``preprocess`` command builds them (validated first)."""
    config = validate_config(config)
    return {
        "channels": ChannelLayout.from_config(config),
        "annotations": AnnotationSettings.from_config(config),
        "settings": PreprocessSettings.from_config(config),
    }


def feature(coordinates, name="Tumor") -> dict:
    """A QuPath annotation Feature: one polygon of class ``name``."""
    return {
        "type": "Feature",
        "id": "a4c1e2f0-0000-4000-8000-000000000001",
        "geometry": {"type": "Polygon", "coordinates": [coordinates]},
        "properties": {
            "objectType": "annotation",
            "classification": {"name": name, "color": [200, 0, 0]},
        },
    }


def square(x0, y0, x1, y1):
    """A closed rectangle ring in pixel coordinates."""
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def make_sample(tmp_path, *, n_channels=4, he_shape=SHAPE, features=None, stack=None):
    """Write a small sample: uint16 stack with tissue and drift, H&E, one Tumor square."""
    rng = np.random.default_rng(0)
    if stack is None:
        tissue = np.zeros(SHAPE, bool)
        tissue[TISSUE] = True
        drift = np.linspace(0.8, 1.2, SHAPE[1])
        stack = np.empty((n_channels, *SHAPE), np.uint16)
        for c in range(n_channels):
            level = np.where(tissue, 1000 + 100 * c, 100) * drift
            stack[c] = np.rint(level + rng.normal(0, 20, SHAPE)).astype(np.uint16)
    srs = tmp_path / "in" / "srs.tif"
    srs.parent.mkdir(exist_ok=True)
    tifffile.imwrite(srs, stack, photometric="minisblack", metadata={"axes": "CYX"})
    he = tmp_path / "in" / "he.tif"
    rgb = np.full((*he_shape, 3), 238, np.uint8)
    rgb[TISSUE] = [180, 80, 150]
    rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
    tifffile.imwrite(he, rgb, photometric="rgb")
    annotations = tmp_path / "in" / "annotations.geojson"
    if features is None:
        features = [feature(square(10, 8, 20, 16))]  # 10 x 8 = 80 pixels
    annotations.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return srs, he, annotations


def settings_json(config) -> str:
    """The ``--settings`` a preprocess rule passes, from ``config``."""
    keys = ("channels", "annotations", "preprocess", "seed")
    return json.dumps({key: config[key] for key in keys})


def assert_no_outputs(outdir):
    """``outdir`` is missing or empty."""
    assert not outdir.exists() or not any(outdir.iterdir()), list(outdir.iterdir())
