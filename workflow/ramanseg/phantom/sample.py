"""One sample of the phantom: its files' contents and the ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ramanseg.phantom.design import (
    PhantomSettings,
    SampleVariant,
    phantom_design,
    sample_variants,
)
from ramanseg.phantom.difficulty import (
    drawn_class_map,
    harder_patient,
    random_offset,
    sample_rng,
    shift_image,
)
from ramanseg.phantom.export import EXPORT_STYLES, annotation_geojson, unclassified_feature
from ramanseg.phantom.imaging import _patient, render_images
from ramanseg.phantom.tissue import (
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
            (skipping unclassified features). With ``phantom.difficulty``'s annotation
            or registration error on, this is the drawn map, not the truth.
        annotations: the GeoJSON object written to the file (a dict or a list).
        export_style: which of :data:`EXPORT_STYLES` the annotations use.
        variant: which variants of the input contract the sample takes.
        true_class_map: the class map the annotations would give if drawn exactly on
            the SRS grid (``None``: the same as :attr:`class_map`).
        he_offset: ``(rows, columns)`` by which the H&E image is shifted relative to
            the SRS stack (``phantom.difficulty.registration_error``).
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
    true_class_map: np.ndarray | None = None
    he_offset: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if self.true_class_map is None:
            self.true_class_map = self.class_map


def generate_sample(settings: PhantomSettings, sample_index: int) -> PhantomSample:
    """Generate one sample of the phantom (images, annotations and ground truth).

    Args:
        settings: the phantom's settings (:meth:`PhantomSettings.from_config`).
        sample_index: the sample's row in :func:`phantom_design`.

    Returns:
        The sample; deterministic for ``phantom.seed`` and ``sample_index``.
    """
    design = phantom_design(settings)
    if not 0 <= sample_index < len(design):
        raise ValueError(f"sample_index must be in [0, {len(design)}), got {sample_index}")
    names = settings.annotations.class_names
    sample_id, patient_id = design.iloc[sample_index][["sample_id", "patient_id"]]
    patient_index = int(patient_id[1:]) - 1
    difficulty = settings.difficulty
    patient = harder_patient(
        _patient(settings.seed, patient_index), difficulty, settings.seed, patient_index
    )
    variant = sample_variants(settings)[sample_index]
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 3, sample_index]))
    # The variants draw from a stream of their own, so the rest is drawn as without them.
    variant_rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 6, sample_index]))
    h, w = settings.height, settings.width
    if variant.transposed:
        h, w = w, h
    tissue, depth, thickness = _tissue_map(rng, h, w, difficulty.tumour_shrink)
    if variant.immune_cells:
        tissue = add_immune_aggregates(variant_rng, tissue)
    true_class_map = _annotated_class_map(rng, tissue, names)
    srs, he = render_images(
        rng,
        tissue,
        depth,
        thickness,
        settings.channels,
        patient,
        settings.seed,
        difficulty.tumour_mixing,
    )
    # The difficulty draws from a stream of its own too; offsets are (0, 0) when off.
    difficulty_rng = sample_rng(settings.seed, sample_index)
    he_offset = random_offset(difficulty_rng, difficulty.registration_error)
    he = shift_image(he, he_offset)
    # Drawn on the H&E: the drawing follows its misregistration, plus its own error.
    slip = random_offset(difficulty_rng, difficulty.annotation_error)
    offset = (he_offset[0] + slip[0], he_offset[1] + slip[1])
    class_map = drawn_class_map(true_class_map, difficulty.annotation_error, offset)
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
        true_class_map=true_class_map,
        he_offset=he_offset,
    )
