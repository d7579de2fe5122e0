"""One sample of the phantom: its files' contents and the ground truth."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ramanseg.config import CHANNEL_ROLES, ConfigError, class_names, require
from ramanseg.phantom.design import phantom_design, phantom_settings
from ramanseg.phantom.export import EXPORT_STYLES, annotation_geojson
from ramanseg.phantom.imaging import _patient, render_images
from ramanseg.phantom.tissue import TISSUE_CLASSES, _annotated_class_map, _tissue_map


@dataclass
class PhantomSample:
    """One generated sample: the files' contents plus the ground truth.

    Attributes:
        sample_id: the sample's id.
        patient_id: its patient.
        srs: ``(C, Y, X)`` uint16 stack, channels as configured.
        he: ``(Y, X, 3)`` uint8 RGB H&E image.
        tissue: ``(Y, X)`` uint8 true tissue map: 0 glass, ``1 + TISSUE_CLASSES.index``.
        class_map: ``(Y, X)`` uint8 annotated class map in configuration order (value
            ``k`` is the ``k``-th class of ``annotations.classes``; 0 = not annotated or
            an ignored class), what a correct reader of :attr:`annotations` produces.
        annotations: the GeoJSON object written to the file (a dict or a list).
        export_style: which of :data:`EXPORT_STYLES` the annotations use.
    """

    sample_id: str
    patient_id: str
    srs: np.ndarray
    he: np.ndarray
    tissue: np.ndarray
    class_map: np.ndarray
    annotations: dict | list
    export_style: str


def _check_classes(config: Mapping[str, Any]) -> list[str]:
    """The configured class names; every phantom class must be known to the reader."""
    names = class_names(config)
    ignore = list(require(config, "annotations").get("ignore", []) or [])
    missing = [name for name in TISSUE_CLASSES if name not in names and name not in ignore]
    if missing:
        raise ConfigError(
            f"annotations.classes must name the phantom's classes {list(TISSUE_CLASSES)} "
            f"(or annotations.ignore list them); missing: {missing}"
        )
    return names


def _check_channels(config: Mapping[str, Any]) -> list[dict]:
    channels = list(require(config, "channels"))
    if not channels:
        raise ConfigError("channels must list at least one channel")
    for i, channel in enumerate(channels):
        role = channel.get("role")
        if role not in CHANNEL_ROLES:
            raise ConfigError(f"channels[{i}].role must be one of {CHANNEL_ROLES}, got {role!r}")
        if role == "raman" and not isinstance(channel.get("wavenumber"), int | float):
            raise ConfigError(f"channels[{i}].wavenumber is required for a Raman channel")
    return channels


def generate_sample(config: Mapping[str, Any], sample_index: int) -> PhantomSample:
    """Generate one sample of the phantom (images, annotations and ground truth).

    Args:
        config: the workflow configuration (``phantom``, ``channels``, ``annotations``).
        sample_index: the sample's row in :func:`phantom_design`.

    Returns:
        The sample; deterministic for ``phantom.seed`` and ``sample_index``.
    """
    settings = phantom_settings(config)
    design = phantom_design(config)
    if not 0 <= sample_index < len(design):
        raise ValueError(f"sample_index must be in [0, {len(design)}), got {sample_index}")
    channels = _check_channels(config)
    names = _check_classes(config)
    sample_id, patient_id = design.iloc[sample_index][["sample_id", "patient_id"]]
    patient_index = int(patient_id[1:]) - 1
    patient = _patient(settings.seed, patient_index)
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 3, sample_index]))
    tissue, depth, thickness = _tissue_map(rng, settings.height, settings.width)
    class_map = _annotated_class_map(rng, tissue, names)
    srs, he = render_images(rng, tissue, depth, thickness, channels, patient, settings.seed)
    style = EXPORT_STYLES[sample_index % len(EXPORT_STYLES)]
    annotations = annotation_geojson(class_map, names, style, rng)
    return PhantomSample(
        sample_id=str(sample_id),
        patient_id=str(patient_id),
        srs=srs,
        he=he,
        tissue=tissue,
        class_map=class_map,
        annotations=annotations,
        export_style=style,
    )
