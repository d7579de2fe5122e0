"""The per-sample quality-control figure (the paper's Figure 1), drawn from the preprocessed
outputs.

The figure is its own step, after ``preprocess``, rather than part of it: drawing it
(matplotlib's import and a three-panel figure, about a second per job) would otherwise be
most of a preprocessing job's time; the models need only the stack and the masks, so
they start without waiting for the figures; and a change to the figure redraws the
figures without preprocessing again. It reads the one Raman channel it shows from the
normalised stack, the foreground and the class map, and the H&E image.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ramanseg.fileio import write_files
from ramanseg.io import read_he
from ramanseg.preprocessed import (
    PreprocessedFiles,
    read_class_map,
    read_foreground,
    read_stack_channel,
)
from ramanseg.settings import AnnotationSettings, ChannelLayout

log = logging.getLogger(__name__)

#: Longest side, in pixels, of the images drawn in the QC figure (larger ones are strided).
QC_MAX_DISPLAY = 512


def _display_step(shape: tuple[int, ...]) -> int:
    return max(1, math.ceil(max(shape[:2]) / QC_MAX_DISPLAY))


def render_qc_figure(
    sample_id: str,
    raman: np.ndarray,
    raman_name: str,
    he: np.ndarray | None,
    foreground: np.ndarray,
    class_map: np.ndarray,
    classes: Mapping[str, int],
) -> bytes:
    """The paper's Figure 1 for one sample, as PNG bytes (deterministic).

    Panels: (a) a normalised Raman channel with its colour bar; (b) the H&E image with the
    foreground outline (or, without H&E, the SRS-derived foreground); (c) the annotation
    classes over the H&E in grey (or the Raman channel), with a class legend (foreground
    classes marked). Images larger than ``QC_MAX_DISPLAY`` pixels are strided for display; the
    axes keep full-resolution pixel coordinates.

    Args:
        sample_id: the sample, for the title.
        raman: (Y, X) normalised Raman channel.
        raman_name: its name.
        he: uint8 RGB (Y, X, 3) or None.
        foreground: bool (Y, X).
        class_map: uint8 (Y, X), 0 = not annotated, 1 + class index.
        classes: ``annotations.classes`` (name -> binary label), in class-map order.

    Returns:
        The PNG file's bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from ramanseg.figures import figure_bytes

    step = _display_step(raman.shape)
    height, width = raman.shape
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    show = {"extent": extent, "interpolation": "nearest"}
    raman_small = raman[::step, ::step]
    fg_small = foreground[::step, ::step]
    cm_small = class_map[::step, ::step]

    # A fixed layout: a layout engine would draw the figure twice.
    figure = Figure(figsize=(13.0, 4.6), dpi=100)
    figure.subplots_adjust(left=0.05, right=0.98, bottom=0.1, top=0.88, wspace=0.3)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3, sharex=True, sharey=True)
    image = axes[0].imshow(raman_small, cmap="gray", vmin=0.0, vmax=1.0, **show)
    figure.colorbar(image, ax=axes[0], shrink=0.8, label="normalised intensity")
    axes[0].set_title(f"(a) {raman_name}")

    if he is not None:
        he_small = he[::step, ::step]
        axes[1].imshow(he_small, **show)
        axes[1].set_title("(b) H&E, tissue outlined")
        # Grey H&E under the classes, so that the class colours stay readable.
        base = he_small.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        base_kwargs = {"cmap": "gray", "vmin": 0.0, "vmax": 255.0}
    else:
        axes[1].imshow(fg_small, cmap="gray", vmin=0, vmax=1, **show)
        axes[1].set_title("(b) no H&E: tissue from SRS")
        base, base_kwargs = raman_small, {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
    if fg_small.any() and not fg_small.all():
        ys = np.linspace(0, height - 1, fg_small.shape[0])
        xs = np.linspace(0, width - 1, fg_small.shape[1])
        axes[1].contour(xs, ys, fg_small.astype(np.float32), levels=[0.5], colors="cyan")

    names = list(classes)
    palette = [
        "#e41a1c", "#984ea3", "#4daf4a", "#377eb8", "#ff7f00",
        "#a65628", "#f781bf", "#999999", "#ffff33", "#66c2a5",
    ]  # fmt: skip
    colours = [palette[i % len(palette)] for i in range(len(names))]
    axes[2].imshow(base, **base_kwargs, **show)
    overlay = np.ma.masked_equal(cm_small, 0)
    class_cmap = ListedColormap(colours if colours else ["#000000"])
    axes[2].imshow(
        overlay, cmap=class_cmap, vmin=0.5, vmax=max(len(names), 1) + 0.5, alpha=0.5, **show
    )
    present = set(np.unique(cm_small).tolist())
    handles = [
        Patch(
            facecolor=colours[i],
            alpha=0.5 if i + 1 in present else 0.15,
            label=f"{name}{' (foreground)' if classes[name] == 1 else ''}",
        )
        for i, name in enumerate(names)
    ]
    axes[2].legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.8)
    axes[2].set_title("(c) annotations")
    for axis in axes:
        axis.set_xlabel("x (pixels)")
    axes[0].set_ylabel("y (pixels)")
    for axis in axes[1:]:  # the same grid: labelling it once saves drawing time
        axis.tick_params(labelleft=False)
    figure.suptitle(f"sample {sample_id}")
    return figure_bytes(figure, [".png"], png_compress_level=1)[".png"]


def draw_qc_figure(
    sample_id: str,
    files: PreprocessedFiles,
    he_path: str | Path | None,
    out: str | Path,
    *,
    channels: ChannelLayout,
    annotations: AnnotationSettings,
) -> Path:
    """Draw one sample's QC figure from its preprocessed outputs and write it (atomically).

    Args:
        sample_id: the sample.
        files: the sample's preprocessed files; the stack, the class map and the
            foreground are read.
        he_path: the sample's H&E image, or None / "" for a sample without one.
        out: the PNG to write.
        channels: the channel layout (the figure shows
            :meth:`~ramanseg.settings.ChannelLayout.display_index`).
        annotations: the annotation settings (the classes, in class-map order).

    Returns:
        ``out``.

    Raises:
        InputError: a missing or damaged preprocessed file or H&E image, or files that do
            not match each other or the configuration.
    """
    names = channels.names
    classes = annotations.labels
    index = channels.display_index()
    raman = read_stack_channel(files.path("stack"), sample_id, index, len(names))
    shape = raman.shape
    foreground = read_foreground(files.path("foreground"), sample_id, shape)
    class_map = read_class_map(files.path("classes"), sample_id, annotations.class_names, shape)
    he = read_he(he_path, sample_id, shape) if he_path else None
    png = render_qc_figure(
        sample_id, raman, names[index], he, foreground.astype(bool), class_map, classes
    )
    out = Path(out)
    write_files({out: png})
    log.info("sample %s: QC figure written to %s", sample_id, out)
    return out


def add_commands(subparsers: Any) -> None:
    """Add ``qc-figure`` to the ``ramanseg`` command line."""
    from ramanseg.cli import add_settings_arguments, settings_from_args

    parser = subparsers.add_parser(
        "qc-figure",
        help="draw one sample's QC figure (the paper's Figure 1) from its preprocessed files",
        description="Read one channel of the normalised stack, the foreground, the class map "
        "and the H&E image of a preprocessed sample, and draw the paper's Figure 1.",
    )
    parser.add_argument("--sample", required=True, help="sample id")
    for option, name in (("--stack", "stack.ome.tif"), ("--classes", "classes.tif"),
                         ("--foreground", "foreground.tif")):  # fmt: skip
        parser.add_argument(option, required=True, help=f"the sample's preprocessed {name}")
    parser.add_argument(
        "--he", default="", help="H&E image registered to the SRS grid; empty for none"
    )
    parser.add_argument("--out", required=True, help="the PNG to write")
    add_settings_arguments(parser)

    def run(args: Any) -> int:
        config = settings_from_args(args)
        files = PreprocessedFiles(
            args.sample, stack=args.stack, classes=args.classes, foreground=args.foreground
        )
        draw_qc_figure(
            args.sample, files, args.he or None, args.out,
            channels=ChannelLayout.from_config(config),
            annotations=AnnotationSettings.from_config(config),
        )  # fmt: skip
        return 0

    parser.set_defaults(func=run)
