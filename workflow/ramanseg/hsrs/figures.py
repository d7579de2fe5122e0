"""Figures of the HSRS stage: the phasor plot with its cursors, and the segmentations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ramanseg.figures import new_figure
from ramanseg.hsrs.phasor import Phasor, PhasorCursors

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Colours of the HSRS classes, by label (the matplotlib tab10 cycle).
CLASS_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _colour(index: int) -> str:
    return CLASS_COLOURS[index % len(CLASS_COLOURS)]


def _pooled_coordinates(phasors: Sequence[Phasor], harmonic_index: int):
    g = np.concatenate([p.g[harmonic_index].ravel() for p in phasors])
    s = np.concatenate([p.s[harmonic_index].ravel() for p in phasors])
    valid = np.isfinite(g) & np.isfinite(s)
    return g[valid], s[valid]


def draw_phasor_histogram(
    axes: Axes, phasors: Sequence[Phasor], harmonic_index: int = 0, bins: int = 200
) -> None:
    """The 2D histogram (log counts) of the pixels' phasors, and the unit circle.

    Args:
        axes: where to draw.
        phasors: the phasor images, pooled.
        harmonic_index: the position of the harmonic in the phasors' harmonics.
        bins: histogram bins per axis.
    """
    from matplotlib.colors import LogNorm

    g, s = _pooled_coordinates(phasors, harmonic_index)
    if len(g):
        # The central 99.9 % of the pixels (noise throws a few far out), with a margin.
        pad = 0.02 + 0.1 * max(np.ptp(g), np.ptp(s)) * 0.2
        extent = [
            [np.percentile(g, 0.05) - pad, np.percentile(g, 99.95) + pad],
            [np.percentile(s, 0.05) - pad, np.percentile(s, 99.95) + pad],
        ]
        axes.hist2d(g, s, bins=bins, range=extent, cmap="Greys", norm=LogNorm(), rasterized=True)
        axes.set_xlim(*extent[0])
        axes.set_ylim(*extent[1])
    angle = np.linspace(0, 2 * np.pi, 361)
    axes.plot(np.cos(angle), np.sin(angle), color="0.6", linewidth=0.6, scalex=False, scaley=False)
    harmonic = phasors[0].harmonics[harmonic_index] if phasors else 1
    axes.set_xlabel(f"G (harmonic {harmonic})")
    axes.set_ylabel(f"S (harmonic {harmonic})")
    axes.set_aspect("equal", adjustable="box")


def draw_cursors(
    axes: Axes,
    cursors: PhasorCursors,
    harmonic_index: int = 0,
    class_names: Sequence[str] | None = None,
) -> None:
    """The cursors as ellipses with the class names.

    Args:
        axes: where to draw.
        cursors: the cursors.
        harmonic_index: the position of the harmonic in the cursors' harmonics.
        class_names: the classes whose colours the cursors take, by name (default: the
            cursors' own order).
    """
    palette = list(class_names or cursors.class_names)
    from matplotlib.patches import Ellipse

    for index, name in enumerate(cursors.class_names):
        g, s, radius, radius_minor, angle = cursors.ellipse(index, harmonic_index)
        colour = _colour(palette.index(name) if name in palette else index)
        axes.add_patch(
            Ellipse(
                (g, s),
                2 * radius,
                2 * radius_minor,
                angle=np.degrees(angle),
                fill=False,
                edgecolor=colour,
                linewidth=1.4,
            )
        )
        axes.plot([g], [s], "+", color=colour, markersize=8)
        axes.annotate(name, (g, s), xytext=(4, 4), textcoords="offset points", color=colour)


def phasor_plot(
    phasors: Sequence[Phasor],
    cursors: PhasorCursors,
    clusters: PhasorCursors | None = None,
    title: str = "",
) -> Figure:
    """The phasor plot: the pixels' 2D histogram with the cursors (and the clusters).

    Args:
        phasors: the phasor images, pooled.
        cursors: the cursors placed from the labels.
        clusters: the Gaussian-mixture clusters as cursors (named after the classes they
            match), drawn in a second panel; ``None``: one panel.
        title: the figure's title.

    Returns:
        The figure (first harmonic).
    """
    panels = [("cursors from the labels", cursors)]
    if clusters is not None:
        panels.append(("Gaussian-mixture clusters", clusters))
    figure = new_figure(5.0 * len(panels), 5.0)
    for index, (name, drawn) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        draw_phasor_histogram(axes, phasors)
        draw_cursors(axes, drawn, class_names=cursors.class_names)
        axes.set_title(name)
    if title:
        figure.suptitle(title)
    return figure


def segmentation_figure(
    intensity: np.ndarray,
    truth: np.ndarray,
    predictions: dict[str, np.ndarray],
    class_names: Sequence[str],
    title: str = "",
) -> Figure:
    """The mean-intensity image, the truth and each segmentation, side by side.

    Args:
        intensity: (Y, X) mean intensity.
        truth: (Y, X) labels.
        predictions: method name -> (Y, X) labels (-1: none).
        class_names: the classes.
        title: the figure's title.

    Returns:
        The figure.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    panels = {"truth": truth, **predictions}
    figure = new_figure(3.2 * (len(panels) + 1), 3.6)
    colours = ListedColormap(["#ffffff"] + [_colour(i) for i in range(len(class_names))])
    axes = figure.add_subplot(1, len(panels) + 1, 1)
    axes.imshow(intensity, cmap="gray")
    axes.set_title("mean intensity")
    axes.set_axis_off()
    for index, (name, labels) in enumerate(panels.items()):
        axes = figure.add_subplot(1, len(panels) + 1, index + 2)
        axes.imshow(
            np.asarray(labels) + 1,
            cmap=colours,
            vmin=0,
            vmax=len(class_names),
            interpolation="nearest",
        )
        axes.set_title(name)
        axes.set_axis_off()
    handles = [Patch(color=_colour(i), label=n) for i, n in enumerate(class_names)]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(class_names))
    if title:
        figure.suptitle(title)
    return figure
