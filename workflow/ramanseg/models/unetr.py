"""The UNETR baseline (paper table "UNet Transformer"; Hatamizadeh et al. 2022), from MONAI.

A thin layer over :class:`monai.networks.nets.UNETR` with ``spatial_dims=2``: a ViT
encoder on 16 x 16 pixel patches (12 layers, 12 heads; ``hidden_size`` and
``feature_size`` from ``models.unetr``, MLP width 4 x hidden as in ViT), so the image
size, the training patch size, must be a multiple of 16 and the network only takes
inputs of exactly that size (sliding-window prediction feeds it such windows).

The paper does not state UNETR's loss or optimiser; we train it like the U-Net, with
soft Dice loss and AdamW (``models.unetr.learning_rate`` / ``weight_decay``), so the two
baselines differ in architecture only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.networks.nets import UNETR

from ramanseg.config import ConfigError, require
from ramanseg.models.training import ModelEntry
from ramanseg.models.unet import adamw_strategy

#: UNETR's ViT splits the image into patches of this side (fixed in MONAI).
VIT_PATCH = 16


class UNETR2d(UNETR):
    """MONAI's UNETR for 2-D images with one foreground-logit output channel.

    Args:
        in_channels: input channels.
        img_size: the input side, a multiple of 16 (the training patch size).
        feature_size: width of the convolutional decoder's first level.
        hidden_size: the ViT embedding size, a multiple of ``num_heads``.
        num_heads: attention heads.
        out_channels: output channels (1: the foreground logit).

    Raises:
        ValueError: ``img_size`` not a positive multiple of 16, or ``hidden_size`` not a
            multiple of ``num_heads``.
    """

    def __init__(
        self,
        in_channels: int,
        img_size: int,
        feature_size: int = 16,
        hidden_size: int = 768,
        num_heads: int = 12,
        out_channels: int = 1,
    ) -> None:
        if not isinstance(img_size, int) or img_size < VIT_PATCH or img_size % VIT_PATCH:
            raise ValueError(
                f"UNETR img_size must be a positive multiple of {VIT_PATCH} (its ViT patch "
                f"side), got {img_size!r}"
            )
        if hidden_size % num_heads:
            raise ValueError(
                f"UNETR hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads})"
            )
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            img_size=img_size,
            feature_size=feature_size,
            hidden_size=hidden_size,
            mlp_dim=4 * hidden_size,
            num_heads=num_heads,
            spatial_dims=2,
        )
        self.input_size = img_size

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        """Logits (N, 1, S, S) for an input (N, C, S, S) with S = ``img_size``.

        Raises:
            ValueError: another input size (the positional embedding is fixed).
        """
        if tuple(x_in.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(
                f"UNETR built for {self.input_size} x {self.input_size} inputs got "
                f"{tuple(x_in.shape[-2:])}"
            )
        return super().forward(x_in)


def unetr_architecture(config: Mapping[str, Any], name: str, in_channels: int) -> dict[str, Any]:
    """:class:`UNETR2d` keyword arguments from ``models.<name>`` and the patch size.

    Args:
        config: the configuration.
        name: the model name (``unetr``).
        in_channels: channels of the preprocessed stacks.

    Returns:
        The keyword arguments.

    Raises:
        ConfigError: a missing key, or a patch size that is not a multiple of 16.
    """
    patch_size = require(config, "models.training.patch_size")
    if patch_size % VIT_PATCH:
        raise ConfigError(
            f"models.training.patch_size is {patch_size}, but UNETR needs a multiple of "
            f"{VIT_PATCH} (its ViT patch side); use e.g. {max(VIT_PATCH, patch_size // 16 * 16)}"
        )
    return {
        "in_channels": int(in_channels),
        "img_size": int(patch_size),
        "feature_size": int(require(config, f"models.{name}.feature_size")),
        "hidden_size": int(require(config, f"models.{name}.hidden_size")),
    }


ENTRY = ModelEntry(architecture=unetr_architecture, build=UNETR2d, strategy=adamw_strategy)
