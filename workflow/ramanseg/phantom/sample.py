"""One sample of the phantom: its files' contents and the ground truth."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ramanseg.config import CHANNEL_ROLES, ConfigError, class_names, require
from ramanseg.phantom.design import (
    SampleVariant,
    phantom_design,
    phantom_settings,
    sample_variants,
)
from ramanseg.phantom.export import EXPORT_STYLES, annotation_geojson, unclassified_feature
from ramanseg.phantom.imaging import _patient, render_images
from ramanseg.phantom.tissue import (
    EXTRA_CLASSES,
    TISSUE_CLASSES,
    _annotated_class_map,
    _tissue_map,
    add_immune_aggregates,
)


@dataclass
class PhantomSample:
    """One generated sample: the files' contents plus the ground truth.

    Attributes:
        sample_id: the sample's id.
        patient_id: its patient.
        srs: ``(C, Y, X)`` uint16 stack, channels as configured (whatever the file's
            layout: see :attr:`variant`).
        he: ``(Y, X, 3)`` uint8 RGB H&E image (drawn even when the variant writes none).
        tissue: ``(Y, X)`` uint8 true tissue map: 0 glass, code ``k`` the class
            ``CODE_CLASSES[k]`` (1..5 the :data:`TISSUE_CLASSES`, 6 ``Immune cells``).
        class_map: ``(Y, X)`` uint8 annotated class map in configuration order (value
            ``k`` is the ``k``-th class of ``annotations.classes``; 0 = not annotated or
            an ignored class), what a correct reader of :attr:`annotations` produces
            (skipping unclassified features).
        annotations: the GeoJSON object written to the file (a dict or a list).
        export_style: which of :data:`EXPORT_STYLES` the annotations use.
        variant: which variants of the input contract the sample takes.
    """

    sample_id: str
    patient_id: str
    srs: np.ndarray
    he: np.ndarray
    tissue: np.ndarray
    class_map: np.ndarray
    annotations: dict | list
    export_style: str
    variant: SampleVariant = field(default_factory=SampleVariant)


def _check_classes(config: Mapping[str, Any]) -> list[str]:
    """The configured class names; every class the phantom writes must be known to the
    reader, and its unclassified features accepted."""
    names = class_names(config)
    section = require(config, "annotations")
    ignore = list(section.get("ignore", []) or [])
    variants = sample_variants(config)
    drawn = list(TISSUE_CLASSES)
    if any(v.immune_cells for v in variants):
        drawn += EXTRA_CLASSES
    missing = [name for name in drawn if name not in names and name not in ignore]
    if missing:
        raise ConfigError(
            f"annotations.classes must name the phantom's classes {drawn} "
            f"(or annotations.ignore list them); missing: {missing}"
        )
    if any(v.unclassified for v in variants) and section.get("unclassified") != "ignore":
        raise ConfigError(
            "phantom.variants.unclassified writes annotations without a class, which "
            f"annotations.unclassified: {section.get('unclassified', 'error')} rejects; "
            "set annotations.unclassified: ignore"
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
    variant = sample_variants(config)[sample_index]
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 3, sample_index]))
    # The variants draw from a stream of their own, so the rest is drawn as without them.
    variant_rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 6, sample_index]))
    h, w = settings.height, settings.width
    if variant.transposed:
        h, w = w, h
    tissue, depth, thickness = _tissue_map(rng, h, w)
    if variant.immune_cells:
        tissue = add_immune_aggregates(variant_rng, tissue)
    class_map = _annotated_class_map(rng, tissue, names)
    srs, he = render_images(rng, tissue, depth, thickness, channels, patient, settings.seed)
    style = EXPORT_STYLES[sample_index % len(EXPORT_STYLES)]
    annotations = annotation_geojson(class_map, names, style, rng)
    if variant.unclassified:
        features = annotations["features"] if isinstance(annotations, dict) else annotations
        # First, as a region of interest drawn before the classified regions would be.
        features.insert(0, unclassified_feature(class_map, style, variant_rng))
    return PhantomSample(
        sample_id=str(sample_id),
        patient_id=str(patient_id),
        srs=srs,
        he=he,
        tissue=tissue,
        class_map=class_map,
        annotations=annotations,
        export_style=style,
        variant=variant,
    )
