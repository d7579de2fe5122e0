"""The prototype layer of RamanSeg: distances, similarities, initialisation, argument checks.

See :mod:`ramanseg.models.prototypes` for the overview.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
