"""The 1D-CNN as a per-pixel model of the tumour table: each pixel's Raman spectrum alone
(the ``raman`` channels of the preprocessed stack, no spatial context, no other channel).

Training pixels are a seeded uniform subsample of the training samples' pixels (validation
pixels likewise from the validation samples). The network is the Table 1 CNN with the
kernels, widths and pooling of ``spectra.pixel_model``: a 21-band spectrum is short, and
Table 1's kernels (31, 15, ...) would give every feature position a receptive field wider
than the spectrum, so that no map over the feature positions could tell bands apart; the
demo uses kernels of 3 and 1 (a receptive field of 7 bands) and no pooling.

Band importance of the tumour logit over test-sample tumour pixels: Grad-CAM and the
weight-based map (resolved to the last block's receptive field), and Integrated Gradients
against the mean non-tumour spectrum (per band; signed mean, and mean magnitude, the usual
global ranking); each set against the band's Fisher score
(tumour vs the rest, squared mean difference over summed variances) on the training
pixels, the measure ``ramanseg.phantom`` documents.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ramanseg.config import ConfigError, require
from ramanseg.errors import InputError
from ramanseg.models.baseline import sample_pixels
from ramanseg.models.data import Sample
from ramanseg.spectra.explain import (
    band_importance,
    gradcam,
    integrated_gradients,
    weight_map,
)
from ramanseg.spectra.networks import SpectraCNN
from ramanseg.spectra.preprocessing import PreprocessingSettings, preprocess_spectra
from ramanseg.spectra.training import TrainingSettings, probabilities, train_network

LOGGER = logging.getLogger(__name__)
PIXEL_KEY = "spectra.pixel_model"


def raman_bands(config: Mapping[str, Any]) -> tuple[list[int], np.ndarray]:
    """The stack indices and wavenumbers of the Raman channels, in file order.

    Raises:
        ConfigError: fewer than two Raman channels with wavenumbers.
    """
    indices, wavenumbers = [], []
    for index, channel in enumerate(require(config, "channels")):
        if channel.get("role") == "raman" and channel.get("wavenumber") is not None:
            indices.append(index)
            wavenumbers.append(float(channel["wavenumber"]))
    if len(indices) < 2:
        raise ConfigError(
            f"channels: the per-pixel 1D-CNN needs 2+ Raman channels with a wavenumber, "
            f"got {len(indices)}"
        )
    return indices, np.asarray(wavenumbers)


def _settings(config: Mapping[str, Any]) -> dict[str, Any]:
    return dict(require(config, PIXEL_KEY))


def pixel_preprocessing(config: Mapping[str, Any]) -> PreprocessingSettings:
    """The chain for pixel spectra: ``spectra.pixel_model.preprocessing`` over the paper's."""
    return PreprocessingSettings.from_config(
        _settings(config).get("preprocessing"), key=f"{PIXEL_KEY}.preprocessing"
    )


def pixel_spectra(
    samples: Sequence[Sample], config: Mapping[str, Any], max_pixels: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Preprocessed Raman spectra and tumour labels of a pixel subsample.

    Returns:
        ``(n, bands)`` float32 spectra, ``(n,)`` int64 labels and the bands' wavenumbers.
    """
    indices, wavenumbers = raman_bands(config)
    channels, labels = sample_pixels(samples, max_pixels, seed)
    spectra, wavenumbers = preprocess_spectra(
        channels[:, indices], wavenumbers, pixel_preprocessing(config)
    )
    return spectra, labels.astype(np.int64), wavenumbers


def build_pixel_model(n_bands: int, config: Mapping[str, Any]) -> SpectraCNN:
    """The Table 1 CNN with the per-pixel model's kernels, widths and pooling."""
    settings = _settings(config)
    return SpectraCNN(
        n_bands,
        2,
        kernels=tuple(settings["kernels"]),
        channels=tuple(settings["channels"]),
        min_pooled_length=int(settings["min_pooled_length"]),
    )


def train_pixel_model(
    train: Sequence[Sample], val: Sequence[Sample], config: Mapping[str, Any]
) -> tuple[SpectraCNN, pd.DataFrame, pd.DataFrame]:
    """Train the per-pixel CNN.

    Returns:
        The network (best validation epoch), its training curves, and the per-band
        Fisher scores of the training pixels (columns wavenumber, fisher).

    Raises:
        InputError: the training pixels hold a single class.
    """
    settings = _settings(config)
    seed = int(require(config, "seed"))
    torch.manual_seed(seed)
    x_train, y_train, wavenumbers = pixel_spectra(train, config, int(settings["pixels"]), seed)
    if len(np.unique(y_train)) < 2:
        raise InputError(
            "the training pixels drawn hold a single class",
            fix=f"raise {PIXEL_KEY}.pixels or check the training masks",
        )
    validation = val or train
    x_val, y_val, _ = pixel_spectra(
        validation, config, max(1, int(settings["pixels"]) // 4), seed + 1
    )
    model = build_pixel_model(x_train.shape[1], config)
    history = train_network(
        model,
        x_train,
        y_train,
        x_val,
        y_val,
        2,
        TrainingSettings(
            epochs=int(settings["epochs"]),
            batch_size=int(settings["batch_size"]),
            learning_rate=float(settings["learning_rate"]),
            patience=int(settings["patience"]),
            seed=seed,
        ),
    )
    return model, history, fisher_scores(x_train, y_train, wavenumbers)


def fisher_scores(x: np.ndarray, y: np.ndarray, wavenumbers: np.ndarray) -> pd.DataFrame:
    """Per band: (mean_1 - mean_0)^2 / (var_1 + var_0), tumour (1) against the rest (0)."""
    positive, negative = x[y == 1], x[y == 0]
    score = (positive.mean(0) - negative.mean(0)) ** 2 / (positive.var(0) + negative.var(0))
    return pd.DataFrame({"wavenumber": wavenumbers, "fisher": score})


def predict_sample(model: SpectraCNN, sample: Sample, config: Mapping[str, Any]) -> np.ndarray:
    """The tumour probability of every pixel of ``sample`` (float32 ``(Y, X)``)."""
    indices, wavenumbers = raman_bands(config)
    spectra = sample.image[indices].reshape(len(indices), -1).T
    spectra, _ = preprocess_spectra(spectra, wavenumbers, pixel_preprocessing(config))
    probability = probabilities(model, spectra, batch_size=8192)[:, 1]
    return probability.reshape(sample.image.shape[1:]).astype(np.float32)


def pixel_band_importance(
    model: SpectraCNN,
    samples: Sequence[Sample],
    fisher: pd.DataFrame,
    config: Mapping[str, Any],
    max_pixels: int = 4000,
) -> pd.DataFrame:
    """Grad-CAM, weight-based and Integrated-Gradients importance of each band for the
    tumour logit, over tumour pixels of ``samples`` (labelled; IG against their mean
    non-tumour spectrum), beside the training Fisher scores."""
    seed = int(require(config, "seed"))
    x, y, wavenumbers = pixel_spectra(samples, config, max_pixels * 10, seed + 2)
    tumour = x[y == 1][:max_pixels]
    if len(tumour) == 0 or not (y == 0).any():
        raise InputError(
            "the samples explained lack tumour or non-tumour pixels",
            fix="check the test samples' masks",
        )
    table = pd.DataFrame(
        {
            "wavenumber": wavenumbers,
            "gradcam": band_importance(gradcam(model, tumour, 1)),
            "weights": band_importance(weight_map(model, tumour, 1)),
        }
    )
    attributions = integrated_gradients(model, tumour, x[y == 0].mean(axis=0), 1)
    table["integrated_gradients"] = band_importance(attributions)
    # The usual global ranking of attributions: the mean magnitude per band (a band that
    # pushes the logit down is as much part of the decision as one that pushes it up).
    table["integrated_gradients_abs"] = band_importance(np.abs(attributions))
    return table.merge(fisher, on="wavenumber", how="left")


def importance_figure(importance: pd.DataFrame, k: int):
    """Band importance (three methods) against the Fisher score of each Raman band; the
    top-``k`` bands by mean |Integrated Gradients| marked."""
    from ramanseg.figures import new_figure

    figure = new_figure(9, 4)
    ax = figure.subplots()
    x = importance["wavenumber"].to_numpy()
    width = np.median(np.diff(x)) * 0.27 if len(x) > 1 else 1.0
    ax.bar(x - width, importance["gradcam"], width, label="Grad-CAM (Captum)")
    ax.bar(x, importance["weights"], width, label="weight-based")
    ax.bar(x + width, importance["integrated_gradients"], width, label="Integrated Gradients")
    ax.axhline(0, color="0.5", lw=0.5)
    ax.set(
        xlabel="Raman band (cm$^{-1}$)",
        ylabel="importance (tumour logit)",
        ylim=(-1.1, 1.1),
        title="Per-pixel 1D-CNN: band importance for the tumour logit",
    )
    top = importance.nlargest(k, "integrated_gradients_abs")["wavenumber"]
    ax.plot(top, np.full(len(top), 1.05), "v", color="black", label=f"top-{k} mean |IG|")
    twin = ax.twinx()
    twin.plot(x, importance["fisher"], "o-", color="tab:red", ms=3, label="Fisher score")
    twin.set_ylabel("Fisher score, training pixels", color="tab:red")
    handles = ax.get_legend_handles_labels()
    twin_handles = twin.get_legend_handles_labels()
    ax.legend(
        handles[0] + twin_handles[0], handles[1] + twin_handles[1], fontsize=7, loc="lower left"
    )
    return figure
