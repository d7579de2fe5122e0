"""The spectra input contract: one table of labelled spectra, and its grouped split.

One row per spectrum; CSV (optionally compressed: ``.csv.gz``, ``.csv.xz``, ...) or Parquet:

- wavenumber columns: every column whose name is a number (cm-1); any order (sorted on
  reading), no duplicates; finite numeric values;
- ``label``: the class name (any text, not empty);
- ``group``: the group id for grouped splits (a patient, a spatial block of a map):
  spectra of one group always fall into the same split.

Other columns (map coordinates, say) are ignored with a log message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ramanseg.errors import InputError

LOGGER = logging.getLogger(__name__)
LABEL_COLUMN = "label"
GROUP_COLUMN = "group"
_FIX = (
    "write one row per spectrum with numeric wavenumber column names, a `label` and a "
    "`group` column (see README, 'Spectra')"
)


@dataclass
class SpectraTable:
    """Labelled spectra read from a table.

    Attributes:
        spectra: ``(n, bands)`` float64 intensities.
        wavenumbers: ``(bands,)`` increasing, cm-1.
        labels: ``(n,)`` class names.
        groups: ``(n,)`` group ids.
    """

    spectra: np.ndarray
    wavenumbers: np.ndarray
    labels: np.ndarray
    groups: np.ndarray


def spectra_frame(
    spectra: np.ndarray,
    wavenumbers: np.ndarray,
    labels: Sequence,
    groups: Sequence,
) -> pd.DataFrame:
    """Spectra as a contract table (the inverse of :func:`read_spectra_table`).

    Args:
        spectra: ``(n, bands)`` intensities.
        wavenumbers: ``(bands,)`` cm-1, written as the column names (``%g``).
        labels: ``(n,)`` class names.
        groups: ``(n,)`` group ids.
    """
    columns = [f"{value:g}" for value in wavenumbers]
    frame = pd.DataFrame(np.asarray(spectra, dtype=np.float64), columns=columns)
    frame[LABEL_COLUMN] = [str(label) for label in labels]
    frame[GROUP_COLUMN] = [str(group) for group in groups]
    return frame


def _wavenumber(name: object) -> float | None:
    try:
        value = float(str(name))
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def read_spectra_table(path: str | Path, dataset: str | None = None) -> SpectraTable:
    """Read and check a spectra table.

    Args:
        path: a ``.csv`` (optionally compressed) or ``.parquet`` file.
        dataset: the dataset's name, for messages.

    Raises:
        InputError: naming the dataset, the file, what is wrong and the fix.
    """
    path = Path(path)

    def error(problem: str, fix: str = _FIX) -> InputError:
        return InputError(problem, sample=dataset, path=path, fix=fix)

    if not path.is_file():
        raise error("the spectra table does not exist", "check the dataset's `table` path")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif ".csv" in path.suffixes:
            frame = pd.read_csv(path)
        else:
            raise error(
                "a spectra table must be .csv (optionally compressed) or .parquet",
                "convert it, or name it with its format's extension",
            )
    except InputError:
        raise
    except Exception as exc:  # every reader failure is the file's fault here
        raise error(f"cannot be read as a table: {exc}") from None
    frame.columns = [str(column).strip() for column in frame.columns]
    for column in (LABEL_COLUMN, GROUP_COLUMN):
        if column not in frame.columns:
            raise error(f"has no `{column}` column (columns: {', '.join(frame.columns[:8])}...)")
    numbers = {column: _wavenumber(column) for column in frame.columns}
    bands = [column for column, value in numbers.items() if value is not None]
    other = [c for c in frame.columns if c not in bands and c not in (LABEL_COLUMN, GROUP_COLUMN)]
    if other:
        LOGGER.info("%s: ignoring the columns %s", path, ", ".join(other))
    if len(bands) < 2:
        raise error(f"has {len(bands)} wavenumber columns (columns named by a number); need 2+")
    wavenumbers = np.array([numbers[column] for column in bands])
    duplicated = pd.Series(wavenumbers).duplicated()
    if duplicated.any():
        raise error(
            f"wavenumber {wavenumbers[duplicated.to_numpy()][0]:g} cm-1 names two columns",
            "keep one column per wavenumber",
        )
    order = np.argsort(wavenumbers, kind="stable")
    values = frame[bands].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)[:, order]
    bad = ~np.isfinite(values)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise error(
            f"{int(bad.sum())} intensities are not finite numbers (first: row {row + 2}, "
            f"column {bands[order[column]]!r}, {frame[bands[order[column]]].iloc[row]!r})",
            "give every spectrum a number at every wavenumber (interpolate gaps)",
        )
    labels = frame[LABEL_COLUMN].astype("string").str.strip()
    groups = frame[GROUP_COLUMN].astype("string").str.strip()
    for column, series in ((LABEL_COLUMN, labels), (GROUP_COLUMN, groups)):
        empty = series.isna() | (series == "")
        if empty.any():
            raise error(
                f"`{column}` is empty in {int(empty.sum())} rows (first: row "
                f"{int(np.argmax(empty.to_numpy())) + 2})",
                f"give every spectrum a `{column}`",
            )
    if labels.nunique() < 2:
        raise error(
            "has a single class; a classifier needs two or more", "add spectra of another class"
        )
    return SpectraTable(
        spectra=values,
        wavenumbers=wavenumbers[order],
        labels=labels.to_numpy(dtype=str),
        groups=groups.to_numpy(dtype=str),
    )


def encode_labels(
    labels: np.ndarray, positive: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Class indices and class names.

    Args:
        labels: ``(n,)`` class names.
        positive: for a binary task, the labels of the positive class (the rest is
            negative); None for one class per distinct label (sorted).

    Returns:
        ``(n,)`` int64 indices, and the class names in index order.
    """
    if positive:
        positive = [str(label) for label in positive]
        missing = sorted(set(positive) - set(labels))
        if missing:
            raise InputError(
                f"the positive labels {missing} occur in no spectrum (labels: "
                f"{sorted(set(labels))[:10]})",
                fix="correct the dataset's `positive` list",
            )
        name = positive[0] if len(positive) == 1 else f"{positive[0]} (+{len(positive) - 1})"
        return np.isin(labels, positive).astype(np.int64), ["rest", name]
    names = sorted({str(label) for label in labels})
    index = {name: code for code, name in enumerate(names)}
    return np.array([index[label] for label in labels], dtype=np.int64), names


def grouped_split(
    y: np.ndarray,
    groups: np.ndarray,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Train / validation / test row indices, grouped (a group lies in one split) and
    stratified by class as far as the groups allow (``StratifiedGroupKFold``).

    Args:
        y: ``(n,)`` class indices.
        groups: ``(n,)`` group ids.
        test_fraction: about this share of the spectra goes to the test set.
        val_fraction: about this share of the rest goes to validation.
        seed: the shuffling seed.

    Raises:
        InputError: fewer groups than the split needs.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    def hold_out(rows: np.ndarray, fraction: float, salt: int) -> tuple[np.ndarray, np.ndarray]:
        folds = max(2, round(1.0 / fraction))
        if len(np.unique(groups[rows])) < folds:
            raise InputError(
                f"{len(np.unique(groups[rows]))} groups cannot be split {folds} ways",
                fix="give the table more groups (smaller spatial blocks, more patients)",
            )
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed + salt)
        keep, held = next(splitter.split(rows, y[rows], groups[rows]))
        return rows[keep], rows[held]

    rest, test = hold_out(np.arange(len(y)), test_fraction, 0)
    train, val = hold_out(rest, val_fraction, 1)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
