"""Which wavenumbers carry a 1D-CNN's decision: 1D Grad-CAM (Captum) and the
feature-visualisation paper's weight-based map, both at the input's resolution.

- Grad-CAM: Captum's ``LayerGradCam`` on the last convolution block's ReLU (per spectrum,
  the gradient-weighted feature maps, signed), interpolated linearly to the bands.
- Weight-based map (Fukuhara et al.): the global-average-pooling and fully-connected
  weights composed into one weight per feature map (:meth:`SpectraCNN.head_weights`),
  times the last convolution's feature maps, summed over channels: signed, from the
  weights only (no gradients), near zero where the features are silent.

For a binary network both explain the positive logit; for more classes, ``target``.

Both maps live on the last block's feature positions, whose receptive field spans ~150
cm-1 in Table 1's network: on the Lorentzian set they peak on the flank of the planted
peaks, 30-40 cm-1 off. ``guided=True`` multiplies them by Captum's guided backpropagation
(Selvaraju et al.'s Guided Grad-CAM; the same construction for the weight map), which
resolves single bands: the spectra stage uses the guided maps. :func:`integrated_gradients`
(Captum) attributes to each input band directly (the per-pixel model).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ramanseg.spectra.networks import SpectraCNN


def _upsample(maps: torch.Tensor, bands: int) -> np.ndarray:
    return F.interpolate(maps, size=bands, mode="linear", align_corners=False)[:, 0].numpy()


def _target(model: SpectraCNN, target: int) -> int:
    return 0 if model.classifier.out_features == 1 else target


def guided_backprop(model: SpectraCNN, x: np.ndarray, target: int = 1) -> np.ndarray:
    """``(n, bands)`` Captum's guided backpropagation of the spectra ``x``."""
    import warnings

    from captum.attr import GuidedBackprop

    model.eval()
    inputs = torch.as_tensor(x, dtype=torch.float32)[:, None, :].requires_grad_(True)
    with warnings.catch_warnings():
        # Captum says it hooks the ReLU modules (and removes the hooks afterwards).
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        maps = GuidedBackprop(model).attribute(inputs, target=_target(model, target))
    return maps[:, 0].detach().numpy()


def gradcam(model: SpectraCNN, x: np.ndarray, target: int = 1, guided: bool = False) -> np.ndarray:
    """``(n, bands)`` signed Grad-CAM maps of the spectra ``x`` (``(n, bands)``).

    Args:
        model: the network.
        x: ``(n, bands)`` spectra.
        target: the class explained.
        guided: times guided backpropagation (Guided Grad-CAM; band resolution).
    """
    from captum.attr import LayerGradCam

    model.eval()
    inputs = torch.as_tensor(x, dtype=torch.float32)[:, None, :]
    explainer = LayerGradCam(model, model.last_conv_activation)
    maps = explainer.attribute(inputs, target=_target(model, target), relu_attributions=False)
    maps = _upsample(maps.detach(), x.shape[1])
    return maps * guided_backprop(model, x, target) if guided else maps


def weight_map(
    model: SpectraCNN, x: np.ndarray, target: int = 1, guided: bool = False
) -> np.ndarray:
    """``(n, bands)`` signed weight-based importance maps of the spectra ``x``.

    Args:
        model: the network.
        x: ``(n, bands)`` spectra.
        target: the class explained.
        guided: times guided backpropagation (band resolution).
    """
    model.eval()
    captured = {}
    handle = model.last_conv_activation.register_forward_hook(
        lambda module, args, output: captured.__setitem__("maps", output)
    )
    try:
        with torch.no_grad():
            model(torch.as_tensor(x, dtype=torch.float32)[:, None, :])
            weights = model.head_weights()[_target(model, target)]
            maps = torch.einsum("c,ncl->nl", weights, captured["maps"])[:, None, :]
    finally:
        handle.remove()
    maps = _upsample(maps, x.shape[1])
    return maps * guided_backprop(model, x, target) if guided else maps


def integrated_gradients(
    model: SpectraCNN, x: np.ndarray, baseline: np.ndarray, target: int = 1, steps: int = 32
) -> np.ndarray:
    """``(n, bands)`` Integrated Gradients of the spectra ``x`` against one ``baseline``
    spectrum (the reference the decision is explained against: the other class's mean,
    say); per spectrum they sum to the logit difference to the baseline.

    Args:
        model: the network.
        x: ``(n, bands)`` spectra.
        baseline: ``(bands,)`` the reference spectrum.
        target: the class explained.
        steps: the integration steps.
    """
    from captum.attr import IntegratedGradients

    model.eval()
    inputs = torch.as_tensor(x, dtype=torch.float32)[:, None, :]
    reference = torch.as_tensor(baseline, dtype=torch.float32)[None, None, :]
    attributions = IntegratedGradients(model).attribute(
        inputs,
        baselines=reference,
        target=_target(model, target),
        n_steps=steps,
        internal_batch_size=4096,
    )
    return attributions[:, 0].detach().numpy()


def band_importance(maps: np.ndarray) -> np.ndarray:
    """One importance per band: the maps' mean, scaled to a maximum absolute value of 1."""
    mean = maps.mean(axis=0)
    scale = np.abs(mean).max()
    return mean / scale if scale > 0 else mean


def top_bands(importance: np.ndarray, wavenumbers: np.ndarray, k: int = 5) -> np.ndarray:
    """The wavenumbers of the ``k`` most important bands (highest signed importance)."""
    return np.asarray(wavenumbers)[np.argsort(importance)[::-1][:k]]
