"""nnU-Net's networks and input as Captum needs them.

Captum's segmentation recipe: the network is wrapped (:class:`SegmentationOutput`) so that it
returns one number per class, here the logit at the target pixel (``output: logit``) or the
tumour-minus-background logit margin (``output: margin``), and that number is attributed.
:class:`MeanOfModels` is the ensemble of the fold networks (:func:`fold_networks`).

The network input (:func:`prepare_input`, :class:`NetworkInput`) is what nnU-Net's predictor
feeds its network: the stack after the predictor's own preprocessor, zero-padded at the
bottom and right to a multiple of the network's total stride (see
:mod:`ramanseg.interpret.nnunet_attributions`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

#: nnU-Net's label of the tumour class (background is 0).
TUMOUR_LABEL = 1


def full_resolution_logits(output: Any) -> Tensor:
    """The full-resolution logits of a network output (the first of a deep-supervision list)."""
    if isinstance(output, (list, tuple)):
        output = output[0]
    return output


class SegmentationOutput(nn.Module):
    """A segmentation network reduced to one number per class, for Captum.

    Exactly one of ``pixel`` and ``region`` is given.

    Args:
        model: maps ``(B, C, H, W)`` to logits ``(B, K, H, W)`` (or a list whose first entry
            is that, as with deep supervision).
        pixel: ``(y, x)``: the output is the logits at that pixel, ``(B, K)``.
        region: ``(H, W)`` bool mask: the output is the logits summed over the region,
            ``(B, K)`` (Captum's recipe for "the pixels predicted as a class").
        output: ``logit`` (``K`` outputs) or ``margin``: one output, the tumour logit minus
            the background logit (two-class networks only).

    Raises:
        ValueError: neither or both of ``pixel`` and ``region``, or an unknown ``output``.
    """

    def __init__(
        self,
        model: nn.Module,
        pixel: tuple[int, int] | None = None,
        region: Tensor | np.ndarray | None = None,
        output: str = "logit",
    ) -> None:
        super().__init__()
        if (pixel is None) == (region is None):
            raise ValueError("give exactly one of pixel and region")
        if output not in ("logit", "margin"):
            raise ValueError(f"output must be 'logit' or 'margin', got {output!r}")
        self.model = model
        self.pixel = None if pixel is None else (int(pixel[0]), int(pixel[1]))
        if region is not None:
            region = torch.as_tensor(np.asarray(region, dtype=bool))
            self.register_buffer("region", region, persistent=False)
        else:
            self.region = None
        self.output = output

    def forward(self, x: Tensor) -> Tensor:
        logits = full_resolution_logits(self.model(x))
        if self.pixel is not None:
            y, x_ = self.pixel
            values = logits[:, :, y, x_]
        else:
            values = (logits * self.region.to(device=logits.device, dtype=logits.dtype)).sum(
                dim=(2, 3)
            )
        if self.output == "margin":
            if values.shape[1] != 2:
                raise ValueError(
                    f"output 'margin' needs two classes, the network has {values.shape[1]}"
                )
            values = (values[:, TUMOUR_LABEL] - values[:, 1 - TUMOUR_LABEL]).unsqueeze(1)
        return values


def target_index(output: str) -> int:
    """The Captum ``target`` (output column) of the tumour class for ``output``."""
    return 0 if output == "margin" else TUMOUR_LABEL


class MeanOfModels(nn.Module):
    """The ensemble of fold networks: the mean of their logits (as nnU-Net averages folds).

    nnU-Net averages the folds' softmax probabilities; the mean of logits is the
    differentiable counterpart explained here (same argmax in almost every pixel).
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = nn.ModuleList(models)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([full_resolution_logits(model(x)) for model in self.models]).mean(dim=0)


def prepare_network(network: nn.Module) -> nn.Module:
    """Make a network safe for Captum: eval mode, no deep supervision, no in-place activations,
    parameters frozen (gradients are taken with respect to inputs and activations only)."""
    network.eval()
    decoder = getattr(network, "decoder", None)
    if decoder is not None and getattr(decoder, "deep_supervision", False):
        decoder.deep_supervision = False
    for module in network.modules():
        if hasattr(module, "inplace") and isinstance(module.inplace, bool):
            module.inplace = False
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


def fold_networks(predictor: Any, device: torch.device | None = None) -> list[nn.Module]:
    """One network per fold from an ``nnUNetPredictor``: its network with each fold's weights.

    Args:
        predictor: from :func:`ramanseg.nnunet.run.load_ensemble`.
        device: where the networks go (default: the predictor's device).

    Returns:
        The fold networks, prepared with :func:`prepare_network`.
    """
    device = predictor.device if device is None else device
    networks = []
    for parameters in predictor.list_of_parameters:
        network = copy.deepcopy(predictor.network)
        network.load_state_dict(parameters)
        networks.append(prepare_network(network.to(device)))
    return networks


# --------------------------------------------------------------------------------------------
# The network input.


@dataclass
class NetworkInput:
    """An image as the network sees it, and the way back to image coordinates.

    Attributes:
        tensor: ``(1, C, H', W')`` float32, preprocessed and zero-padded.
        offset: ``(y0, x0)``: the image pixel at ``tensor[..., 0, 0]``.
        size: ``(h, w)``: the unpadded part of the tensor (the crop).
        image_shape: ``(Y, X)`` of the image.
    """

    tensor: Tensor
    offset: tuple[int, int]
    size: tuple[int, int]
    image_shape: tuple[int, int]

    def to_network(self, y: int, x: int) -> tuple[int, int]:
        """Image coordinates to tensor coordinates.

        Raises:
            ValueError: a pixel outside nnU-Net's crop (an all-zero border).
        """
        ny, nx = y - self.offset[0], x - self.offset[1]
        if not (0 <= ny < self.size[0] and 0 <= nx < self.size[1]):
            raise ValueError(
                f"pixel ({y}, {x}) lies outside the nonzero region nnU-Net crops to "
                f"(rows {self.offset[0]}..{self.offset[0] + self.size[0] - 1}, columns "
                f"{self.offset[1]}..{self.offset[1] + self.size[1] - 1})"
            )
        return ny, nx

    def crop(self, image: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """An image-sized 2-D map in tensor coordinates (padding filled with ``fill``)."""
        y0, x0 = self.offset
        h, w = self.size
        out = np.full(tuple(self.tensor.shape[2:]), fill, dtype=np.asarray(image).dtype)
        out[:h, :w] = np.asarray(image)[y0 : y0 + h, x0 : x0 + w]
        return out

    def to_image(self, values: np.ndarray) -> np.ndarray:
        """A tensor-sized 2-D map in image coordinates (NaN outside the crop)."""
        y0, x0 = self.offset
        h, w = self.size
        out = np.full(self.image_shape, np.nan, dtype=np.float64)
        out[y0 : y0 + h, x0 : x0 + w] = np.asarray(values)[:h, :w]
        return out


def pad_to_multiple(data: np.ndarray, divisor: Sequence[int]) -> np.ndarray:
    """Zero-pad the last two axes of ``data`` at the end to multiples of ``divisor``."""
    pads = [(0, 0)] * (data.ndim - 2)
    for size, div in zip(data.shape[-2:], divisor, strict=True):
        pads.append((0, (-size) % int(div)))
    return np.pad(data, pads)


def total_stride(predictor: Any) -> tuple[int, int]:
    """The product of the planned encoder strides per spatial axis (the padding multiple)."""
    strides = predictor.configuration_manager.network_arch_init_kwargs["strides"]
    total = [1, 1]
    for stride in strides:
        stride = [stride, stride] if isinstance(stride, int) else list(stride)
        total = [t * int(s) for t, s in zip(total, stride[-2:], strict=True)]
    return total[0], total[1]


def prepare_input(predictor: Any, stack: np.ndarray, device: torch.device) -> NetworkInput:
    """Run nnU-Net's own preprocessing on a stack and pad it for one whole-image pass.

    Args:
        predictor: an initialised ``nnUNetPredictor``.
        stack: float32 ``(C, Y, X)`` (``results/preprocessed/<sample>/stack.ome.tif``).
        device: where the tensor goes.

    Returns:
        The network input.

    Raises:
        ValueError: the plans resample the image (a spacing other than ours) or transpose it.
    """
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    data, _, properties = preprocessor.run_case_npy(
        stack[:, None].astype(np.float32),
        None,
        {"spacing": [999.0, 1.0, 1.0]},
        predictor.plans_manager,
        predictor.configuration_manager,
        predictor.dataset_json,
    )
    if list(predictor.plans_manager.transpose_forward) != [0, 1, 2]:
        raise ValueError("the plans transpose the image axes; attributions expect no transpose")
    bbox = properties["bbox_used_for_cropping"]
    (y0, y1), (x0, x1) = bbox[1], bbox[2]
    if tuple(data.shape[2:]) != (y1 - y0, x1 - x0):
        raise ValueError(
            f"nnU-Net's preprocessing resampled the image from {(y1 - y0, x1 - x0)} to "
            f"{tuple(data.shape[2:])}; attributions need the planned spacing to be the data's"
        )
    padded = pad_to_multiple(data[:, 0], total_stride(predictor))
    return NetworkInput(
        tensor=torch.from_numpy(np.ascontiguousarray(padded))[None].to(device),
        offset=(int(y0), int(x0)),
        size=(int(y1 - y0), int(x1 - x0)),
        image_shape=(int(stack.shape[1]), int(stack.shape[2])),
    )
