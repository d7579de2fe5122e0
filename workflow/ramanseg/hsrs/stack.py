"""The HSRS stack file: the one owner of the hyperspectral stack format between stages.

One stack is one ``.npz`` file (NumPy's zip of arrays, read with ``allow_pickle=False``)::

    cube          float32 (bands, Y, X), finite
    wavenumbers   float64 (bands,), finite, strictly monotonic  (absent: unknown)
    labels        int16 (Y, X), 0 .. len(class_names) - 1        (absent: unlabelled)
    class_names   str (classes,), the name of each label value
    source        str (), where the stack came from (a generator and seed, a file)
    format        str (), "ramanseg-hsrs-stack"
    version       int (), 1

Every stage reads stacks through :func:`read_hsrs_stack`, which checks all of the above
and reports a problem as an :class:`~ramanseg.errors.InputError` naming the file and the
fix; :func:`write_hsrs_stack` validates the same way and writes atomically.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ramanseg.errors import InputError
from ramanseg.fileio import write_files

FORMAT = "ramanseg-hsrs-stack"
VERSION = 1
SUFFIX = ".npz"


@dataclass(frozen=True)
class HsrsStack:
    """A hyperspectral SRS stack, optionally with per-pixel class labels.

    Attributes:
        cube: float32 (bands, Y, X) intensities.
        wavenumbers: the band centres in cm-1, (bands,), or ``None`` when unknown.
        labels: int (Y, X) class of each pixel (an index into ``class_names``), or ``None``.
        class_names: the name of each label value (label 0 is ``class_names[0]``).
        source: where the stack came from, for provenance.
    """

    cube: np.ndarray
    wavenumbers: np.ndarray | None = None
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] = field(default_factory=tuple)
    source: str = ""

    @property
    def n_bands(self) -> int:
        """The number of spectral bands."""
        return int(self.cube.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """The image shape (Y, X)."""
        return (int(self.cube.shape[1]), int(self.cube.shape[2]))

    def validate(self) -> HsrsStack:
        """The same stack with canonical dtypes, or ``ValueError`` saying what is wrong.

        Raises:
            ValueError: a wrong shape, a non-finite value, a label outside the classes, ...
        """
        cube = np.asarray(self.cube)
        if cube.ndim != 3 or min(cube.shape) < 1:
            raise ValueError(f"the cube must be 3-D (bands, Y, X), got shape {cube.shape}")
        if not np.issubdtype(cube.dtype, np.number) or np.iscomplexobj(cube):
            raise ValueError(f"the cube must hold real numbers, got dtype {cube.dtype}")
        cube = cube.astype(np.float32, copy=False)
        if not np.isfinite(cube).all():
            raise ValueError(f"the cube has {int((~np.isfinite(cube)).sum())} non-finite values")
        wavenumbers = None
        if self.wavenumbers is not None:
            wavenumbers = np.asarray(self.wavenumbers, dtype=np.float64)
            if wavenumbers.shape != (cube.shape[0],):
                raise ValueError(
                    f"the wavenumbers have shape {wavenumbers.shape}, the cube has "
                    f"{cube.shape[0]} bands"
                )
            if not np.isfinite(wavenumbers).all():
                raise ValueError("the wavenumbers have non-finite values")
            steps = np.diff(wavenumbers)
            if len(steps) and not ((steps > 0).all() or (steps < 0).all()):
                raise ValueError("the wavenumbers are not strictly increasing or decreasing")
        class_names = tuple(str(name) for name in self.class_names)
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"the class names repeat: {list(class_names)}")
        labels = None
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != cube.shape[1:]:
                raise ValueError(
                    f"the labels have shape {labels.shape}, the cube's images {cube.shape[1:]}"
                )
            if not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"the labels must be integers, got dtype {labels.dtype}")
            if not class_names:
                raise ValueError("the stack has labels but no class names")
            if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
                raise ValueError(
                    f"the labels range over {int(labels.min())}..{int(labels.max())}, but "
                    f"there are {len(class_names)} classes (0..{len(class_names) - 1})"
                )
            labels = labels.astype(np.int16)
        return HsrsStack(cube, wavenumbers, labels, class_names, str(self.source))


def _npz_bytes(stack: HsrsStack) -> bytes:
    """The stack as ``.npz`` bytes, the same bytes for the same stack (NumPy's ``savez``
    stamps each member with the current time; here every member has one fixed date)."""
    arrays = {
        "format": np.array(FORMAT),
        "version": np.array(VERSION),
        "cube": stack.cube,
        "class_names": np.array(stack.class_names, dtype=np.str_),
        "source": np.array(stack.source),
    }
    if stack.wavenumbers is not None:
        arrays["wavenumbers"] = stack.wavenumbers
    if stack.labels is not None:
        arrays["labels"] = stack.labels
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(member, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def write_hsrs_stack(path: str | Path, stack: HsrsStack) -> Path:
    """Validate a stack and write it as one ``.npz`` file, atomically.

    Args:
        path: the destination (``.npz``).
        stack: the stack.

    Returns:
        The path written.

    Raises:
        ValueError: the stack is invalid (a programming error: our own writers build it).
    """
    return write_hsrs_stacks({path: stack})[0]


def write_hsrs_stacks(stacks: Mapping[str | Path, HsrsStack]) -> list[Path]:
    """Validate several stacks, then write them, each atomically; if one write fails, those
    already written are removed.

    Args:
        stacks: destination -> stack.

    Returns:
        The paths written.

    Raises:
        ValueError: a stack is invalid (nothing is written then).
    """
    return write_files({path: _npz_bytes(stack.validate()) for path, stack in stacks.items()})


def read_hsrs_stack(path: str | Path, fix: str = "rewrite the stack") -> HsrsStack:
    """Read and validate a stack written by :func:`write_hsrs_stack`.

    Args:
        path: the ``.npz`` file.
        fix: what the user should do if the file is bad (the rule that writes it, say).

    Returns:
        The stack, cube float32, labels int16 (if any).

    Raises:
        InputError: a missing or unreadable file, one of another format, or one whose
            arrays break the format (shapes, non-finite values, labels outside the classes).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("the HSRS stack does not exist", path=path, fix=fix)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise InputError(
            f"the HSRS stack cannot be read as a .npz file ({error})", path=path, fix=fix
        ) from error
    if str(arrays.get("format", "")) != FORMAT:
        raise InputError(
            f"not an HSRS stack file (no format marker {FORMAT!r})", path=path, fix=fix
        )
    if int(arrays.get("version", -1)) != VERSION:
        raise InputError(
            f"HSRS stack format version {arrays.get('version')} is not the supported {VERSION}",
            path=path,
            fix=fix,
        )
    if "cube" not in arrays:
        raise InputError("the HSRS stack has no `cube` array", path=path, fix=fix)
    try:
        return HsrsStack(
            cube=arrays["cube"],
            wavenumbers=arrays.get("wavenumbers"),
            labels=arrays.get("labels"),
            class_names=tuple(str(name) for name in arrays.get("class_names", [])),
            source=str(arrays.get("source", "")),
        ).validate()
    except ValueError as error:
        raise InputError(f"the HSRS stack is invalid: {error}", path=path, fix=fix) from error


def read_labelled_stacks(
    paths: Sequence[str | Path], command: str, purpose: str
) -> list[HsrsStack]:
    """Read the stacks a command learns from or scores against: each must have labels.

    Args:
        paths: the ``.npz`` files.
        command: the command, for the fix (``"give hsrs-train labelled stacks"``).
        purpose: what the labels are for, e.g. ``"to train on and score against"``.

    Returns:
        The stacks, in the order of ``paths``.

    Raises:
        InputError: a stack :func:`read_hsrs_stack` refuses, or one without labels.
    """
    stacks = [read_hsrs_stack(path, fix=f"rerun the rule that writes {path}") for path in paths]
    for path, stack in zip(paths, stacks, strict=True):
        if stack.labels is None:
            raise InputError(
                f"the stack has no labels {purpose}",
                path=path,
                fix=f"give {command} labelled stacks",
            )
    return stacks


def check_labelled_stacks(
    dataset: str, stacks: Sequence[HsrsStack], same_bands: bool = True
) -> tuple[str, ...]:
    """The class names of a dataset's stacks, checked to be labelled and alike.

    Args:
        dataset: the dataset's name (for the messages).
        stacks: the stacks.
        same_bands: also require the same number of bands (the trained models, whose
            input is the bands).

    Raises:
        ValueError: no stacks, an unlabelled stack, or stacks whose classes (or band
            counts) differ.
    """
    if not stacks:
        raise ValueError(f"dataset {dataset!r} has no stacks")
    first = stacks[0]
    for stack in stacks:
        if stack.labels is None:
            raise ValueError(f"dataset {dataset!r}: a stack without labels ({stack.source})")
        if stack.class_names != first.class_names:
            raise ValueError(
                f"dataset {dataset!r}: the stacks' classes differ: {list(first.class_names)} "
                f"and {list(stack.class_names)}"
            )
        if same_bands and stack.n_bands != first.n_bands:
            raise ValueError(
                f"dataset {dataset!r}: the stacks' band counts differ: {first.n_bands} and "
                f"{stack.n_bands} bands"
            )
    return first.class_names
