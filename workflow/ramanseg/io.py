"""Reading the input contract (SRS stacks, H&E images) and writing image outputs.

Every problem with a user's file is raised as :class:`~ramanseg.errors.InputError`
naming the sample, the file, what is wrong and how to fix it. Every output is written
through :func:`~ramanseg.fileio.atomic_path`, so a failure never leaves a partial file.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from ramanseg.errors import InputError
from ramanseg.fileio import atomic_path
from ramanseg.settings import ChannelLayout

log = logging.getLogger(__name__)

_TIFF_SUFFIXES = (".tif", ".tiff")
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


@dataclass(frozen=True)
class TiffHeader:
    """The first image series of a TIFF file as its header describes it (no pixels read).

    Attributes:
        shape: the series' shape.
        dtype: the stored numeric type.
        axes: tifffile's axes string, one letter per axis (e.g. ``CYX``, ``QYX``, ``YXS``).
        axes_from_metadata: whether ``axes`` comes from metadata that names the axes (OME,
            ImageJ, tifffile's own ``axes``) or from interleaved samples (``S``); False
            when tifffile only knows the pages' (Y, X) and the rest is generic (``Q``,
            ``I``), as in a plain multi-page TIFF.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    axes: str
    axes_from_metadata: bool


def _tiff_series(
    path: Path, sample_id: str | None, what: str, *, pixels: bool
) -> tuple[TiffHeader, np.ndarray | None]:
    """The header of the first image series of a TIFF file and, if ``pixels``, its data."""
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
        shaped_axes = tif.is_shaped and "axes" in (tif.shaped_metadata or [{}])[0]
        header = TiffHeader(
            shape=tuple(int(n) for n in series.shape),
            dtype=np.dtype(series.dtype),
            axes=series.axes,
            axes_from_metadata=bool(
                tif.is_ome or tif.is_imagej or shaped_axes or "S" in series.axes
            ),
        )
        return header, (series.asarray() if pixels else None)


def _srs_layout(
    header: TiffHeader, path: Path, sample_id: str, n_expected: int
) -> tuple[tuple[int, ...], int | None]:
    """Check an SRS header against the contract; say how to bring the data to (C, Y, X).

    Axes of length 1 are dropped. With axes metadata, the single remaining non-spatial
    axis holds the channels, wherever it is (``CYX``, ``YXC``, ``YXS``, ...). Without
    it (a plain multi-page TIFF), the contract holds: channels first. A shape
    ``(Y, X, C)`` whose last axis, but not its first, has the configured channel count
    is taken as channels last saved without metadata and is an error; when both the
    first and the last axis have that count, the stack is read channels first, per the
    contract, with a logged warning.

    Args:
        header: the file's header.
        path: the file, for messages.
        sample_id: the sample, for messages.
        n_expected: the configured channel count.

    Returns:
        ``(squeezed_shape, channel_axis)``: the shape without its length-1 axes and the
        position of the channel axis in it (None for a 2-D, single-channel image).

    Raises:
        InputError: a non-numeric type, a rank other than 3 (or 2 with one channel), a
            channels-last stack without axes metadata, or another channel count.
    """
    if header.dtype.kind not in "uifb":
        raise InputError(
            f"the SRS image has non-numeric type {header.dtype}",
            sample=sample_id,
            path=path,
            fix="save the stack with an integer or floating-point type",
        )
    shape, axes = header.shape, header.axes
    if len(axes) != len(shape) or "Y" not in axes or "X" not in axes:
        axes = "Q" * (len(shape) - 2) + "YX"  # no usable axes: assume (..., Y, X)
    keep = [i for i, letter in enumerate(axes) if letter in "YX" or shape[i] != 1]
    shape = tuple(shape[i] for i in keep)
    axes = "".join(axes[i] for i in keep)
    fix = f"save the stack as (C, Y, X) with C = {n_expected} channels, channels first"
    if len(shape) == 2:
        if n_expected == 1:
            return shape, None
        raise InputError(
            f"the SRS image is 2-D with shape {shape} (one channel), "
            f"but the configuration lists {n_expected} channels",
            sample=sample_id,
            path=path,
            fix=fix,
        )
    if len(shape) != 3:
        raise InputError(
            f"the SRS image has shape {shape} (axes {axes!r}); expected a 3-D stack "
            f"(C, Y, X) with C = {n_expected}",
            sample=sample_id,
            path=path,
            fix=fix,
        )
    if header.axes_from_metadata:
        # Whatever the metadata calls it (C, S, I, Q, Z, T, ...), the one remaining
        # non-spatial axis holds the channels.
        channel_axis = next(i for i, letter in enumerate(axes) if letter not in "YX")
    else:
        channel_axis = 0
        if shape[-1] == n_expected and shape[0] != n_expected:
            raise InputError(
                f"the SRS stack has shape {shape} and no axes metadata; its last axis has "
                f"the configured {n_expected} channels, so it looks channels last (Y, X, C)",
                sample=sample_id,
                path=path,
                fix="transpose the stack to channels first (C, Y, X), e.g. "
                "`numpy.moveaxis(stack, -1, 0)`, or save it as OME-TIFF with axes 'YXC'",
            )
        if shape[-1] == n_expected == shape[0]:
            log.warning(
                "sample %r, file %r: the stack's shape %s has %d on its first and last axis "
                "and no axes metadata; it is read channels first (C, Y, X) as the input "
                "contract says. If it is channels last, save it as OME-TIFF with axes 'YXC'.",
                sample_id,
                str(path),
                shape,
                n_expected,
            )
    n_channels = shape[channel_axis]
    if n_channels != n_expected:
        raise InputError(
            f"the SRS stack has {n_channels} channels (shape {shape}, channels on axis "
            f"{channel_axis}), but the configuration lists {n_expected} channels",
            sample=sample_id,
            path=path,
            fix="make `channels` in the configuration list every channel of the file, in "
            "file order, or export the stack with exactly those channels",
        )
    return shape, channel_axis


def srs_header(path: str | Path, channels: ChannelLayout, sample_id: str) -> tuple[int, int, int]:
    """Check an SRS stack's header as :func:`read_srs` does, without reading its pixels.

    Args:
        path: the SRS file.
        channels: the configured channel layout.
        sample_id: the sample, for error messages.

    Returns:
        The stack's shape (C, Y, X) as :func:`read_srs` would return it.

    Raises:
        InputError: as :func:`read_srs`, except for the checks that need pixel values
            (non-finite values).
    """
    n_expected = len(channels)
    path = _require_file(path, sample_id, "SRS")
    header, _ = _tiff_series(path, sample_id, "SRS", pixels=False)
    shape, channel_axis = _srs_layout(header, path, sample_id, n_expected)
    if channel_axis is None:
        return (1, *shape)
    spatial = [n for i, n in enumerate(shape) if i != channel_axis]
    return (shape[channel_axis], spatial[0], spatial[1])


#: Length units of OME's ``PhysicalSizeXUnit`` in µm (OME's default unit is µm).
_OME_UNITS_UM = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


def srs_pixel_size_um(path: str | Path, sample_id: str) -> float | None:
    """The pixel size in µm that an OME-TIFF's metadata records (``PhysicalSizeX``).

    Args:
        path: the SRS file.
        sample_id: the sample, for error messages.

    Returns:
        The size, or ``None`` when the file records none (a plain TIFF, say) or records
        different X and Y sizes or a unit not of length.

    Raises:
        InputError: a missing or unreadable file.
    """
    path = _require_file(path, sample_id, "SRS")
    with open_tiff(path, sample_id, "SRS stack", "check the file") as tif:
        xml = tif.ome_metadata
    if not xml:
        return None
    try:
        image = tifffile.xml2dict(xml)["OME"]["Image"]
        pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
        sizes = [
            float(pixels[f"PhysicalSize{axis}"])
            * _OME_UNITS_UM[pixels.get(f"PhysicalSize{axis}Unit", "µm")]
            for axis in ("X", "Y")
        ]
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return sizes[0] if np.isclose(sizes[0], sizes[1]) and sizes[0] > 0 else None


def read_srs(
    path: str | Path, channels: ChannelLayout, sample_id: str, *, nonfinite: str
) -> SrsImage:
    """Read a multi-channel SRS stack (TIFF or OME-TIFF, channels first) as float32.

    The first image series of the file is read; axes of length 1 (an OME ``TZ`` of
    size 1, say) are dropped. A single non-spatial axis must remain. If the file names
    its axes (OME-TIFF, ImageJ, tifffile's metadata, or interleaved samples ``YXS``),
    that axis holds the channels wherever it is, and is moved first: channels last with
    axes metadata just works. A plain multi-page TIFF is read channels first, as the
    contract says; see :func:`_srs_layout` for how a channels-last stack without
    metadata is caught. The channel count must equal the number of channels in
    ``channels``. A 2-D image is accepted only when the configuration lists
    exactly one channel.

    Non-finite values (NaN, +-Inf; also float64 values beyond the float32 range) follow
    ``nonfinite`` (``preprocess.nonfinite``): ``reject`` raises; ``repair`` replaces each
    with the median of the finite values of its channel and reports the count.

    Args:
        path: the SRS file.
        channels: the configured channel layout.
        sample_id: the sample, for error messages.
        nonfinite: ``reject`` or ``repair`` (:attr:`PreprocessSettings.nonfinite`).

    Returns:
        The stack as float32 (C, Y, X) with the count of repaired values.

    Raises:
        InputError: missing or unreadable file, wrong rank, a channel count different
            from the configuration, a channels-last stack without axes metadata, a
            non-numeric type, non-finite values in ``reject`` mode, or a channel without
            any finite value in ``repair`` mode.
    """
    names = channels.names
    path = _require_file(path, sample_id, "SRS")
    header, raw = _tiff_series(path, sample_id, "SRS", pixels=True)
    shape, channel_axis = _srs_layout(header, path, sample_id, len(names))
    raw = raw.reshape(shape)
    raw = raw[np.newaxis] if channel_axis is None else np.moveaxis(raw, channel_axis, 0)
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes Inf: caught below
        data = np.ascontiguousarray(raw, dtype=np.float32)
    repaired = 0
    if raw.dtype.kind == "f":  # integers convert to finite float32 values
        repaired = _handle_nonfinite(data, names, nonfinite, path, sample_id)
    return SrsImage(data=data, source_dtype=str(header.dtype), nonfinite_repaired=repaired)


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


_HE_FIX_RGB = "provide the H&E as an RGB image (Y, X, 3), 8 or 16 bits per channel"


def _he_layout(
    shape: tuple[int, ...],
    axes: str,
    dtype: np.dtype,
    path: Path,
    sample_id: str,
    expected_shape: tuple[int, int] | None,
) -> bool:
    """Check an H&E image's shape and type; return whether it is stored planar (S, Y, X).

    Args:
        shape: the image's shape as stored.
        axes: tifffile's axes string ("" for other formats).
        dtype: the stored type.
        path: the file, for messages.
        sample_id: the sample, for messages.
        expected_shape: (Y, X) of the SRS stack; None skips the comparison.

    Raises:
        InputError: not an RGB(A) image, an unsupported type, or another size.
    """
    planar = len(shape) == 3 and axes.startswith("S") and shape[0] in (3, 4)
    if planar:
        shape = (*shape[1:], shape[0])
    if len(shape) != 3 or shape[-1] not in (3, 4):
        raise InputError(
            f"the H&E image has shape {tuple(shape)}; expected an RGB image (Y, X, 3)",
            sample=sample_id,
            path=path,
            fix=_HE_FIX_RGB,
        )
    if expected_shape is not None and tuple(shape[:2]) != tuple(expected_shape):
        raise InputError(
            f"the H&E image is {shape[0]} x {shape[1]} pixels (Y x X) but the "
            f"SRS stack is {expected_shape[0]} x {expected_shape[1]}; the H&E must be "
            "registered to the SRS pixel grid",
            sample=sample_id,
            path=path,
            fix="register and resample the H&E image to the SRS grid, or leave `he` empty "
            "in the sample sheet to find the foreground from the SRS stack",
        )
    if dtype not in (np.uint8, np.uint16) and dtype.kind != "f":
        raise InputError(
            f"the H&E image has unsupported type {dtype}",
            sample=sample_id,
            path=path,
            fix=_HE_FIX_RGB,
        )
    return planar


def _he_cannot_be_read(path: Path, sample_id: str, error: Exception) -> InputError:
    return InputError(
        # Some imageio plugins (SimpleITK) raise messages over several lines: keep one.
        f"the H&E file cannot be read as an image ({type(error).__name__}: "
        f"{' '.join(str(error).split())})",
        sample=sample_id,
        path=path,
        fix="provide the H&E image as an RGB TIFF or PNG",
    )


def he_header(
    path: str | Path, sample_id: str, expected_shape: tuple[int, int] | None
) -> tuple[int, int]:
    """Check an H&E image's header as :func:`read_he` does, without reading its pixels.

    Args:
        path: the H&E file.
        sample_id: the sample, for error messages.
        expected_shape: (Y, X) of the SRS stack, or None if it is not known.

    Returns:
        The image's (Y, X).

    Raises:
        InputError: as :func:`read_he`, except for the value range of floating-point
            images, which needs the pixels.
    """
    path = _require_file(path, sample_id, "H&E")
    if path.suffix.lower() in _TIFF_SUFFIXES:
        header, _ = _tiff_series(path, sample_id, "H&E", pixels=False)
        shape, axes, dtype = header.shape, header.axes, header.dtype
    else:
        try:
            import imageio.v3 as iio

            properties = iio.improps(path)
        except Exception as error:
            raise _he_cannot_be_read(path, sample_id, error) from error
        shape, axes, dtype = tuple(properties.shape), "", np.dtype(properties.dtype)
    planar = _he_layout(shape, axes, dtype, path, sample_id, expected_shape)
    return (shape[1], shape[2]) if planar else (shape[0], shape[1])


def read_he(path: str | Path, sample_id: str, expected_shape: tuple[int, int] | None) -> np.ndarray:
    """Read an H&E image registered to the SRS grid, as uint8 RGB (Y, X, 3).

    TIFF files are read with tifffile (planar ``SYX`` storage is moved to ``YXS``);
    other formats (PNG, JPEG) with imageio. An alpha channel is dropped. uint16 values
    are scaled to 8 bits as ``round(v / 257)`` (65535 -> 255); floating-point images
    must lie in [0, 1] and are scaled as ``round(255 v)``.

    Args:
        path: the H&E file.
        sample_id: the sample, for error messages.
        expected_shape: (Y, X) of the SRS stack (None: not checked).

    Returns:
        uint8 array (Y, X, 3).

    Raises:
        InputError: missing or unreadable file, not an RGB(A) image, an unsupported
            type, or a size different from ``expected_shape``.
    """
    path = _require_file(path, sample_id, "H&E")
    if path.suffix.lower() in _TIFF_SUFFIXES:
        header, image = _tiff_series(path, sample_id, "H&E", pixels=True)
        axes = header.axes
    else:
        try:
            import imageio.v3 as iio

            image = np.asarray(iio.imread(path))
        except Exception as error:
            raise _he_cannot_be_read(path, sample_id, error) from error
        axes = ""
    if _he_layout(image.shape, axes, image.dtype, path, sample_id, expected_shape):
        image = np.moveaxis(image, 0, -1)
    rgb = image[..., :3]
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    if rgb.dtype == np.uint16:
        return np.rint(rgb / 257.0).astype(np.uint8)
    finite = np.isfinite(rgb)
    if finite.all() and rgb.min() >= 0.0 and rgb.max() <= 1.0:
        return np.rint(rgb * 255.0).astype(np.uint8)
    raise InputError(
        "the H&E image is floating point with values outside [0, 1] (or not finite)",
        sample=sample_id,
        path=path,
        fix=_HE_FIX_RGB,
    )


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
