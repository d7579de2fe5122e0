"""The figures of the nnU-Net attributions: Grad-CAM per fold and averaged over the display
channel, and one bar per channel for Integrated Gradients and Feature Ablation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ramanseg.figures import new_figure
from ramanseg.interpret.nnunet_target import Target


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
