"""Phasor segmentation as a training-free baseline of the tumour table (model ``phasor``).

Each pixel's Raman bands (the preprocessed stack's ``raman`` channels, in order of
wavenumber) are its spectrum; its phasor (``hsrs.tumour.harmonics``) is placed in the
phasor plane. Two cursors, tumour and non-tumour, are placed from the training samples'
tissue pixels (a seeded subsample of ``hsrs.tumour.max_pixels``): each class's mean and
covariance. A test pixel's tumour probability is the posterior of the tumour cursor's
Gaussian, the two classes equally likely a priori; the mask is that probability at 0.5,
as for every model. Nothing is trained by gradient descent: the "fit" is two means and
two covariance matrices, stored as JSON.

The preprocessed bands are percentile-normalised and clipped to [0, 1] per channel, so the
spectrum a phasor sees is a normalised one, not raw SRS intensities: the baseline asks
how far the spectral shape alone, without spatial context, separates tumour.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ramanseg.errors import InputError
from ramanseg.fileio import json_bytes, write_files
from ramanseg.hsrs.phasor import CursorShape, PhasorCursors, compute_phasor, fit_cursors
from ramanseg.predictions import write_prediction
from ramanseg.settings import ChannelLayout

log = logging.getLogger(__name__)

CLASS_NAMES = ("non-tumour", "tumour")
TUMOUR = 1
FIX = "run fit_phasor again (snakemake deletes a failed job's outputs)"


@dataclass(frozen=True)
class TumourPhasorSettings:
    """Settings of the tumour table's phasor baseline (config section ``hsrs.tumour``).

    Attributes:
        harmonics: the harmonics of the phasor coordinates.
        median_filter: passes of the 3 x 3 median filter on G and S (0: none).
        cursor: the cursors' shape, ``elliptic`` or ``circular``.
        max_pixels: training tissue pixels subsampled to place the cursors.
    """

    harmonics: tuple[int, ...] = (1, 2)
    median_filter: int = 0
    cursor: CursorShape = "elliptic"
    max_pixels: int = 200_000

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TumourPhasorSettings:
        """The settings from the validated workflow configuration (``hsrs.tumour``)."""
        section = dict(config["hsrs"]["tumour"])
        section["harmonics"] = tuple(section["harmonics"])
        return cls(**section)


def raman_order(layout: ChannelLayout) -> list[int]:
    """The stack positions of the Raman channels, in order of wavenumber (file order where
    a wavenumber is missing).

    Raises:
        InputError: fewer than 3 Raman channels (no phasor can be computed).
    """
    indices = layout.raman_indices
    if len(indices) < 3:
        raise InputError(
            f"the phasor baseline needs at least 3 Raman channels, the configuration has "
            f"{len(indices)}",
            fix="configure the Raman bands in `channels` (role: raman)",
        )
    wavenumbers = layout.raman_wavenumbers
    if all(w is not None for w in wavenumbers):
        return [i for _, i in sorted(zip(wavenumbers, indices, strict=True))]
    return list(indices)


def tumour_features(
    stack: np.ndarray, bands: Sequence[int], settings: TumourPhasorSettings
) -> np.ndarray:
    """(Y * X, 2H) phasor coordinates of each pixel's Raman bands.

    Args:
        stack: a preprocessed stack (C, Y, X).
        bands: the Raman channels, in order of wavenumber (:func:`raman_order`).
        settings: the baseline's settings.
    """
    phasor = compute_phasor(stack[list(bands)], settings.harmonics, settings.median_filter)
    return phasor.features()


def fit_tumour_cursors(
    samples: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    bands: Sequence[int],
    settings: TumourPhasorSettings,
    seed: int = 0,
) -> PhasorCursors:
    """Place the tumour and non-tumour cursors from the training samples' tissue pixels.

    Args:
        samples: per training sample ``(sample_id, stack (C, Y, X), mask, foreground)``.
        bands: the Raman channels, in order of wavenumber.
        settings: the baseline's settings.
        seed: the subsampling seed.

    Returns:
        The two cursors (no fallback: every pixel gets a probability).

    Raises:
        InputError: no tissue pixel with a phasor of one of the classes.
    """
    features, labels = [], []
    for _, stack, mask, foreground in samples:
        tissue = foreground.reshape(-1).astype(bool)
        features.append(tumour_features(stack, bands, settings)[tissue])
        labels.append(mask.reshape(-1)[tissue])
    features, labels = np.concatenate(features), np.concatenate(labels)
    if len(labels) > settings.max_pixels:
        chosen = np.sort(
            np.random.default_rng(seed).choice(len(labels), settings.max_pixels, replace=False)
        )
        features, labels = features[chosen], labels[chosen]
    try:
        return fit_cursors(features, labels, CLASS_NAMES, settings.harmonics, shape=settings.cursor)
    except ValueError as error:
        raise InputError(
            f"the phasor baseline cannot place its cursors: {error}",
            fix="check the training samples' masks and tissue foregrounds",
        ) from error


def tumour_probability(
    cursors: PhasorCursors,
    stack: np.ndarray,
    bands: Sequence[int],
    settings: TumourPhasorSettings,
) -> np.ndarray:
    """float32 (Y, X) tumour probability of each pixel of a stack."""
    probability = cursors.probability(tumour_features(stack, bands, settings), TUMOUR)
    return probability.reshape(stack.shape[1:])


def save_tumour_cursors(
    cursors: PhasorCursors, path: str | Path, train_samples: Sequence[str], seed: int
) -> None:
    """Write the cursors as JSON, with the training samples and the seed, atomically."""
    record = {**cursors.to_dict(), "train_samples": list(train_samples), "seed": seed}
    write_files({path: json_bytes(record)})


def load_tumour_cursors(path: str | Path) -> PhasorCursors:
    """Read cursors written by :func:`save_tumour_cursors`.

    Raises:
        InputError: a missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("the phasor baseline's cursors do not exist", path=path, fix=FIX)
    try:
        return PhasorCursors.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise InputError(f"the cursors cannot be read ({error})", path=path, fix=FIX) from error


def predict_tumour(
    cursors: PhasorCursors,
    samples: Sequence[tuple[str, np.ndarray]],
    bands: Sequence[int],
    settings: TumourPhasorSettings,
    outdir: str | Path,
) -> list[Path]:
    """Predict samples and write them in the shared prediction format.

    Args:
        cursors: the fitted cursors.
        samples: ``(sample_id, stack)`` of each sample.
        bands: the Raman channels, in order of wavenumber.
        settings: the baseline's settings.
        outdir: ``results/predictions/phasor``.

    Returns:
        The mask paths written.
    """
    written = []
    for sample_id, stack in samples:
        probability = tumour_probability(cursors, stack, bands, settings)
        mask_path, _ = write_prediction(outdir, sample_id, probability)
        log.info("%s: %.1f %% of pixels tumour", sample_id, 100 * (probability >= 0.5).mean())
        written.append(mask_path)
    return written
