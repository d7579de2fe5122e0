"""Which wavenumbers carry a 1D-CNN's decision: 1D Grad-CAM (Captum) and the
feature-visualisation paper's weight-based map, both at the input's resolution.

- Grad-CAM: per spectrum, one block's feature maps (after its ReLU) weighted by the mean
  over positions of the logit's gradient (Captum's layer gradients), summed, signed.
- Weight-based map (Fukuhara et al.): the same sum with one weight per feature map from
  the weights alone (no gradients): on the feature maps feeding global average pooling,
  the dense layers' weights composed (:meth:`SpectraCNN.head_weights`), the paper's
  definition; on an earlier block, carried down through the later blocks' weights
  (:func:`block_weights`), our adaptation for the reason below.

Which block. A map can only be as sharp as the feature positions it lives on. In Table 1's
network the last block sits after four max-poolings (one position per 16 bands) and each
of its features sees ~160 bands; on the synthetic Lorentzian set its maps peak 20-40 cm-1
beside planted peaks of FWHM 12-14 cm-1. The default block
(:meth:`SpectraCNN.band_resolution_block`) is the deepest one at one position per band:
Table 1's first (receptive field 31 bands), the per-pixel model's last (it does not pool,
so there the weight map's weights are exactly the paper's). ``block`` (1-based; config key
``spectra.explain_block``) picks another. A position after pooling by ``s`` is placed at
the centre of the ``s`` bands it pools, not stretched over the whole axis (which drifts
when the length is not a multiple of ``s``).

Receptive-field offsets. Nothing makes a feature centred on what it detects: within its
receptive field a channel may fire 10-15 bands beside the peak that drives it (global
pooling forgives any offset), and its map then sits beside the peak. Each channel's map is
therefore moved by its offset (:func:`receptive_field_offsets`): the centroid, within its
receptive field, of the positive input contributions (gradient times input) to its
activation, estimated on the spectra explained (no labels).

Class contrast. Early features fire on every peak, the peaks both classes share included,
so a map over one class's spectra shows them all. The importance of a class
(:func:`class_importance`) is its logit's mean map over the class's spectra minus the same
logit's mean map over the other spectra: what the class's spectra carry and the others
lack, towards its logit. On the Lorentzian set the shared peaks cancel and the planted
ones remain (tests/spectra/test_explain.py, several seeds).

For a binary network both explain the positive logit; for more classes, ``target``.
:func:`integrated_gradients` (Captum) attributes to each input band directly.
"""

from __future__ import annotations

import numpy as np
import torch

from ramanseg.spectra.networks import SpectraCNN


def _target(model: SpectraCNN, target: int) -> int:
    return 0 if model.classifier.out_features == 1 else target


def _block_number(model: SpectraCNN, block: int | None) -> int:
    """The 1-based ``block`` checked (``None``: the band-resolution block)."""
    if block is None:
        return model.band_resolution_block()
    if not 1 <= block <= len(model.blocks):
        raise ValueError(f"block {block}: the network has blocks 1 to {len(model.blocks)}")
    return block


def _spectra(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float32)[:, None, :]


def _placement(positions: int, stride: int, bands: int, shift: int = 0) -> np.ndarray:
    """``(positions, bands)``: linear interpolation from feature positions, each at the
    centre of the ``stride`` bands it pools (moved by ``shift`` bands), to the bands."""
    centres = np.arange(positions) * stride + (stride - 1) / 2 + shift
    return np.stack([np.interp(np.arange(bands), centres, row) for row in np.eye(positions)])


def _to_bands(maps: np.ndarray, stride: int, bands: int, shift: int = 0) -> np.ndarray:
    """``(n, positions)`` maps -> ``(n, bands)`` (:func:`_placement`)."""
    return maps @ _placement(maps.shape[1], stride, bands, shift)


def _features(model: SpectraCNN, x: np.ndarray, block: int) -> np.ndarray:
    """``(n, channels, positions)``: the 1-based ``block``'s ReLU output."""
    captured = {}
    handle = model.blocks[block - 1][2].register_forward_hook(
        lambda module, args, output: captured.__setitem__("maps", output)
    )
    try:
        with torch.no_grad():
            model(_spectra(x))
    finally:
        handle.remove()
    return captured["maps"].numpy()


def receptive_field_offsets(
    model: SpectraCNN, x: np.ndarray, block: int | None = None, max_spectra: int = 250
) -> np.ndarray:
    """``(channels,)`` int: per channel of ``block``, where in its receptive field the
    input that drives it lies, in bands from the position's centre: the centroid of the
    positive input contributions (gradient times input) to its activation, over the
    positions and the spectra ``x``.

    Args:
        model: the network.
        x: ``(n, bands)`` spectra (those explained; no labels needed).
        block: the 1-based block; ``None``: the deepest at band resolution.
        max_spectra: at most this many of ``x``, evenly spaced, are used.
    """
    model.eval()
    block = _block_number(model, block)
    x = x[np.unique(np.linspace(0, len(x) - 1, min(len(x), max_spectra)).astype(int))]
    inputs = _spectra(x).requires_grad_(True)
    captured = {}
    handle = model.blocks[block - 1][2].register_forward_hook(
        lambda module, args, output: captured.__setitem__("maps", output)
    )
    try:
        model(inputs)
    finally:
        handle.remove()
    features = captured["maps"]
    channels, positions = features.shape[1:]
    stride, field = model.block_stride(block), model.receptive_field(block)
    lags = np.arange(-(field // 2), field // 2 + 1)
    # Positions this far apart have disjoint receptive fields: one backward pass serves all.
    spacing = -(-field // stride) + 1
    offsets = np.zeros(channels, dtype=int)
    for channel in range(channels):
        profile = np.zeros(len(lags))
        for phase in range(min(spacing, positions)):
            chosen = np.arange(phase, positions, spacing)
            (gradient,) = torch.autograd.grad(
                features[:, channel, chosen].sum(), inputs, retain_graph=True
            )
            contribution = np.clip(gradient[:, 0].numpy() * x, 0, None).sum(axis=0)
            bands = (chosen * stride + (stride - 1) // 2)[:, None] + lags[None, :]
            inside = (bands >= 0) & (bands < x.shape[1])
            profile += np.where(inside, contribution[np.clip(bands, 0, x.shape[1] - 1)], 0).sum(0)
        if profile.sum() > 0:
            offsets[channel] = int(np.round((lags * profile).sum() / profile.sum()))
    return offsets


def _summed(
    model: SpectraCNN,
    features: np.ndarray,
    weights: np.ndarray,
    block: int,
    bands: int,
    offsets: np.ndarray | None,
) -> np.ndarray:
    """``(n, bands)``: sum over channels of ``weights`` (``(n, channels)``) times the
    feature maps, each channel placed on the bands and moved by its offset."""
    stride = model.block_stride(block)
    offsets = np.zeros(features.shape[1], dtype=int) if offsets is None else offsets
    maps = np.zeros((features.shape[0], bands))
    for shift in np.unique(offsets):
        channels = offsets == shift
        weighted = np.einsum("nc,ncl->nl", weights[:, channels], features[:, channels])
        maps += _to_bands(weighted, stride, bands, int(shift))
    return maps


def gradcam(
    model: SpectraCNN,
    x: np.ndarray,
    target: int = 1,
    block: int | None = None,
    offsets: np.ndarray | None = None,
) -> np.ndarray:
    """``(n, bands)`` signed Grad-CAM maps of the spectra ``x``.

    Args:
        model: the network.
        x: ``(n, bands)`` spectra.
        target: the class explained.
        block: the 1-based block whose ReLU is explained; ``None``: the deepest block at
            band resolution.
        offsets: per channel, the shift in bands (:func:`receptive_field_offsets`);
            ``None``: none.
    """
    from captum.attr import LayerGradientXActivation

    model.eval()
    block = _block_number(model, block)
    # The gradient of the logit with respect to the feature maps (not times them).
    gradients = LayerGradientXActivation(
        model, model.blocks[block - 1][2], multiply_by_inputs=False
    ).attribute(_spectra(x), target=_target(model, target))
    weights = gradients.detach().numpy().mean(axis=2)
    return _summed(model, _features(model, x, block), weights, block, x.shape[1], offsets)


def block_weights(model: SpectraCNN, block: int) -> torch.Tensor:
    """``(outputs, channels)``: one weight per feature map of the 1-based ``block``, from the
    weights alone. The last block's are the dense layers' composed (the paper's). Below it,
    each later block's are carried down through that block's convolution summed over its
    taps (a convolution commutes with global average pooling, borders aside) and its batch
    norm's scale, with ReLU and max-pooling passed through: the weights-only counterpart of
    the gradient Grad-CAM averages over positions, with every unit open."""
    with torch.no_grad():
        weights = model.head_weights()
        for later in reversed(model.blocks[block:]):
            conv, norm = later[0], later[1]
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            weights = weights @ (scale[:, None] * conv.weight.sum(-1))
    return weights


def weight_map(
    model: SpectraCNN,
    x: np.ndarray,
    target: int = 1,
    block: int | None = None,
    offsets: np.ndarray | None = None,
) -> np.ndarray:
    """``(n, bands)`` signed weight-based importance maps of the spectra ``x``.

    Args:
        model: the network.
        x: ``(n, bands)`` spectra.
        target: the class explained.
        block: the 1-based block whose ReLU is explained; ``None``: the deepest block at
            band resolution.
        offsets: per channel, the shift in bands (:func:`receptive_field_offsets`);
            ``None``: none.
    """
    model.eval()
    block = _block_number(model, block)
    features = _features(model, x, block)
    channel_weights = block_weights(model, block)[_target(model, target)].numpy()
    weights = np.broadcast_to(channel_weights, features.shape[:2])
    return _summed(model, features, weights, block, x.shape[1], offsets)


def class_importance(
    model: SpectraCNN,
    x: np.ndarray,
    in_class: np.ndarray,
    target: int = 1,
    block: int | None = None,
) -> dict[str, np.ndarray]:
    """``{"gradcam": (bands,), "weights": (bands,)}``: the importance of each band for class
    ``target`` by :func:`gradcam` and :func:`weight_map`, each the mean map (of the class's
    logit) over the class's spectra minus the mean map over the others, each channel moved
    by its receptive-field offset (estimated on all of ``x``), scaled to a maximum absolute
    value of 1.

    Args:
        model: the network.
        x: ``(n, bands)`` spectra, of the class and of the others.
        in_class: ``(n,)`` bool, the class's spectra.
        target: the class explained.
        block: the 1-based block; ``None``: the deepest at band resolution.
    """
    offsets = receptive_field_offsets(model, x, block)
    return {
        name: class_contrast(
            method(model, x[in_class], target, block, offsets),
            method(model, x[~in_class], target, block, offsets),
        )
        for name, method in (("gradcam", gradcam), ("weights", weight_map))
    }


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


def _scaled(importance: np.ndarray) -> np.ndarray:
    scale = np.abs(importance).max()
    return importance / scale if scale > 0 else importance


def band_importance(maps: np.ndarray) -> np.ndarray:
    """One importance per band: the maps' mean, scaled to a maximum absolute value of 1."""
    return _scaled(maps.mean(axis=0))


def class_contrast(maps_class: np.ndarray, maps_rest: np.ndarray) -> np.ndarray:
    """One importance per band for a class: the mean map (of its logit) over its spectra
    minus the mean map (of the same logit) over the other spectra, scaled to a maximum
    absolute value of 1.

    Args:
        maps_class: ``(n, bands)`` maps of the class's spectra.
        maps_rest: ``(m, bands)`` maps of the other spectra, same logit.
    """
    return _scaled(maps_class.mean(axis=0) - maps_rest.mean(axis=0))


def top_bands(importance: np.ndarray, wavenumbers: np.ndarray, k: int = 5) -> np.ndarray:
    """The wavenumbers of the ``k`` most important bands (highest signed importance)."""
    return np.asarray(wavenumbers)[np.argsort(importance)[::-1][:k]]
