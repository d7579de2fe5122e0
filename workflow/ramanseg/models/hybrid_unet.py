"""The hybrid 3D/2D U-Net for hyperspectral SRS (HSRS paper, SPIE 13721, 2025).

The Raman bands keep their spectral axis: the encoder works on a 3-D volume
(wavenumber, y, x) whose input features are the intensity and, with ``band_position``,
the band's position (-1 to 1 over the bands); the decoder is a 2-D U-Net decoder. Three
modules carry the paper's ideas, each switchable off for its ablation
(``models.<name>.modules``), where a plain replacement takes its place:

* **multi-scale residual 3-D convolution** (:class:`MultiScaleResidual3d`), one per
  encoder level: parallel 3-D convolutions whose spectral kernel sizes differ
  (``spectral_kernel_sizes``, 3 x 3 in space), fused by a 1 x 1 x 1 convolution and added
  to a residual shortcut that keeps the spatial detail. Off: one plain 3 x 3 x 3
  convolution (:class:`PlainConv3d`).
* **spectral compression** at the deepest level (:class:`SpectralCompression`): a
  1 x 1 x 1 convolution shrinks the features to ``compressed_features`` before the
  spectral axis is folded into channels and projected to the decoder's width, so the
  widest layer of the network costs a fraction of the plain one. Off: the features are
  folded as they are (:class:`SpectralFlatten`).
* **attention-weighted spectral pooling** on every skip connection
  (:class:`SpectralAttentionPooling`): a 1 x 1 x 1 convolution scores each band, plus a
  learnt score per band (convolutions along the spectral axis are shift-equivariant, so
  without it the pooled embedding could not tell where a peak lies), a softmax over the
  spectral axis turns the scores into weights, and the weighted sum is the 2-D embedding
  the decoder receives. Off: the mean over the bands (:class:`SpectralMeanPooling`).

Downsampling halves y and x only (the bands stay). Channels that are not Raman bands
(transmission, TPEF, SHG; from the ``channels`` section) enter as a 2-D input: a small
2-D encoder whose features join every skip connection. The output is one logit per class
(one foreground logit for the tumour pipeline). The paper's abstract gives the modules,
not their sizes; widths, kernel sizes and depth are ours (``config/paper.yaml`` says so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ramanseg.config import ConfigError, require
from ramanseg.models.training import ModelEntry
from ramanseg.models.unet import DoubleConv, adamw_strategy

#: The three switchable modules, as named in ``models.<name>.modules``.
MODULES = ("multiscale_3d", "spectral_compression", "attention_pooling")
#: The architecture keys of a ``models.<name>``-style section (besides ``modules``).
ARCHITECTURE_KEYS = (
    "levels",
    "spectral_features",
    "spectral_kernel_sizes",
    "compressed_features",
    "context_features",
    "band_position",
)


def _conv_norm_act3d(in_features: int, out_features: int, kernel: tuple[int, int, int]) -> list:
    """A padded 3-D convolution (no bias: batch normalisation follows), BN and ReLU."""
    return [
        nn.Conv3d(
            in_features, out_features, kernel, padding=tuple(k // 2 for k in kernel), bias=False
        ),
        nn.BatchNorm3d(out_features),
        nn.ReLU(inplace=True),
    ]


class MultiScaleResidual3d(nn.Module):
    """Parallel 3-D convolutions of several spectral sizes with a residual shortcut.

    Args:
        in_features: input feature channels.
        out_features: output feature channels.
        spectral_kernel_sizes: the spectral extent of each branch (odd); 3 x 3 in space.
    """

    def __init__(
        self, in_features: int, out_features: int, spectral_kernel_sizes: Sequence[int]
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*_conv_norm_act3d(in_features, out_features, (k, 3, 3)))
            for k in spectral_kernel_sizes
        )
        self.fuse = nn.Sequential(
            nn.Conv3d(out_features * len(spectral_kernel_sizes), out_features, 1, bias=False),
            nn.BatchNorm3d(out_features),
        )
        # The shortcut carries the input past the branches (spatial detail); a 1 x 1 x 1
        # projection only where the width changes.
        self.shortcut = (
            nn.Identity()
            if in_features == out_features
            else nn.Sequential(
                nn.Conv3d(in_features, out_features, 1, bias=False), nn.BatchNorm3d(out_features)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, out, B, H, W) features of (N, in, B, H, W)."""
        fused = self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))
        return F.relu(fused + self.shortcut(x))


class PlainConv3d(nn.Sequential):
    """The ablation's replacement of :class:`MultiScaleResidual3d`: one 3 x 3 x 3 conv.

    Args:
        in_features: input feature channels.
        out_features: output feature channels.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(*_conv_norm_act3d(in_features, out_features, (3, 3, 3)))


class SpectralAttentionPooling(nn.Module):
    """Softmax attention over the spectral axis: (N, F, B, H, W) -> (N, F, H, W).

    Args:
        features: feature channels of the input.
        bands: the length of the spectral axis.
    """

    def __init__(self, features: int, bands: int) -> None:
        super().__init__()
        self.score = nn.Conv3d(features, 1, 1)
        # A learnt prior per band (zero: no preference at the start); the convolution's
        # score alone is the same for a spectrum shifted along the axis.
        self.band_score = nn.Parameter(torch.zeros(bands))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention weights (N, 1, B, H, W), summing to 1 over the bands."""
        scores = self.score(x) + self.band_score.view(1, 1, -1, 1, 1)
        return torch.softmax(scores, dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The attention-weighted sum over the bands."""
        return (x * self.weights(x)).sum(dim=2)


class SpectralMeanPooling(nn.Module):
    """The ablation's replacement of :class:`SpectralAttentionPooling`: the band mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The mean over the spectral axis: (N, F, B, H, W) -> (N, F, H, W)."""
        return x.mean(dim=2)


class SpectralFlatten(nn.Module):
    """Fold the spectral axis into channels and project: (N, F, B, H, W) -> (N, out, H, W).

    The ablation's replacement of :class:`SpectralCompression`, and its last step.

    Args:
        features: feature channels of the input.
        bands: the length of the spectral axis.
        out_features: output channels.
    """

    def __init__(self, features: int, bands: int, out_features: int) -> None:
        super().__init__()
        self.project = nn.Sequential(
            nn.Conv2d(features * bands, out_features, 1, bias=False),
            nn.BatchNorm2d(out_features),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The projected 2-D features."""
        n, f, b, h, w = x.shape
        return self.project(x.reshape(n, f * b, h, w))


class SpectralCompression(nn.Module):
    """Shrink the features, then fold the spectral axis: (N, F, B, H, W) -> (N, out, H, W).

    Args:
        features: feature channels of the input.
        bands: the length of the spectral axis.
        compressed_features: feature channels kept per band before folding.
        out_features: output channels.
    """

    def __init__(
        self, features: int, bands: int, compressed_features: int, out_features: int
    ) -> None:
        super().__init__()
        self.reduce = nn.Sequential(*_conv_norm_act3d(features, compressed_features, (1, 1, 1)))
        self.flatten = SpectralFlatten(compressed_features, bands, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The compressed 2-D features."""
        return self.flatten(self.reduce(x))


class HybridUNet(nn.Module):
    """A U-Net with a 3-D spectral encoder and a 2-D decoder.

    Inputs of any size are accepted: they are zero-padded at their end to a multiple of
    ``2 ** levels`` and the output cropped back.

    Args:
        in_channels: channels of the input stack (Raman bands and 2-D channels).
        spectral_channels: positions of the Raman bands in the stack, in spectral order.
        out_channels: output logits (1: the tumour foreground; the classes otherwise).
        levels: downsampling steps (y and x halve; the bands stay).
        spectral_features: 3-D feature channels of the first level; level ``i`` has
            ``spectral_features * 2 ** i`` (the decoder's widths are the same).
        spectral_kernel_sizes: spectral kernel sizes of the multi-scale branches (odd).
        compressed_features: features per band kept by the spectral compression.
        multiscale_3d: use :class:`MultiScaleResidual3d` (else :class:`PlainConv3d`).
        spectral_compression: use :class:`SpectralCompression` (else
            :class:`SpectralFlatten`).
        attention_pooling: use :class:`SpectralAttentionPooling` (else
            :class:`SpectralMeanPooling`).
        context_features: width of the 2-D encoder of the non-Raman channels.
        band_position: give the 3-D encoder the band's position (-1 to 1 over the bands)
            as a second input feature beside the intensity.

    Raises:
        ValueError: a non-positive size, an even or empty kernel list, no Raman band, or
            band positions outside the stack or repeated.
    """

    def __init__(
        self,
        in_channels: int,
        spectral_channels: Sequence[int],
        out_channels: int = 1,
        levels: int = 3,
        spectral_features: int = 8,
        spectral_kernel_sizes: Sequence[int] = (3, 5, 7),
        compressed_features: int = 4,
        multiscale_3d: bool = True,
        spectral_compression: bool = True,
        attention_pooling: bool = True,
        context_features: int = 8,
        band_position: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("levels", levels),
            ("spectral_features", spectral_features),
            ("compressed_features", compressed_features),
            ("context_features", context_features),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"HybridUNet {name} must be a positive integer, got {value!r}")
        spectral = [int(i) for i in spectral_channels]
        if not spectral:
            raise ValueError("HybridUNet needs at least one Raman band (spectral_channels)")
        if len(set(spectral)) != len(spectral) or not all(0 <= i < in_channels for i in spectral):
            raise ValueError(
                f"HybridUNet spectral_channels {spectral} must be distinct positions in "
                f"0..{in_channels - 1}"
            )
        kernels = [int(k) for k in spectral_kernel_sizes]
        if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(
                f"HybridUNet spectral_kernel_sizes must be odd positive sizes, got {kernels}"
            )
        self.levels = levels
        self.register_buffer("spectral_index", torch.tensor(spectral), persistent=False)
        context = [i for i in range(in_channels) if i not in spectral]
        self.register_buffer(
            "context_index", torch.tensor(context, dtype=torch.long), persistent=False
        )
        bands = len(spectral)
        widths = [spectral_features * 2**i for i in range(levels + 1)]

        def block(in_features: int, out_features: int) -> nn.Module:
            if multiscale_3d:
                return MultiScaleResidual3d(in_features, out_features, kernels)
            return PlainConv3d(in_features, out_features)

        # Convolutions along the spectral axis are shift-equivariant: with the position as
        # an input feature, the first level can already tell one band from another.
        self.band_position = band_position
        self.register_buffer(
            "band_positions", torch.linspace(-1, 1, bands).view(1, 1, bands, 1, 1), persistent=False
        )
        inputs = 2 if band_position else 1
        self.encoder = nn.ModuleList(
            block(inputs if i == 0 else widths[i - 1], widths[i]) for i in range(levels + 1)
        )
        self.skip_pooling = nn.ModuleList(
            SpectralAttentionPooling(widths[i], bands)
            if attention_pooling
            else SpectralMeanPooling()
            for i in range(levels)
        )
        self.bottleneck = (
            SpectralCompression(widths[-1], bands, compressed_features, widths[-1])
            if spectral_compression
            else SpectralFlatten(widths[-1], bands, widths[-1])
        )
        # The 2-D channels: one conv per level (after 2 x 2 max pooling below the first).
        context_width = context_features if context else 0
        self.context = nn.ModuleList(
            nn.Sequential(
                *([nn.MaxPool2d(2)] if i else []),
                nn.Conv2d(
                    len(context) if i == 0 else context_width,
                    context_width,
                    3,
                    padding=1,
                    bias=False,
                ),
                nn.BatchNorm2d(context_width),
                nn.ReLU(inplace=True),
            )
            for i in range(levels if context else 0)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
            for i in reversed(range(levels))
        )
        self.decode = nn.ModuleList(
            DoubleConv(2 * widths[i] + context_width, widths[i]) for i in reversed(range(levels))
        )
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the same spatial size as ``x``.

        Args:
            x: (N, C, H, W), the channels in the order of ``in_channels``.

        Returns:
            (N, out_channels, H, W) logits.
        """
        height, width = x.shape[-2:]
        factor = 2**self.levels
        pad_y, pad_x = -height % factor, -width % factor
        if pad_y or pad_x:
            x = F.pad(x, (0, pad_x, 0, pad_y))
        volume = x.index_select(1, self.spectral_index).unsqueeze(1)  # (N, 1, B, H, W)
        if self.band_position:
            volume = torch.cat([volume, self.band_positions.expand_as(volume)], dim=1)
        skips = []
        for level, block in enumerate(self.encoder):
            if level:
                volume = F.max_pool3d(volume, (1, 2, 2))
            volume = block(volume)
            if level < self.levels:
                skips.append(self.skip_pooling[level](volume))
        if len(self.context):
            planes = x.index_select(1, self.context_index)
            for level, layer in enumerate(self.context):
                planes = layer(planes)
                skips[level] = torch.cat([skips[level], planes], dim=1)
        y = self.bottleneck(volume)
        for up, decode in zip(self.up, self.decode, strict=True):
            y = decode(torch.cat([skips.pop(), up(y)], dim=1))
        return self.head(y)[..., :height, :width]


def hybrid_unet_kwargs(
    section: Mapping[str, Any], spectral_channels: Sequence[int], in_channels: int, classes: int
) -> dict[str, Any]:
    """:class:`HybridUNet` keyword arguments from a ``models.<name>``-style section.

    Args:
        section: the section (``levels``, ``spectral_features``, ``spectral_kernel_sizes``,
            ``compressed_features``, ``context_features``, ``band_position``, ``modules``).
        spectral_channels: positions of the Raman bands in the stack.
        in_channels: channels of the stack.
        classes: output logits.

    Returns:
        The keyword arguments (JSON-serialisable).
    """
    return {
        "in_channels": int(in_channels),
        "spectral_channels": [int(i) for i in spectral_channels],
        "out_channels": int(classes),
        "levels": int(section["levels"]),
        "spectral_features": int(section["spectral_features"]),
        "spectral_kernel_sizes": [int(k) for k in section["spectral_kernel_sizes"]],
        "compressed_features": int(section["compressed_features"]),
        "context_features": int(section["context_features"]),
        "band_position": bool(section["band_position"]),
        **{module: bool(section["modules"][module]) for module in MODULES},
    }


def hybrid_unet_architecture(
    config: Mapping[str, Any], name: str, in_channels: int
) -> dict[str, Any]:
    """:class:`HybridUNet` keyword arguments for the tumour pipeline (one foreground logit).

    The Raman bands are the channels of role ``raman`` in the ``channels`` section.

    Args:
        config: the configuration (``models.<name>``, ``channels``).
        name: the model name (``hybrid_unet``).
        in_channels: channels of the preprocessed stacks.

    Returns:
        The keyword arguments.

    Raises:
        ConfigError: a missing key, no Raman channel, or a channel list whose length is
            not the stacks' channel count.
    """
    from ramanseg.settings import ChannelLayout

    section = require(config, f"models.{name}")
    for key in (*ARCHITECTURE_KEYS, *(f"modules.{module}" for module in MODULES)):
        require(config, f"models.{name}.{key}")
    layout = ChannelLayout.from_config(config)
    if len(layout) != in_channels:
        raise ConfigError(
            f"the channels section lists {len(layout)} channels but the stacks have "
            f"{in_channels}; list every channel of the stacks in `channels`"
        )
    if not layout.raman_indices:
        raise ConfigError(
            f"models.{name} needs Raman bands, but no channel in `channels` has role raman"
        )
    return hybrid_unet_kwargs(section, layout.raman_indices, in_channels, 1)


ENTRY = ModelEntry(architecture=hybrid_unet_architecture, build=HybridUNet, strategy=adamw_strategy)
