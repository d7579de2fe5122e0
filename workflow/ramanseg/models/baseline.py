"""The per-pixel logistic-regression baseline: the floor every model must clear.

Each pixel is classified from its channel vector alone (24 numbers, no spatial context):
logistic regression (scikit-learn, L-BFGS, L2 penalty) on standardised channels, with
balanced class weights because tumour is the minority class. It is fitted on a seeded
uniform subsample of all pixels of the training samples (a few hundred thousand pixels
fix 25 parameters well; all pixels would cost time and memory for nothing). The fitted
model is a handful of numbers, stored as JSON (nothing is pickled); prediction is one
dot product per pixel and writes the shared prediction format.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from ramanseg.errors import InputError
from ramanseg.fileio import write_json
from ramanseg.models.data import Sample
from ramanseg.predictions import write_prediction

MODEL_KIND = "pixel_logistic_regression"


@dataclass(frozen=True)
class PixelLogisticRegression:
    """A fitted per-pixel logistic regression.

    The foreground probability of a pixel with channel vector ``x`` is
    ``sigmoid(coef . ((x - mean) / scale) + intercept)``.

    Attributes:
        coef: one weight per channel (on standardised values).
        intercept: the bias.
        mean: per-channel mean of the fitted pixels.
        scale: per-channel standard deviation of the fitted pixels (1 where constant).
        channel_names: the channels, as in the stacks' OME metadata (may be empty).
        n_pixels: pixels fitted.
        seed: the subsampling seed.
        regularization: scikit-learn's ``C`` (inverse L2 strength).
        train_samples: the training samples.
    """

    coef: tuple[float, ...]
    intercept: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    channel_names: tuple[str, ...] = ()
    n_pixels: int = 0
    seed: int = 0
    regularization: float = 1.0
    train_samples: tuple[str, ...] = ()

    @property
    def in_channels(self) -> int:
        """The number of channels."""
        return len(self.coef)

    def probability(self, image: np.ndarray) -> np.ndarray:
        """Foreground probability of every pixel.

        Args:
            image: (C, Y, X) with C = :attr:`in_channels`.

        Returns:
            float32 (Y, X) in [0, 1].

        Raises:
            ValueError: a channel count other than :attr:`in_channels`.
        """
        if image.ndim != 3 or image.shape[0] != self.in_channels:
            raise ValueError(
                f"the baseline was fitted on {self.in_channels} channels, got an image of "
                f"shape {image.shape}"
            )
        # Fold the standardisation into the weights: one pass over the image.
        weights = np.asarray(self.coef) / np.asarray(self.scale)
        bias = self.intercept - float(weights @ np.asarray(self.mean))
        logits = np.tensordot(weights, image.astype(np.float64), axes=(0, 0)) + bias
        return expit(logits).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description, with ``kind`` identifying the model."""
        return {"kind": MODEL_KIND, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PixelLogisticRegression:
        """The model from :meth:`to_dict`'s output.

        Raises:
            ValueError: the mapping does not describe this model.
        """
        if data.get("kind") != MODEL_KIND:
            raise ValueError(f"not a {MODEL_KIND} description: kind {data.get('kind')!r}")
        fields = {k: v for k, v in data.items() if k != "kind"}
        for key in ("coef", "mean", "scale", "channel_names", "train_samples"):
            fields[key] = tuple(fields.get(key, ()))
        return cls(**fields)


def sample_pixels(
    samples: Sequence[Sample], max_pixels: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded uniform subsample of the pixels of all samples, without replacement.

    Args:
        samples: the samples.
        max_pixels: at most this many pixels (all of them if there are fewer).
        seed: the seed.

    Returns:
        Channel vectors float32 (N, C) and labels uint8 (N,).

    Raises:
        ValueError: no samples or a non-positive ``max_pixels``.
    """
    if not samples:
        raise ValueError("no samples to draw pixels from")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    sizes = np.array([s.mask.size for s in samples])
    total = int(sizes.sum())
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, size=min(max_pixels, total), replace=False))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    owner = np.searchsorted(starts, chosen, side="right") - 1
    features, labels = [], []
    for index, sample in enumerate(samples):
        flat = chosen[owner == index] - starts[index]
        features.append(sample.image.reshape(sample.image.shape[0], -1)[:, flat].T)
        labels.append(sample.mask.reshape(-1)[flat])
    return np.concatenate(features).astype(np.float32), np.concatenate(labels)


def fit_pixel_baseline(
    samples: Sequence[Sample],
    *,
    max_pixels: int = 200_000,
    seed: int = 0,
    regularization: float = 1.0,
    max_iter: int = 1000,
) -> PixelLogisticRegression:
    """Fit the per-pixel logistic regression on the training samples.

    Args:
        samples: the training samples.
        max_pixels: pixels subsampled for the fit.
        seed: the subsampling seed.
        regularization: scikit-learn's ``C``.
        max_iter: L-BFGS iterations at most.

    Returns:
        The fitted model.

    Raises:
        ValueError: no samples, or pixels of only one class in the subsample.
    """
    features, labels = sample_pixels(samples, max_pixels, seed)
    if len(np.unique(labels)) < 2:
        raise ValueError(
            "the baseline needs tumour and non-tumour pixels, but the training pixels "
            f"drawn hold only label {int(labels[0])}"
        )
    mean = features.mean(axis=0, dtype=np.float64)
    scale = features.std(axis=0, dtype=np.float64)
    scale[scale == 0] = 1.0  # a constant channel carries no information; avoid dividing by 0
    classifier = LogisticRegression(
        C=regularization, class_weight="balanced", max_iter=max_iter, solver="lbfgs"
    )
    classifier.fit((features - mean) / scale, labels)
    return PixelLogisticRegression(
        coef=tuple(float(v) for v in classifier.coef_[0]),
        intercept=float(classifier.intercept_[0]),
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        channel_names=tuple(samples[0].channel_names),
        n_pixels=len(labels),
        seed=seed,
        regularization=regularization,
        train_samples=tuple(s.sample_id for s in samples),
    )


def save_baseline(model: PixelLogisticRegression, path: str | Path) -> None:
    """Write the model as JSON, atomically.

    Args:
        model: the model.
        path: destination ``.json``.
    """
    write_json(path, model.to_dict())


def load_baseline(path: str | Path) -> PixelLogisticRegression:
    """Read a model written by :func:`save_baseline`.

    Args:
        path: the JSON file.

    Returns:
        The model.

    Raises:
        InputError: a missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("the baseline model does not exist", path=path, fix="run fit-baseline")
    try:
        return PixelLogisticRegression.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise InputError(
            f"the baseline model cannot be read ({error})", path=path, fix="run fit-baseline"
        ) from error


def predict_baseline(
    model: PixelLogisticRegression, samples: Iterable[Sample], outdir: str | Path
) -> list[Path]:
    """Predict samples and write them in the shared prediction format.

    Args:
        model: the fitted model.
        samples: the samples.
        outdir: ``results/predictions/<model>``.

    Returns:
        The mask paths written.

    Raises:
        InputError: a sample whose channel count differs from the model's.
    """
    written = []
    for sample in samples:
        if sample.image.shape[0] != model.in_channels:
            raise InputError(
                f"the stack has {sample.image.shape[0]} channels, the baseline was fitted on "
                f"{model.in_channels}",
                sample=sample.sample_id,
                fix="fit the baseline on samples preprocessed with the same channels",
            )
        mask_path, _ = write_prediction(outdir, sample.sample_id, model.probability(sample.image))
        written.append(mask_path)
    return written
