"""RamanSeg: the prototype segmentation network of the paper (section 3.2) and its training phases.

The network, for an input of ``C`` channels and size ``H x W``::

    x (B, C, H, W)
      -> features   plain conv blocks, log2(stride) stride-2 stages    (B, F, h, w)
      -> addon      1x1 conv, ReLU, 1x1 conv, sigmoid (ProtoPNet)       (B, D, h, w)   latent z
      -> prototypes squared L2 distances and log similarities           (B, P, h, w)
      -> head       s + convs(s): head_layers convs, ReLU + Dropout2d   (B, P, h, w)
                    between them; the last one starts at zero
      -> readout    1x1 conv, no bias, +1 / -0.5 initialised            (B, K, h, w)   latent logits
      -> bilinear upsampling of the latent class probabilities          (B, K, H, W)

with ``h = ceil(H / stride)`` and no decoder (paper 3.2.1: the latent probability map is the
segmentation). The paper adds "a series of two-dimensional convolutions after the prototype
layer, with Spatial Dropout between them" (3.2.3); its figure is lost, so here is our reading,
:class:`PrototypeHead`: ``head_layers`` convolutions mapping the ``P`` similarity maps to ``P``
maps, with ReLU and ``Dropout2d`` between consecutive ones, added to the similarities as a
residual, ``h = s + convs(s)``. The last convolution starts at zero, so at initialisation the
network is exactly ProtoPNet/ProtoSeg's "similarities -> class readout", and channel ``j`` of
the head stays prototype ``j``'s evidence (plus a learned, spatially informed correction),
which keeps the readout's +1 / -0.5 class connections and the L1 penalty on its wrong-class
weights meaningful. A plain series of ReLU convolutions in that place (our first design) does
not train: spatial dropout removes whole prototype channels, channels die behind the ReLU,
and the frozen readout then sees nothing (demo validation Dice 0.4 against 0.8 without a
head). The residual keeps every prototype's similarity on the path to the readout, and the
dropout acts on the correction's hidden maps.

Training phases (ProtoPNet; :func:`set_phase`, :func:`phase_param_groups`):

* ``warmup``: add-on, prototypes and head train; the feature extractor and readout are frozen;
* ``joint``: feature extractor, add-on, prototypes and head train; the readout is frozen;
* ``last_layer``: after projection, everything after the prototype layer trains, i.e. the
  head and the readout (the L1 term on the readout). In ProtoPNet the readout is all there is
  after the prototypes; projection moves the prototypes onto training patches, which changes
  the similarities the head was trained on (a projected prototype matches its source patch
  with distance 0, the largest similarity there is), so the head must adapt with the readout.

The feature extractor uses GroupNorm rather than BatchNorm: it has no running statistics, so a
frozen extractor is truly frozen in every phase and training and evaluation behave alike
for the small batches of patches used here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ramanseg.models.prototypes import PrototypeLayer, init_last_layer_

__all__ = [
    "PHASES",
    "PHASE_GROUPS",
    "FeatureExtractor",
    "PrototypeHead",
    "RamanSeg",
    "RamanSegOutput",
    "parameter_groups",
    "phase_param_groups",
    "phase_parameters",
    "set_phase",
]

#: The training phases, in the order ProtoPNet runs them.
PHASES = ("warmup", "joint", "last_layer")

#: The parameter groups trained in each phase.
PHASE_GROUPS: dict[str, tuple[str, ...]] = {
    "warmup": ("addon", "prototypes", "head"),
    "joint": ("features", "addon", "prototypes", "head"),
    "last_layer": ("head", "last_layer"),
}

#: The config keys ``from_config`` reads, all required.
CONFIG_KEYS = (
    "prototypes_per_class",
    "prototype_size",
    "prototype_channels",
    "addon_channels",
    "dropout",
)


def _groups(channels: int) -> int:
    """GroupNorm groups: 8 where the channels allow it, else one group (LayerNorm-like)."""
    return 8 if channels % 8 == 0 else 1


def _conv_block(in_channels: int, out_channels: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(_groups(out_channels), out_channels),
        nn.ReLU(inplace=True),
    ]


class FeatureExtractor(nn.Module):
    """Plain convolutional feature extractor: a stem and ``log2(stride)`` downsampling stages.

    Stem: two 3x3 conv-GroupNorm-ReLU blocks at full resolution. Each stage: a 3x3 stride-2
    block then a 3x3 block, doubling the channels up to ``max_channels``. Each stride-2
    convolution (kernel 3, padding 1) maps ``n`` to ``ceil(n / 2)`` positions, so the output is
    ``ceil(H / stride) x ceil(W / stride)``.

    Args:
        in_channels: input channels ``C``.
        stride: total downsampling, a power of two (1 keeps the input size).
        base_channels: channels of the stem.
        max_channels: channel cap of the deepest stages.

    Raises:
        ValueError: on a non-power-of-two stride or non-positive channel counts.
    """

    def __init__(
        self, in_channels: int, stride: int = 8, base_channels: int = 32, max_channels: int = 256
    ) -> None:
        super().__init__()
        if in_channels < 1 or base_channels < 1 or max_channels < base_channels:
            raise ValueError(
                "need in_channels >= 1 and 1 <= base_channels <= max_channels, got "
                f"{in_channels}, {base_channels}, {max_channels}"
            )
        if stride < 1 or stride & (stride - 1):
            raise ValueError(f"stride must be a power of two (1, 2, 4, 8, ...), got {stride}")
        self.stride = stride
        layers = _conv_block(in_channels, base_channels, 1) + _conv_block(
            base_channels, base_channels, 1
        )
        channels = base_channels
        for _ in range(int(math.log2(stride))):
            out = min(2 * channels, max_channels)
            layers += _conv_block(channels, out, 2) + _conv_block(out, out, 1)
            channels = out
        self.layers = nn.Sequential(*layers)
        self.out_channels = channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The latent size for an input of ``size = (H, W)``."""
        height, width = size
        for _ in range(int(math.log2(self.stride))):
            height, width = (height - 1) // 2 + 1, (width - 1) // 2 + 1
        return height, width

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class PrototypeHead(nn.Module):
    """The convolutions after the prototype layer, as a residual on the similarity maps.

    ``h = s + convs(s)``, where ``convs`` is ``layers`` convolutions ``P -> P`` (kernel
    ``kernel_size``, same padding) with ReLU and ``Dropout2d(dropout)`` between consecutive
    ones. The earlier convolutions use Kaiming initialisation, the last starts at zero (so the
    head starts as the identity). ``layers=0`` is the identity.

    Args:
        channels: the number of prototypes ``P``.
        layers: the number of convolutions.
        kernel_size: their (odd) kernel size.
        dropout: the spatial dropout probability between them.

    Raises:
        ValueError: on a negative ``layers``, an even ``kernel_size`` or ``dropout`` outside
            ``[0, 1)``.
    """

    def __init__(self, channels: int, layers: int, kernel_size: int = 3, dropout: float = 0.0):
        super().__init__()
        if layers < 0:
            raise ValueError(f"head layers must be >= 0, got {layers}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"head kernel size must be odd and >= 1, got {kernel_size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        modules: list[nn.Module] = []
        for index in range(layers):
            if index:
                modules += [nn.ReLU(), nn.Dropout2d(dropout)]
            conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
            if index == layers - 1:
                nn.init.zeros_(conv.weight)
            else:
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            modules.append(conv)
        self.convs = nn.Sequential(*modules)

    @property
    def layers(self) -> int:
        """The number of convolutions."""
        return sum(isinstance(m, nn.Conv2d) for m in self.convs)

    def forward(self, similarities: Tensor) -> Tensor:
        if not len(self.convs):
            return similarities
        return similarities + self.convs(similarities)


class RamanSegOutput(NamedTuple):
    """The forward pass of :class:`RamanSeg`.

    Attributes:
        logits: ``(B, K, H, W)`` at the input size: the log of the bilinearly upsampled latent
            class probabilities (``upsample="probabilities"``, the paper's choice), so
            ``softmax(logits)`` is the paper's upsampled probability map; or the bilinearly
            upsampled latent logits (``upsample="logits"``).
        latent_logits: ``(B, K, h, w)`` class logits at the latent size (the losses use these).
        similarities: ``(B, P, h, w)`` prototype log similarities.
        distances: ``(B, P, h, w)`` squared L2 distances to the prototypes.
        latent: ``(B, D, h, w)`` the latent map ``z``.
    """

    logits: Tensor
    latent_logits: Tensor
    similarities: Tensor
    distances: Tensor
    latent: Tensor


class RamanSeg(nn.Module):
    """The RamanSeg network, both variants (with projection, and projection-free).

    Paper settings: RamanSeg 15 prototypes per class of size 1 (64-d vectors); projection-free
    RamanSeg 60 per class of size 3, add-on width 128, dropout 0.5.

    Args:
        in_channels: input channels ``C`` (the paper: 24).
        num_classes: classes ``K`` (the paper: 2, background and tumour).
        prototypes_per_class: prototypes of each class.
        prototype_channels: latent depth ``D`` (the paper: 64).
        prototype_size: prototype spatial size ``k`` (odd).
        addon_channels: width of the add-on layers' hidden 1 x 1 convolution.
        dropout: Spatial Dropout probability between the post-prototype convolutions.
        stride: downsampling of the latent map (a power of two; 8: 64 px -> 8 x 8).
        base_channels: feature extractor stem width.
        max_channels: feature extractor channel cap.
        head_layers: number of P -> P convolutions of the residual head before the readout
            (0: plain readout); see :class:`PrototypeHead`.
        head_kernel_size: their kernel size (odd).
        epsilon: the log similarity's ``eps``.
        incorrect_class_connection: readout init of wrong-class connections (ProtoPNet: -0.5).
        upsample: ``probabilities`` (paper) or ``logits``; see :class:`RamanSegOutput`.

    Raises:
        ValueError: on an invalid argument (each is checked before anything is built).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 2,
        prototypes_per_class: int = 15,
        prototype_channels: int = 64,
        prototype_size: int = 1,
        addon_channels: int = 64,
        dropout: float = 0.2,
        stride: int = 8,
        base_channels: int = 32,
        max_channels: int = 256,
        head_layers: int = 2,
        head_kernel_size: int = 3,
        epsilon: float = 1e-4,
        incorrect_class_connection: float = -0.5,
        upsample: str = "probabilities",
    ) -> None:
        super().__init__()
        checks = [
            (in_channels >= 1, f"in_channels must be >= 1, got {in_channels}"),
            (num_classes >= 2, f"num_classes must be >= 2, got {num_classes}"),
            (
                prototypes_per_class >= 1,
                f"prototypes_per_class must be >= 1, got {prototypes_per_class}",
            ),
            (prototype_channels >= 1, f"prototype_channels must be >= 1, got {prototype_channels}"),
            (
                prototype_size >= 1 and prototype_size % 2 == 1,
                f"prototype_size must be odd and >= 1, got {prototype_size}",
            ),
            (addon_channels >= 1, f"addon_channels must be >= 1, got {addon_channels}"),
            (0.0 <= dropout < 1.0, f"dropout must be in [0, 1), got {dropout}"),
            (head_layers >= 0, f"head_layers must be >= 0, got {head_layers}"),
            (
                head_kernel_size >= 1 and head_kernel_size % 2 == 1,
                f"head_kernel_size must be odd and >= 1, got {head_kernel_size}",
            ),
            (
                upsample in ("probabilities", "logits"),
                f"upsample must be 'probabilities' or 'logits', got {upsample!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.stride = stride
        self.upsample = upsample
        self.phase: str | None = None

        self.features = FeatureExtractor(in_channels, stride, base_channels, max_channels)
        self.addon = nn.Sequential(
            nn.Conv2d(self.features.out_channels, addon_channels, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(addon_channels, prototype_channels, kernel_size=1),
            # ProtoPNet's add-on ends in a sigmoid: a bounded latent space keeps distances on
            # a fixed scale for the log similarity.
            nn.Sigmoid(),
        )
        for module in self.addon.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        self.prototype_layer = PrototypeLayer(
            num_classes, prototypes_per_class, prototype_channels, prototype_size, epsilon
        )
        num_prototypes = self.prototype_layer.num_prototypes
        self.head = PrototypeHead(num_prototypes, head_layers, head_kernel_size, dropout)
        self.readout = nn.Conv2d(num_prototypes, num_classes, kernel_size=1, bias=False)
        self.incorrect_class_connection = incorrect_class_connection
        init_last_layer_(
            self.readout.weight, self.prototype_layer.prototype_class, incorrect_class_connection
        )

    @classmethod
    def from_config(cls, entry: Mapping[str, Any], in_channels: int, **overrides: Any) -> RamanSeg:
        """The model of a ``models.ramanseg`` / ``models.ramanseg_noproj`` config entry.

        Reads ``prototypes_per_class``, ``prototype_size``, ``prototype_channels``,
        ``addon_channels`` and ``dropout`` (all required) and, if present, ``stride`` and
        ``head_layers``; the
        training keys (``projection``, ``loss_weights``, ``epochs``, ...) belong to the trainer
        and :class:`~ramanseg.models.prototypes.RamanSegLoss`.

        Args:
            entry: the config entry.
            in_channels: the number of input channels (``len(config["channels"])``).
            overrides: further constructor arguments (e.g. ``stride``, ``num_classes``); they
                take precedence over the entry.

        Raises:
            ValueError: if a required key is missing.
        """
        missing = [key for key in CONFIG_KEYS if key not in entry]
        if missing:
            raise ValueError(f"RamanSeg config entry lacks {missing}; it needs {list(CONFIG_KEYS)}")
        kwargs: dict[str, Any] = {key: entry[key] for key in CONFIG_KEYS}
        for key in ("stride", "head_layers"):
            if key in entry:
                kwargs[key] = entry[key]
        kwargs.update(overrides)
        return cls(in_channels=in_channels, **kwargs)

    @property
    def prototype_class(self) -> Tensor:
        """``(P,)`` class index of each prototype."""
        return self.prototype_layer.prototype_class

    def latent_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The latent map size ``(h, w)`` for an input of ``size = (H, W)``."""
        return self.features.output_size(size)

    def latent(self, x: Tensor) -> Tensor:
        """The latent map ``z = addon(features(x))``, ``(B, D, h, w)``."""
        self._check_input(x)
        return self.addon(self.features(x))

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != self.in_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"input must have shape (B, {self.in_channels}, H, W), got {shape}")

    def forward(self, x: Tensor) -> RamanSegOutput:
        """Segment a batch.

        Args:
            x: ``(B, C, H, W)``.

        Returns:
            see :class:`RamanSegOutput`.
        """
        latent = self.latent(x)
        distances, similarities = self.prototype_layer(latent)
        latent_logits = self.readout(self.head(similarities))
        size = tuple(x.shape[2:])
        if self.upsample == "logits":
            logits = F.interpolate(latent_logits, size=size, mode="bilinear", align_corners=False)
        else:
            probabilities = F.interpolate(
                latent_logits.softmax(dim=1), size=size, mode="bilinear", align_corners=False
            )
            # Interpolated probabilities are convex combinations, so still sum to 1; the clamp
            # only keeps log() finite where a probability underflowed to 0.
            logits = probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()
        return RamanSegOutput(logits, latent_logits, similarities, distances, latent)


# --------------------------------------------------------------------------------------------
# Training phases.


def parameter_groups(model: RamanSeg) -> dict[str, list[nn.Parameter]]:
    """Every parameter of the model by group: features, addon, prototypes, head, last_layer."""
    return {
        "features": list(model.features.parameters()),
        "addon": list(model.addon.parameters()),
        "prototypes": [model.prototype_layer.prototypes],
        "head": list(model.head.parameters()),
        "last_layer": list(model.readout.parameters()),
    }


def _check_phase(phase: str) -> None:
    if phase not in PHASE_GROUPS:
        raise ValueError(f"phase must be one of {list(PHASES)}, got {phase!r}")


def phase_parameters(model: RamanSeg, phase: str) -> dict[str, list[nn.Parameter]]:
    """The parameter groups trained in ``phase`` (see :data:`PHASE_GROUPS`).

    Args:
        model: the model.
        phase: ``warmup``, ``joint`` or ``last_layer``.

    Returns:
        group name -> parameters, for the groups trained in the phase (empty groups, e.g. the
        head with ``head_layers=0``, are left out).

    Raises:
        ValueError: for an unknown phase.
    """
    _check_phase(phase)
    groups = parameter_groups(model)
    return {name: groups[name] for name in PHASE_GROUPS[phase] if groups[name]}


def set_phase(model: RamanSeg, phase: str) -> None:
    """Freeze every parameter except those trained in ``phase``, and record the phase.

    Train/eval mode is left to the caller (the extractor has no BatchNorm statistics to
    protect; the head's dropout stays active in training mode in every phase).

    Args:
        model: the model.
        phase: ``warmup``, ``joint`` or ``last_layer``.

    Raises:
        ValueError: for an unknown phase.
    """
    trained = {id(p) for params in phase_parameters(model, phase).values() for p in params}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in trained)
    model.phase = phase


def phase_param_groups(
    model: RamanSeg,
    phase: str,
    learning_rates: Mapping[str, float],
    weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """``torch.optim`` parameter groups for ``phase``, with the config's learning rates.

    ``learning_rates`` has the config keys ``features``, ``addon``, ``prototypes``,
    ``last_layer``; the head, which the config does not know, uses ``head`` if given and
    otherwise the add-on rate. ``weight_decay`` applies to the features, add-on and head only:
    decaying prototypes would pull them towards the origin, and the readout has the L1 term.

    Args:
        model: the model.
        phase: ``warmup``, ``joint`` or ``last_layer``.
        learning_rates: learning rate per group.
        weight_decay: weight decay of the convolutional groups.

    Returns:
        a list of ``{"name", "params", "lr", "weight_decay"}`` dicts.

    Raises:
        ValueError: for an unknown phase, or a missing or non-positive learning rate.
    """
    groups = []
    for name, params in phase_parameters(model, phase).items():
        key = "addon" if name == "head" and "head" not in learning_rates else name
        if key not in learning_rates:
            raise ValueError(f"learning_rates lacks {key!r}, needed by phase {phase!r}")
        lr = learning_rates[key]
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"learning rate {key!r} must be a finite number > 0, got {lr!r}")
        decay = weight_decay if name in ("features", "addon", "head") else 0.0
        groups.append({"name": name, "params": params, "lr": float(lr), "weight_decay": decay})
    return groups
