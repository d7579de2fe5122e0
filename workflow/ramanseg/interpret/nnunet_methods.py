"""The attribution methods on nnU-Net's networks, with Captum: Layer Grad-CAM, Integrated
Gradients (and its baselines) and Feature Ablation of channels over a region.

Why the baselines matter for nnU-Net is explained in
:mod:`ramanseg.interpret.nnunet_attributions`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor, nn

from ramanseg.config import ConfigError
from ramanseg.interpret import GRADCAM_MIN_SIZE
from ramanseg.interpret.nnunet_network import (
    SegmentationOutput,
    full_resolution_logits,
    target_index,
)


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
        lambda _m, _i, out: size.append(
            tuple(int(s) for s in full_resolution_logits(out).shape[-2:])
        )
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
