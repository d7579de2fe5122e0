"""The spectra figures: training curves, confusion matrices, class mean ± sd spectra with
the top important bands shaded (the skin-cancer paper's spectra figure), and the two
explanation maps."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ramanseg.figures import class_colour, new_figure
from ramanseg.spectra.experiment import SPECTRA_MODELS, PreparedData


def _label(model: str) -> str:
    if model == "resnet_pretrain":
        return "1D ResNet (pretraining)"
    return SPECTRA_MODELS.get(model, model)


def training_curves_figure(histories: Mapping[str, pd.DataFrame], title: str):
    """Loss and accuracy per epoch (training and validation) of each network."""
    figure = new_figure(9, 3.2 * len(histories))
    axes = figure.subplots(len(histories), 2, squeeze=False)
    for row, (model, history) in enumerate(histories.items()):
        for column, quantity in enumerate(("loss", "accuracy")):
            ax = axes[row, column]
            ax.plot(history["epoch"], history[f"train_{quantity}"], label="training")
            ax.plot(history["epoch"], history[f"val_{quantity}"], label="validation")
            best = history.loc[history["selected"], "epoch"]
            if len(best):
                ax.axvline(best.iloc[0], color="grey", ls=":", label="selected epoch")
            ax.set(xlabel="epoch", ylabel=quantity, title=f"{_label(model)}: {quantity}")
            ax.legend(fontsize=7)
    figure.suptitle(title)
    return figure


def confusion_figure(confusions: Mapping[str, np.ndarray], classes: list[str], title: str):
    """Row-normalised test-set confusion matrices, one panel per model."""
    figure = new_figure(3.3 * len(confusions), 3.4)
    axes = figure.subplots(1, len(confusions), squeeze=False)[0]
    for ax, (model, matrix) in zip(axes, confusions.items(), strict=True):
        ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                color="white" if value > 0.5 else "black",
                fontsize=8,
            )
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, classes, rotation=30, fontsize=7)
        ax.set_yticks(ticks, classes, fontsize=7)
        ax.set(xlabel="predicted", ylabel="true", title=_label(model))
    figure.suptitle(title)
    return figure


def top_band_mask(importance: pd.DataFrame, k: int) -> np.ndarray:
    """The ``k`` bands of highest Grad-CAM importance (for several classes, the highest of
    the per-class maps)."""
    columns = [c for c in importance.columns if c.startswith("gradcam:")]
    score = importance[columns].to_numpy().max(axis=1)
    mask = np.zeros(len(score), dtype=bool)
    mask[np.argsort(score)[::-1][:k]] = True
    return mask


def class_spectra_figure(data: PreparedData, importance: pd.DataFrame, k: int, title: str):
    """Mean ± one sd of the preprocessed spectra per class; the top-``k`` Grad-CAM bands
    shaded grey."""
    figure = new_figure(9, 4)
    ax = figure.subplots()
    x = data.wavenumbers
    step = np.median(np.diff(x)) if len(x) > 1 else 1.0
    for centre in x[top_band_mask(importance, k)]:
        ax.axvspan(centre - step / 2, centre + step / 2, color="0.8", lw=0)
    for index, name in enumerate(data.classes):
        spectra = data.x[data.y == index]
        mean, sd = spectra.mean(axis=0), spectra.std(axis=0)
        colour = class_colour(name, index)
        ax.plot(x, mean, color=colour, label=f"{name} (n = {len(spectra)})")
        ax.fill_between(x, mean - sd, mean + sd, color=colour, alpha=0.2, lw=0)
    ax.set(xlabel="wavenumber (cm$^{-1}$)", ylabel="preprocessed intensity", title=title)
    ax.legend(fontsize=8, title=f"grey: top-{k} Grad-CAM bands", title_fontsize=8)
    return figure


def explanation_figure(importance: pd.DataFrame, title: str):
    """The Grad-CAM and weight-based importance per explained class (the class's spectra
    against the others, signed, max |.| = 1)."""
    targets = [c.split(":", 1)[1] for c in importance.columns if c.startswith("gradcam:")]
    figure = new_figure(9, 2.4 * len(targets) + 0.6)
    axes = figure.subplots(len(targets), 1, squeeze=False)[:, 0]
    x = importance["wavenumber"]
    for ax, target in zip(axes, targets, strict=True):
        ax.axhline(0, color="0.6", lw=0.5)
        ax.plot(x, importance[f"gradcam:{target}"], label="Grad-CAM (Captum)")
        ax.plot(x, importance[f"weights:{target}"], label="weight map (weights x feature maps)")
        ax.set(ylabel="importance", title=f"class {target}", ylim=(-1.1, 1.1))
        ax.legend(fontsize=7)
    axes[-1].set_xlabel("wavenumber (cm$^{-1}$)")
    figure.suptitle(title)
    return figure
