"""The prototype gallery: a figure of the prototypes' source regions."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ramanseg.fileio import write_files
from ramanseg.models.prototypes.projection import PrototypeRecord


def prototype_gallery(
    records: Sequence[PrototypeRecord],
    images: Mapping[str, Any] | Callable[[str], Any],
    path: str | Path,
    *,
    channel: int = 0,
    channel_name: str | None = None,
    class_names: Sequence[str] | None = None,
    columns: int = 5,
    context: int = 16,
    dpi: int = 150,
) -> None:
    """Save a grid of the prototypes' source regions (format from the suffix, e.g. ``.png``).

    One panel per distinct source patch (prototypes projected onto the same patch share a
    panel): one channel of the source image, cropped to the source region plus ``context``
    pixels on each side, with the region outlined, titled with the prototype index (the
    lowest of those sharing the patch), its class, how many prototypes share it, the sample
    and the purity. Where prototypes share patches, the title says so in red.

    Args:
        records: the records of :func:`project_prototypes`.
        images: the source images ``(C, H, W)`` by sample id, or a function loading one.
        path: the output figure.
        channel: the channel to show (e.g. a Raman band).
        channel_name: its name, for the figure title.
        class_names: a name per class index (default ``class 0``, ``class 1``, ...).
        columns: panels per row.
        context: pixels of context around the bounding region.
        dpi: figure resolution.

    Raises:
        ValueError: on no records, a bad ``columns`` / ``context`` / ``channel``, or an image
            whose size differs from the record's.
    """
    # Import here: matplotlib is only needed for figures, and the Agg canvas avoids pyplot's
    # global state (no display, safe in worker processes).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from ramanseg.figures import figure_bytes

    if not records:
        raise ValueError("no prototype records to draw")
    if columns < 1 or context < 0:
        raise ValueError(f"columns must be >= 1 and context >= 0, got {columns}, {context}")
    load = images if callable(images) else images.__getitem__
    cache: dict[str, np.ndarray] = {}
    tiles: dict[tuple[str, int, int], list[PrototypeRecord]] = {}
    for record in sorted(records, key=lambda r: (r.prototype_class, r.prototype)):
        tiles.setdefault(record.source, []).append(record)
    rows = math.ceil(len(tiles) / columns)
    figure = Figure(figsize=(2.2 * columns, 2.5 * rows), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, sharing in zip(axes.flat, tiles.values(), strict=False):
        record = sharing[0]
        if record.sample_id not in cache:
            array = load(record.sample_id)
            array = array.detach().cpu().numpy() if isinstance(array, Tensor) else np.asarray(array)
            if array.ndim != 3 or tuple(array.shape[1:]) != tuple(record.image_size):
                raise ValueError(
                    f"sample {record.sample_id!r}: image shape {array.shape} does not match the "
                    f"projection's image size {record.image_size}"
                )
            if not 0 <= channel < array.shape[0]:
                raise ValueError(f"channel {channel} outside the image's {array.shape[0]} channels")
            cache[record.sample_id] = array[channel]
        plane = cache[record.sample_id]
        y0, y1, x0, x1 = record.bbox
        cy0, cy1 = max(0, y0 - context), min(plane.shape[0], y1 + context)
        cx0, cx1 = max(0, x0 - context), min(plane.shape[1], x1 + context)
        ax.imshow(plane[cy0:cy1, cx0:cx1], cmap="gray", interpolation="nearest")
        ax.add_patch(
            Rectangle(
                (x0 - cx0 - 0.5, y0 - cy0 - 0.5),
                x1 - x0,
                y1 - y0,
                fill=False,
                edgecolor="yellow",
                linewidth=1.2,
            )
        )
        name = (
            class_names[record.prototype_class]
            if class_names is not None and record.prototype_class < len(class_names)
            else f"class {record.prototype_class}"
        )
        shared = f" x{len(sharing)}" if len(sharing) > 1 else ""
        purity = f", purity {record.purity:.2f}" if record.purity is not None else ""
        ax.set_title(
            f"#{record.prototype} {name}{shared}\n{record.sample_id}{purity}",
            fontsize=8,
            color="red" if shared else "black",
        )
    title = f"Source regions of the {len(tiles)} distinct of {len(records)} prototypes"
    if channel_name:
        title += f" ({channel_name})"
    if len(tiles) < len(records):
        title = f"PROTOTYPE COLLAPSE: prototypes share source patches (xN)\n{title}"
    figure.suptitle(title, fontsize=10, color="red" if len(tiles) < len(records) else "black")
    path = Path(path)
    suffix = path.suffix or ".png"
    write_files({path: figure_bytes(figure, [suffix])[suffix]})
