"""Writing outputs so that a failure never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ramanseg.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only on success.

    The temporary file keeps the suffixes of ``path`` (so writers that look at the
    extension, such as tifffile's OME mode, behave the same), lives in the same
    directory (so the final rename is atomic) and is removed if the block raises.

    Args:
        path: the final destination (file or directory).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def with_suffix(prefix: str | Path, suffix: str) -> Path:
    """``prefix`` with ``suffix`` appended to its name (``results/x`` + ``.csv``)."""
    prefix = Path(prefix)
    return prefix.with_name(prefix.name + suffix)


def prefixed(prefix: str | Path, files: Mapping[str, bytes]) -> dict[Path, bytes]:
    """``{suffix: bytes}`` as ``{prefix + suffix: bytes}``."""
    return {with_suffix(prefix, suffix): data for suffix, data in files.items()}


def write_files(files: Mapping[str | Path, bytes | Callable[[Path], Any]]) -> list[Path]:
    """Write every file atomically; on a failure remove those already written and re-raise.

    Args:
        files: path -> content: the bytes, or a writer called with the path that writes it
            atomically itself (as the TIFF writers of :mod:`ramanseg.io` do).

    Returns:
        The paths written, in order.
    """
    written: list[Path] = []
    try:
        for path, content in files.items():
            path = Path(path)
            if callable(content):
                path.parent.mkdir(parents=True, exist_ok=True)
                content(path)
            else:
                with atomic_path(path) as tmp:
                    tmp.write_bytes(content)
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def json_bytes(data: Any) -> bytes:
    """``data`` as the workflow writes every JSON document: indented by 2, newline-terminated."""
    return (json.dumps(data, indent=2) + "\n").encode()


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as a JSON document (:func:`json_bytes`) atomically; return the path."""
    return write_files({path: json_bytes(data)})[0]


def check_output_folder(
    outdir: str | Path, sample_id: str | None = None, option: str = "--outdir"
) -> None:
    """Fail unless ``outdir`` is a folder or can be made one (before any work is done).

    Args:
        outdir: the output folder.
        sample_id: the sample, for the message, if the folder is one sample's.
        option: the command-line option that named the folder, for the fix.

    Raises:
        InputError: ``outdir``, or a folder above it, is an existing file.
    """
    outdir = Path(outdir)
    for path in (outdir, *outdir.parents):
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                problem = (
                    "the output folder is an existing file"
                    if path == outdir
                    else f"the output folder {str(outdir)!r} lies inside an existing file"
                )
                raise InputError(
                    problem,
                    sample=sample_id,
                    path=path,
                    fix=f"give `{option}` a folder (it is created if missing), or move the file "
                    "away",
                )
            return
