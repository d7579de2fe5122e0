"""The overlay figure of a slide's predictions: each model's tumour outline over a Raman band.

One panel per model, side by side (three to a row), each the same display band in grey
with the model's predicted tumour filled translucently and outlined, titled with the
model and its tumour fraction of the image. The band is the one every figure shows
(:meth:`ramanseg.settings.ChannelLayout.display_index`), stretched between its 0.5th and
99.5th percentiles. Images with a side over :data:`OVERLAY_MAX_DISPLAY` pixels are strided
for display; the axes keep full-resolution pixel coordinates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ramanseg.errors import InputError
from ramanseg.figures import class_colour, figure_bytes
from ramanseg.fileio import write_files

log = logging.getLogger(__name__)

#: Longest side, in pixels, of an image drawn in a panel (larger ones are strided).
OVERLAY_MAX_DISPLAY = 512
#: Panels per row.
OVERLAY_COLUMNS = 3


def render_overlay(
    display_image: np.ndarray,
    masks_by_model: Mapping[str, np.ndarray],
    *,
    title: str,
) -> bytes:
    """The overlay figure as PNG bytes (deterministic).

    Args:
        display_image: (Y, X) the display band (any numeric range).
        masks_by_model: model name -> its predicted mask, (Y, X), non-zero = tumour; one
            panel each, in this order.
        title: the figure's title (the sample, the band).

    Returns:
        The PNG file's bytes.

    Raises:
        ValueError: no model, an image that is not 2-D, or a mask of another shape.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    image = np.asarray(display_image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"the display image must be 2-D (Y, X), got shape {image.shape}")
    if not masks_by_model:
        raise ValueError("no predicted mask to draw")
    for model, mask in masks_by_model.items():
        if np.shape(mask) != image.shape:
            raise ValueError(
                f"the mask of {model!r} has shape {np.shape(mask)}, the image {image.shape}"
            )
    height, width = image.shape
    step = max(1, math.ceil(max(height, width) / OVERLAY_MAX_DISPLAY))
    small = image[::step, ::step]
    finite = small[np.isfinite(small)]
    low, high = np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0)
    high = high if high > low else low + 1.0
    show = {"extent": (-0.5, width - 0.5, height - 0.5, -0.5), "interpolation": "nearest"}
    colour = class_colour("Tumor")

    count = len(masks_by_model)
    columns = min(count, OVERLAY_COLUMNS)
    rows = math.ceil(count / columns)
    # 4-inch wide panels, as high as the image's aspect asks (within reason).
    panel_height = 4.0 * min(max(height / max(width, 1), 0.25), 4.0)
    # A fixed layout: a layout engine would draw the figure twice.
    figure = Figure(figsize=(4.0 * columns, panel_height * rows + 0.6), dpi=100)
    FigureCanvasAgg(figure)
    top = 1.0 - 0.6 / figure.get_figheight()
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=top, wspace=0.05, hspace=0.15)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    ys = np.arange(0, height, step, dtype=np.float32)
    xs = np.arange(0, width, step, dtype=np.float32)
    for axis, (model, mask) in zip(axes, masks_by_model.items(), strict=False):
        mask = np.asarray(mask) != 0
        mask_small = mask[::step, ::step]
        axis.imshow(small, cmap="gray", vmin=low, vmax=high, **show)
        axis.imshow(
            np.ma.masked_equal(mask_small.astype(np.uint8), 0),
            cmap=ListedColormap([colour]), vmin=0.5, vmax=1.5, alpha=0.25, **show,
        )  # fmt: skip
        if mask_small.any() and not mask_small.all():
            axis.contour(xs, ys, mask_small.astype(np.float32), levels=[0.5], colors=[colour],
                         linewidths=1.5)  # fmt: skip
        axis.set_title(f"{model}: tumour {mask.mean():.1%} of the image", fontsize=9)
        axis.set_axis_off()
    for axis in axes[count:]:
        axis.set_visible(False)
    figure.suptitle(title, fontsize=10)
    return figure_bytes(figure, [".png"], png_compress_level=1)[".png"]


def write_overlay_png(
    path: str | Path,
    display_image: np.ndarray,
    masks_by_model: Mapping[str, np.ndarray],
    *,
    title: str,
) -> Path:
    """Draw the overlay figure (:func:`render_overlay`) and write it atomically.

    Args:
        path: the PNG to write.
        display_image: (Y, X) the display band.
        masks_by_model: model name -> predicted mask (Y, X), one panel each.
        title: the figure's title.

    Returns:
        ``path``.
    """
    path = Path(path)
    write_files({path: render_overlay(display_image, masks_by_model, title=title)})
    log.info("overlay of %d model(s) written to %s", len(masks_by_model), path)
    return path


def _named_masks(items: list[str], sample_id: str) -> dict[str, Path]:
    """``MODEL=PATH`` items (or paths ``<model>/<sample>.mask.tif``) by model name.

    Raises:
        InputError: a path whose model cannot be told, or a model named twice.
    """
    from ramanseg.predictions import parse_prediction_path

    named: dict[str, Path] = {}
    for item in items:
        model, separator, path = item.partition("=")
        if not separator:
            path = item
            model, _, kind = parse_prediction_path(path)
            if kind != "mask":
                raise InputError(
                    f"{Path(path).name!r} is a predicted probability, not a mask",
                    sample=sample_id, path=path, fix="pass the models' <sample>.mask.tif",
                )  # fmt: skip
        if not model or not path:
            raise InputError(
                f"{item!r} names no model or no file",
                sample=sample_id, fix="pass each mask as MODEL=PATH",
            )  # fmt: skip
        if model in named:
            raise InputError(
                f"model {model!r} is given twice ({named[model]} and {path})",
                sample=sample_id, fix="pass one mask per model",
            )  # fmt: skip
        named[model] = Path(path)
    return named


def add_commands(subparsers: Any) -> None:
    """Add ``overlay`` to the ``ramanseg`` command line."""
    from ramanseg.cli import add_settings_arguments, settings_from_args

    parser = subparsers.add_parser(
        "overlay",
        help="draw each model's predicted tumour outline over a slide's display band",
        description="Read one band of a slide's preprocessed stack and the models' predicted "
        "masks, and draw one panel per model: the mask filled and outlined over the band.",
    )
    parser.add_argument("--sample", required=True, help="sample id")
    parser.add_argument("--stack", required=True, help="the slide's preprocessed stack.ome.tif")
    parser.add_argument(
        "--masks",
        nargs="+",
        required=True,
        metavar="[MODEL=]MASK",
        help="the predicted masks, one panel each, as MODEL=PATH or as "
        "<model>/<sample>.mask.tif (the model from the folder)",
    )
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument(
        "--channel",
        default="auto",
        help="the band to show: a channel name, or `auto` (the Raman band nearest "
        "2930 cm-1; default)",
    )
    parser.add_argument("--title", default=None, help="figure title (default: sample and band)")
    add_settings_arguments(parser)

    def run(args: Any) -> int:
        from ramanseg.fileio import check_output_folder
        from ramanseg.predictions import read_predicted_mask
        from ramanseg.preprocessed import read_stack_channel
        from ramanseg.settings import ChannelLayout

        channels = ChannelLayout.from_config(settings_from_args(args))
        index = channels.display_index(args.channel)
        out = Path(args.out)
        check_output_folder(out.parent, args.sample, "--out")
        paths = _named_masks(args.masks, args.sample)
        image = read_stack_channel(args.stack, args.sample, index, len(channels))
        masks = {}
        for model, path in paths.items():
            fix = f"rerun the prediction of model {model!r} that writes {path}"
            masks[model] = read_predicted_mask(path, args.sample, fix)
            if masks[model].shape != image.shape:
                raise InputError(
                    f"the predicted mask has shape {masks[model].shape}, the slide's stack "
                    f"{image.shape} ({args.stack})",
                    sample=args.sample, path=path, fix=fix,
                )  # fmt: skip
        title = args.title or f"sample {args.sample}: predicted tumour over {channels.names[index]}"
        write_overlay_png(out, image, masks, title=title)
        return 0

    parser.set_defaults(func=run)
