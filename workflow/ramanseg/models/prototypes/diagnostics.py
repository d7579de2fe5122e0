"""Checks that RamanSeg's prototypes mean something: distinct, diverse and pure.

* :func:`distinct_groups`: which prototype vectors are the same vector (projection can put
  several prototypes on one latent patch; k-means and the gallery must count them once);
* :func:`class_summary` and :func:`collapse_messages`: per class, the number of prototypes,
  of distinct source patches and of distinct vectors, and the mean purity (own-class fraction)
  of the source regions; a class whose prototypes share source patches has *collapsed*;
* :func:`diversity_diagnostics`: per class, the pairwise distances of the prototype vectors,
  the overlap (Pearson correlation) of their similarity maps on a set of images, and what
  the activation overlap loss contributes next to the cross-entropy (loss values and
  gradient norms on the prototypes), for the training's log and the projection record in
  ``model.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ramanseg.models.prototypes.losses import activation_overlap_loss, downsample_labels

if TYPE_CHECKING:
    from ramanseg.models.prototypes.projection import PrototypeRecord
    from ramanseg.models.ramanseg import RamanSeg

log = logging.getLogger(__name__)

#: Two prototype vectors are the same when no entry differs by more than this (latent values
#: lie in [0, 1]; projected duplicates are bit-identical).
DISTINCT_ATOL = 1e-6


def distinct_groups(vectors: Any, atol: float = DISTINCT_ATOL) -> np.ndarray:
    """The index of the first vector equal to each vector (within ``atol``, entrywise).

    Args:
        vectors: ``(P, ...)``, flattened to ``(P, features)``.
        atol: the largest entrywise difference of two equal vectors.

    Returns:
        ``(P,)`` integers: ``groups[i] == i`` for the first of every distinct vector, so
        ``len(np.unique(groups))`` is the number of distinct vectors.
    """
    data = np.asarray(vectors, dtype=np.float64)
    data = data.reshape(data.shape[0], -1)
    groups = np.full(data.shape[0], -1, dtype=np.int64)
    for i in range(data.shape[0]):
        if groups[i] < 0:
            same = np.abs(data - data[i]).max(axis=1) <= atol
            groups[same & (groups < 0)] = i
    return groups


def class_summary(
    records: Sequence[PrototypeRecord],
    vectors: Any | None = None,
    class_names: Sequence[str] = ("background", "tumour"),
) -> list[dict[str, Any]]:
    """Per prototype class: prototypes, distinct source patches and vectors, mean purity.

    Args:
        records: the projection records (``prototype_class``, ``source``, ``purity``).
        vectors: the prototype vectors ``(P, ...)`` in prototype order, or None.
        class_names: a name per class index.

    Returns:
        One dict per class present, in class order: ``class``, ``name``, ``prototypes``,
        ``distinct_patches``, ``distinct_vectors`` (None without ``vectors``),
        ``mean_purity`` (the mean own-class fraction of the source regions over the
        prototypes; None if the records hold no purity) and ``collapsed`` (some prototypes
        of the class share a source patch or a vector).
    """
    groups = distinct_groups(vectors) if vectors is not None else None
    rows = []
    for label in sorted({int(r.prototype_class) for r in records}):
        members = [r for r in records if int(r.prototype_class) == label]
        purities = [r.purity for r in members if r.purity is not None]
        patches = len({r.source for r in members})
        distinct = len({int(groups[r.prototype]) for r in members}) if groups is not None else None
        rows.append(
            {
                "class": label,
                "name": class_names[label] if label < len(class_names) else f"class {label}",
                "prototypes": len(members),
                "distinct_patches": patches,
                "distinct_vectors": distinct,
                "mean_purity": float(np.mean(purities)) if purities else None,
                "collapsed": patches < len(members)
                or (distinct is not None and distinct < len(members)),
            }
        )
    return rows


def collapse_messages(summary: Sequence[dict[str, Any]]) -> list[str]:
    """One loud line per collapsed class of :func:`class_summary`, none if none collapsed."""
    lines = []
    for row in summary:
        if row["collapsed"]:
            distinct = min(
                row["distinct_patches"],
                row["distinct_vectors"] if row["distinct_vectors"] is not None else 10**9,
            )
            lines.append(
                f"PROTOTYPE COLLAPSE: the {row['prototypes']} {row['name']} prototypes are only "
                f"{distinct} distinct ({row['prototypes'] - distinct} duplicate another); "
                "set models.ramanseg.projection_assignment: distinct"
            )
    return lines


def log_summary(summary: Sequence[dict[str, Any]]) -> None:
    """Log each class of :func:`class_summary`, and a warning per collapsed class."""
    for row in summary:
        log.info(
            "%s prototypes: %d distinct source patches of %d, mean purity of their source "
            "regions %.2f",
            row["name"],
            row["distinct_patches"],
            row["prototypes"],
            row["mean_purity"] if row["mean_purity"] is not None else float("nan"),
        )
    for line in collapse_messages(summary):
        log.warning(line)


def log_diversity(rows: Sequence[dict[str, Any]], stage: str, epoch: int) -> None:
    """Log the rows of :func:`diversity_diagnostics` measured at ``stage`` (epoch ``epoch``)."""
    for row in rows:
        log.info(
            "prototypes %s (epoch %d), class %d: %d of %d distinct, pairwise squared distance "
            "min %.3g mean %.3g, similarity-map correlation mean %.3f max %.3f, gradient norm "
            "cross-entropy %.3g, weighted overlap %.3g",
            stage,
            epoch,
            row["class"],
            row["distinct_vectors"],
            row["prototypes"],
            row["min_pairwise_distance"] or 0.0,
            row["mean_pairwise_distance"] or 0.0,
            row["mean_map_overlap"] or 0.0,
            row["max_map_overlap"] or 0.0,
            row["grad_norm_cross_entropy"],
            row["grad_norm_weighted_overlap"],
        )


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    mask = ~torch.eye(matrix.shape[0], dtype=torch.bool, device=matrix.device)
    return matrix[mask]


def diversity_diagnostics(
    model: RamanSeg,
    images: Sequence[Any],
    masks: Sequence[Any],
    *,
    diversity_weight: float,
    device: torch.device | str | None = None,
) -> list[dict[str, Any]]:
    """Per class: how far apart the prototypes are and what keeps them apart.

    On whole images, in eval mode (no dropout): the pairwise squared L2 distances of the
    class's prototype vectors (min, mean); the overlap of their similarity maps over all
    images as the Pearson correlation of each pair (mean and max over pairs; log similarities
    share a large offset, so their plain cosine is near 1 whatever they show); the
    activation overlap loss (mean over images) and the cross-entropy at the latent size; and
    the norms of the gradients of
    ``diversity_weight * overlap`` and of the cross-entropy with respect to the class's
    prototypes (summed over images), i.e. how hard each term pulls the prototypes.

    Args:
        model: a :class:`~ramanseg.models.ramanseg.RamanSeg` (not changed).
        images: ``(C, H, W)`` images.
        masks: their ground truth ``(H, W)``.
        diversity_weight: the configured weight of the diversity term.
        device: where to compute (the model's by default).

    Returns:
        One dict per class with the numbers above (floats).
    """
    layer = model.prototype_layer
    device = torch.device(device) if device is not None else layer.prototypes.device
    prototype_class = layer.prototype_class.to(device)
    was_training, requires = model.training, layer.prototypes.requires_grad
    model.eval()
    layer.prototypes.requires_grad_(True)
    maps: list[torch.Tensor] = []
    overlap_sum = ce_sum = 0.0
    grad_ce = torch.zeros_like(layer.prototypes)
    grad_ao = torch.zeros_like(layer.prototypes)
    try:
        for image, mask in zip(images, masks, strict=True):
            x = torch.as_tensor(np.asarray(image), dtype=torch.float32, device=device)[None]
            output = model(x)
            size = tuple(output.latent_logits.shape[2:])
            truth = torch.as_tensor(np.asarray(mask), dtype=torch.int64, device=device)[None]
            target = downsample_labels(truth, size, model.num_classes)
            ce = F.cross_entropy(output.latent_logits, target)
            overlap = activation_overlap_loss(output.similarities, prototype_class)
            grad_ce += torch.autograd.grad(ce, layer.prototypes, retain_graph=True)[0]
            grad_ao += torch.autograd.grad(diversity_weight * overlap, layer.prototypes)[0]
            overlap_sum += float(overlap.detach())
            ce_sum += float(ce.detach())
            maps.append(output.similarities.detach()[0].flatten(1))
    finally:
        layer.prototypes.requires_grad_(requires)
        model.train(was_training)
    similarity = torch.cat(maps, dim=1)  # (P, all positions)
    vectors = layer.prototypes.detach().flatten(1).double()
    groups = distinct_groups(vectors.cpu().numpy())
    rows = []
    for label in torch.unique(prototype_class).tolist():
        members = torch.nonzero(prototype_class == label).flatten()
        pairs = _off_diagonal(torch.cdist(vectors[members], vectors[members]).pow(2))
        maps = similarity[members].double()
        unit = F.normalize(maps - maps.mean(dim=1, keepdim=True), dim=1)
        cosine = _off_diagonal(unit @ unit.t())
        rows.append(
            {
                "class": int(label),
                "prototypes": int(members.numel()),
                "distinct_vectors": len({int(groups[j]) for j in members.tolist()}),
                "min_pairwise_distance": float(pairs.min()) if pairs.numel() else None,
                "mean_pairwise_distance": float(pairs.mean()) if pairs.numel() else None,
                "mean_map_overlap": float(cosine.mean()) if cosine.numel() else None,
                "max_map_overlap": float(cosine.max()) if cosine.numel() else None,
                "activation_overlap": overlap_sum / len(maps),
                "weighted_activation_overlap": diversity_weight * overlap_sum / len(maps),
                "cross_entropy": ce_sum / len(maps),
                "grad_norm_cross_entropy": float(grad_ce[members].norm()),
                "grad_norm_weighted_overlap": float(grad_ao[members].norm()),
            }
        )
    return rows
