"""A trained model's folder, ``results/models/<model>/``: the one owner of its files.

::

    model.pt            the weights: a state dict, loaded with ``weights_only=True``
    model.json          what the weights are: model name, architecture, channels, patch
                        size, the selected epoch and its validation Dice, hyperparameters
    training_log.csv    one row per epoch
    checkpoint_last.pt  while training (resume), removed at the end unless kept
    checkpoint_best.pt  while training, the best epoch's weights

This module imports no torch: the sweep summary and the benchmarks read ``model.json``
without it. Loading the weights is :func:`ramanseg.models.registry.load_trained_model`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ramanseg.errors import InputError
from ramanseg.fileio import atomic_path

WEIGHTS_NAME = "model.pt"
METADATA_NAME = "model.json"
LOG_NAME = "training_log.csv"
CHECKPOINT_NAME = "checkpoint_last.pt"
BEST_WEIGHTS_NAME = "checkpoint_best.pt"
#: Keys every ``model.json`` has.
METADATA_KEYS = ("model", "architecture")


def write_metadata(path: str | Path, metadata: Mapping[str, Any]) -> None:
    """Write ``model.json`` atomically (sorted keys, so identical runs give identical bytes)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(dict(metadata), indent=2, sort_keys=True, default=str) + "\n")


def read_metadata(folder: str | Path, *, fix: str = "run train-model again") -> dict[str, Any]:
    """Read and check a trained model's ``model.json``.

    Args:
        folder: the model's folder (``results/models/<model>``), or its ``model.json``.
        fix: what to tell the user about a missing or bad file.

    Returns:
        The metadata: a JSON object with at least :data:`METADATA_KEYS` (``model`` a
        string, ``architecture`` an object).

    Raises:
        InputError: a missing file, invalid JSON, or missing keys.
    """
    path = Path(folder)
    if path.name != METADATA_NAME:
        path = path / METADATA_NAME
    if not path.is_file():
        raise InputError("the trained model's model.json does not exist", path=path, fix=fix)
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"model.json is not valid JSON ({error})", path=path, fix=fix) from None
    if (
        not isinstance(metadata, dict)
        or not isinstance(metadata.get("model"), str)
        or not isinstance(metadata.get("architecture"), dict)
    ):
        raise InputError(
            "model.json is not a ramanseg model description (it needs `model` and `architecture`)",
            path=path,
            fix=fix,
        )
    return metadata


def weights_path(folder: str | Path) -> Path:
    """The trained weights of a model folder, which must exist.

    Raises:
        InputError: the file is missing.
    """
    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise InputError(
            "the trained model's weights do not exist", path=path, fix="run train-model first"
        )
    return path
