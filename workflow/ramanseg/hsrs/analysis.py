"""Phasor segmentation of one HSRS dataset, scored against its labels.

A dataset is a list of labelled :class:`~ramanseg.hsrs.stack.HsrsStack` (the phantom's
fields, or the one C. elegans stack). Two methods, each scored per class and fold:

* ``phasor_cursors``: cursors placed from the labels of the training part, applied to the
  held-out part. With ``hsrs.phasor.background_threshold``, pixels whose mean intensity is
  below Otsu's threshold of the training pixels' mean intensity are background first
  (the usual first step of phasor analysis: such pixels' phasors are mostly noise). With
  several stacks each stack is held out in turn (the others place
  the cursors); with one stack, its left and right halves (spatial blocks, so that the
  cursors never see the pixels they are scored on).
* ``phasor_gmm``: a Gaussian mixture with one cluster per class on all pixels' phasors,
  unsupervised; clusters are named after the classes they overlap most, over the whole
  dataset, and scored on the same folds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from skimage.filters import threshold_otsu

from ramanseg.hsrs.dice import dice_rows
from ramanseg.hsrs.phasor import (
    Phasor,
    PhasorCursors,
    PhasorSettings,
    compute_phasor,
    dice_per_class,
    fit_cursors,
    gmm_segment,
    match_clusters,
)
from ramanseg.hsrs.stack import HsrsStack, check_labelled_stacks

CURSORS_MODEL = "phasor_cursors"
#: The class that pixels below the intensity threshold take, where a dataset has it.
BACKGROUND = "background"
GMM_MODEL = "phasor_gmm"


@dataclass(frozen=True)
class Fold:
    """Which pixels of each stack place the cursors and which are scored.

    Attributes:
        name: the fold's name (``field0``, ``left``, ...).
        train: per stack, a boolean (Y, X) mask of the training pixels.
        test: per stack, a boolean (Y, X) mask of the held-out pixels.
    """

    name: str
    train: tuple[np.ndarray, ...]
    test: tuple[np.ndarray, ...]


def make_folds(stacks: Sequence[HsrsStack]) -> list[Fold]:
    """Leave one stack out; a single stack is split into its left and right halves."""
    shapes = [stack.shape for stack in stacks]
    if len(stacks) > 1:
        return [
            Fold(
                f"field{index}",
                tuple(np.full(shape, j != index) for j, shape in enumerate(shapes)),
                tuple(np.full(shape, j == index) for j, shape in enumerate(shapes)),
            )
            for index in range(len(stacks))
        ]
    left = np.zeros(shapes[0], dtype=bool)
    left[:, : shapes[0][1] // 2] = True
    return [Fold("left", (~left,), (left,)), Fold("right", (left,), (~left,))]


@dataclass(frozen=True)
class PhasorAnalysis:
    """The result of :func:`analyse_dataset`.

    Attributes:
        phasors: each stack's phasor image.
        cursors: the cursors placed from all labels (for the plot and the record).
        clusters: the Gaussian-mixture clusters as cursors, named after their classes.
        predictions: per stack, method -> (Y, X) labels (each pixel from the fold that
            holds it out; -1: none).
        rows: the Dice table rows (:mod:`ramanseg.hsrs.dice`).
    """

    phasors: tuple[Phasor, ...]
    cursors: PhasorCursors
    clusters: PhasorCursors
    predictions: tuple[dict[str, np.ndarray], ...]
    rows: tuple[dict, ...]


def _pixels(phasors: Sequence[Phasor], stacks: Sequence[HsrsStack], masks) -> tuple:
    features = np.concatenate(
        [p.features()[m.ravel()] for p, m in zip(phasors, masks, strict=True)]
    )
    labels = np.concatenate([s.labels[m] for s, m in zip(stacks, masks, strict=True)])
    return features, labels


def analyse_dataset(
    dataset: str, stacks: Sequence[HsrsStack], settings: PhasorSettings
) -> PhasorAnalysis:
    """Segment a labelled dataset by phasor cursors and by clustering, and score both.

    Args:
        dataset: the dataset's name (for the table).
        stacks: its stacks, all labelled, with the same classes.
        settings: the phasor settings.

    Returns:
        The analysis.

    Raises:
        ValueError: no stacks, an unlabelled stack, stacks with different classes, or a
            class without training pixels in a fold.
    """
    # Phasors are computed stack by stack, so the band counts are not checked here.
    class_names = check_labelled_stacks(dataset, stacks, same_bands=False)
    n_classes = len(class_names)
    phasors = tuple(
        compute_phasor(s.cube, settings.harmonics, settings.median_filter) for s in stacks
    )
    cursor_options = {"shape": settings.cursor, "sigma": settings.sigma}
    predictions = [
        {name: np.full(s.shape, -1, dtype=np.int16) for name in (CURSORS_MODEL, GMM_MODEL)}
        for s in stacks
    ]
    folds = make_folds(stacks)
    for fold in folds:
        features, labels = _pixels(phasors, stacks, fold.train)
        cursors = fit_cursors(features, labels, class_names, settings.harmonics, **cursor_options)
        threshold = None
        if settings.background_threshold and BACKGROUND in class_names:
            threshold = threshold_otsu(
                np.concatenate([p.mean[m] for p, m in zip(phasors, fold.train, strict=True)])
            )
        for phasor, mask, prediction in zip(phasors, fold.test, predictions, strict=True):
            predicted = cursors.classify(phasor.features()[mask.ravel()])
            if threshold is not None:
                predicted[phasor.mean[mask] < threshold] = class_names.index(BACKGROUND)
            prediction[CURSORS_MODEL][mask] = predicted

    all_masks = tuple(np.ones(s.shape, dtype=bool) for s in stacks)
    features, labels = _pixels(phasors, stacks, all_masks)
    cursors = fit_cursors(features, labels, class_names, settings.harmonics, **cursor_options)
    clusters, mixture = gmm_segment(features, n_classes, seed=settings.seed)
    named = match_clusters(clusters, labels, n_classes)
    start = 0
    for stack, prediction in zip(stacks, predictions, strict=True):
        size = stack.labels.size
        prediction[GMM_MODEL] = named[start : start + size].reshape(stack.shape)
        start += size
    # Each cluster is drawn with the name of the class it was matched to.
    cluster_names = []
    for cluster in range(n_classes):
        members = named[clusters == cluster]
        matched = int(members[0]) if len(members) else -1
        cluster_names.append(class_names[matched] if matched >= 0 else f"cluster {cluster}")
    cluster_cursors = PhasorCursors(
        class_names=tuple(cluster_names),
        harmonics=tuple(settings.harmonics),
        centers=mixture.means_,
        covariances=mixture.covariances_,
        shape="elliptic",
        sigma=settings.sigma,
    )

    rows = []
    for model in (CURSORS_MODEL, GMM_MODEL):
        for fold in folds:
            predicted = np.concatenate(
                [p[model][m] for p, m in zip(predictions, fold.test, strict=True)]
            )
            truth = np.concatenate([s.labels[m] for s, m in zip(stacks, fold.test, strict=True)])
            dice = dice_per_class(predicted, truth, n_classes)
            rows += dice_rows(dataset, model, fold.name, class_names, dice)
    return PhasorAnalysis(phasors, cursors, cluster_cursors, tuple(predictions), tuple(rows))
