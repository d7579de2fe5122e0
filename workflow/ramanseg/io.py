"""Reading the input contract (SRS stacks, H&E images) and writing image outputs.

Every problem with a user's file is raised as :class:`~ramanseg.errors.InputError`
naming the sample, the file, what is wrong and how to fix it. Every output is written
through :func:`~ramanseg.fileio.atomic_path`, so a failure never leaves a partial file.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ramanseg.config import channel_names, require
from ramanseg.errors import InputError
from ramanseg.fileio import atomic_path

_TIFF_SUFFIXES = (".tif", ".tiff")
#: The files ``ramanseg preprocess`` writes for a sample, in ``results/preprocessed/<sample>/``.
STACK_NAME = "stack.ome.tif"
CLASSES_NAME = "classes.tif"
MASK_NAME = "mask.tif"
FOREGROUND_NAME = "foreground.tif"
QC_JSON_NAME = "qc.json"
#: Namespace for the OME UUIDs: a fixed, arbitrary UUID so the derived ones are stable.
_OME_UUID_NAMESPACE = uuid.UUID("6f1c1f8e-3c3f-4c58-9a57-6a1d6a0b2f43")


@dataclass(frozen=True)
class SrsImage:
    """An SRS stack as read from disk.

    Attributes:
        data: float32 array (C, Y, X), every value finite.
        source_dtype: the numeric type stored in the file, e.g. ``"uint16"``.
        nonfinite_repaired: how many NaN / Inf values were replaced by their channel's
            median (always 0 with ``preprocess.nonfinite: reject``).
    """

    data: np.ndarray
    source_dtype: str
    nonfinite_repaired: int


def _require_file(path: str | Path, sample_id: str | None, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        problem = (
            f"the {what} file does not exist"
            if not path.exists()
            else f"the {what} path is not a file"
        )
        raise InputError(
            problem,
            sample=sample_id,
            path=path,
            fix="check the path in the sample sheet (paths are relative to the sheet)",
        )
    return path


@contextlib.contextmanager
def open_tiff(
    path: Path, sample_id: str | None, what: str, fix: str
) -> Iterator[tifffile.TiffFile]:
    """Open a TIFF file for reading; whatever tifffile raises while it is open (a damaged or
    truncated file raises many types) becomes an :class:`InputError` naming the sample, the
    file and ``fix``. An :class:`InputError` raised inside passes unchanged.

    Args:
        path: the TIFF file (it must exist).
        sample_id: the sample, for the message.
        what: what the file is, for the message ("the {what} cannot be read as TIFF").
        fix: what the user should do.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            yield tif
    except InputError:
        raise
    except Exception as error:
        raise InputError(
            f"the {what} cannot be read as TIFF ({type(error).__name__}: {error})",
            sample=sample_id,
            path=path,
            fix=fix,
        ) from error


def _read_tiff_series(path: Path, sample_id: str | None, what: str) -> tuple[np.ndarray, str]:
    """The first image series of a TIFF file and its tifffile axes string (e.g. ``CYX``)."""
    fix = f"provide the {what} image as a TIFF or OME-TIFF file"
    with open_tiff(path, sample_id, f"{what} file", fix) as tif:
        if not tif.series:
            raise InputError(
                f"the {what} file holds no readable TIFF image (damaged or empty)",
                sample=sample_id,
                path=path,
                fix=f"export the {what} image again as a TIFF or OME-TIFF file",
            )
        series = tif.series[0]
        return series.asarray(), series.axes


def _squeeze_to_channels_first(
    data: np.ndarray, axes: str, path: Path, sample_id: str, n_expected: int
) -> np.ndarray:
    """Drop length-1 axes and put the single remaining non-spatial axis first."""
    if len(axes) != data.ndim or "Y" not in axes or "X" not in axes:
        axes = "Q" * (data.ndim - 2) + "YX"  # no usable axes metadata: assume (..., Y, X)
    keep = [i for i, letter in enumerate(axes) if letter in "YX" or data.shape[i] != 1]
    data = data.reshape([data.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    fix = f"save the stack as (C, Y, X) with C = {n_expected} channels, channels first"
    if data.ndim == 2:
        if n_expected == 1:
            return data[np.newaxis]
        raise InputError(
            f"the SRS image is 2-D with shape {data.shape} (one channel), "
            f"but the configuration lists {n_expected} channels",
            sample=sample_id,
            path=path,
            fix=fix,
        )
    if data.ndim != 3:
        raise InputError(
            f"the SRS image has shape {data.shape} (axes {axes!r}); expected a 3-D stack "
            f"(C, Y, X) with C = {n_expected}",
            sample=sample_id,
            path=path,
            fix=fix,
        )
    # Whatever tifffile calls it (C, S, I, Q, Z, T, ...), the one remaining axis holds
    # the channels.
    channel_axis = next(i for i, letter in enumerate(axes) if letter not in "YX")
    return np.moveaxis(data, channel_axis, 0)


def read_srs(path: str | Path, config: Mapping[str, Any], sample_id: str) -> SrsImage:
    """Read a multi-channel SRS stack (TIFF or OME-TIFF, channels first) as float32.

    The first image series of the file is read; axes of length 1 (an OME ``TZ`` of
    size 1, say) are dropped. A single non-spatial axis must remain: it is the channel
    axis, whatever tifffile calls it (``C``, ``S``, ``I``, ``Q``, ``Z``, ...), and is
    moved first.
    Its length must equal the number of channels in ``config["channels"]``. A 2-D
    image is accepted only when the configuration lists exactly one channel.

    Non-finite values (NaN, +-Inf; also float64 values beyond the float32 range) follow
    ``config["preprocess"]["nonfinite"]``: ``reject`` raises; ``repair`` replaces each
    with the median of the finite values of its channel and reports the count.

    Args:
        path: the SRS file.
        config: the workflow configuration (``channels``, ``preprocess.nonfinite``).
        sample_id: the sample, for error messages.

    Returns:
        The stack as float32 (C, Y, X) with the count of repaired values.

    Raises:
        InputError: missing or unreadable file, wrong rank, a channel count different
            from the configuration, a non-numeric type, non-finite values in ``reject``
            mode, or a channel without any finite value in ``repair`` mode.
    """
    names = channel_names(config)
    nonfinite_policy = require(config, "preprocess.nonfinite")
    path = _require_file(path, sample_id, "SRS")
    raw, axes = _read_tiff_series(path, sample_id, "SRS")
    if raw.dtype.kind not in "uifb":
        raise InputError(
            f"the SRS image has non-numeric type {raw.dtype}",
            sample=sample_id,
            path=path,
            fix="save the stack with an integer or floating-point type",
        )
    source_dtype = str(raw.dtype)
    raw = _squeeze_to_channels_first(raw, axes, path, sample_id, len(names))
    if raw.shape[0] != len(names):
        raise InputError(
            f"the SRS stack has {raw.shape[0]} channels (shape {raw.shape}), but the "
            f"configuration lists {len(names)} channels",
            sample=sample_id,
            path=path,
            fix="make `channels` in the configuration list every channel of the file, in "
            "file order, or export the stack with exactly those channels",
        )
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes Inf: caught below
        data = np.ascontiguousarray(raw, dtype=np.float32)
    repaired = 0
    if raw.dtype.kind == "f":  # integers convert to finite float32 values
        repaired = _handle_nonfinite(data, names, nonfinite_policy, path, sample_id)
    return SrsImage(data=data, source_dtype=source_dtype, nonfinite_repaired=repaired)


def _handle_nonfinite(
    data: np.ndarray, names: Sequence[str], policy: str, path: Path, sample_id: str
) -> int:
    """Reject or repair (in place) non-finite values; return the number repaired."""
    per_channel = [
        int(data[c].size - np.count_nonzero(np.isfinite(data[c]))) for c in range(len(data))
    ]
    total = sum(per_channel)
    if total == 0:
        return 0
    where = ", ".join(f"{names[c]!r}: {n}" for c, n in enumerate(per_channel) if n)
    if policy == "reject":
        raise InputError(
            f"the SRS stack has {total} NaN or infinite values (per channel: {where})",
            sample=sample_id,
            path=path,
            fix="fix the acquisition export, or set `preprocess.nonfinite: repair` to replace "
            "them with the channel median",
        )
    if policy != "repair":
        raise InputError(
            f"unknown `preprocess.nonfinite` value {policy!r}",
            sample=sample_id,
            fix="use `reject` or `repair`",
        )
    for c, n in enumerate(per_channel):
        if not n:
            continue
        channel = data[c]
        finite = np.isfinite(channel)
        if not finite.any():
            raise InputError(
                f"channel {names[c]!r} has no finite value at all, so it cannot be repaired",
                sample=sample_id,
                path=path,
                fix="fix the acquisition export of that channel",
            )
        channel[~finite] = np.median(channel[finite])
    return total


def read_he(path: str | Path, sample_id: str, expected_shape: tuple[int, int]) -> np.ndarray:
    """Read an H&E image registered to the SRS grid, as uint8 RGB (Y, X, 3).

    TIFF files are read with tifffile (planar ``SYX`` storage is moved to ``YXS``);
    other formats (PNG, JPEG) with imageio. An alpha channel is dropped. uint16 values
    are scaled to 8 bits as ``round(v / 257)`` (65535 -> 255); floating-point images
    must lie in [0, 1] and are scaled as ``round(255 v)``.

    Args:
        path: the H&E file.
        sample_id: the sample, for error messages.
        expected_shape: (Y, X) of the SRS stack.

    Returns:
        uint8 array (Y, X, 3).

    Raises:
        InputError: missing or unreadable file, not an RGB(A) image, an unsupported
            type, or a size different from ``expected_shape``.
    """
    path = _require_file(path, sample_id, "H&E")
    if path.suffix.lower() in _TIFF_SUFFIXES:
        image, axes = _read_tiff_series(path, sample_id, "H&E")
        if image.ndim == 3 and axes.startswith("S") and image.shape[0] in (3, 4):
            image = np.moveaxis(image, 0, -1)
    else:
        try:
            import imageio.v3 as iio

            image = np.asarray(iio.imread(path))
        except Exception as error:
            raise InputError(
                f"the H&E file cannot be read as an image ({type(error).__name__}: {error})",
                sample=sample_id,
                path=path,
                fix="provide the H&E image as an RGB TIFF or PNG",
            ) from error
    fix_rgb = "provide the H&E as an RGB image (Y, X, 3), 8 or 16 bits per channel"
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise InputError(
            f"the H&E image has shape {image.shape}; expected an RGB image (Y, X, 3)",
            sample=sample_id,
            path=path,
            fix=fix_rgb,
        )
    if tuple(image.shape[:2]) != tuple(expected_shape):
        raise InputError(
            f"the H&E image is {image.shape[0]} x {image.shape[1]} pixels (Y x X) but the "
            f"SRS stack is {expected_shape[0]} x {expected_shape[1]}; the H&E must be "
            "registered to the SRS pixel grid",
            sample=sample_id,
            path=path,
            fix="register and resample the H&E image to the SRS grid, or leave `he` empty "
            "in the sample sheet to find the foreground from the SRS stack",
        )
    rgb = image[..., :3]
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    if rgb.dtype == np.uint16:
        return np.rint(rgb / 257.0).astype(np.uint8)
    if rgb.dtype.kind == "f":
        finite = np.isfinite(rgb)
        if finite.all() and rgb.min() >= 0.0 and rgb.max() <= 1.0:
            return np.rint(rgb * 255.0).astype(np.uint8)
        raise InputError(
            "the H&E image is floating point with values outside [0, 1] (or not finite)",
            sample=sample_id,
            path=path,
            fix=fix_rgb,
        )
    raise InputError(
        f"the H&E image has unsupported type {rgb.dtype}",
        sample=sample_id,
        path=path,
        fix=fix_rgb,
    )


def read_label(
    path: str | Path, sample_id: str, what: str, shape: tuple[int, int], *, max_label: int = 1
) -> np.ndarray:
    """Read a preprocessed label image (mask, foreground or class map) and check it.

    Args:
        path: the label TIFF, as written by :func:`write_mask`.
        sample_id: the sample, for error messages.
        what: what the file is ("tumour mask", ...), for error messages.
        shape: the (Y, X) it must have (the stack's).
        max_label: the largest label allowed (1 for the binary masks).

    Returns:
        uint8 array of ``shape``.

    Raises:
        InputError: a missing or damaged file, another shape, or values that are not
            integers in ``0..max_label``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"the {what} file does not exist", sample=sample_id, path=path, fix="run preprocess"
        )
    with open_tiff(path, sample_id, f"{what} file", "rerun preprocess for this sample") as tif:
        array = np.asarray(tif.asarray())
    if array.shape != tuple(shape):
        raise InputError(
            f"the {what} has shape {array.shape}, but the stack is {shape[0]} x {shape[1]}",
            sample=sample_id,
            path=path,
            fix="rerun preprocess for this sample",
        )
    if array.dtype.kind not in "biu" or (
        array.size and (array.max() > max_label or array.min() < 0)
    ):
        raise InputError(
            f"the {what} must hold labels 0 to {max_label}, found type {array.dtype} with "
            f"values {np.unique(array)[:5].tolist()}...",
            sample=sample_id,
            path=path,
            fix="rerun preprocess for this sample",
        )
    return array.astype(np.uint8, copy=False)


def _ome_uuid(path: Path, array: np.ndarray, names: Sequence[str]) -> str:
    """A UUID fixed by the output's name and layout, so identical runs write identical bytes."""
    key = "|".join([path.parent.name, path.name, str(array.shape), str(array.dtype), *names])
    return f"urn:uuid:{uuid.uuid5(_OME_UUID_NAMESPACE, key)}"


def write_ome_tiff(path: str | Path, array: np.ndarray, channel_names: Sequence[str]) -> None:
    """Write a (C, Y, X) stack as OME-TIFF with channel names, atomically.

    The bytes are deterministic: no date, a fixed ``Creator``, and an OME UUID derived
    (UUID5) from the file's folder and name, the shape, type and channel names rather
    than drawn at random. Data are stored uncompressed, one page per channel.

    Args:
        path: destination, ending in ``.ome.tif``.
        array: (C, Y, X) array of any numeric type.
        channel_names: one name per channel, stored as OME ``Channel/@Name``.

    Raises:
        ValueError: if the array is not 3-D or the names do not match its channels.
    """
    path = Path(path)
    if array.ndim != 3:
        raise ValueError(f"write_ome_tiff expects a (C, Y, X) array, got shape {array.shape}")
    if len(channel_names) != array.shape[0]:
        raise ValueError(
            f"{len(channel_names)} channel names for an array with {array.shape[0]} channels"
        )
    metadata = {
        "axes": "CYX",
        "Channel": {"Name": list(channel_names)},
        "UUID": _ome_uuid(path, array, channel_names),
        "Creator": "ramanseg",
    }
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp, array, ome=True, photometric="minisblack", metadata=metadata, software=False
        )


def write_mask(path: str | Path, array: np.ndarray) -> None:
    """Write a 2-D label image as an uint8 TIFF (zlib-compressed, deterministic), atomically.

    Args:
        path: destination ``.tif``.
        array: 2-D array of integers (or booleans) in 0..255.

    Raises:
        ValueError: if the array is not 2-D or holds values that do not fit uint8.
    """
    if array.ndim != 2:
        raise ValueError(f"write_mask expects a 2-D array, got shape {array.shape}")
    if array.dtype != np.uint8:
        if array.dtype.kind not in "biu" or (array.size and (array.min() < 0 or array.max() > 255)):
            raise ValueError(f"write_mask expects integer labels in 0..255, got {array.dtype}")
        array = array.astype(np.uint8)
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            array,
            photometric="minisblack",
            compression="zlib",
            software=False,
            metadata=None,
        )
