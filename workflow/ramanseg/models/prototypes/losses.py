"""RamanSeg's losses: activation overlap, ProtoSeg's KLD diversity, cross-entropy and soft Dice
on the latent map, L1 on the readout, combined by :class:`RamanSegLoss`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ramanseg.models.prototypes.layer import (
    _check_labels,
    _check_map,
    _check_prototype_class,
    class_identity,
)

if TYPE_CHECKING:
    from ramanseg.models.ramanseg import RamanSeg, RamanSegOutput

# --------------------------------------------------------------------------------------------
# Losses.


#: The diversity penalties ``RamanSegLoss`` can use (config key ``diversity_loss``).
DIVERSITY_LOSSES = ("activation_overlap", "kld")

#: Loss weights for keys missing from ``loss_weights``: cross-entropy alone, as in ProtoSeg.
#: ``cluster`` and ``separation`` are ProtoPNet's costs (:func:`cluster_separation_costs`),
#: not in the paper's objective.
DEFAULT_LOSS_WEIGHTS = {
    "cross_entropy": 1.0,
    "dice": 0.0,
    "diversity": 0.0,
    "l1": 0.0,
    "cluster": 0.0,
    "separation": 0.0,
}


def activation_overlap_loss(similarities: Tensor, prototype_class: Tensor) -> Tensor:
    """The paper's activation overlap loss (section 3.2.2, eq. 1), normalised.

    With ``s_j^b`` the flattened similarity map of prototype ``j`` on image ``b`` (length
    ``N = h w``), ``P_c`` the prototypes of class ``c`` and ``Pi_c = {(i, j) in P_c^2 : i < j}``::

        L_AO = sum_c  1 / (B N |Pi_c|)  sum_b  sum_{(i,j) in Pi_c}  <s_i^b, s_j^b>

    i.e. for each class the mean, over its prototype pairs, images and latent positions, of the
    product of two of its prototypes' similarities; classes with fewer than two prototypes
    contribute 0. The paper's equation is lost from the extracted text; the pairwise dot
    products within each class are from its prose, the normalisation is ours (it keeps the
    weight independent of batch, map size and prototype count). The pairwise dot products
    are the entries above the diagonal of the Gram matrix ``S_c S_c^T``; we sum them without
    forming it, position by position, through::

        sum_{i<j} s_i[n] s_j[n] = ( (sum_i s_i[n])^2 - sum_i s_i[n]^2 ) / 2

    which costs ``O(P N)`` instead of ``O(P^2 N)`` and is 0 wherever at most one prototype of
    the class is active (disjoint supports give 0 up to float rounding: the two sums hold the
    same squares, added in a different order). The gradient is as simple:
    ``dL/ds_i[n] = w_c (S_c[n] - s_i[n])`` with ``S_c = sum_{j in P_c} s_j`` and ``w_c`` the
    class's normalisation. Forward and backward are written out by hand (see
    :class:`_ActivationOverlap`) rather than left to autograd, which would store and re-read
    several ``(B, P, N)`` temporaries; the loss is a memory-bound pass over the maps, and
    this cuts its cost on a CPU to about a third (``ramanseg bench-losses``).

    Args:
        similarities: ``(B, P, h, w)``, the prototype similarity maps.
        prototype_class: ``(P,)`` class index of each prototype.

    Returns:
        the scalar loss (float64 for float64 maps, float32 otherwise).

    Raises:
        ValueError: on mismatched shapes.
    """
    _check_map("similarities", similarities)
    _check_prototype_class(prototype_class, similarities.shape[1])
    batch, num = similarities.shape[:2]
    flat = similarities.reshape(batch, num, -1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()  # half-precision sums of squares over many positions overflow
    ordered, _, counts = _class_order(flat, prototype_class)
    return _ActivationOverlap.apply(ordered, counts)


class _ActivationOverlap(torch.autograd.Function):
    """:func:`activation_overlap_loss` on ``(B, P, N)`` maps in class blocks of ``counts``.

    The loss is memory-bound, so forward and backward are written to touch the maps as few
    times as possible: forward reads them twice (the column sums ``S_c`` and the sum of
    squares, one dot product of contiguous memory), backward reads them once and writes the
    gradient ``w_c (S_c - s_i)`` once. Autograd on the same expression reads and writes several
    ``(B, P, N)`` temporaries and takes two to three times as long on a CPU.
    """

    @staticmethod
    def forward(ctx: Any, flat: Tensor, counts: list[int]) -> Tensor:
        batch, _, positions = flat.shape
        weights = [
            0.0 if count < 2 else 1.0 / (count * (count - 1) / 2 * batch * positions)
            for count in counts
        ]
        blocks = torch.split(flat, counts, dim=1)
        # S_c, (B, 1, N) each; as a product with a row of ones, which BLAS runs at memory
        # speed (a reduction over the middle dimension is about twice as slow on a CPU).
        sums = [torch.matmul(block.new_ones(1, block.shape[1]), block) for block in blocks]
        loss = flat.new_zeros(())
        for column_sum, weight in zip(sums, weights, strict=True):
            if weight:
                column = column_sum.reshape(-1)
                loss = loss + 0.5 * weight * torch.dot(column, column)
        if len(set(weights)) == 1:  # one weight for every prototype: one dot over all maps
            whole = flat.reshape(-1)
            loss = loss - 0.5 * weights[0] * torch.dot(whole, whole)
        else:  # a class block is contiguous within each image
            for block, weight in zip(blocks, weights, strict=True):
                if weight:
                    for image in block:
                        values = image.reshape(-1)
                        loss = loss - 0.5 * weight * torch.dot(values, values)
        ctx.save_for_backward(flat, *sums)
        ctx.counts, ctx.weights = counts, weights
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor, None]:
        flat, *sums = ctx.saved_tensors
        grad = torch.empty_like(flat)
        for grad_block, block, column_sum, weight in zip(
            torch.split(grad, ctx.counts, dim=1),
            torch.split(flat, ctx.counts, dim=1),
            sums,
            ctx.weights,
            strict=True,
        ):
            if not weight:
                grad_block.zero_()
                continue
            scale = grad_loss * weight
            # w (S_c - s_i) in one pass over the maps: S_c w - s_i w.
            torch.addcmul(column_sum * scale, block, scale, value=-1.0, out=grad_block)
        return grad, None


def _class_order(flat: Tensor, prototype_class: Tensor) -> tuple[Tensor, list[int], list[int]]:
    """``(B, P, N)`` with its prototypes in class blocks, the classes present and block sizes.

    ``torch.split(ordered, sizes, dim=1)`` then gives one ``(B, P_c, N)`` view per class. The
    model lays prototypes out in class blocks, so ``ordered`` is ``flat`` itself; other orders
    are gathered (one copy) first.
    """
    classes = prototype_class.to(flat.device)
    counts = torch.bincount(classes).tolist()
    if bool((classes[1:] < classes[:-1]).any()):
        flat = flat.index_select(1, torch.argsort(classes, stable=True))
    present = [c for c, n in enumerate(counts) if n > 0]
    sizes = [counts[c] for c in present]
    return flat, present, sizes


def cluster_separation_costs(
    distances: Tensor, target: Tensor, prototype_class: Tensor
) -> tuple[Tensor, Tensor]:
    """ProtoPNet's cluster and separation costs (Chen et al. 2019, eq. for Clst and Sep), per
    latent position rather than per image.

    For every latent position ``n`` with label ``c`` (positions whose label is no prototype's
    class are left out)::

        Clst = mean_n  min_{j in P_c}  d_j[n]        Sep = mean_n  min_{j not in P_c}  d_j[n]

    The cluster cost pulls, for every position, the nearest prototype of its class towards
    it, so prototypes stay where their class's latent vectors are (what projection then finds
    them near); the separation cost pushes the nearest prototype of another class away and
    enters the objective with a minus sign (:class:`RamanSegLoss`).

    Args:
        distances: ``(B, P, h, w)`` squared distances at the latent size.
        target: ``(B, h, w)`` integer labels at the latent size.
        prototype_class: ``(P,)`` class index of each prototype.

    Returns:
        ``(cluster, separation)``, scalars (0 where no position counts).
    """
    _check_map("distances", distances)
    _check_prototype_class(prototype_class, distances.shape[1])
    batch, _, height, width = distances.shape
    _check_labels("target", target, batch, (height, width))
    classes = prototype_class.to(distances.device)
    own = target.unsqueeze(1) == classes.view(1, -1, 1, 1)  # (B, P, h, w)
    counted = own.any(dim=1)  # positions of a prototype class
    if not bool(counted.any()):
        zero = distances.sum() * 0.0
        return zero, zero
    infinite = torch.finfo(distances.dtype).max
    nearest_own = distances.masked_fill(~own, infinite).amin(dim=1)[counted]
    other = ~own
    has_other = other.any(dim=1) & counted
    nearest_other = distances.masked_fill(~other, infinite).amin(dim=1)[has_other]
    separation = nearest_other.mean() if nearest_other.numel() else distances.sum() * 0.0
    return nearest_own.mean(), separation


def kld_diversity_loss(distances: Tensor, target: Tensor, prototype_class: Tensor) -> Tensor:
    """ProtoSeg's KLD diversity loss (Sacha et al., "ProtoSeg", WACV 2023; their code:
    ``segmentation/module.py`` of gmum/proto-segmentation), vectorised.

    For image ``b`` and class ``c``, let ``Omega_bc`` be the latent positions whose (downsampled)
    label is ``c``. For each prototype ``j`` of class ``c``, ProtoSeg forms a distribution over
    those positions from the prototype's *distances* (not similarities; this is what their code
    and the paper's "prototype-class-image distance vectors" use)::

        v_j = softmax( (d_j[n])_{n in Omega_bc} )

    and penalises pairs of same-class prototypes with similar distributions through the
    symmetrised KL divergence (the paper names Jeffreys' divergence, the sum of both
    directions; their code averages the two directions, and we follow the code)::

        D(i, j) = ( KL(v_i || v_j) + KL(v_j || v_i) ) / 2

        L_KLD = mean over { (b, c, i, j) : i < j in P_c, |Omega_bc| >= 2 } of exp(-D(i, j))

    ``exp(-D)`` is 1 for identical distributions and tends to 0 as they separate. Terms with a
    class absent from an image (or present at a single position), and classes with fewer than
    two prototypes, are skipped, as in ProtoSeg; with no term left the loss is 0.

    Vectorisation: with ``L = log v`` (zero outside ``Omega_bc``) and ``V = v``, the matrix
    ``A = V L^T`` holds ``A[i, j] = sum_n v_i log v_j``, so ``KL(v_i || v_j) = A[i, i] - A[i, j]``
    for all pairs in one batched product.

    Args:
        distances: ``(B, P, h, w)`` squared distances at the latent size.
        target: ``(B, h, w)`` integer labels at the latent size (see :func:`downsample_labels`);
            values that are no prototype's class (e.g. an ignore index) belong to no class.
        prototype_class: ``(P,)`` class index of each prototype.

    Returns:
        the scalar loss, in ``[0, 1]``.

    Raises:
        ValueError: on mismatched shapes.
    """
    _check_map("distances", distances)
    _check_prototype_class(prototype_class, distances.shape[1])
    batch, _, height, width = distances.shape
    _check_labels("target", target, batch, (height, width))
    flat = distances.reshape(batch, distances.shape[1], height * width)
    labels = target.to(flat.device).reshape(batch, 1, height * width)
    ordered, classes, counts = _class_order(flat, prototype_class)
    blocks = torch.split(ordered, counts, dim=1)
    total = flat.new_zeros(())
    count = 0
    for block, cls, n_members in zip(blocks, classes, counts, strict=True):
        if n_members < 2:
            continue
        mask = labels == cls  # (B, 1, N)
        # Images with fewer than two positions of the class give no distribution; they are
        # computed with the rest (finite values) and weighted out, rather than removed by
        # boolean indexing, whose backward is an accumulating scatter.
        usable = mask.sum(dim=(1, 2)) >= 2  # (B,)
        n_usable = int(usable.sum())
        if n_usable == 0:
            continue
        # A finite fill (not -inf) keeps log_softmax and its gradient finite; exp() of it is 0.
        log_v = block.masked_fill(~mask, torch.finfo(block.dtype).min).log_softmax(dim=-1)
        log_v = log_v.masked_fill(~mask, 0.0)
        v = log_v.exp() * mask
        cross = torch.bmm(v, log_v.transpose(1, 2))  # (B, P_c, P_c): sum_n v_i log v_j
        self_term = torch.diagonal(cross, dim1=1, dim2=2)
        kl = self_term.unsqueeze(2) - cross  # kl[:, i, j] = KL(v_i || v_j)
        rows, cols = torch.triu_indices(n_members, n_members, offset=1, device=flat.device)
        symmetric = 0.5 * (kl[:, rows, cols] + kl[:, cols, rows])  # (B, pairs)
        weight = usable.to(symmetric.dtype).unsqueeze(1)
        total = total + (torch.exp(-symmetric) * weight).sum()
        count += n_usable * rows.numel()
    if count == 0:
        return distances.sum() * 0.0
    return total / count


def downsample_labels(
    labels: Tensor,
    size: tuple[int, int],
    num_classes: int,
    ignore_index: int | None = None,
) -> Tensor:
    """Ground-truth labels at the latent size, by area majority vote.

    Each latent cell takes the label covering the largest fraction of the image pixels it
    pools (``adaptive_avg_pool2d`` of the one-hot labels, then argmax; ties go to the lower
    label). For binary masks this is "area fraction >= 0.5 is foreground" except that an
    exact 50/50 cell is background. We prefer it to nearest-neighbour sampling, which reads one
    corner pixel of each ``stride x stride`` block and so shifts the mask by half a block.
    Pixels equal to ``ignore_index`` do not vote; a cell with only such pixels is
    ``ignore_index``.

    Args:
        labels: ``(B, H, W)`` integer labels in ``[0, num_classes)`` (or ``ignore_index``).
        size: the latent size ``(h, w)``.
        num_classes: the number of classes.
        ignore_index: a label value to ignore, or None.

    Returns:
        ``(B, h, w)`` int64 labels; ``labels`` itself (as int64) when already at ``size``.

    Raises:
        ValueError: on a bad shape or a label value outside the classes.
    """
    if not isinstance(labels, Tensor) or labels.ndim != 3:
        raise ValueError("labels must be an integer tensor of shape (B, H, W)")
    if labels.dtype.is_floating_point:
        raise ValueError(f"labels must be integer, got {labels.dtype}")
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be two positive sizes (h, w), got {size}")
    labels = labels.long()
    valid = (
        labels != ignore_index
        if ignore_index is not None
        else torch.ones_like(labels, dtype=torch.bool)
    )
    if bool(valid.any()):
        values = labels[valid]
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise ValueError(
                f"label value {bad} is outside the classes [0, {num_classes})"
                + ("" if ignore_index is None else f" and is not the ignore index {ignore_index}")
            )
    if tuple(labels.shape[1:]) == tuple(size):
        return labels
    one_hot = F.one_hot(torch.where(valid, labels, 0), num_classes).permute(0, 3, 1, 2)
    one_hot = one_hot.float() * valid.unsqueeze(1)
    votes = F.adaptive_avg_pool2d(one_hot, tuple(size))
    result = votes.argmax(dim=1)
    if ignore_index is not None:
        result = torch.where(votes.sum(dim=1) > 0, result, torch.full_like(result, ignore_index))
    return result


def soft_dice_loss(
    logits: Tensor,
    target: Tensor,
    include_background: bool = False,
    smooth: float = 1.0,
    ignore_index: int | None = None,
) -> Tensor:
    """Soft Dice loss over the batch (nnU-Net's "batch Dice")::

        L_Dice = 1 - mean_{c in K} ( 2 sum p_c g_c + smooth ) / ( sum p_c + sum g_c + smooth )

    with ``p = softmax(logits)``, ``g`` the one-hot target, sums over the batch and all
    positions (so a patch without tumour does not make the foreground Dice undefined) and
    ``K`` the foreground classes ``1 .. C-1``, or all classes with ``include_background``.

    Args:
        logits: ``(B, C, h, w)`` class logits.
        target: ``(B, h, w)`` integer labels at the same size.
        include_background: also average the Dice of class 0.
        smooth: additive smoothing of numerator and denominator (> 0).
        ignore_index: label of positions to leave out, or None.

    Returns:
        the scalar loss in ``[0, 1]``.

    Raises:
        ValueError: on mismatched shapes or a non-positive ``smooth``.
    """
    _check_map("logits", logits)
    batch, num_classes, height, width = logits.shape
    _check_labels("target", target, batch, (height, width))
    if not smooth > 0:
        raise ValueError(f"smooth must be > 0, got {smooth}")
    if num_classes < 2:
        raise ValueError("soft_dice_loss needs at least two classes")
    target = target.to(logits.device).long()
    valid = (target != ignore_index) if ignore_index is not None else torch.ones_like(target).bool()
    weights = valid.unsqueeze(1).to(logits.dtype)
    probabilities = logits.softmax(dim=1) * weights
    truth = F.one_hot(torch.where(valid, target, 0), num_classes).permute(0, 3, 1, 2)
    truth = truth.to(logits.dtype) * weights
    dims = (0, 2, 3)
    intersection = (probabilities * truth).sum(dim=dims)
    denominator = probabilities.sum(dim=dims) + truth.sum(dim=dims)
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    if not include_background:
        dice = dice[1:]
    return 1.0 - dice.mean()


def last_layer_l1(weight: Tensor, prototype_class: Tensor) -> Tensor:
    """ProtoPNet's L1 penalty on the readout's wrong-class connections::

        L_1 = sum_{c, j : class(j) != c} |w[c, j]|

    Args:
        weight: readout weight ``(num_classes, P)`` or ``(num_classes, P, 1, 1)``.
        prototype_class: ``(P,)`` class index of each prototype.

    Returns:
        the scalar penalty.
    """
    weight2d = weight.reshape(weight.shape[0], -1)
    if weight2d.shape[1] != prototype_class.numel():
        raise ValueError(
            f"readout weight {tuple(weight.shape)} does not match "
            f"{prototype_class.numel()} prototypes"
        )
    wrong = 1.0 - class_identity(prototype_class.to(weight.device), weight.shape[0]).t()
    return (weight2d * wrong.to(weight2d.dtype)).abs().sum()


@dataclass(frozen=True)
class LossTerms:
    """The objective and its unweighted components; a component is None when not computed
    (its weight is 0)."""

    total: Tensor
    cross_entropy: Tensor | None = None
    dice: Tensor | None = None
    diversity: Tensor | None = None
    l1: Tensor | None = None
    cluster: Tensor | None = None
    separation: Tensor | None = None

    def as_floats(self) -> dict[str, float]:
        """The computed terms as Python floats, for logging."""
        names = ("total", "cross_entropy", "dice", "diversity", "l1", "cluster", "separation")
        return {n: float(getattr(self, n).detach()) for n in names if getattr(self, n) is not None}


class RamanSegLoss(nn.Module):
    """RamanSeg's objective (paper eq. 2, plus the projection-free variant's Dice term)::

        L = w_CE CE(latent logits, y_lat) + w_Dice Dice(latent logits, y_lat)
            + w_div L_div + w_L1 L_1(readout) [+ w_clst Clst - w_sep Sep]

    where ``y_lat`` is the ground truth at the latent size (:func:`downsample_labels`), ``L_div``
    is :func:`activation_overlap_loss` (on similarities) or :func:`kld_diversity_loss` (on
    distances, ProtoSeg) and ``L_1`` is :func:`last_layer_l1`. Everything is computed on the
    latent map: the model has no decoder, so the latent map *is* the segmentation. ``Clst`` and
    ``Sep`` are ProtoPNet's cluster and separation costs (:func:`cluster_separation_costs`),
    outside the paper's objective (weights 0 by default).

    Args:
        loss_weights: ``{cross_entropy, dice, diversity, l1, cluster, separation}``; missing
            keys take
            :data:`DEFAULT_LOSS_WEIGHTS`.
        diversity_loss: ``activation_overlap`` or ``kld``.
        ignore_index: label value to leave out of every term, or None.
        dice_include_background: see :func:`soft_dice_loss`.

    Raises:
        ValueError: on an unknown key or diversity loss, or a negative / non-finite weight.
    """

    def __init__(
        self,
        loss_weights: Mapping[str, float] | None = None,
        diversity_loss: str = "activation_overlap",
        ignore_index: int | None = None,
        dice_include_background: bool = False,
    ) -> None:
        super().__init__()
        weights = dict(DEFAULT_LOSS_WEIGHTS)
        for key, value in (loss_weights or {}).items():
            if key not in DEFAULT_LOSS_WEIGHTS:
                raise ValueError(
                    f"unknown loss weight {key!r}; expected some of {sorted(DEFAULT_LOSS_WEIGHTS)}"
                )
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"loss weight {key!r} must be a finite number >= 0, got {value!r}")
            weights[key] = float(value)
        if diversity_loss not in DIVERSITY_LOSSES:
            raise ValueError(
                f"diversity_loss must be one of {list(DIVERSITY_LOSSES)}, got {diversity_loss!r}"
            )
        self.weights = weights
        self.diversity_loss = diversity_loss
        self.ignore_index = ignore_index
        self.dice_include_background = dice_include_background

    @classmethod
    def from_config(
        cls, entry: Mapping[str, Any], *, ignore_index: int | None = None
    ) -> RamanSegLoss:
        """The loss of a ``models.ramanseg`` / ``models.ramanseg_noproj`` config entry.

        Args:
            entry: the config entry (keys ``loss_weights``, ``diversity_loss``; others ignored).
            ignore_index: label value to leave out, or None.
        """
        return cls(
            loss_weights=entry.get("loss_weights"),
            diversity_loss=entry.get("diversity_loss", "activation_overlap"),
            ignore_index=ignore_index,
        )

    def forward(self, output: RamanSegOutput, target: Tensor, model: RamanSeg) -> LossTerms:
        """The objective for one batch.

        Args:
            output: the model's forward output (uses ``latent_logits``, ``similarities``,
                ``distances``).
            target: ``(B, H, W)`` integer ground truth at the input size (or already at the
                latent size).
            model: the model (its readout weight and prototype classes).

        Returns:
            the weighted total and the components (see :class:`LossTerms`).
        """
        latent_logits = output.latent_logits
        batch, num_classes, height, width = latent_logits.shape
        if not isinstance(target, Tensor) or target.ndim != 3 or target.shape[0] != batch:
            shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
            raise ValueError(f"target must have shape ({batch}, H, W), got {shape}")
        target = downsample_labels(
            target.to(latent_logits.device), (height, width), num_classes, self.ignore_index
        )
        prototype_class = model.prototype_layer.prototype_class
        w = self.weights
        terms: dict[str, Tensor | None] = {}
        total = latent_logits.new_zeros(())
        if w["cross_entropy"] > 0:
            ignore = -100 if self.ignore_index is None else self.ignore_index
            terms["cross_entropy"] = F.cross_entropy(latent_logits, target, ignore_index=ignore)
        if w["dice"] > 0:
            terms["dice"] = soft_dice_loss(
                latent_logits,
                target,
                include_background=self.dice_include_background,
                ignore_index=self.ignore_index,
            )
        if w["diversity"] > 0:
            if self.diversity_loss == "activation_overlap":
                terms["diversity"] = activation_overlap_loss(output.similarities, prototype_class)
            else:
                terms["diversity"] = kld_diversity_loss(output.distances, target, prototype_class)
        if w["l1"] > 0:
            terms["l1"] = last_layer_l1(model.readout.weight, prototype_class)
        if w["cluster"] > 0 or w["separation"] > 0:
            cluster, separation = cluster_separation_costs(
                output.distances, target, prototype_class
            )
            if w["cluster"] > 0:
                terms["cluster"] = cluster
            if w["separation"] > 0:
                terms["separation"] = separation
        for name, value in terms.items():
            # The separation cost is a distance to keep large: it enters with a minus sign.
            total = total + (-w[name] if name == "separation" else w[name]) * value
        return LossTerms(total=total, **terms)

    def extra_repr(self) -> str:
        return f"weights={self.weights}, diversity_loss={self.diversity_loss!r}"
