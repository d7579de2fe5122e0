"""Post-hoc attributions of the nnU-Net ensemble with Captum (paper section 4.1.1).

The paper explains one pixel in a false-positive region of one test image:

1. **Layer Grad-CAM** at an encoder layer, for each of the five fold networks and averaged
   over them (the mean of the fold maps, not Grad-CAM of the ensemble);
2. **Integrated Gradients** on the ensemble (the mean of the folds' logits), summed in
   absolute value over the image for each input channel. Attributions are linear in the
   model, so the ensemble's are computed as the mean of the folds' (one network's
   activations in memory at a time, same numbers);
3. **Feature Ablation** of each channel over the epithelium: the channel is replaced by the
   baseline inside the region of the ablation class and the change of the target pixel's
   output is recorded, ``F(x) - F(x with channel c ablated in the region)`` (Captum's sign:
   positive means the channel's values there are evidence *for* the tumour class).

Captum's segmentation recipe: the network is wrapped (:class:`SegmentationOutput`) so that it
returns one number per class, here the logit at the target pixel (``output: logit``) or the
tumour-minus-background logit margin (``output: margin``), and that number is attributed.

The network input is what nnU-Net's predictor feeds its network: the stack goes through the
predictor's own preprocessor (``configuration_manager.preprocessor_class().run_case_npy``:
transpose, crop to the nonzero region, the planned normalisation — ``ZScoreNormalization``
per image and channel for our plans — and resampling to the planned spacing, an identity for
our 1 x 1 spacing), then it is zero-padded at the bottom and right to a multiple of the
network's total stride. The whole image is one forward pass (no sliding windows, no mirroring):
the attributions explain this pass, whose tumour probability at the target pixel is recorded
next to the ensemble prediction's in ``target.json``.

**Baselines.** Integrated Gradients integrates the gradient along the straight path from a
baseline to the input. nnU-Net's networks normalise every feature map per image
(``InstanceNorm``) right after each convolution, so they are nearly invariant to the input's
scale: ``F(a x)`` is the same for every ``a`` above about 0.01 and only ``F(0)`` differs. With
the all-zero baseline the whole output difference therefore happens in a sliver of the path
next to zero that no quadrature resolves, and the attributions miss almost all of it (we
measured a convergence delta equal to the output difference). ``interpret.ig_baseline``:

* ``blur`` (default): the input blurred by a Gaussian of ``ig_baseline_sigma`` pixels per
  channel (same channel means, structure finer than sigma removed): the attributions say
  which channels' local structure the output rests on;
* ``noise``: Gaussian noise with each normalised channel's mean 0 and standard deviation 1
  (seeded by ``seed``): every channel's content against none;
* ``zeros``: the all-zero input (Captum's default; degenerate for nnU-Net, see above).

Captum's convergence delta and the output difference are written to ``target.json`` and a
warning is logged when the delta exceeds 10 % of the difference.

Feature Ablation replaces a channel inside the region by **0 in the network's input space**,
which after nnU-Net's per-image z-score is the channel's image mean: the region then carries
no information in that channel. (Only part of the input changes, so the scale invariance
above does not apply.)

**Target pixel** (``interpret.sample`` / ``interpret.target_pixel`` ``auto``): see
:func:`select_target`.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor, nn

from ramanseg.config import ConfigError, channel_names, channel_roles, class_names
from ramanseg.errors import InputError
from ramanseg.evaluate import read_ground_truth, read_test_samples
from ramanseg.figures import figure_bytes, new_figure, table_bytes
from ramanseg.fileio import json_bytes, prefixed, write_files
from ramanseg.interpret import (
    GRADCAM_MIN_SIZE,
    InterpretSettings,
    class_index,
    display_channel_index,
    interpret_settings,
    read_class_map,
    read_stack,
)
from ramanseg.predictions import prediction_paths, read_prediction

log = logging.getLogger(__name__)

#: nnU-Net's label of the tumour class (background is 0).
TUMOUR_LABEL = 1


# --------------------------------------------------------------------------------------------
# The target pixel.


@dataclass(frozen=True)
class Target:
    """The pixel explained, and why it was chosen.

    Attributes:
        sample: the test sample.
        y, x: the pixel, image coordinates (row, column).
        rule: ``configured``, ``deepest false positive`` or ``most probable negative``.
        false_positive_area: false-positive pixels of the sample (inside the tissue).
        depth: Euclidean distance (pixels) from the pixel to the nearest pixel outside its
            false-positive region (0 unless the rule is ``deepest false positive``).
        probability: the ensemble prediction's tumour probability at the pixel (from the
            prediction file).
    """

    sample: str
    y: int
    x: int
    rule: str
    false_positive_area: int
    depth: float
    probability: float

    def describe(self) -> str:
        """A short label for figure titles."""
        return f"{self.sample}, pixel (y={self.y}, x={self.x}), {self.rule}"


def deepest_pixel(region: np.ndarray) -> tuple[int, int, float]:
    """The pixel of ``region`` farthest from any pixel outside it (the image border counts as
    outside), by the Euclidean distance transform; ties go to the first in row-major order.

    Args:
        region: 2-D bool mask with at least one pixel.

    Returns:
        ``(y, x, distance)``.

    Raises:
        ValueError: an empty or non-2-D region.
    """
    region = np.asarray(region, dtype=bool)
    if region.ndim != 2 or not region.any():
        raise ValueError("the region must be a non-empty 2-D mask")
    distance = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(y), int(x), float(distance[y, x])


def select_target(
    samples: Sequence[str],
    predicted: Mapping[str, np.ndarray],
    probability: Mapping[str, np.ndarray],
    truth: Mapping[str, np.ndarray],
    tissue: Mapping[str, np.ndarray],
    *,
    sample: str = "auto",
    pixel: tuple[int, int] | None = None,
    eligible: Mapping[str, bool] | None = None,
) -> Target:
    """Choose the pixel to explain, deterministically.

    False positives are pixels predicted tumour whose ground truth is not tumour, inside the
    tissue (``tissue``: the evaluation's ``tissue`` pixels, so that glass is never chosen).

    * ``sample = "auto"``: among the ``eligible`` samples (those with pixels of the ablation
      class; all if ``eligible`` is ``None``) the one with the largest false-positive area,
      the first in ``samples`` order on a tie;
    * ``pixel = None``: the false-positive pixel deepest inside that sample's false-positive
      region (:func:`deepest_pixel`);
    * no false positive in any candidate sample (a perfect or an all-background model): the
      non-tumour tissue pixel with the highest predicted tumour probability (the first sample,
      then row-major order, on ties), rule ``most probable negative``.

    Args:
        samples: the test samples, in order.
        predicted: predicted masks by sample (nonzero = tumour).
        probability: predicted tumour probabilities by sample.
        truth: ground-truth masks by sample.
        tissue: the pixels false positives are counted in, by sample.
        sample: ``auto`` or a sample id from ``samples``.
        pixel: ``(y, x)`` or ``None`` for automatic.
        eligible: which samples ``auto`` may choose.

    Returns:
        The target.

    Raises:
        ValueError: an unknown sample, a pixel outside the image, or no eligible sample.
    """
    if not samples:
        raise ValueError("no test samples to choose a target pixel from")
    if sample != "auto" and sample not in samples:
        raise ValueError(f"interpret.sample {sample!r} is not a test sample; test: {list(samples)}")
    if pixel is not None and sample == "auto":
        raise ValueError("a configured target pixel needs a configured sample")
    false_positive = {
        s: (np.asarray(predicted[s]) != 0) & (np.asarray(truth[s]) == 0) & (tissue[s] != 0)
        for s in samples
    }
    areas = {s: int(false_positive[s].sum()) for s in samples}
    if sample == "auto":
        candidates = [s for s in samples if eligible is None or eligible.get(s, False)]
        if not candidates:
            raise ValueError(f"no test sample is eligible (samples: {list(samples)})")
        chosen = max(candidates, key=lambda s: (areas[s], -candidates.index(s)))
        if areas[chosen] == 0:
            return _most_probable_negative(candidates, probability, truth, tissue, areas)
    else:
        chosen = sample
    shape = np.asarray(truth[chosen]).shape
    if pixel is not None:
        y, x = pixel
        if not (0 <= y < shape[0] and 0 <= x < shape[1]):
            raise ValueError(f"interpret.target_pixel {list(pixel)} is outside the image {shape}")
        return Target(
            chosen, y, x, "configured", areas[chosen], 0.0, float(probability[chosen][y, x])
        )
    if areas[chosen] == 0:
        return _most_probable_negative([chosen], probability, truth, tissue, areas)
    y, x, depth = deepest_pixel(false_positive[chosen])
    return Target(
        chosen,
        y,
        x,
        "deepest false positive",
        areas[chosen],
        depth,
        float(probability[chosen][y, x]),
    )


def _most_probable_negative(
    samples: Sequence[str],
    probability: Mapping[str, np.ndarray],
    truth: Mapping[str, np.ndarray],
    tissue: Mapping[str, np.ndarray],
    areas: Mapping[str, int],
) -> Target:
    best: tuple[float, str, int, int] | None = None
    for s in samples:
        negative = (np.asarray(truth[s]) == 0) & (tissue[s] != 0)
        if not negative.any():
            continue
        values = np.where(negative, np.asarray(probability[s], dtype=np.float64), -np.inf)
        y, x = np.unravel_index(int(np.argmax(values)), values.shape)
        if best is None or values[y, x] > best[0]:
            best = (float(values[y, x]), s, int(y), int(x))
    if best is None:
        raise ValueError(f"no non-tumour tissue pixel in samples {list(samples)}")
    value, s, y, x = best
    log.warning("no false positive in %s; explaining the most probable negative pixel", samples)
    return Target(s, y, x, "most probable negative", areas[s], 0.0, value)


# --------------------------------------------------------------------------------------------
# Wrapping networks for Captum.


def _logits(output: Any) -> Tensor:
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
        logits = _logits(self.model(x))
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
        return torch.stack([_logits(model(x)) for model in self.models]).mean(dim=0)


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


# --------------------------------------------------------------------------------------------
# The attributions.


def encoder_stage_sizes(network: nn.Module, inputs: Tensor) -> dict[str, tuple[int, int]]:
    """The output size of every ``encoder.stages.<i>`` for ``inputs``, by one probe pass."""
    stages = network.get_submodule("encoder.stages")
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        stage.register_forward_hook(
            lambda _m, _i, out, name=f"encoder.stages.{index}": sizes.__setitem__(
                name, tuple(int(s) for s in out.shape[-2:])
            )
        )
        for index, stage in enumerate(stages)
    ]
    try:
        with torch.no_grad():
            network(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


def resolve_layer(
    network: nn.Module, spec: str, inputs: Tensor, min_size: int = GRADCAM_MIN_SIZE
) -> tuple[str, tuple[int, int]]:
    """The Grad-CAM layer's module path and its feature-map size for ``inputs``.

    Args:
        network: the network (with an ``encoder.stages`` sequence for ``auto``).
        spec: a module path (``encoder.stages.2``) or ``auto``: the deepest encoder stage
            whose map is at least ``min_size`` on both sides (the first stage if none is).
        inputs: the network input.
        min_size: see ``auto``.

    Returns:
        ``(path, (h, w))``.

    Raises:
        ConfigError: a path that names no module of the network.
    """
    if spec == "auto":
        sizes = encoder_stage_sizes(network, inputs)
        large = [name for name, size in sizes.items() if min(size) >= min_size]
        name = large[-1] if large else next(iter(sizes))
        return name, sizes[name]
    try:
        module = network.get_submodule(spec)
    except AttributeError:
        stages = [name for name, _ in network.named_modules() if name.startswith("encoder.stages")]
        raise ConfigError(
            f"interpret.gradcam_layer {spec!r} is not a module of the network; encoder stages: "
            f"{[s for s in stages if s.count('.') == 2]}"
        ) from None
    size: list[tuple[int, int]] = []
    hook = module.register_forward_hook(
        lambda _m, _i, out: size.append(tuple(int(s) for s in _logits(out).shape[-2:]))
    )
    try:
        with torch.no_grad():
            network(inputs)
    finally:
        hook.remove()
    return spec, size[0]


def gradcam_maps(
    networks: Sequence[nn.Module],
    inputs: Tensor,
    layer: str,
    pixel: tuple[int, int],
    output: str = "logit",
) -> np.ndarray:
    """Layer Grad-CAM of each network for the target pixel, upsampled to the input size.

    The maps are Captum's signed Grad-CAM (``relu_attributions=False``): positive where the
    layer's activations support the output, negative where they oppose it. Each is upsampled
    bilinearly (``align_corners=False``) to the input's size.

    Args:
        networks: the fold networks.
        inputs: ``(1, C, H, W)``.
        layer: the module path of the layer in every network.
        pixel: ``(y, x)`` in input coordinates.
        output: ``logit`` or ``margin``.

    Returns:
        ``(F, H, W)`` float64, one map per network; their mean is the averaged map.
    """
    from captum.attr import LayerGradCam

    maps = []
    for network in networks:
        forward = SegmentationOutput(network, pixel=pixel, output=output)
        cam = LayerGradCam(forward, network.get_submodule(layer)).attribute(
            inputs, target=target_index(output), relu_attributions=False
        )
        cam = F.interpolate(
            cam.detach(), size=inputs.shape[2:], mode="bilinear", align_corners=False
        )
        maps.append(cam[0, 0].cpu().double().numpy())
    return np.stack(maps)


def integrated_gradients(
    model: nn.Module,
    inputs: Tensor,
    pixel: tuple[int, int] | None,
    output: str = "logit",
    steps: int = 32,
    internal_batch_size: int | None = None,
    baseline: Tensor | None = None,
    region: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Integrated Gradients of the target pixel's (or region's) output w.r.t. the input.

    Gauss-Legendre quadrature with ``steps`` points; completeness says the attributions sum to
    ``F(x) - F(baseline)``, and Captum's convergence delta is the difference.

    Args:
        model: the (ensemble) network.
        inputs: ``(1, C, H, W)``.
        pixel: ``(y, x)`` in input coordinates, or ``None`` with ``region``.
        output: ``logit`` or ``margin``.
        steps: integration steps.
        internal_batch_size: inputs per forward pass (``None``: all steps at once).
        baseline: the baseline input (default zeros).
        region: ``(H, W)`` bool: explain the output summed over the region instead.

    Returns:
        ``(attributions (C, H, W), |convergence delta|)``.
    """
    from captum.attr import IntegratedGradients

    forward = SegmentationOutput(model, pixel=pixel, region=region, output=output)
    baseline = torch.zeros_like(inputs) if baseline is None else baseline
    attributions, delta = IntegratedGradients(forward).attribute(
        inputs,
        baselines=baseline,
        target=target_index(output),
        n_steps=steps,
        method="gausslegendre",
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    return attributions[0].detach().cpu().double().numpy(), float(delta.abs().max())


def ig_baseline(inputs: Tensor, kind: str, sigma: float = 8.0, seed: int = 0) -> Tensor:
    """The Integrated Gradients baseline for ``inputs`` (see the module docstring).

    Args:
        inputs: ``(1, C, H, W)``.
        kind: ``blur``, ``noise`` or ``zeros``.
        sigma: the blur's standard deviation in pixels (``blur``).
        seed: the noise generator's seed (``noise``).

    Returns:
        A tensor like ``inputs``.

    Raises:
        ValueError: an unknown ``kind`` or a non-positive ``sigma``.
    """
    if kind == "zeros":
        return torch.zeros_like(inputs)
    if kind == "noise":
        generator = torch.Generator().manual_seed(int(seed))
        noise = torch.randn(inputs.shape, generator=generator, dtype=torch.float32)
        return noise.to(device=inputs.device, dtype=inputs.dtype)
    if kind == "blur":
        if not sigma > 0:
            raise ValueError(f"the blur's sigma must be > 0, got {sigma}")
        array = inputs.detach().cpu().double().numpy()
        blurred = ndimage.gaussian_filter(array, (0, 0, sigma, sigma), mode="reflect")
        return torch.from_numpy(blurred).to(device=inputs.device, dtype=inputs.dtype)
    raise ValueError(f"the baseline must be 'blur', 'noise' or 'zeros', got {kind!r}")


def channel_totals(attributions: np.ndarray) -> np.ndarray:
    """The per-channel sum of absolute attributions, ``(C,)`` (the paper's contribution vector)."""
    return np.abs(attributions).reshape(attributions.shape[0], -1).sum(axis=1)


def ablate_channels(
    model: nn.Module,
    inputs: Tensor,
    region: np.ndarray,
    pixel: tuple[int, int],
    output: str = "logit",
    perturbations_per_eval: int = 1,
) -> np.ndarray:
    """Feature Ablation of each channel inside a region, for the target pixel's output.

    The feature mask gives every (channel, region pixel) the channel's index and every pixel
    outside the region one further group, so each channel's region is ablated (set to the
    baseline 0) on its own; the outside group's result is not used.

    Args:
        model: the (ensemble) network.
        inputs: ``(1, C, H, W)``.
        region: ``(H, W)`` bool, the region ablated (e.g. the epithelium).
        pixel: ``(y, x)`` in input coordinates.
        output: ``logit`` or ``margin``.
        perturbations_per_eval: ablations per forward pass.

    Returns:
        ``(C,)``: ``F(x) - F(x with channel c set to 0 in the region)`` per channel.

    Raises:
        ValueError: an empty region or one of the wrong shape.
    """
    from captum.attr import FeatureAblation

    region = np.asarray(region, dtype=bool)
    if region.shape != tuple(inputs.shape[2:]):
        raise ValueError(f"region shape {region.shape} differs from the input's {inputs.shape[2:]}")
    if not region.any():
        raise ValueError("the ablation region is empty")
    channels = inputs.shape[1]
    inside = torch.as_tensor(region, device=inputs.device)
    mask = torch.full(inputs.shape, channels, dtype=torch.long, device=inputs.device)
    mask[0] = torch.where(
        inside, torch.arange(channels, device=inputs.device).view(-1, 1, 1), channels
    )
    forward = SegmentationOutput(model, pixel=pixel, output=output)
    attributions = FeatureAblation(forward).attribute(
        inputs,
        baselines=0.0,
        target=target_index(output),
        feature_mask=mask,
        perturbations_per_eval=perturbations_per_eval,
    )
    ys, xs = np.nonzero(region)
    return attributions[0, :, int(ys[0]), int(xs[0])].detach().cpu().double().numpy()


# --------------------------------------------------------------------------------------------
# Figures.


@dataclass(frozen=True)
class Scene:
    """What every heatmap figure shows under and around the map.

    Attributes:
        image: the display channel, image coordinates.
        channel: its name.
        target: the pixel explained.
        layer: the Grad-CAM layer's module path.
        layer_size: its feature-map size.
    """

    image: np.ndarray
    channel: str
    target: Target
    layer: str
    layer_size: tuple[int, int]

    @property
    def layer_text(self) -> str:
        """``encoder.stages.2 (32x32 map)``."""
        return f"{self.layer} ({self.layer_size[0]}x{self.layer_size[1]} map)"


def _symmetric_limit(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    limit = float(finite.max()) if finite.size else 0.0
    return limit if limit > 0 else 1.0


def _heatmap(axis, scene: Scene, values: np.ndarray, limit: float):
    finite = scene.image[np.isfinite(scene.image)]
    low, high = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    axis.imshow(scene.image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    mappable = None
    if values is not None:
        mappable = axis.imshow(
            np.ma.masked_invalid(values),
            cmap="RdBu_r",
            vmin=-limit,
            vmax=limit,
            alpha=0.6,
            interpolation="bilinear",
        )
    target = scene.target
    axis.plot(target.x, target.y, marker="+", color="#00e5ff", markersize=12, markeredgewidth=2)
    axis.plot(target.x, target.y, marker="o", color="#00e5ff", markersize=10, fillstyle="none")
    axis.set_xticks([])
    axis.set_yticks([])
    return mappable


def gradcam_folds_figure(maps: np.ndarray, folds: Sequence[int], scene: Scene):
    """One panel per fold: its Grad-CAM over the display channel, one shared colour scale.

    Args:
        maps: ``(F, Y, X)`` Grad-CAM maps in image coordinates.
        folds: the fold of each map.
        scene: the display channel, target and layer.
    """
    limit = _symmetric_limit(maps)
    figure = new_figure(2.6 * len(folds) + 0.8, 3.3)
    axes = np.atleast_1d(figure.subplots(1, len(folds)))
    mappable = None
    for axis, fold_map, fold in zip(axes, maps, folds, strict=True):
        mappable = _heatmap(axis, scene, fold_map, limit)
        axis.set_title(f"fold {fold}", fontsize=9)
    figure.colorbar(mappable, ax=list(axes), shrink=0.8, label="Grad-CAM (signed)")
    figure.suptitle(
        f"Layer Grad-CAM per fold at {scene.layer_text}, over {scene.channel}\n"
        f"{scene.target.describe()}",
        fontsize=9,
    )
    return figure


def gradcam_mean_figure(
    mean_map: np.ndarray, n_folds: int, scene: Scene, outlines: Sequence[tuple]
):
    """The fold-averaged Grad-CAM beside the display channel with outlined regions.

    Args:
        mean_map: ``(Y, X)`` the mean of the fold maps.
        n_folds: how many folds were averaged.
        scene: the display channel, target and layer.
        outlines: ``(mask, colour, label, linestyle)`` drawn on the left panel.
    """
    from matplotlib.lines import Line2D

    figure = new_figure(8.2, 4.0)
    left, right = figure.subplots(1, 2)
    _heatmap(left, scene, None, 1.0)
    handles = []
    for mask, colour, label, style in outlines:
        if mask is not None and np.any(mask) and not np.all(mask):
            left.contour(
                np.asarray(mask, dtype=float),
                levels=[0.5],
                colors=[colour],
                linewidths=1.0,
                linestyles=style,
            )
            handles.append(Line2D([], [], color=colour, linestyle=style, label=label))
    if handles:
        left.legend(handles=handles, fontsize=7, loc="lower left", framealpha=0.7)
    left.set_title(scene.channel, fontsize=9)
    mappable = _heatmap(right, scene, mean_map, _symmetric_limit(mean_map))
    right.set_title(f"mean of {n_folds} folds' Grad-CAM", fontsize=9)
    figure.colorbar(mappable, ax=right, shrink=0.8, label="Grad-CAM (signed)")
    figure.suptitle(f"Layer Grad-CAM at {scene.layer_text}\n{scene.target.describe()}", fontsize=9)
    return figure


def channel_bar_figure(
    values: np.ndarray, names: Sequence[str], ylabel: str, title: str, signed: bool
):
    """A bar per channel with the channel names (signed: red positive, blue negative)."""
    figure = new_figure(max(6.0, 0.32 * len(names) + 1.5), 4.2)
    axis = figure.subplots()
    positions = np.arange(len(names))
    colours = ["#3264c8"] * len(values)
    if signed:
        from matplotlib.patches import Patch

        colours = ["#c83232" if v > 0 else "#3264c8" for v in values]
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.legend(
            handles=[
                Patch(color="#c83232", label="evidence for tumour"),
                Patch(color="#3264c8", label="evidence against tumour"),
            ],
            fontsize=7,
            loc="best",
        )
    axis.bar(positions, values, color=colours)
    axis.set_xticks(positions)
    axis.set_xticklabels(names, rotation=90, fontsize=7)
    axis.set_xlabel("input channel")
    axis.set_ylabel(ylabel)
    axis.grid(True, axis="y", alpha=0.3)
    axis.set_title(title, fontsize=9)
    return figure


# --------------------------------------------------------------------------------------------
# The analysis and the command.


@dataclass
class AttributionResult:
    """Everything :func:`explain` computes.

    Attributes:
        layer: the Grad-CAM layer's module path.
        layer_size: its feature-map size.
        gradcam: ``(F, Y, X)`` per-fold Grad-CAM, image coordinates, NaN outside the crop.
        ig: ``(C, H', W')`` Integrated Gradients on the ensemble, network coordinates.
        ig_delta: the completeness gap ``|sum of attributions - ig_output_difference|``
            (Captum's convergence delta, for the ensemble).
        ig_output_difference: ``F(x) - F(baseline)`` of the explained output.
        ablation: ``(C,)`` Feature Ablation per channel, or ``None`` without a region.
        ablation_pixels: pixels of the ablation region inside the network input.
        model_probability: the ensemble pass's tumour probability at the pixel.
        timings: seconds per step.
    """

    layer: str
    layer_size: tuple[int, int]
    gradcam: np.ndarray
    ig: np.ndarray
    ig_delta: float
    ig_output_difference: float
    ablation: np.ndarray | None
    ablation_pixels: int
    model_probability: float
    timings: dict[str, float] = field(default_factory=dict)


def explain(
    networks: Sequence[nn.Module],
    network_input: NetworkInput,
    target: Target,
    settings: InterpretSettings,
    region: np.ndarray | None,
) -> AttributionResult:
    """Grad-CAM per fold, then Integrated Gradients and Feature Ablation on the ensemble.

    Args:
        networks: the fold networks (prepared with :func:`prepare_network`).
        network_input: the target sample's input.
        target: the pixel.
        settings: the ``interpret`` settings.
        region: the ablation region in image coordinates (``None`` or empty: no ablation).

    Returns:
        The result.
    """
    inputs = network_input.tensor
    pixel = network_input.to_network(target.y, target.x)
    output, index = settings.output, target_index(settings.output)
    timings: dict[str, float] = {}
    layer, layer_size = resolve_layer(networks[0], settings.gradcam_layer, inputs)

    start = time.perf_counter()
    maps = gradcam_maps(networks, inputs, layer, pixel, output)
    gradcam = np.stack([network_input.to_image(m) for m in maps])
    timings["gradcam_seconds"] = time.perf_counter() - start

    ensemble = MeanOfModels(networks)
    baseline = ig_baseline(inputs, settings.ig_baseline, settings.ig_baseline_sigma, settings.seed)
    with torch.no_grad():
        logits = SegmentationOutput(ensemble, pixel=pixel)(inputs)
        probability = float(torch.softmax(logits, dim=1)[0, TUMOUR_LABEL])
        explained = SegmentationOutput(ensemble, pixel=pixel, output=output)
        difference = float(explained(inputs)[0, index] - explained(baseline)[0, index])
    start = time.perf_counter()
    # IG is linear in the model: IG of the mean of the folds is the mean of the folds' IG
    # (same path, same quadrature). Fold by fold keeps one network's activations in memory.
    ig = np.mean(
        [
            integrated_gradients(
                network,
                inputs,
                pixel,
                output,
                settings.ig_steps,
                settings.internal_batch_size,
                baseline=baseline,
            )[0]
            for network in networks
        ],
        axis=0,
    )
    delta = abs(float(ig.sum()) - difference)
    timings["integrated_gradients_seconds"] = time.perf_counter() - start
    if delta > 0.1 * abs(difference):
        log.warning(
            "Integrated Gradients: convergence delta %.3g is more than 10%% of the output "
            "difference %.3g; raise interpret.ig_steps or change interpret.ig_baseline",
            delta,
            difference,
        )

    ablation, ablation_pixels = None, 0
    if region is not None:
        cropped = network_input.crop(np.asarray(region, dtype=bool), fill=False)
        ablation_pixels = int(cropped.sum())
        if ablation_pixels:
            start = time.perf_counter()
            # Also linear: the ensemble's output change is the mean of the folds'.
            ablation = np.mean(
                [
                    ablate_channels(
                        network, inputs, cropped, pixel, output, settings.internal_batch_size
                    )
                    for network in networks
                ],
                axis=0,
            )
            timings["feature_ablation_seconds"] = time.perf_counter() - start
    return AttributionResult(
        layer=layer,
        layer_size=layer_size,
        gradcam=gradcam,
        ig=ig,
        ig_delta=delta,
        ig_output_difference=difference,
        ablation=ablation,
        ablation_pixels=ablation_pixels,
        model_probability=probability,
        timings=timings,
    )


def channel_table(config: Mapping[str, Any], column: str, values: np.ndarray) -> pd.DataFrame:
    """A per-channel table: index, name, role, ``column`` and its rank (1 = largest)."""
    names = channel_names(config)
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(-values, kind="stable")
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[order] = np.arange(1, len(values) + 1)
    return pd.DataFrame(
        {
            "channel": np.arange(len(names)),
            "name": names,
            "role": channel_roles(config),
            column: values,
            "rank": ranks,
        }
    )


@dataclass
class _TestSet:
    """The test samples' predictions and ground truth, as the target selection needs them."""

    samples: list[str]
    predicted: dict[str, np.ndarray]
    probability: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]
    tissue: dict[str, np.ndarray]
    classes: dict[str, np.ndarray]


def _read_test_set(
    samples: Sequence[str], preprocessed: Path, predictions: Path, names: Sequence[str]
) -> _TestSet:
    data = _TestSet(list(samples), {}, {}, {}, {}, {})
    for sample in samples:
        mask_path, probability_path = prediction_paths(predictions, sample)
        for path in (mask_path, probability_path):
            if not path.is_file():
                raise InputError(
                    "the nnU-Net prediction does not exist",
                    sample=sample,
                    path=path,
                    fix="run the rule nnunet_predict first",
                )
        data.predicted[sample], data.probability[sample] = read_prediction(predictions, sample)
        truth, tissue = read_ground_truth(preprocessed, sample, "tissue")
        data.truth[sample], data.tissue[sample] = truth, tissue
        data.classes[sample] = read_class_map(preprocessed, sample, names)
        if data.predicted[sample].shape != truth.shape:
            raise InputError(
                f"the nnU-Net prediction has shape {data.predicted[sample].shape}, the ground "
                f"truth {truth.shape}",
                sample=sample,
                path=mask_path,
                fix="rerun the rule nnunet_predict",
            )
    return data


def run_interpret_nnunet(
    model_dir: str | Path,
    folds: Sequence[int],
    preprocessed: str | Path,
    predictions: str | Path,
    split: str | Path,
    outdir: str | Path,
    config: Mapping[str, Any],
    device: torch.device,
) -> dict[str, Any]:
    """Run the nnU-Net attributions and write their figures, tables and ``target.json``.

    Call :func:`ramanseg.nnunet.environment.configure_nnunet` first.

    Writes into ``outdir``: ``gradcam_folds.png/.pdf``, ``gradcam_mean.png/.pdf``,
    ``integrated_gradients.png/.pdf/.csv``, ``feature_ablation.png/.pdf/.csv`` and
    ``target.json`` (the target and how it was chosen, the layer, the settings and Integrated
    Gradients' completeness check; the timings go to the log, so that reruns give identical
    files). When the target sample has no pixel of the
    ablation class (possible only with a configured sample) the ablation table is all zeros
    and the figure says so.

    Args:
        model_dir: the trained nnU-Net model folder (holding ``fold_<k>``).
        folds: the folds.
        preprocessed: ``results/preprocessed``.
        predictions: ``results/predictions/nnunet``.
        split: ``results/split/split.json``.
        outdir: ``results/interpret/nnunet``.
        config: the configuration (``channels``, ``annotations``, ``interpret``).
        device: the torch device.

    Returns:
        The content of ``target.json``.

    Raises:
        InputError: missing inputs (a missing prediction names the rule ``nnunet_predict``),
            or no test sample with pixels of the ablation class.
        ConfigError: invalid ``interpret`` settings.
    """
    from ramanseg.nnunet.run import load_ensemble

    settings = interpret_settings(config)
    channels = channel_names(config)
    display = display_channel_index(config, settings.display_channel)
    ablation_value = class_index(config, settings.ablation_class)
    test = _read_test_set(
        read_test_samples(split), Path(preprocessed), Path(predictions), class_names(config)
    )
    eligible = {s: bool((test.classes[s] == ablation_value).any()) for s in test.samples}
    if settings.sample == "auto" and not any(eligible.values()):
        raise InputError(
            f"no test sample has pixels of the ablation class {settings.ablation_class!r}",
            fix="set interpret.ablation_class to a class of the test set, or interpret.sample",
        )
    try:
        target = select_target(
            test.samples,
            test.predicted,
            test.probability,
            test.truth,
            test.tissue,
            sample=settings.sample,
            pixel=settings.target_pixel,
            eligible=eligible,
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
    log.info("target: %s", target.describe())

    start = time.perf_counter()
    predictor = load_ensemble(model_dir, folds, device)
    networks = fold_networks(predictor, device)
    load_seconds = time.perf_counter() - start
    stack = read_stack(preprocessed, target.sample, len(channels))
    network_input = prepare_input(predictor, stack, device)
    region = test.classes[target.sample] == ablation_value
    try:
        result = explain(networks, network_input, target, settings, region)
    except ValueError as error:  # a target pixel in nnU-Net's all-zero border
        raise ConfigError(f"sample {target.sample!r}: {error}") from None
    result.timings["load_seconds"] = load_seconds

    outdir = Path(outdir)
    scene = Scene(stack[display], channels[display], target, result.layer, result.layer_size)
    outlines = [
        (test.truth[target.sample], "#ff3030", "ground truth tumour", "solid"),
        (test.predicted[target.sample] != 0, "#ff4fd8", "nnU-Net prediction", "dashed"),
        (region, "#e6a01e", settings.ablation_class, "dotted"),
    ]
    totals = channel_totals(result.ig)
    ig_table = channel_table(config, "ig_abs_sum", totals)
    ig_table["ig_sum"] = result.ig.reshape(result.ig.shape[0], -1).sum(axis=1)
    baseline_text = {
        "blur": f"blurred input (sigma {settings.ig_baseline_sigma:g} px)",
        "noise": "Gaussian noise",
        "zeros": "zeros",
    }[settings.ig_baseline]
    ig_title = (
        f"Integrated Gradients on the {len(folds)}-fold ensemble, tumour {settings.output}, "
        f"baseline {baseline_text}, {settings.ig_steps} steps\n{target.describe()}"
    )
    if result.ablation is not None:
        ablation = result.ablation
        ablation_title = (
            f"Feature Ablation of each channel over {settings.ablation_class} "
            f"({result.ablation_pixels} px; baseline 0 = channel mean)\n{target.describe()}"
        )
    else:
        ablation = np.zeros(len(channels))
        ablation_title = (
            f"Feature Ablation: no {settings.ablation_class} pixels in {target.sample}, "
            f"nothing ablated\n{target.describe()}"
        )
    figures = {
        "gradcam_folds": gradcam_folds_figure(result.gradcam, folds, scene),
        "gradcam_mean": gradcam_mean_figure(
            result.gradcam.mean(axis=0), len(folds), scene, outlines
        ),
        "integrated_gradients": channel_bar_figure(
            totals, channels, "sum over pixels of |attribution|", ig_title, signed=False
        ),
        "feature_ablation": channel_bar_figure(
            ablation,
            channels,
            f"F(x) - F(x ablated), tumour {settings.output}",
            ablation_title,
            signed=True,
        ),
    }
    summary = {
        "target": asdict(target),
        "layer": result.layer,
        "layer_size": list(result.layer_size),
        "folds": list(folds),
        "output": settings.output,
        "model_probability": result.model_probability,
        "display_channel": channels[display],
        "integrated_gradients": {
            "steps": settings.ig_steps,
            "method": "gausslegendre",
            "baseline": baseline_text,
            "output_difference": result.ig_output_difference,
            "attribution_sum": float(result.ig.sum()),
            "convergence_delta": result.ig_delta,
        },
        "feature_ablation": {
            "class": settings.ablation_class,
            "pixels": result.ablation_pixels,
            "baseline": "0 in the network input (the channel's image mean after z-score)",
        },
        "network_input": {
            "offset": list(network_input.offset),
            "size": list(network_input.size),
            "padded": [int(s) for s in network_input.tensor.shape[2:]],
        },
    }
    files: dict[Path, bytes] = {}
    for name, figure in figures.items():
        files.update(prefixed(outdir / name, figure_bytes(figure)))
    files[outdir / "integrated_gradients.csv"] = table_bytes(ig_table)[".csv"]
    files[outdir / "feature_ablation.csv"] = table_bytes(
        channel_table(config, "output_change", ablation)
    )[".csv"]
    files[outdir / "target.json"] = json_bytes(summary)
    write_files(files)
    timings = {key: round(value, 3) for key, value in sorted(result.timings.items())}
    log.info("nnU-Net attributions written to %s (seconds: %s)", outdir, timings)
    return summary


def _folds_of(split: Path) -> list[int]:
    split = Path(split)
    try:
        return list(range(len(json.loads(split.read_text())["folds"])))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise InputError(
            f"the split file has no readable `folds` list ({type(error).__name__}: {error})",
            path=split,
            fix="run the split step first (results/split/split.json)",
        ) from None


def interpret_nnunet_dir(
    nnunet_dir: str | Path,
    preprocessed: str | Path,
    predictions: str | Path,
    split: str | Path,
    outdir: str | Path,
    config: Mapping[str, Any],
    threads: int = 1,
) -> dict[str, Any]:
    """``ramanseg interpret-nnunet``: configure nnU-Net, find the trained folds, explain.

    The model folder follows from ``nnunet.dataset_id``, ``trainer``, ``planner`` and
    ``configuration``; the folds from the split's ``folds`` list.

    Args:
        nnunet_dir: the folder holding nnU-Net's raw, preprocessed and trained folders.
        preprocessed: ``results/preprocessed``.
        predictions: ``results/predictions/nnunet``.
        split: ``results/split/split.json``.
        outdir: ``results/interpret/nnunet``.
        config: the configuration (also ``nnunet``, ``device``, ``seed``, ``deterministic``).
        threads: torch CPU threads.

    Returns:
        The content of ``target.json``.

    Raises:
        ConfigError: a missing ``nnunet`` key or invalid ``interpret`` settings.
        InputError: a missing checkpoint (naming the rule ``nnunet_train``) or input.
    """
    from ramanseg.nnunet.environment import configure_nnunet
    from ramanseg.nnunet.run import trained_model_dir
    from ramanseg.runtime import configure_reproducibility, resolve_device

    nnunet = config.get("nnunet") or {}
    for key in ("dataset_id", "trainer", "planner", "configuration"):
        if key not in nnunet:
            raise ConfigError(f"configuration key 'nnunet.{key}' is required here")
    interpret_settings(config)  # fail on bad settings before loading anything
    threads = max(int(threads), 1)
    configure_nnunet(nnunet_dir, processes=threads)
    torch.set_num_threads(threads)
    device = resolve_device(config.get("device", "auto"))
    configure_reproducibility(
        int(config.get("seed", 0)), bool(config.get("deterministic", True)), device
    )
    folds = _folds_of(split)
    model_dir = trained_model_dir(
        nnunet["dataset_id"], nnunet["trainer"], nnunet["planner"], nnunet["configuration"]
    )
    for fold in folds:
        checkpoint = model_dir / f"fold_{fold}" / "checkpoint_final.pth"
        if not checkpoint.is_file():
            raise InputError(
                "the fold's final checkpoint does not exist",
                path=checkpoint,
                fix=f"run the rule nnunet_train for fold {fold}",
            )
    return run_interpret_nnunet(
        model_dir, folds, preprocessed, predictions, split, outdir, config, device
    )
