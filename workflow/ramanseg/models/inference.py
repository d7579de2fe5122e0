"""Whole-image prediction by overlapping sliding windows, and an inference throughput measure.

Our models are trained on square patches; a whole image is predicted window by window.
Windows overlap (by default by half a window) and the foreground probabilities are
averaged with weights that fall off towards a window's border (Gaussian, as nnU-Net does,
or linear), because predictions near a patch border see less context. Each pixel's result
is ``sum(w * p) / sum(w)`` over the windows covering it, so the weights need not sum to
one anywhere and a model that returns the same value from every window reproduces it
exactly. An image smaller than a window is zero-padded at its end and the result cropped.

Probabilities, not logits, are blended: the models' outputs differ (a logit map, or a
RamanSeg output object), and the probability is what every model defines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ramanseg.models.data import Sample, pad_to_min_size
from ramanseg.predictions import write_prediction

#: Maps a batch (N, C, P, P) on the model's device to probabilities (N, P, P) or (N, 1, P, P).
Predictor = Callable[[torch.Tensor], torch.Tensor]

BLEND_MODES = ("gaussian", "linear", "constant")


def foreground_probability(model: nn.Module, output: Any) -> torch.Tensor:
    """The foreground probability (N, H, W) from a model's output.

    In order of precedence: a model method ``foreground_probability(output) -> (N, H, W)``;
    otherwise the logits, which are the output itself or its ``logits`` attribute (an
    output object such as RamanSeg's): one channel is a foreground logit (sigmoid), two
    channels are background / foreground logits (softmax over them).

    Args:
        model: the model that produced ``output``.
        output: its output.

    Returns:
        Probabilities in [0, 1], shape (N, H, W), float32.

    Raises:
        ValueError: for a tensor output that is not (N, 1 or 2, H, W).
    """
    own = getattr(model, "foreground_probability", None)
    if callable(own):
        return own(output).float()
    if not isinstance(output, torch.Tensor):
        output = getattr(output, "logits", output)
    if not isinstance(output, torch.Tensor) or output.ndim != 4 or output.shape[1] not in (1, 2):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(
            f"cannot read a foreground probability from model output {shape}: expected logits "
            "(N, 1 or 2, H, W), an output with such `logits`, or a model method "
            "foreground_probability(output)"
        )
    output = output.float()
    if output.shape[1] == 1:
        return torch.sigmoid(output[:, 0])
    return torch.softmax(output, dim=1)[:, 1]


def model_predictor(
    model: nn.Module, device: torch.device, *, mixed_precision: bool = False
) -> Predictor:
    """A :data:`Predictor` running ``model`` in eval mode without gradients.

    Args:
        model: the model, already on ``device``.
        device: where batches are computed.
        mixed_precision: float16 autocast; only honoured on CUDA.

    Returns:
        The predictor.
    """
    amp = mixed_precision and device.type == "cuda"

    def predict(batch: torch.Tensor) -> torch.Tensor:
        model.eval()
        with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
            return foreground_probability(model, model(batch))

    return predict


def window_starts(length: int, patch_size: int, stride: int) -> list[int]:
    """Start offsets of windows covering ``[0, length)``; the last one ends at ``length``.

    Args:
        length: the (padded) image length, at least ``patch_size``.
        patch_size: the window length.
        stride: the step between windows, at least 1.

    Returns:
        Sorted, unique start offsets.

    Raises:
        ValueError: if ``length < patch_size`` or ``stride < 1``.
    """
    if length < patch_size:
        raise ValueError(f"length {length} is smaller than the window {patch_size}")
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    starts = list(range(0, length - patch_size + 1, stride))
    if starts[-1] != length - patch_size:  # a length that is not a multiple of the stride
        starts.append(length - patch_size)
    return starts


def window_corners(
    shape: tuple[int, int], patch_size: int, overlap: float
) -> list[tuple[int, int]]:
    """The (y, x) corners of the sliding windows over a padded image of ``shape``.

    Args:
        shape: the padded image's (Y, X), each at least ``patch_size``.
        patch_size: the window side P.
        overlap: fraction of a window shared with its neighbour; the stride is
            ``max(1, round(P * (1 - overlap)))``.
    """
    stride = max(1, round(patch_size * (1 - overlap)))
    return [
        (y, x)
        for y in window_starts(shape[0], patch_size, stride)
        for x in window_starts(shape[1], patch_size, stride)
    ]


def blending_weights(patch_size: int, mode: str = "gaussian") -> np.ndarray:
    """Per-pixel weights of one window, highest at its centre, strictly positive.

    Args:
        patch_size: the window side.
        mode: ``gaussian`` (sigma = patch / 8, nnU-Net's choice; the border weight is
            exp(-8) of the centre's), ``linear`` (a tent falling to 1 / (P / 2) at the
            border) or ``constant`` (plain averaging).

    Returns:
        float64 (P, P) weights.

    Raises:
        ValueError: an unknown mode or a non-positive size.
    """
    if patch_size < 1:
        raise ValueError(f"patch_size must be positive, got {patch_size}")
    centre = (patch_size - 1) / 2
    distance = np.abs(np.arange(patch_size) - centre)
    if mode == "gaussian":
        sigma = patch_size / 8
        line = np.exp(-(distance**2) / (2 * sigma**2))
    elif mode == "linear":
        line = (patch_size / 2 - distance) / (patch_size / 2)
    elif mode == "constant":
        line = np.ones(patch_size)
    else:
        raise ValueError(f"blend mode must be one of {BLEND_MODES}, got {mode!r}")
    weights = np.outer(line, line)
    return weights / weights.max()


def sliding_window_probability(
    predict: Predictor,
    image: np.ndarray,
    patch_size: int,
    *,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 4,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """The foreground probability of a whole image from overlapping windows.

    Args:
        predict: maps a batch (N, C, P, P) on ``device`` to probabilities (N, P, P) or
            (N, 1, P, P) (see :func:`model_predictor`).
        image: float32 (C, Y, X), any Y and X.
        patch_size: the window side P.
        overlap: fraction of a window shared with its neighbour, in [0, 1); the stride is
            ``max(1, round(P * (1 - overlap)))``.
        blend: ``gaussian``, ``linear`` or ``constant`` (see :func:`blending_weights`).
        batch_size: windows per forward pass.
        device: where the batches go.

    Returns:
        float32 (Y, X) probabilities.

    Raises:
        ValueError: a non-3-D image, an overlap outside [0, 1), a bad blend mode or batch
            size, or predictions of the wrong shape.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be (C, Y, X), got shape {image.shape}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    weights = blending_weights(patch_size, blend)
    height, width = image.shape[1:]
    padded = pad_to_min_size(np.asarray(image, dtype=np.float32), patch_size)
    corners = window_corners(padded.shape[1:], patch_size, overlap)
    # float64 accumulators: the weighted average then reproduces a constant prediction
    # to the last bit of float32.
    total = np.zeros(padded.shape[1:], dtype=np.float64)
    weight_sum = np.zeros(padded.shape[1:], dtype=np.float64)
    for start in range(0, len(corners), batch_size):
        chunk = corners[start : start + batch_size]
        batch = np.stack([padded[:, y : y + patch_size, x : x + patch_size] for y, x in chunk])
        probability = predict(torch.from_numpy(batch).to(device))
        if probability.ndim == 4 and probability.shape[1] == 1:
            probability = probability[:, 0]
        expected = (len(chunk), patch_size, patch_size)
        if tuple(probability.shape) != expected:
            raise ValueError(
                f"the predictor returned shape {tuple(probability.shape)}, expected {expected}"
            )
        probability = probability.detach().float().cpu().numpy().astype(np.float64)
        for (y, x), window in zip(chunk, probability, strict=True):
            total[y : y + patch_size, x : x + patch_size] += weights * window
            weight_sum[y : y + patch_size, x : x + patch_size] += weights
    result = total / weight_sum
    return result[:height, :width].astype(np.float32)


@dataclass
class PredictionRun:
    """What :func:`predict_samples` did.

    Attributes:
        masks: the mask paths written, one per sample.
        seconds: time spent predicting (file reading and writing excluded).
        megapixels: pixels predicted, in millions.
        device: the device.
    """

    masks: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    megapixels: float = 0.0
    device: str = "cpu"

    def timing(self) -> dict[str, Any]:
        """The timing as JSON-ready numbers (the keys of the nnU-Net stage's timing file,
        plus ``megapixels_per_second``)."""
        return {
            "seconds": self.seconds,
            "megapixels": self.megapixels,
            "seconds_per_megapixel": self.seconds / self.megapixels if self.megapixels else None,
            "megapixels_per_second": self.megapixels / self.seconds if self.seconds else None,
            "samples": len(self.masks),
            "device": self.device,
        }


def predict_samples(
    model: nn.Module,
    samples: Iterable[Sample],
    outdir: str | Path,
    patch_size: int,
    device: torch.device,
    *,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 4,
    mixed_precision: bool = False,
) -> PredictionRun:
    """Predict whole samples and write them in the shared prediction format.

    Args:
        model: the trained model, on ``device``.
        samples: the samples to predict.
        outdir: ``results/predictions/<model>``.
        patch_size: the window side (the training patch size).
        device: the device.
        overlap: see :func:`sliding_window_probability`.
        blend: see :func:`sliding_window_probability`.
        batch_size: windows per forward pass.
        mixed_precision: float16 autocast on CUDA.

    Returns:
        The mask paths written (one per sample) and the prediction time.
    """
    predictor = model_predictor(model, device, mixed_precision=mixed_precision)
    run = PredictionRun(device=str(device))
    for sample in samples:
        probability, seconds = _timed_probability(
            predictor, sample.image, patch_size, device, overlap, blend, batch_size
        )
        run.seconds += seconds
        run.megapixels += probability.size / 1e6
        # Rounding in float16 can step a hair outside [0, 1].
        probability = np.clip(probability, 0.0, 1.0)
        mask_path, _ = write_prediction(outdir, sample.sample_id, probability)
        run.masks.append(mask_path)
    return run


def _timed_probability(
    predictor: Predictor,
    image: np.ndarray,
    patch_size: int,
    device: torch.device,
    overlap: float,
    blend: str,
    batch_size: int,
) -> tuple[np.ndarray, float]:
    """:func:`sliding_window_probability` and its wall-clock seconds (device work included)."""
    _synchronize(device)
    start = time.perf_counter()
    probability = sliding_window_probability(
        predictor,
        image,
        patch_size,
        overlap=overlap,
        blend=blend,
        batch_size=batch_size,
        device=device,
    )
    _synchronize(device)
    return probability, time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_throughput(
    model: nn.Module,
    in_channels: int,
    patch_size: int,
    device: torch.device,
    *,
    height: int = 512,
    width: int = 512,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 4,
    mixed_precision: bool = False,
    repeats: int = 3,
    warmup: int = 1,
    seed: int = 0,
) -> dict[str, float]:
    """Whole-image inference speed in megapixels per second.

    A random image of ``height x width`` pixels is predicted ``warmup`` times untimed
    (kernel selection, caches), then ``repeats`` times timed; the median time counts.
    The time includes window extraction, blending and host-device copies, i.e. what
    predicting a test image costs.

    Args:
        model: the model, on ``device``.
        in_channels: its input channels.
        patch_size: the window side.
        device: the device.
        height: image height.
        width: image width.
        overlap: see :func:`sliding_window_probability`.
        blend: see :func:`sliding_window_probability`.
        batch_size: windows per forward pass.
        mixed_precision: float16 autocast on CUDA.
        repeats: timed runs, at least 1.
        warmup: untimed runs first.
        seed: seed of the random image.

    Returns:
        ``megapixels_per_second``, ``seconds`` (median per image), ``megapixels``,
        ``repeats``.

    Raises:
        ValueError: if ``repeats < 1``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    image = np.random.default_rng(seed).random((in_channels, height, width), dtype=np.float32)
    predictor = model_predictor(model, device, mixed_precision=mixed_precision)

    def run() -> float:
        _, seconds = _timed_probability(
            predictor, image, patch_size, device, overlap, blend, batch_size
        )
        return seconds

    for _ in range(warmup):
        run()
    seconds = float(np.median([run() for _ in range(repeats)]))
    megapixels = height * width / 1e6
    return {
        "megapixels_per_second": megapixels / seconds,
        "seconds": seconds,
        "megapixels": megapixels,
        "repeats": float(repeats),
    }
