"""A harder phantom: what makes real data hard, each knob 0 (off) by default.

``phantom.difficulty`` models five departures of real data from the default phantom:
annotations drawn on the H&E (smoothed and offset), the H&E misregistered to the SRS
stack, a wider per-patient spectral shift and gain, tumour whose spectrum is partly
epithelial, and a smaller tumour share. Every knob draws from random streams of its own
(``SeedSequence([seed, 7, i])`` for sample ``i``, ``[seed, 8, p]`` for patient ``p``),
so with every knob at 0 the output is byte-identical to the phantom without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Difficulty:
    """The ``phantom.difficulty`` knobs (0 = the default phantom's behaviour).

    Attributes:
        annotation_error: how imprecisely the annotations are drawn (px): each class
            region is smoothed with a Gaussian of this s.d. and the whole drawing offset
            by this many pixels in a random direction, as a pathologist drawing on the
            H&E at low magnification would. The written GeoJSON then differs from the
            truth (``PhantomSample.true_class_map``).
        registration_error: the H&E image is shifted by this many pixels (rounded, in a
            random direction per sample) relative to the SRS stack; the annotations,
            drawn on the H&E, shift with it.
        patient_shift: an extra per-patient spectral shift of the peaks, uniform in
            ``+-patient_shift`` cm-1 (on top of the default +-4 cm-1).
        patient_gain: the s.d. of an extra per-patient log-normal gain (default 0.1).
        tumour_mixing: the fraction of the tumour's Raman spectrum that is epithelial
            (0: the tumour spectrum; 1: indistinguishable from epithelium in the bands).
        tumour_shrink: shrinks each sample's tumour share of the tissue by this fraction
            (0: 5-50 % of the tissue; 0.5: 2.5-25 %).
    """

    annotation_error: float = 0.0
    registration_error: float = 0.0
    patient_shift: float = 0.0
    patient_gain: float = 0.0
    tumour_mixing: float = 0.0
    tumour_shrink: float = 0.0

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> Difficulty:
        """The knobs from a validated ``phantom.difficulty`` section (the schema fills in
        every knob's default, 0).

        Args:
            section: the section.
        """
        return cls(**{f.name: float(section[f.name]) for f in fields(cls)})

    @property
    def active(self) -> bool:
        """Whether any knob is on."""
        return any(getattr(self, f.name) for f in fields(self))


#: The knobs' names, as the schema's ``phantom.difficulty`` keys.
DIFFICULTY_KNOBS = tuple(f.name for f in fields(Difficulty))


def sample_rng(seed: int, sample_index: int) -> np.random.Generator:
    """The random stream of one sample's difficulty (``[seed, 7, sample_index]``)."""
    return np.random.default_rng(np.random.SeedSequence([seed, 7, sample_index]))


def harder_patient(
    patient: Mapping[str, float], difficulty: Difficulty, seed: int, patient_index: int
) -> dict[str, float]:
    """A patient's acquisition with the extra spectral shift and gain.

    Args:
        patient: the patient's default shift, gain and stain strengths.
        difficulty: the knobs (``patient_shift``, ``patient_gain``).
        seed: ``phantom.seed``.
        patient_index: the patient (0-based), for its stream ``[seed, 8, patient_index]``.

    Returns:
        A copy of ``patient`` with shift and gain changed (unchanged when both knobs are 0).
    """
    patient = dict(patient)
    if difficulty.patient_shift or difficulty.patient_gain:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 8, patient_index]))
        patient["shift"] += float(rng.uniform(-1.0, 1.0)) * difficulty.patient_shift
        patient["gain"] *= float(rng.lognormal(0.0, 1.0)) ** difficulty.patient_gain
    return patient


def random_offset(rng: np.random.Generator, distance: float) -> tuple[int, int]:
    """A whole-pixel offset ``(rows, columns)`` of about ``distance`` px, random direction.

    Args:
        rng: the sample's difficulty stream.
        distance: the offset's length (px); 0 gives ``(0, 0)`` without drawing.
    """
    if distance <= 0:
        return 0, 0
    angle = rng.uniform(0.0, 2.0 * np.pi)
    return round(distance * np.sin(angle)), round(distance * np.cos(angle))


def shift_image(image: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    """Shift an image's first two axes by whole pixels, repeating the edge pixels.

    Args:
        image: ``(Y, X)`` or ``(Y, X, ...)``.
        offset: ``(rows, columns)``; positive moves the content down / right.
    """
    if offset == (0, 0):
        return image
    shift = (*offset, *([0] * (image.ndim - 2)))
    return ndimage.shift(image, shift, order=0, mode="nearest")


def drawn_class_map(class_map: np.ndarray, smoothing: float, offset: tuple[int, int]) -> np.ndarray:
    """The class map as drawn on the H&E: each region smoothed, the drawing offset.

    Args:
        class_map: the true annotated class map (0 = not annotated).
        smoothing: the s.d. (px) of the Gaussian that rounds every region (0: none).
        offset: ``(rows, columns)`` by which the drawing is off.

    Returns:
        The drawn class map (same shape and values); each pixel takes the class with
        the most weight nearby, so small regions and thin holes may vanish.
    """
    drawn = class_map
    if smoothing > 0:
        values = np.unique(class_map)
        masks = [(class_map == value).astype(np.float32) for value in values]
        weights = np.stack([ndimage.gaussian_filter(mask, smoothing) for mask in masks])
        drawn = values[np.argmax(weights, axis=0)].astype(class_map.dtype)
    return shift_image(drawn, offset)
