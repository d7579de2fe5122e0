"""The prototype machinery of RamanSeg: distances, similarities, losses, initialisation, projection.

RamanSeg (paper section 3.2) adapts ProtoSeg (Sacha et al., WACV 2023), itself an adaptation of
ProtoPNet (Chen et al., NeurIPS 2019), to per-pixel tumour segmentation of SRS images. Everything
here works on the latent map ``z`` of shape ``(B, D, h, w)`` produced by the network's feature
extractor and add-on layers (see :mod:`ramanseg.models.ramanseg`):

* :class:`PrototypeLayer` holds ``P`` prototypes of shape ``(D, k, k)`` and computes, for every
  latent position, the squared L2 distance to every prototype (by convolution) and ProtoPNet's
  log similarity;
* the losses: the paper's activation overlap loss, ProtoSeg's KLD diversity loss (the config
  alternative), cross-entropy and soft Dice on the latent map, and the L1 penalty on the class
  readout's wrong-class connections, combined by :class:`RamanSegLoss`;
* prototype projection (ProtoPNet's "push") with the records needed to interpret each prototype,
  and :func:`prototype_gallery`, a figure of the prototypes' source regions.

Prototype ``j`` belongs to class ``prototype_class[j]``; the model lays prototypes out in class
blocks (the first ``P_c`` prototypes are class 0, ...), but nothing here relies on that order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor, nn

from ramanseg.fileio import write_files, write_json

if TYPE_CHECKING:
    from ramanseg.models.ramanseg import RamanSeg, RamanSegOutput

__all__ = [
    "DEFAULT_LOSS_WEIGHTS",
    "DIVERSITY_LOSSES",
    "LossTerms",
    "PrototypeLayer",
    "PrototypeRecord",
    "RamanSegLoss",
    "activation_overlap_loss",
    "class_identity",
    "downsample_labels",
    "high_activation_bbox",
    "init_last_layer_",
    "kld_diversity_loss",
    "l2_distance_map",
    "last_layer_l1",
    "log_similarity",
    "project_prototypes",
    "prototype_gallery",
    "soft_dice_loss",
    "write_projection_json",
    "xavier_prototype_bound",
    "xavier_prototype_init_",
]

#: The diversity penalties ``RamanSegLoss`` can use (config key ``diversity_loss``).
DIVERSITY_LOSSES = ("activation_overlap", "kld")

#: Loss weights for keys missing from ``loss_weights``: cross-entropy alone, as in ProtoSeg.
DEFAULT_LOSS_WEIGHTS = {"cross_entropy": 1.0, "dice": 0.0, "diversity": 0.0, "l1": 0.0}


# --------------------------------------------------------------------------------------------
# Argument checks shared by the functions below.


def _check_map(name: str, tensor: Tensor, channels: int | None = None) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(tensor.shape)}")
    if channels is not None and tensor.shape[1] != channels:
        raise ValueError(
            f"{name} has {tensor.shape[1]} channels, expected {channels} (one per prototype)"
        )


def _check_prototype_class(prototype_class: Tensor, num_prototypes: int | None = None) -> None:
    if not isinstance(prototype_class, Tensor) or prototype_class.ndim != 1:
        raise ValueError("prototype_class must be a 1-D integer tensor (one class per prototype)")
    if prototype_class.dtype.is_floating_point or prototype_class.dtype == torch.bool:
        raise ValueError(f"prototype_class must be integer, got {prototype_class.dtype}")
    if num_prototypes is not None and prototype_class.numel() != num_prototypes:
        raise ValueError(
            f"prototype_class has {prototype_class.numel()} entries for {num_prototypes} prototypes"
        )
    if prototype_class.numel() and int(prototype_class.min()) < 0:
        raise ValueError("prototype_class must be non-negative")


def _check_labels(name: str, labels: Tensor, batch: int, size: tuple[int, int]) -> None:
    if not isinstance(labels, Tensor) or labels.ndim != 3:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{name} must be an integer tensor of shape (B, H, W), got {shape}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {labels.dtype}")
    if labels.shape[0] != batch or tuple(labels.shape[1:]) != tuple(size):
        raise ValueError(
            f"{name} has shape {tuple(labels.shape)}, expected ({batch}, {size[0]}, {size[1]})"
        )


# --------------------------------------------------------------------------------------------
# Distances and similarities.


def l2_distance_map(latent: Tensor, prototypes: Tensor) -> Tensor:
    """Squared L2 distance between every prototype and every k x k latent patch, by convolution.

    With ``z`` the latent map zero-padded by ``r = k // 2`` on each side and ``z_(y,x)`` its
    k x k window centred on latent position ``(y, x)``::

        d[b, j, y, x] = ||z_(y,x) - p_j||^2
                      = conv(z^2, 1)[y, x] - 2 conv(z, p_j)[y, x] + ||p_j||^2,   clamped at 0

    (ProtoPNet's expansion; no ``unfold``, so memory stays ``O(B P h w)``). The clamp removes
    the small negative values the expansion's cancellation produces.

    Padding: zero padding of ``r`` keeps the output at the latent size ``(h, w)`` for odd
    ``k``, which the per-position classification needs (one similarity per latent cell). We
    pad with zeros rather than replicating the border because the expansion above is then
    exact for the padded map (a padded convolution *is* a convolution of the zero-padded map)
    and because the add-on layers end in a sigmoid, so a zero vector never occurs inside the
    image: a border window is visibly "partly outside". Projection, by default, only uses
    windows that lie fully inside the map (see :func:`project_prototypes`).

    Args:
        latent: latent map, shape ``(B, D, h, w)``.
        prototypes: prototypes, shape ``(P, D, k, k)`` with ``k`` odd.

    Returns:
        distances of shape ``(B, P, h, w)``, non-negative, dtype of ``latent``.

    Raises:
        ValueError: on mismatched depths, non-square or even-sized prototypes.
    """
    _check_map("latent", latent)
    if prototypes.ndim != 4:
        raise ValueError(f"prototypes must have shape (P, D, k, k), got {tuple(prototypes.shape)}")
    _, depth, k, k2 = prototypes.shape
    if k != k2 or k % 2 == 0:
        raise ValueError(f"prototypes must be k x k with k odd, got {k} x {k2}")
    if latent.shape[1] != depth:
        raise ValueError(f"latent depth {latent.shape[1]} does not match prototype depth {depth}")
    prototypes = prototypes.to(dtype=latent.dtype)
    pad = k // 2
    if k == 1:
        # A 1 x 1 window: the patch energy is the per-position channel sum, no convolution.
        z2 = (latent * latent).sum(dim=1, keepdim=True)
    else:
        ones = latent.new_ones((1, depth, k, k))
        z2 = F.conv2d(latent * latent, ones, padding=pad)
    zp = F.conv2d(latent, prototypes, padding=pad)
    p2 = (prototypes * prototypes).sum(dim=(1, 2, 3)).view(1, -1, 1, 1)
    return (z2 - 2.0 * zp + p2).clamp_min(0.0)


def log_similarity(distances: Tensor, epsilon: float = 1e-4) -> Tensor:
    """ProtoPNet's similarity of a squared distance: ``log((d + 1) / (d + eps))``.

    Decreasing in ``d``, ``log(1 / eps)`` at ``d = 0`` and tending to 0 for large ``d``. Computed
    as ``log1p(d) - log(d + eps)``, which is the same value without the quotient's rounding.

    Args:
        distances: non-negative squared distances, any shape.
        epsilon: the ``eps`` above, > 0 (ProtoPNet: 1e-4).

    Returns:
        similarities, same shape as ``distances``, all > 0.

    Raises:
        ValueError: if ``epsilon`` is not positive.
    """
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    return torch.log1p(distances) - torch.log(distances + epsilon)


def xavier_prototype_bound(shape: Sequence[int]) -> float:
    """The bound ``a`` of the Xavier-style uniform prototype initialisation ``U(-a, a)``.

    The paper's equation (3) is lost from the extracted text; our reading treats the prototype
    tensor as what it is used as, the weight of a convolution from ``D`` latent channels to
    ``P`` distance channels with a ``k x k`` kernel, and applies Glorot & Bengio's rule to it::

        a = sqrt(6 / (fan_in + fan_out)),   fan_in = D k^2,   fan_out = P k^2

    which is also what ``torch.nn.init.xavier_uniform_`` computes for a ``(P, D, k, k)`` tensor.

    Args:
        shape: the prototype tensor's shape ``(P, D, k, k)``.

    Returns:
        the bound ``a``.

    Raises:
        ValueError: if ``shape`` is not four positive sizes.
    """
    if len(shape) != 4 or any(int(s) < 1 for s in shape):
        raise ValueError(f"prototype shape must be four positive sizes (P, D, k, k), got {shape}")
    num, depth, kh, kw = (int(s) for s in shape)
    fan_in = depth * kh * kw
    fan_out = num * kh * kw
    return math.sqrt(6.0 / (fan_in + fan_out))


def xavier_prototype_init_(prototypes: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``prototypes`` (shape ``(P, D, k, k)``) in place from ``U(-a, a)``.

    See :func:`xavier_prototype_bound` for ``a``.

    Args:
        prototypes: the tensor to fill.
        generator: optional random generator (the global one otherwise).

    Returns:
        ``prototypes``, filled.
    """
    bound = xavier_prototype_bound(prototypes.shape)
    with torch.no_grad():
        prototypes.uniform_(-bound, bound, generator=generator)
    return prototypes


def class_identity(prototype_class: Tensor, num_classes: int) -> Tensor:
    """One-hot class membership of the prototypes, shape ``(P, num_classes)``, float.

    Args:
        prototype_class: class index of each prototype, shape ``(P,)``.
        num_classes: the number of classes.

    Returns:
        ``M`` with ``M[j, c] = 1`` iff prototype ``j`` belongs to class ``c``.

    Raises:
        ValueError: if a class index is outside ``[0, num_classes)``.
    """
    _check_prototype_class(prototype_class)
    if prototype_class.numel() and int(prototype_class.max()) >= num_classes:
        raise ValueError(
            f"prototype_class holds class {int(prototype_class.max())}, "
            f"but there are {num_classes} classes"
        )
    return F.one_hot(prototype_class.long(), num_classes).float()


def init_last_layer_(
    weight: Tensor, prototype_class: Tensor, incorrect_strength: float = -0.5
) -> Tensor:
    """ProtoPNet's class-readout initialisation: +1 to the own class, ``incorrect_strength`` else.

    Args:
        weight: the readout weight, shape ``(num_classes, P)`` or ``(num_classes, P, 1, 1)``.
        prototype_class: class index of each prototype, shape ``(P,)``.
        incorrect_strength: the weight of a wrong-class connection (ProtoPNet: -0.5).

    Returns:
        ``weight``, filled in place.

    Raises:
        ValueError: if the weight's shape does not match the prototypes and classes.
    """
    num_classes = weight.shape[0]
    if weight.ndim not in (2, 4) or weight.shape[1] != prototype_class.numel():
        raise ValueError(
            f"readout weight of shape {tuple(weight.shape)} does not map "
            f"{prototype_class.numel()} prototypes to classes"
        )
    if weight.ndim == 4 and tuple(weight.shape[2:]) != (1, 1):
        raise ValueError(f"the readout must be a 1 x 1 convolution, got {tuple(weight.shape)}")
    own = class_identity(prototype_class, num_classes).t().to(weight)  # (num_classes, P)
    values = own + incorrect_strength * (1.0 - own)
    with torch.no_grad():
        weight.copy_(values.view(weight.shape))
    return weight


class PrototypeLayer(nn.Module):
    """``P = num_classes * prototypes_per_class`` learnable prototypes of shape ``(D, k, k)``.

    Prototypes are laid out in class blocks: prototype ``j`` belongs to class
    ``j // prototypes_per_class`` (the buffer ``prototype_class``), as in ProtoPNet.

    Args:
        num_classes: number of classes (>= 2).
        prototypes_per_class: prototypes of each class (>= 1).
        channels: the latent depth ``D``.
        size: the spatial size ``k`` of a prototype (odd; RamanSeg 1, projection-free 3).
        epsilon: the ``eps`` of :func:`log_similarity`.

    Raises:
        ValueError: on a non-positive count, an even ``size`` or a non-positive ``epsilon``.
    """

    def __init__(
        self,
        num_classes: int,
        prototypes_per_class: int,
        channels: int,
        size: int = 1,
        epsilon: float = 1e-4,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if prototypes_per_class < 1:
            raise ValueError(f"prototypes_per_class must be >= 1, got {prototypes_per_class}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if size < 1 or size % 2 == 0:
            raise ValueError(f"prototype size must be odd and >= 1, got {size}")
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        self.num_classes = num_classes
        self.prototypes_per_class = prototypes_per_class
        self.channels = channels
        self.size = size
        self.epsilon = float(epsilon)
        total = num_classes * prototypes_per_class
        self.prototypes = nn.Parameter(torch.empty(total, channels, size, size))
        self.register_buffer(
            "prototype_class",
            torch.arange(num_classes).repeat_interleave(prototypes_per_class),
        )
        self.reset_parameters()

    @property
    def num_prototypes(self) -> int:
        """The total number of prototypes ``P``."""
        return self.prototypes.shape[0]

    def reset_parameters(self) -> None:
        """Re-draw the prototypes with :func:`xavier_prototype_init_`."""
        xavier_prototype_init_(self.prototypes)

    def distances(self, latent: Tensor) -> Tensor:
        """Squared L2 distances ``(B, P, h, w)``, computed in at least float32.

        The expansion in :func:`l2_distance_map` cancels catastrophically in half precision, so
        autocast is switched off here and low-precision inputs are promoted.
        """
        dtype = torch.promote_types(latent.dtype, torch.float32)
        with torch.autocast(device_type=latent.device.type, enabled=False):
            return l2_distance_map(latent.to(dtype), self.prototypes.to(dtype))

    def forward(self, latent: Tensor) -> tuple[Tensor, Tensor]:
        """Distances and log similarities to every prototype.

        Args:
            latent: latent map ``(B, D, h, w)``.

        Returns:
            ``(distances, similarities)``, each ``(B, P, h, w)``.
        """
        distances = self.distances(latent)
        return distances, log_similarity(distances, self.epsilon)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, prototypes_per_class={self.prototypes_per_class}, "
            f"channels={self.channels}, size={self.size}, epsilon={self.epsilon}"
        )


# --------------------------------------------------------------------------------------------
# Losses.


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

    def as_floats(self) -> dict[str, float]:
        """The computed terms as Python floats, for logging."""
        names = ("total", "cross_entropy", "dice", "diversity", "l1")
        return {n: float(getattr(self, n).detach()) for n in names if getattr(self, n) is not None}


class RamanSegLoss(nn.Module):
    """RamanSeg's objective (paper eq. 2, plus the projection-free variant's Dice term)::

        L = w_CE CE(latent logits, y_lat) + w_Dice Dice(latent logits, y_lat)
            + w_div L_div + w_L1 L_1(readout)

    where ``y_lat`` is the ground truth at the latent size (:func:`downsample_labels`), ``L_div``
    is :func:`activation_overlap_loss` (on similarities) or :func:`kld_diversity_loss` (on
    distances, ProtoSeg) and ``L_1`` is :func:`last_layer_l1`. Everything is computed on the
    latent map: the model has no decoder, so the latent map *is* the segmentation.

    Args:
        loss_weights: ``{cross_entropy, dice, diversity, l1}``; missing keys take
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
        for name, value in terms.items():
            total = total + w[name] * value
        return LossTerms(total=total, **terms)

    def extra_repr(self) -> str:
        return f"weights={self.weights}, diversity_loss={self.diversity_loss!r}"


# --------------------------------------------------------------------------------------------
# Projection.


@dataclass(frozen=True)
class PrototypeRecord:
    """Where a projected prototype came from.

    Attributes:
        prototype: prototype index ``j``.
        prototype_class: its class.
        sample_id: the source sample.
        sample_index: position of the sample in the projection set.
        latent_y, latent_x: centre of the source window on the latent map.
        image_y, image_x: that latent cell's centre in image pixels.
        distance: squared distance between the prototype before projection and its new value.
        bbox: ``(y0, y1, x0, x1)``, half-open, image pixels: the connected region above the
            percentile threshold of the projected prototype's upsampled similarity map that
            contains its maximum (ProtoPNet's bounding region).
        patch_box: ``(y0, y1, x0, x1)``: the image pixels pooled into the k x k latent window.
        image_size: ``(H, W)`` of the source image.
        latent_size: ``(h, w)`` of its latent map.
    """

    prototype: int
    prototype_class: int
    sample_id: str
    sample_index: int
    latent_y: int
    latent_x: int
    image_y: int
    image_x: int
    distance: float
    bbox: tuple[int, int, int, int]
    patch_box: tuple[int, int, int, int]
    image_size: tuple[int, int]
    latent_size: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def high_activation_bbox(
    activation: np.ndarray, percentile: float = 95.0
) -> tuple[int, int, int, int]:
    """The bounding box of the high-activation region containing the activation's maximum.

    ProtoPNet (``find_high_activation_crop``) boxes *every* pixel at or above the 95th
    percentile; on whole tissue images a prototype fires in many places, so we box only the
    8-connected component of those pixels that contains the maximum (the first maximum in
    row-major order when tied).

    Args:
        activation: a 2-D activation map (image size).
        percentile: the threshold percentile in ``[0, 100]``.

    Returns:
        ``(y0, y1, x0, x1)``, half-open.

    Raises:
        ValueError: on a non-2-D or non-finite map or a percentile outside ``[0, 100]``.
    """
    activation = np.asarray(activation, dtype=np.float64)
    if activation.ndim != 2 or activation.size == 0:
        raise ValueError(f"activation must be a non-empty 2-D array, got shape {activation.shape}")
    if not np.isfinite(activation).all():
        raise ValueError("activation contains NaN or infinite values")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    threshold = np.percentile(activation, percentile)
    components, _ = ndimage.label(activation >= threshold, structure=np.ones((3, 3), dtype=bool))
    peak = np.unravel_index(int(np.argmax(activation)), activation.shape)
    region = components == components[peak]
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _as_tensor(array: Any, dtype: torch.dtype) -> Tensor:
    if isinstance(array, Tensor):
        return array.detach().to(dtype=dtype)
    return torch.as_tensor(np.asarray(array)).to(dtype=dtype)


@torch.no_grad()
def project_prototypes(
    model: RamanSeg,
    images: Iterable[Any],
    masks: Iterable[Any],
    sample_ids: Sequence[str],
    *,
    include_border: bool = False,
    percentile: float = 95.0,
    device: torch.device | str | None = None,
) -> list[PrototypeRecord]:
    """Replace each prototype by its nearest latent patch of its own class (ProtoPNet's push).

    Every image is encoded once (in eval mode, one image at a time, so images of any size
    work). A latent position counts as class ``c`` when the ground truth downsampled to the
    latent size (:func:`downsample_labels`) is ``c`` there; with ``k > 1`` and
    ``include_border=False`` only windows lying fully inside the latent map are candidates, so
    a projected prototype never contains the zero padding. Prototype ``j`` becomes the
    candidate k x k window minimising ``||z_window - p_j||^2`` over all images (the first one
    on ties), computed with the prototypes as they were before projection; all prototypes are
    replaced at the end. The bounding region of each prototype is then taken from the
    *projected* prototype's similarity map on its source image, upsampled bilinearly to the
    image size (see :func:`high_activation_bbox`).

    Args:
        model: a :class:`~ramanseg.models.ramanseg.RamanSeg` (its prototypes are updated).
        images: the images, each ``(C, H, W)`` (tensor or array).
        masks: their integer ground truth, each ``(H, W)``, in the same order.
        sample_ids: the sample ids, in the same order.
        include_border: also consider windows overlapping the padding (k > 1 only).
        percentile: the bounding-region threshold percentile.
        device: where to compute; the model's device by default.

    Returns:
        one :class:`PrototypeRecord` per prototype, in prototype order.

    Raises:
        ValueError: on a shape mismatch (naming the sample), fewer/more images, masks and ids
            than each other, or a class without any candidate position.
    """
    # Checked before anything changes: the prototypes are replaced before the boxes are drawn.
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    layer: PrototypeLayer = model.prototype_layer
    if device is None:
        device = layer.prototypes.device
    device = torch.device(device)
    num_classes = model.num_classes
    k = layer.size
    r = k // 2
    # Compute in the prototypes' precision (at least float32), so that the stored patches are
    # bit-identical to what the model computes for that image.
    dtype = torch.promote_types(layer.prototypes.dtype, torch.float32)
    prototypes = layer.prototypes.detach().to(device=device, dtype=dtype)
    prototype_class = layer.prototype_class.to(device)
    num = layer.num_prototypes
    best_distance = torch.full((num,), math.inf, device=device, dtype=dtype)
    best_patch = torch.zeros_like(prototypes)
    best_where: list[tuple[int, int, int] | None] = [None] * num
    best_activation: list[Tensor | None] = [None] * num
    sizes: list[tuple[tuple[int, int], tuple[int, int]]] = []
    sample_ids = list(sample_ids)
    was_training = model.training
    model.eval()
    try:
        count = 0
        for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
            if index >= len(sample_ids):
                raise ValueError(f"more images than sample ids ({len(sample_ids)})")
            sample = sample_ids[index]
            image_t = _as_tensor(image, dtype)
            mask_t = _as_tensor(mask, torch.int64)
            if image_t.ndim != 3 or image_t.shape[0] != model.in_channels:
                raise ValueError(
                    f"sample {sample!r}: image must have shape ({model.in_channels}, H, W), "
                    f"got {tuple(image_t.shape)}"
                )
            if tuple(mask_t.shape) != tuple(image_t.shape[1:]):
                raise ValueError(
                    f"sample {sample!r}: mask shape {tuple(mask_t.shape)} does not match "
                    f"the image's {tuple(image_t.shape[1:])}"
                )
            latent = model.latent(image_t.unsqueeze(0).to(device)).to(dtype)  # (1, D, h, w)
            h, w = latent.shape[2:]
            sizes.append(((int(image_t.shape[1]), int(image_t.shape[2])), (int(h), int(w))))
            try:
                labels = downsample_labels(mask_t.unsqueeze(0), (h, w), num_classes)[0].to(device)
            except ValueError as error:
                raise ValueError(f"sample {sample!r}: {error}") from None
            candidate = labels.unsqueeze(0) == prototype_class.view(-1, 1, 1)  # (P, h, w)
            if k > 1 and not include_border:
                inside = torch.zeros((h, w), dtype=torch.bool, device=device)
                inside[r : h - r, r : w - r] = True
                candidate &= inside
            distances = l2_distance_map(latent, prototypes)[0]  # (P, h, w)
            masked = distances.masked_fill(~candidate, math.inf).reshape(num, -1)
            values, flat_index = masked.min(dim=1)
            improved = torch.nonzero(values < best_distance).flatten().tolist()
            if improved:
                padded = F.pad(latent, (r, r, r, r)) if r else latent
                for j in improved:
                    y, x = divmod(int(flat_index[j]), int(w))
                    # Padded coordinates: the window centred on (y, x) starts at (y, x).
                    best_patch[j] = padded[0, :, y : y + k, x : x + k]
                    best_distance[j] = values[j]
                    best_where[j] = (index, y, x)
                # Similarity of each new prototype on its source image, for the bounding box.
                new_distances = l2_distance_map(latent, best_patch[improved])[0]
                activation = log_similarity(new_distances, layer.epsilon).cpu()
                for slot, j in enumerate(improved):
                    best_activation[j] = activation[slot]
            count += 1
        if count != len(sample_ids):
            raise ValueError(f"{count} images and masks for {len(sample_ids)} sample ids")
        missing = sorted({int(prototype_class[j]) for j in range(num) if best_where[j] is None})
        if missing:
            raise ValueError(
                f"no latent position of class(es) {missing} in the projection images; "
                "their prototypes cannot be projected"
            )
        layer.prototypes.data.copy_(best_patch.to(layer.prototypes))
    finally:
        model.train(was_training)

    records = []
    for j in range(num):
        index, y, x = best_where[j]  # type: ignore[misc]
        (height, width), (h, w) = sizes[index]
        activation = F.interpolate(
            best_activation[j][None, None],
            size=(height, width),
            mode="bilinear",
            align_corners=False,
        )[0, 0].numpy()
        scale_y, scale_x = height / h, width / w
        records.append(
            PrototypeRecord(
                prototype=j,
                prototype_class=int(prototype_class[j]),
                sample_id=str(sample_ids[index]),
                sample_index=index,
                latent_y=y,
                latent_x=x,
                image_y=min(height - 1, int((y + 0.5) * scale_y)),
                image_x=min(width - 1, int((x + 0.5) * scale_x)),
                distance=float(best_distance[j]),
                bbox=high_activation_bbox(activation, percentile),
                patch_box=(
                    max(0, math.floor((y - r) * scale_y)),
                    min(height, math.ceil((y + r + 1) * scale_y)),
                    max(0, math.floor((x - r) * scale_x)),
                    min(width, math.ceil((x + r + 1) * scale_x)),
                ),
                image_size=(height, width),
                latent_size=(h, w),
            )
        )
    return records


def write_projection_json(records: Sequence[PrototypeRecord], path: str | Path) -> None:
    """Write projection records as JSON ``{"prototypes": [...]}``, atomically.

    Args:
        records: the records of :func:`project_prototypes`.
        path: the output file.
    """
    payload = {"prototypes": [record.to_dict() for record in records]}
    write_json(path, payload)


def prototype_gallery(
    records: Sequence[PrototypeRecord],
    images: Mapping[str, Any] | Callable[[str], Any],
    path: str | Path,
    *,
    channel: int = 0,
    channel_name: str | None = None,
    class_names: Sequence[str] | None = None,
    columns: int = 5,
    context: int = 16,
    dpi: int = 150,
) -> None:
    """Save a grid of the prototypes' source regions (format from the suffix, e.g. ``.png``).

    Each panel shows one channel of the prototype's source image, cropped to the bounding
    region plus ``context`` pixels on each side, with the bounding region outlined, titled with
    the prototype index, its class and the sample.

    Args:
        records: the records of :func:`project_prototypes`.
        images: the source images ``(C, H, W)`` by sample id, or a function loading one.
        path: the output figure.
        channel: the channel to show (e.g. a Raman band).
        channel_name: its name, for the figure title.
        class_names: a name per class index (default ``class 0``, ``class 1``, ...).
        columns: panels per row.
        context: pixels of context around the bounding region.
        dpi: figure resolution.

    Raises:
        ValueError: on no records, a bad ``columns`` / ``context`` / ``channel``, or an image
            whose size differs from the record's.
    """
    # Import here: matplotlib is only needed for figures, and the Agg canvas avoids pyplot's
    # global state (no display, safe in worker processes).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from ramanseg.figures import figure_bytes

    if not records:
        raise ValueError("no prototype records to draw")
    if columns < 1 or context < 0:
        raise ValueError(f"columns must be >= 1 and context >= 0, got {columns}, {context}")
    load = images if callable(images) else images.__getitem__
    cache: dict[str, np.ndarray] = {}
    rows = math.ceil(len(records) / columns)
    figure = Figure(figsize=(2.2 * columns, 2.5 * rows), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, record in zip(axes.flat, records, strict=False):
        if record.sample_id not in cache:
            array = load(record.sample_id)
            array = array.detach().cpu().numpy() if isinstance(array, Tensor) else np.asarray(array)
            if array.ndim != 3 or tuple(array.shape[1:]) != tuple(record.image_size):
                raise ValueError(
                    f"sample {record.sample_id!r}: image shape {array.shape} does not match the "
                    f"projection's image size {record.image_size}"
                )
            if not 0 <= channel < array.shape[0]:
                raise ValueError(f"channel {channel} outside the image's {array.shape[0]} channels")
            cache[record.sample_id] = array[channel]
        plane = cache[record.sample_id]
        y0, y1, x0, x1 = record.bbox
        cy0, cy1 = max(0, y0 - context), min(plane.shape[0], y1 + context)
        cx0, cx1 = max(0, x0 - context), min(plane.shape[1], x1 + context)
        ax.imshow(plane[cy0:cy1, cx0:cx1], cmap="gray", interpolation="nearest")
        ax.add_patch(
            Rectangle(
                (x0 - cx0 - 0.5, y0 - cy0 - 0.5),
                x1 - x0,
                y1 - y0,
                fill=False,
                edgecolor="yellow",
                linewidth=1.2,
            )
        )
        name = (
            class_names[record.prototype_class]
            if class_names is not None and record.prototype_class < len(class_names)
            else f"class {record.prototype_class}"
        )
        ax.set_title(f"#{record.prototype} {name}\n{record.sample_id}", fontsize=8)
    title = "Prototype source regions"
    if channel_name:
        title += f" ({channel_name})"
    figure.suptitle(title, fontsize=10)
    path = Path(path)
    suffix = path.suffix or ".png"
    write_files({path: figure_bytes(figure, [suffix])[suffix]})
