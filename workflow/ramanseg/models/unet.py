"""The U-Net baseline (paper section 3.1; Ronneberger et al. 2015).

Four downsampling levels (``models.unet.levels``), each a 2 x 2 max-pooling followed by
two 3 x 3 convolutions; the decoder mirrors it with 2 x 2 transposed convolutions and skip
connections. Departures from the 2015 paper, all standard today: padded convolutions (the
output has the input's size, no cropping of skips) and batch normalisation after each
convolution. The width doubles per level from ``models.unet.base_channels`` (64 in
Ronneberger et al.; the demo uses 16). One output channel holds the foreground logit.

Trained with soft Dice loss on the foreground probability
(:func:`~ramanseg.models.training.soft_dice_loss`) and AdamW with the paper's learning
rate 1e-4 and weight decay 1e-3 (``models.unet.learning_rate`` / ``weight_decay``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ramanseg.config import require
from ramanseg.models.training import (
    ModelEntry,
    SupervisedStrategy,
    TrainingStrategy,
    dice_loss_on_output,
)


class DoubleConv(nn.Sequential):
    """Two 3 x 3 convolutions, each followed by batch normalisation and ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            # No bias: the batch normalisation that follows has its own.
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """A 2-D U-Net.

    Inputs of any size are accepted: they are zero-padded at their end to a multiple of
    ``2 ** levels`` and the output cropped back, so the output has the input's size.

    Args:
        in_channels: input channels (24 for the paper's stacks).
        out_channels: output channels (1: the foreground logit).
        levels: downsampling steps (the paper: 4).
        base_channels: width of the first level; level ``i`` has ``base * 2 ** i``.

    Raises:
        ValueError: a non-positive argument.
    """

    def __init__(
        self, in_channels: int, out_channels: int = 1, levels: int = 4, base_channels: int = 64
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("levels", levels),
            ("base_channels", base_channels),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"UNet {name} must be a positive integer, got {value!r}")
        self.levels = levels
        widths = [base_channels * 2**i for i in range(levels + 1)]
        self.stem = DoubleConv(in_channels, widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i], widths[i + 1]))
            for i in range(levels)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
            for i in reversed(range(levels))
        )
        self.decode = nn.ModuleList(
            DoubleConv(2 * widths[i], widths[i]) for i in reversed(range(levels))
        )
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the same spatial size as ``x``.

        Args:
            x: (N, C, H, W).

        Returns:
            (N, out_channels, H, W) logits.
        """
        height, width = x.shape[-2:]
        factor = 2**self.levels
        pad_y, pad_x = -height % factor, -width % factor
        if pad_y or pad_x:
            x = F.pad(x, (0, pad_x, 0, pad_y))
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up, decode in zip(self.up, self.decode, strict=True):
            y = decode(torch.cat([skips.pop(), up(y)], dim=1))
        return self.head(y)[..., :height, :width]


def unet_architecture(config: Mapping[str, Any], name: str, in_channels: int) -> dict[str, Any]:
    """:class:`UNet` keyword arguments from ``config["models"][name]``.

    Args:
        config: the configuration.
        name: the model name (``unet``).
        in_channels: channels of the preprocessed stacks.

    Returns:
        The keyword arguments.

    Raises:
        ConfigError: a missing key.
    """
    section = f"models.{name}"
    levels = require(config, f"{section}.levels")
    return {
        "in_channels": int(in_channels),
        "out_channels": 1,
        "levels": int(levels),
        "base_channels": int(require(config, f"{section}.base_channels")),
    }


def adamw_strategy(config: Mapping[str, Any], name: str, model: nn.Module) -> TrainingStrategy:
    """Soft Dice loss and AdamW with the learning rate and weight decay of the section.

    Args:
        config: the configuration (``models.<name>.epochs``, ``learning_rate``,
            ``weight_decay``).
        name: the model name.
        model: the model (its foreground probability feeds the loss).

    Returns:
        The strategy.

    Raises:
        ConfigError: a missing key.
    """
    section = f"models.{name}"
    optimizer = functools.partial(
        torch.optim.AdamW,
        lr=float(require(config, f"{section}.learning_rate")),
        weight_decay=float(require(config, f"{section}.weight_decay")),
    )
    return SupervisedStrategy(
        dice_loss_on_output(model), optimizer, int(require(config, f"{section}.epochs"))
    )


ENTRY = ModelEntry(architecture=unet_architecture, build=UNet, strategy=adamw_strategy)
