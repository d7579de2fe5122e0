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

    Each panel shows one channel of the prototype's source image, cropped to the bounding
    region plus ``context`` pixels on each side, with the bounding region outlined, titled with
    the prototype index, its class and the sample.

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
    rows = math.ceil(len(records) / columns)
    figure = Figure(figsize=(2.2 * columns, 2.5 * rows), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, record in zip(axes.flat, records, strict=False):
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
        ax.set_title(f"#{record.prototype} {name}\n{record.sample_id}", fontsize=8)
    title = "Prototype source regions"
    if channel_name:
        title += f" ({channel_name})"
    figure.suptitle(title, fontsize=10)
    path = Path(path)
    suffix = path.suffix or ".png"
    write_files({path: figure_bytes(figure, [suffix])[suffix]})
