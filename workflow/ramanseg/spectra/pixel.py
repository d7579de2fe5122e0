"""The 1D-CNN as a per-pixel model of the tumour table: each pixel's Raman spectrum alone
(the ``raman`` channels of the preprocessed stack, no spatial context, no other channel).

Training pixels are a seeded uniform subsample of the training samples' pixels (validation
pixels likewise from the validation samples). The network is the Table 1 CNN with the
kernels, widths and pooling of ``spectra.pixel_model``: a 21-band spectrum is short, and
Table 1's kernels (31, 15, ...) would give every feature position a receptive field wider
than the spectrum, so that no map over the feature positions could tell bands apart; the
demo uses kernels of 3 and 1 (a receptive field of 7 bands) and no pooling.

Band importance of the tumour logit on test-sample pixels: Grad-CAM and the weight-based
map, tumour pixels against the others (:func:`ramanseg.spectra.explain.class_importance`),
on the last block (the network does not pool, so it is at band resolution and feeds the
global pooling: the weight map is the paper's exactly); and Integrated Gradients of tumour
pixels against the mean non-tumour spectrum (per band; signed mean, and mean magnitude,
the usual global ranking); each set against the band's Fisher score
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
from ramanseg.spectra.experiment import explain_block
from ramanseg.spectra.explain import (
    band_importance,
    class_importance,
    integrated_gradients,
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
    tumour logit on pixels of ``samples`` (labelled): Grad-CAM and the weight map of tumour
    pixels against non-tumour pixels, IG of tumour pixels against their mean non-tumour
    spectrum; beside the training Fisher scores."""
    seed = int(require(config, "seed"))
    x, y, wavenumbers = pixel_spectra(samples, config, max_pixels * 10, seed + 2)
    tumour, other = x[y == 1][:max_pixels], x[y == 0][:max_pixels]
    if len(tumour) == 0 or len(other) == 0:
        raise InputError(
            "the samples explained lack tumour or non-tumour pixels",
            fix="check the test samples' masks",
        )
    block = explain_block(config)
    explained = np.concatenate([tumour, other])
    in_class = np.arange(len(explained)) < len(tumour)
    table = pd.DataFrame(
        {"wavenumber": wavenumbers, **class_importance(model, explained, in_class, 1, block)}
    )
    attributions = integrated_gradients(model, tumour, x[y == 0].mean(axis=0), 1)
    table["integrated_gradients"] = band_importance(attributions)
    # The usual global ranking of attributions: the mean magnitude per band (a band that
    # pushes the logit down is as much part of the decision as one that pushes it up).
    table["integrated_gradients_abs"] = band_importance(np.abs(attributions))
    return table.merge(fisher, on="wavenumber", how="left")


def importance_figure(importance: pd.DataFrame, k: int):
    """Band importance (three methods) against the Fisher score of each Raman band; each
    method's top-``k`` bands marked above the bars (Integrated Gradients by mean |IG|)."""
    from ramanseg.figures import new_figure

    figure = new_figure(9, 4)
    ax = figure.subplots()
    x = importance["wavenumber"].to_numpy()
    width = np.median(np.diff(x)) * 0.27 if len(x) > 1 else 1.0
    methods = (
        ("gradcam", "gradcam", "Grad-CAM (Captum)", "tab:blue", -width, 1.08),
        ("weights", "weights", "weight-based", "tab:orange", 0.0, 1.15),
        (
            "integrated_gradients",
            "integrated_gradients_abs",
            "Integrated Gradients",
            "tab:green",
            width,
            1.22,
        ),
    )
    for column, ranking, label, colour, offset, height in methods:
        ax.bar(x + offset, importance[column], width, color=colour, label=label)
        top = importance.nlargest(k, ranking)["wavenumber"].to_numpy()
        ax.plot(top + offset, np.full(len(top), height), "v", color=colour, ms=4)
    ax.axhline(0, color="0.5", lw=0.5)
    ax.set(
        xlabel="Raman band (cm$^{-1}$)",
        ylabel="importance (tumour logit)",
        ylim=(-1.1, 1.3),
        title=f"Per-pixel 1D-CNN: band importance for the tumour logit (triangles: top-{k})",
    )
    twin = ax.twinx()
    twin.plot(x, importance["fisher"], "o-", color="tab:red", ms=3, label="Fisher score")
    twin.set_ylabel("Fisher score, training pixels", color="tab:red")
    handles = ax.get_legend_handles_labels()
    twin_handles = twin.get_legend_handles_labels()
    ax.legend(
        handles[0] + twin_handles[0], handles[1] + twin_handles[1], fontsize=7, loc="lower left"
    )
    return figure
