"""The networks for spectra: the skin-cancer paper's 1D-CNN (its Table 1) and a 1D ResNet.

Both take ``(batch, 1, bands)`` and return logits: one for a binary task (sigmoid, the
paper's), one per class otherwise (softmax).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: The paper's Table 1: kernel sizes and channels of the convolution blocks.
TABLE1_KERNELS = (31, 15, 7, 5, 3)
TABLE1_CHANNELS = (16, 32, 64, 128, 256)


def output_units(n_classes: int) -> int:
    """One logit for two classes (sigmoid), else one per class (softmax)."""
    return 1 if n_classes == 2 else n_classes


class SpectraCNN(nn.Module):
    """The 1D-CNN of the skin-cancer paper's Table 1.

    Each block is Conv1D ('same' padding) → BatchNorm → ReLU → MaxPool(2); then global
    average pooling, Dense(128) → ReLU → Dropout(0.5), Dense(1) with a sigmoid (or one
    unit per class with a softmax). Short spectra: a block pools only while the pooled
    length stays at least ``min_pooled_length`` (default 2), so a 21-band SRS spectrum
    keeps 2 positions in its last blocks instead of pooling to nothing (the paper's
    1200-point input pools in every block); ``min_pooled_length`` above the spectrum's
    length turns pooling off, keeping one feature position per band (the per-pixel model,
    whose explanations need band resolution).
    Table 1's layers hold about 0.2 M parameters; the paper's text says 3.7 M, which its
    table does not give; we follow the table.

    Args:
        n_bands: the spectrum's length.
        n_classes: the number of classes (2: one sigmoid output).
        kernels: the kernel size of each block.
        channels: the output channels of each block.
        dense: the width of the hidden dense layer.
        dropout: the dropout before the last dense layer.
        min_pooled_length: a block pools only if its output keeps at least this length.
    """

    def __init__(
        self,
        n_bands: int,
        n_classes: int = 2,
        kernels: Sequence[int] = TABLE1_KERNELS,
        channels: Sequence[int] = TABLE1_CHANNELS,
        dense: int = 128,
        dropout: float = 0.5,
        min_pooled_length: int = 2,
    ) -> None:
        super().__init__()
        blocks = []
        length, previous = n_bands, 1
        for kernel, width in zip(kernels, channels, strict=True):
            pool = length // 2 >= min_pooled_length
            blocks.append(
                nn.Sequential(
                    nn.Conv1d(previous, width, kernel, padding=kernel // 2),
                    nn.BatchNorm1d(width),
                    nn.ReLU(),
                    nn.MaxPool1d(2) if pool else nn.Identity(),
                )
            )
            length = length // 2 if pool else length
            previous = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.hidden = nn.Linear(previous, dense)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dense, output_units(n_classes))

    def block_stride(self, block: int) -> int:
        """How many input bands one position of the 1-based ``block``'s ReLU output spans:
        the product of the poolings before it."""
        pooled = sum(isinstance(b[3], nn.MaxPool1d) for b in self.blocks[: block - 1])
        return 2**pooled

    def receptive_field(self, block: int) -> int:
        """How many input bands one position of the 1-based ``block``'s ReLU output sees."""
        field, stride = 1, 1
        for index, previous in enumerate(self.blocks[:block]):
            field += (previous[0].kernel_size[0] - 1) * stride
            if index < block - 1 and isinstance(previous[3], nn.MaxPool1d):
                field += stride
                stride *= 2
        return field

    def band_resolution_block(self) -> int:
        """The deepest 1-based block whose ReLU keeps one position per band (no pooling
        before it): where the explanations resolve single bands."""
        return max(b for b in range(1, len(self.blocks) + 1) if self.block_stride(b) == 1)

    def head_weights(self) -> torch.Tensor:
        """``(outputs, channels)``: the dense layers' weights composed (ReLU and dropout
        left out), the linear map from the pooled features to the logits that the
        weight-based explanation uses."""
        return self.classifier.weight @ self.hidden.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.blocks(x)).flatten(1)
        return self.classifier(self.dropout(torch.relu(self.hidden(features))))


class _Block1d(nn.Module):
    """A ResNet basic block, 1D."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(inputs, outputs, 7, stride=stride, padding=3, bias=False),
            nn.BatchNorm1d(outputs),
            nn.ReLU(),
            nn.Conv1d(outputs, outputs, 7, padding=3, bias=False),
            nn.BatchNorm1d(outputs),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and inputs == outputs
            else nn.Sequential(
                nn.Conv1d(inputs, outputs, 1, stride=stride, bias=False), nn.BatchNorm1d(outputs)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet1d(nn.Module):
    """A small 1D ResNet (ResNet-18 layout, two basic blocks per stage, narrower), the
    "transfer" baseline: pretrained on another spectral task, then fine-tuned.

    Args:
        n_classes: the number of classes (2: one sigmoid output).
        widths: the channels of the four stages.
    """

    def __init__(self, n_classes: int = 2, widths: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(1, widths[0], 15, stride=2, padding=7, bias=False),
            nn.BatchNorm1d(widths[0]),
            nn.ReLU(),
        )
        stages, previous = [], widths[0]
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            stages.append(
                nn.Sequential(_Block1d(previous, width, stride), _Block1d(width, width, 1))
            )
            previous = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.classifier = nn.Linear(previous, output_units(n_classes))

    def replace_head(self, n_classes: int) -> None:
        """A fresh classifier for a new task (the backbone keeps its weights)."""
        self.classifier = nn.Linear(self.classifier.in_features, output_units(n_classes))

    def fine_tune_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """The parameters the paper updates when fine-tuning: the last two stages
        (backbone) and the classifier (head); the rest is frozen."""
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        backbone = [p for stage in self.stages[-2:] for p in stage.parameters()]
        head = list(self.classifier.parameters())
        for parameter in backbone + head:
            parameter.requires_grad_(True)
        return backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.stages(self.stem(x))).flatten(1))
