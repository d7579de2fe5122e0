"""The prototypes' source patches, ``prototype_patches.npz``: the one owner of that file.

A projected RamanSeg prototype *is* a latent patch of a training image
(:class:`~ramanseg.models.prototypes.projection.PrototypeRecord`). To show "this looks like
that" on a new slide, away from the training data, the model package carries a crop of
each prototype's source region on the display band (``ChannelLayout.display_index``): the
record's high-activation box plus ``context`` pixels on each side, clipped to the image.

The file is a plain ``.npz`` (read with ``allow_pickle=False``)::

    prototype        int64 (P,)       prototype index, in prototype order
    prototype_class  int64 (P,)
    sample_id        str (P,)         the source sample
    bbox             int64 (P, 4)     the source region (y0, y1, x0, x1), source image pixels
    crop_box         int64 (P, 4)     the crop's window in the source image, same convention
    purity           float64 (P,)     the record's purity (NaN where it has none)
    channel          str ()           the display band's name
    crop_<j>         float16 (h, w)   prototype j's crop (normalised data, [0, 1] mostly)

Prototypes that share a source patch (the paper's projection lets them) each keep their
own crop: the file stays one entry per prototype.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ramanseg.errors import InputError
from ramanseg.fileio import write_files
from ramanseg.models.prototypes.projection import PrototypeRecord, read_projection
from ramanseg.settings import ChannelLayout

log = logging.getLogger(__name__)

#: The file's name beside ``model.pt`` (and in the model package).
PATCHES_NAME = "prototype_patches.npz"
#: Pixels of context around a source region in its crop.
CONTEXT = 16
_KEYS = ("prototype", "prototype_class", "sample_id", "bbox", "crop_box", "purity", "channel")
_FIX = "write it again with `ramanseg prototype-patches` from the trained RamanSeg folder"


@dataclass(frozen=True)
class PrototypePatch:
    """One prototype's source patch, as read back from ``prototype_patches.npz``.

    Attributes:
        prototype: the prototype index.
        prototype_class: its class.
        sample_id: the training sample it was projected onto.
        bbox: its source region ``(y0, y1, x0, x1)`` in the source image (half-open).
        crop_box: where ``crop`` lies in the source image (same convention).
        crop: float32 ``(h, w)``: the display band around the source region.
        purity: the share of the source region of the prototype's class, or None.
    """

    prototype: int
    prototype_class: int
    sample_id: str
    bbox: tuple[int, int, int, int]
    crop_box: tuple[int, int, int, int]
    crop: np.ndarray
    purity: float | None

    @property
    def box_in_crop(self) -> tuple[int, int, int, int]:
        """The source region in ``crop`` coordinates ``(y0, y1, x0, x1)``."""
        y0, y1, x0, x1 = self.bbox
        cy, cx = self.crop_box[0], self.crop_box[2]
        return y0 - cy, y1 - cy, x0 - cx, x1 - cx


@dataclass(frozen=True)
class PrototypePatches:
    """Every prototype's source patch (``prototype_patches.npz``).

    Attributes:
        patches: one per prototype, in prototype order.
        channel: the display band the crops show.
    """

    patches: tuple[PrototypePatch, ...]
    channel: str

    def __getitem__(self, prototype: int) -> PrototypePatch:
        return self.patches[prototype]

    def __len__(self) -> int:
        return len(self.patches)


def crop_box(
    bbox: Sequence[int], image_size: Sequence[int], context: int = CONTEXT
) -> tuple[int, int, int, int]:
    """The crop window of a source region: ``bbox`` grown by ``context``, clipped to the image.

    Args:
        bbox: ``(y0, y1, x0, x1)``, half-open.
        image_size: ``(H, W)``.
        context: pixels added on each side.
    """
    y0, y1, x0, x1 = (int(v) for v in bbox)
    height, width = (int(v) for v in image_size)
    return (
        max(0, y0 - context),
        min(height, y1 + context),
        max(0, x0 - context),
        min(width, x1 + context),
    )


def write_prototype_patches(
    path: str | Path,
    records: Sequence[PrototypeRecord],
    stacks_by_sample: Mapping[str, str | Path | np.ndarray | Callable[[str], np.ndarray]],
    layout: ChannelLayout,
    *,
    display_channel: str = "auto",
    context: int = CONTEXT,
) -> Path:
    """Crop each prototype's source region from its training stack and write them (atomically).

    Args:
        path: the output ``.npz`` (``results/models/ramanseg/prototype_patches.npz``).
        records: the projection records, one per prototype.
        stacks_by_sample: each source sample's preprocessed stack: its ``stack.ome.tif``
            (only the display band is read), a ``(C, H, W)`` array, or a function loading
            one from the sample id. Samples no record names may be present.
        layout: the channel layout of the stacks (the display band is chosen from it).
        display_channel: a channel name, or ``auto`` (:meth:`ChannelLayout.display_index`).
        context: pixels of context around each source region.

    Returns:
        ``path``.

    Raises:
        InputError: no records, a source sample without a stack, a stack whose size
            differs from the one the projection saw, or a box outside it.
    """
    from ramanseg.preprocessed import read_stack_channel

    path = Path(path)
    if not records:
        raise InputError("there are no prototype records to crop", path=path, fix=_FIX)
    index = layout.display_index(display_channel)
    missing = sorted({r.sample_id for r in records} - set(stacks_by_sample))
    if missing:
        raise InputError(
            f"no preprocessed stack of the prototypes' source sample(s) {missing}",
            sample=missing[0],
            fix="pass the stacks of every training sample (`--stacks`)",
        )
    bands: dict[str, np.ndarray] = {}

    def band(sample: str) -> np.ndarray:
        if sample not in bands:
            source = stacks_by_sample[sample]
            if isinstance(source, str | Path):
                bands[sample] = read_stack_channel(source, sample, index, len(layout))
            else:
                array = np.asarray(source(sample) if callable(source) else source)
                if array.ndim != 3 or array.shape[0] != len(layout):
                    raise InputError(
                        f"the stack has shape {array.shape}; expected ({len(layout)}, H, W)",
                        sample=sample,
                        fix="pass the sample's preprocessed stack",
                    )
                bands[sample] = array[index]
        return bands[sample]

    arrays: dict[str, np.ndarray] = {}
    columns: dict[str, list[Any]] = {key: [] for key in _KEYS[:-1]}
    for record in sorted(records, key=lambda r: r.prototype):
        plane = band(record.sample_id)
        if tuple(plane.shape) != tuple(record.image_size):
            raise InputError(
                f"the stack is {plane.shape[0]} x {plane.shape[1]} px but prototype "
                f"{record.prototype} was projected onto a {record.image_size[0]} x "
                f"{record.image_size[1]} px image",
                sample=record.sample_id,
                fix="pass the stacks the model was trained on (the same preprocessing)",
            )
        y0, y1, x0, x1 = (int(v) for v in record.bbox)
        if not (0 <= y0 < y1 <= plane.shape[0] and 0 <= x0 < x1 <= plane.shape[1]):
            raise InputError(
                f"prototype {record.prototype}'s source region {record.bbox} is empty or "
                f"outside the image {plane.shape}",
                sample=record.sample_id,
                fix="retrain RamanSeg; the projection records are damaged",
            )
        box = crop_box(record.bbox, record.image_size, context)
        arrays[f"crop_{record.prototype}"] = plane[box[0] : box[1], box[2] : box[3]].astype(
            np.float16
        )
        columns["prototype"].append(int(record.prototype))
        columns["prototype_class"].append(int(record.prototype_class))
        columns["sample_id"].append(str(record.sample_id))
        columns["bbox"].append([y0, y1, x0, x1])
        columns["crop_box"].append(list(box))
        columns["purity"].append(np.nan if record.purity is None else float(record.purity))
    if columns["prototype"] != list(range(len(records))):
        raise InputError(
            f"the records number the prototypes {columns['prototype']}, not 0 to "
            f"{len(records) - 1}",
            fix="retrain RamanSeg; the projection records are damaged",
        )
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        prototype=np.asarray(columns["prototype"], dtype=np.int64),
        prototype_class=np.asarray(columns["prototype_class"], dtype=np.int64),
        sample_id=np.asarray(columns["sample_id"], dtype=str),
        bbox=np.asarray(columns["bbox"], dtype=np.int64).reshape(-1, 4),
        crop_box=np.asarray(columns["crop_box"], dtype=np.int64).reshape(-1, 4),
        purity=np.asarray(columns["purity"], dtype=np.float64),
        channel=np.asarray(layout.names[index]),
        **arrays,
    )
    write_files({path: buffer.getvalue()})
    log.info(
        "source patches of %d prototypes (%s) written to %s",
        len(records),
        layout.names[index],
        path,
    )
    return path


def read_prototype_patches(path: str | Path) -> PrototypePatches:
    """Read ``prototype_patches.npz`` (:func:`write_prototype_patches`).

    Args:
        path: the file.

    Returns:
        The patches, in prototype order.

    Raises:
        InputError: a missing, damaged or incomplete file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("the prototypes' source patches do not exist", path=path, fix=_FIX)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in _KEYS if key not in data.files]
            if missing:
                raise KeyError(f"no {missing}")
            columns = {key: data[key] for key in _KEYS}
            count = len(columns["prototype"])
            crops = [data[f"crop_{j}"].astype(np.float32) for j in range(count)]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
        raise InputError(
            f"the prototypes' source patches cannot be read ({type(error).__name__}: {error})",
            path=path,
            fix=_FIX,
        ) from None
    patches = []
    for j in range(count):
        purity = float(columns["purity"][j])
        patches.append(
            PrototypePatch(
                prototype=int(columns["prototype"][j]),
                prototype_class=int(columns["prototype_class"][j]),
                sample_id=str(columns["sample_id"][j]),
                bbox=tuple(int(v) for v in columns["bbox"][j]),
                crop_box=tuple(int(v) for v in columns["crop_box"][j]),
                crop=crops[j],
                purity=None if np.isnan(purity) else purity,
            )
        )
    return PrototypePatches(tuple(patches), str(columns["channel"]))


def projection_records(model_dir: str | Path) -> list[PrototypeRecord]:
    """The projection records of a trained RamanSeg folder (the one place that reads them
    for the source patches).

    Raises:
        InputError: the folder has no readable records (e.g. projection-free RamanSeg).
    """
    return read_projection(model_dir)[0]


def add_commands(subparsers: Any) -> None:
    """Add ``prototype-patches`` to the ``ramanseg`` command line."""
    from ramanseg.cli import add_settings_arguments, settings_from_args

    parser = subparsers.add_parser(
        "prototype-patches",
        help="crop the prototypes' source patches for the model package",
        description="Crop each projected RamanSeg prototype's source region (plus context) "
        "on the display band from the training stacks, so that the model package can show "
        f"'this looks like that' without the training data. Writes {PATCHES_NAME}.",
    )
    parser.add_argument("--model-dir", required=True, type=Path, help="the trained RamanSeg folder")
    parser.add_argument(
        "--stacks",
        required=True,
        nargs="+",
        metavar="FILE",
        help="the training samples' preprocessed stack.ome.tif (at least the source samples')",
    )
    parser.add_argument("--out", required=True, type=Path, help=f"the output {PATCHES_NAME}")
    parser.add_argument(
        "--context",
        type=int,
        default=CONTEXT,
        help=f"pixels around each region (default {CONTEXT})",
    )
    add_settings_arguments(parser)

    def run(args: Any) -> int:
        from ramanseg.config import ConfigError
        from ramanseg.preprocessed import files_by_sample

        if args.context < 0:
            raise ConfigError(f"--context must be >= 0, got {args.context}")
        from ramanseg.interpret import interpret_settings

        settings = settings_from_args(args)
        stacks = {
            sample: files.stack for sample, files in files_by_sample(stacks=args.stacks).items()
        }
        write_prototype_patches(
            args.out,
            projection_records(args.model_dir),
            stacks,
            ChannelLayout.from_config(settings),
            display_channel=interpret_settings(settings).display_channel,
            context=args.context,
        )
        return 0

    parser.set_defaults(func=run)
