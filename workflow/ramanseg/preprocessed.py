"""The preprocessed sample: the one owner of the files ``ramanseg preprocess`` writes.

For sample ``S`` the preprocessing writes, in ``results/preprocessed/S/``::

    stack.ome.tif   float32 (C, Y, X), values in [0, 1], OME channel names
    classes.tif     uint8 (Y, X), 0 = not annotated, 1 + index into annotations.classes
    mask.tif        uint8 (Y, X), 1 = foreground (tumour): the segmentation target
    foreground.tif  uint8 (Y, X), 1 = tissue
    qc.json         the preprocessing's quality report

Every stage reads these files through this module, with the same checks: the file exists
and is a readable TIFF, the stack is (C, Y, X) with the configured channel count and finite
values, the labels have the stack's shape and hold only allowed values. A problem is an
:class:`~ramanseg.errors.InputError` naming the sample, the file and the fix.

The Snakemake rules pass these files to the commands (``--stacks``, ``--masks``, ...); the
sample of a file is the name of its folder (:func:`sample_id_of`), and
:func:`files_by_sample` pairs the lists of one command.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ramanseg.errors import InputError
from ramanseg.fileio import check_output_folder, json_bytes, write_files
from ramanseg.io import open_tiff, write_mask, write_ome_tiff

log = logging.getLogger(__name__)

STACK_NAME = "stack.ome.tif"
CLASSES_NAME = "classes.tif"
MASK_NAME = "mask.tif"
FOREGROUND_NAME = "foreground.tif"
QC_JSON_NAME = "qc.json"
#: Each kind of preprocessed file and its name.
FILE_NAMES = {
    "stack": STACK_NAME,
    "classes": CLASSES_NAME,
    "mask": MASK_NAME,
    "foreground": FOREGROUND_NAME,
    "qc": QC_JSON_NAME,
}
#: Every file of a preprocessed sample, in the order they are written.
OUTPUT_FILES = tuple(FILE_NAMES.values())
RERUN = "rerun preprocess for this sample (with the configuration of this run)"


@dataclass(frozen=True)
class PreprocessedFiles:
    """The paths of one preprocessed sample.

    Attributes:
        sample_id: the sample.
        stack, classes, mask, foreground, qc: its files; ``None`` for a file a command was
            not given (and so must not read).
    """

    sample_id: str
    stack: Path | None = None
    classes: Path | None = None
    mask: Path | None = None
    foreground: Path | None = None
    qc: Path | None = None

    def path(self, kind: str, option: str | None = None) -> Path:
        """The file of one kind (``stack``, ``mask``, ...), which the command must have.

        Args:
            kind: a field name.
            option: the command-line option that gives such files, for the message.

        Raises:
            InputError: the command was not given this sample's file of that kind.
        """
        path = getattr(self, kind)
        if path is None:
            given = f" (pass it with {option})" if option else ""
            raise InputError(
                f"the preprocessed {FILE_NAMES[kind]} of this sample was not given{given}",
                sample=self.sample_id,
                fix="pass the files of every sample this step needs",
            )
        return path

    @classmethod
    def in_folder(cls, folder: str | Path) -> PreprocessedFiles:
        """All files of the sample whose folder is ``folder`` (its name is the sample id)."""
        folder = Path(folder)
        paths = {kind: folder / name for kind, name in FILE_NAMES.items()}
        return cls(sample_id=folder.name, **paths)


def sample_id_of(path: str | Path) -> str:
    """The sample a preprocessed file belongs to: the name of its folder.

    Raises:
        InputError: the file's name is not one the preprocessing writes.
    """
    path = Path(path)
    if path.name not in FILE_NAMES.values():
        raise InputError(
            f"{path.name!r} is not a preprocessed file (expected one of "
            f"{', '.join(FILE_NAMES.values())})",
            path=path,
            fix="pass the files `ramanseg preprocess` writes (results/preprocessed/<sample>/)",
        )
    return path.parent.name


#: The command-line keyword of each kind of file (``--stacks``, ...) and its field.
LIST_KINDS = {
    "stacks": "stack", "classes": "classes", "masks": "mask", "foregrounds": "foreground",
    "qcs": "qc",
}  # fmt: skip


def files_by_sample(**lists: Sequence[str | Path] | None) -> dict[str, PreprocessedFiles]:
    """Pair the file lists a rule passes (``stacks=[...]``, ``masks=[...]``) by sample.

    Args:
        lists: per kind (``stacks``, ``classes``, ``masks``, ``foregrounds``, ``qcs``), the
            files of some samples; ``None`` for a kind not given. Kinds may name different
            samples (a command may take the stacks of more samples than the masks).

    Returns:
        Sample id -> its files (the kinds given; the others ``None``), in order of first
        appearance.

    Raises:
        InputError: a file of the wrong kind, or two files of one kind for one sample.
    """
    given: dict[str, dict[str, Path]] = {}
    for option, paths in lists.items():
        if paths is None:
            continue
        if option not in LIST_KINDS:
            raise ValueError(f"unknown kind of preprocessed file {option!r}")
        kind = LIST_KINDS[option]
        for path in map(Path, paths):
            if path.name != FILE_NAMES[kind]:
                raise InputError(
                    f"expected a {FILE_NAMES[kind]} file among the {option}, got {path.name!r}",
                    path=path,
                    fix=f"pass the samples' {FILE_NAMES[kind]} files",
                )
            files = given.setdefault(path.parent.name, {})
            if kind in files:
                raise InputError(
                    f"two {option} files for one sample: {str(files[kind])!r} and {str(path)!r}",
                    sample=path.parent.name,
                    path=path,
                    fix="pass each sample's file once",
                )
            files[kind] = path
    return {sample: PreprocessedFiles(sample, **files) for sample, files in given.items()}


#: Where preprocessed samples come from: their files by sample id (what a rule passes), or
#: the folder holding one sub-folder per sample (by hand, and in tests).
PreprocessedSource = Mapping[str, PreprocessedFiles] | str | Path


def files_of(source: PreprocessedSource, sample_id: str) -> PreprocessedFiles:
    """The files of one sample from a :data:`PreprocessedSource`.

    Raises:
        InputError: ``source`` maps sample ids to files, but not this sample.
    """
    if isinstance(source, Mapping):
        if sample_id not in source:
            raise InputError(
                f"no preprocessed files were given for sample {sample_id!r}, which this step "
                f"needs (given: {sorted(source)})",
                sample=sample_id,
                fix="pass the files of every sample the split names for this step",
            )
        return source[sample_id]
    return PreprocessedFiles.in_folder(Path(source) / sample_id)


def _require(path: Path, sample_id: str, what: str) -> None:
    if not path.is_file():
        raise InputError(
            f"the {what} does not exist", sample=sample_id, path=path,
            fix="run preprocess for this sample",
        )  # fmt: skip


def stack_channel_names(tif: tifffile.TiffFile) -> tuple[str, ...]:
    """Channel names from a stack's OME-XML metadata; empty when the file has none."""
    if not tif.ome_metadata:
        return ()
    try:
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
        if isinstance(pixels, list):  # more than one image: the first series is ours
            pixels = pixels[0]
        channels = pixels.get("Channel", [])
    except (KeyError, TypeError, AttributeError, IndexError):
        return ()
    if isinstance(channels, Mapping):
        channels = [channels]
    names = [str(c.get("Name", "")) for c in channels if isinstance(c, Mapping)]
    return tuple(names) if all(names) else ()


def _check_channels(
    shape: tuple[int, ...], names: tuple[str, ...], path: Path, sample_id: str,
    n_channels: int | None, expected_names: Sequence[str] | None,
) -> None:  # fmt: skip
    if len(shape) != 3:
        raise InputError(
            f"the preprocessed stack has shape {shape}; expected (C, Y, X)",
            sample=sample_id, path=path, fix=RERUN,
        )  # fmt: skip
    if expected_names is not None:
        n_channels = len(expected_names)
    if n_channels is not None and shape[0] != n_channels:
        raise InputError(
            f"the preprocessed stack has {shape[0]} channels, but the configuration lists "
            f"{n_channels}",
            sample=sample_id, path=path, fix=RERUN,
        )  # fmt: skip
    if expected_names is not None and names and tuple(names) != tuple(expected_names):
        raise InputError(
            f"the preprocessed stack's channels are {list(names)}, the configuration's "
            f"{list(expected_names)}",
            sample=sample_id, path=path, fix=RERUN,
        )  # fmt: skip


def read_stack(
    path: str | Path,
    sample_id: str,
    *,
    n_channels: int | None = None,
    channel_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """A sample's preprocessed stack and its channel names.

    Args:
        path: the sample's ``stack.ome.tif``.
        sample_id: the sample, for error messages.
        n_channels: the channel count it must have (not checked if ``None``).
        channel_names: the configured channel names; when given, the count must match
            and, where the file records names, the names too.

    Returns:
        ``(stack, names)``: float32 (C, Y, X), C-contiguous, and the OME channel names
        (empty if the file records none).

    Raises:
        InputError: a missing or damaged file, a stack that is not (C, Y, X), other
            channels than configured, or non-finite values.
    """
    path = Path(path)
    _require(path, sample_id, "preprocessed stack")
    with open_tiff(path, sample_id, "preprocessed stack", RERUN) as tif:
        stack = tif.series[0].asarray()
        names = stack_channel_names(tif)
    if stack.ndim == 2:  # a one-channel stack loses its channel axis in TIFF
        stack = stack[np.newaxis]
    _check_channels(stack.shape, names, path, sample_id, n_channels, channel_names)
    stack = np.ascontiguousarray(stack, dtype=np.float32)
    if not np.isfinite(stack).all():
        raise InputError(
            "the preprocessed stack has NaN or infinite values",
            sample=sample_id, path=path, fix=RERUN,
        )  # fmt: skip
    if names and len(names) != stack.shape[0]:
        names = ()
    return stack, names


def read_stack_channel(path: str | Path, sample_id: str, index: int, n_channels: int) -> np.ndarray:
    """One channel of a preprocessed stack, read alone (one TIFF page, not the stack).

    Args:
        path: the sample's ``stack.ome.tif``.
        sample_id: the sample, for error messages.
        index: the channel.
        n_channels: the channels the configuration lists (the stack must have as many).

    Returns:
        float32 (Y, X).

    Raises:
        InputError: a missing or unreadable stack, or one whose channels do not match the
            configuration.
    """
    path = Path(path)
    _require(path, sample_id, "preprocessed stack")
    with open_tiff(path, sample_id, "preprocessed stack", RERUN) as tif:
        series = tif.series[0]
        shape = series.shape if len(series.shape) == 3 else (1, *series.shape)
        _check_channels(tuple(shape), (), path, sample_id, n_channels, None)
        return np.asarray(series.pages[index].asarray(), dtype=np.float32)


def read_label(
    path: str | Path,
    sample_id: str,
    what: str,
    shape: tuple[int, int] | None,
    *,
    max_label: int = 1,
) -> np.ndarray:
    """Read a preprocessed label image (mask, foreground or class map) and check it.

    Args:
        path: the label TIFF, as written by :func:`ramanseg.io.write_mask`.
        sample_id: the sample, for error messages.
        what: what the file is ("tumour mask", ...), for error messages.
        shape: the (Y, X) it must have (the stack's); ``None``: any 2-D shape.
        max_label: the largest label allowed (1 for the binary masks).

    Returns:
        uint8 array (Y, X).

    Raises:
        InputError: a missing or damaged file, another shape, or values that are not
            integers in ``0..max_label``.
    """
    path = Path(path)
    _require(path, sample_id, f"{what} file")
    with open_tiff(path, sample_id, f"{what} file", RERUN) as tif:
        array = np.asarray(tif.asarray())
    if array.ndim != 2 or (shape is not None and array.shape != tuple(shape)):
        expected = "2-D" if shape is None else f"{shape[0]} x {shape[1]}, as the stack"
        raise InputError(
            f"the {what} has shape {array.shape}; expected {expected}",
            sample=sample_id, path=path, fix=RERUN,
        )  # fmt: skip
    if array.dtype.kind not in "biu" or (
        array.size and (array.max() > max_label or array.min() < 0)
    ):
        raise InputError(
            f"the {what} must hold labels 0 to {max_label}, found type {array.dtype} with "
            f"values {np.unique(array)[:5].tolist()}...",
            sample=sample_id,
            path=path,
            fix=RERUN,
        )
    return array.astype(np.uint8, copy=False)


def read_mask(path: str | Path, sample_id: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A sample's tumour mask (``mask.tif``), uint8 (Y, X) of 0 and 1."""
    return read_label(path, sample_id, "tumour mask", shape)


def read_foreground(
    path: str | Path, sample_id: str, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """A sample's tissue foreground (``foreground.tif``), uint8 (Y, X) of 0 and 1."""
    return read_label(path, sample_id, "tissue foreground", shape)


def read_class_map(
    path: str | Path,
    sample_id: str,
    class_names: Sequence[str],
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """A sample's class map (``classes.tif``: 0 = unannotated, ``1 + index`` into
    ``class_names``).

    When the preprocessing's ``qc.json`` lies beside it, the order of its
    ``class_fractions`` is compared with ``class_names``: the class map's values mean other
    classes if the preprocessing ran with another class order, and a warning says so.

    Raises:
        InputError: as :func:`read_label`, or a value above ``len(class_names)``.
    """
    path = Path(path)
    classes = read_label(path, sample_id, "class map", shape, max_label=len(class_names))
    qc_path = path.parent / QC_JSON_NAME
    if qc_path.is_file():
        try:
            recorded = list(json.loads(qc_path.read_text()).get("class_fractions", {}))
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            recorded = []
        if recorded and recorded != list(class_names):
            log.warning(
                "sample %s: %s lists the classes in the order %s, this step uses %s; the class "
                "map's values may mean other classes",
                sample_id, qc_path, recorded, list(class_names),
            )  # fmt: skip
    return classes


def read_qc(path: str | Path, sample_id: str) -> dict[str, Any]:
    """A sample's preprocessing report (``qc.json``).

    Raises:
        InputError: a missing file, or one that is not a JSON object.
    """
    path = Path(path)
    _require(path, sample_id, "preprocessing report")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(
            f"the preprocessing report is not valid JSON ({error})",
            sample=sample_id, path=path, fix=RERUN,
        ) from None  # fmt: skip
    if not isinstance(report, dict):
        raise InputError(
            "the preprocessing report is not a JSON object", sample=sample_id, path=path, fix=RERUN
        )
    return report


def write_preprocessed_sample(
    outdir: str | Path,
    stack: np.ndarray,
    names: Sequence[str],
    class_map: np.ndarray,
    mask: np.ndarray,
    foreground: np.ndarray,
    qc: Mapping[str, Any],
) -> list[Path]:
    """Write one preprocessed sample's files into ``outdir`` (:data:`FILE_NAMES`).

    Each file is written atomically; if one fails, those already written are removed, so
    after an error ``outdir`` holds none of them.

    Args:
        outdir: the sample's folder, ``results/preprocessed/<sample_id>``.
        stack: float32 (C, Y, X) normalised stack, written as OME-TIFF with channel names.
        names: the name of each channel.
        class_map: uint8 (Y, X) class map (0 = not annotated).
        mask: uint8 (Y, X) binary mask (1 = foreground class).
        foreground: bool (Y, X) tissue mask, written as uint8.
        qc: the QC report (with its ``sample_id``), written as JSON.

    Returns:
        The paths written.

    Raises:
        InputError: ``outdir`` or a folder above it is an existing file.
    """
    outdir = Path(outdir)
    check_output_folder(outdir, qc["sample_id"])
    return write_files(
        {
            outdir / STACK_NAME: lambda p: write_ome_tiff(p, stack, names),
            outdir / CLASSES_NAME: lambda p: write_mask(p, class_map),
            outdir / MASK_NAME: lambda p: write_mask(p, mask),
            outdir / FOREGROUND_NAME: lambda p: write_mask(p, foreground.astype(np.uint8)),
            outdir / QC_JSON_NAME: json_bytes(dict(qc)),
        }
    )
