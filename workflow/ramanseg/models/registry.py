"""The models the harness can train, found by name, and rebuilding a trained one.

:data:`MODEL_REGISTRY` maps a model name (``--model``, ``config["models"][name]``) to its
:class:`ModelEntry`: how to read its architecture from the configuration, build it and
make its :class:`~ramanseg.models.strategy.TrainingStrategy`. :func:`load_trained_model`
rebuilds a trained model from the ``model.json`` and ``model.pt`` of its training folder.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ramanseg.errors import InputError
from ramanseg.models.folder import read_metadata, weights_path
from ramanseg.models.strategy import TrainingStrategy


@dataclass(frozen=True)
class ModelEntry:
    """How the harness builds and trains one kind of model.

    Attributes:
        architecture: ``architecture(config, name, in_channels) -> dict``: the keyword
            arguments of ``build``, JSON-serialisable, read from ``config["models"][name]``
            (and ``models.training`` where needed); stored in ``model.json``.
        build: ``build(**architecture) -> nn.Module`` (a class or a function).
        strategy: ``strategy(config, name, model) -> TrainingStrategy``.
    """

    architecture: Callable[[Mapping[str, Any], str, int], dict[str, Any]]
    build: Callable[..., nn.Module]
    strategy: Callable[[Mapping[str, Any], str, nn.Module], TrainingStrategy]


#: Model name -> its :class:`ModelEntry`, or ``"module:attribute"`` naming one (imported
#: on first use, so a model's module is loaded only when that model is asked for).
MODEL_REGISTRY: dict[str, ModelEntry | str] = {
    "unet": "ramanseg.models.unet:ENTRY",
    "unetr": "ramanseg.models.unetr:ENTRY",
    "ramanseg": "ramanseg.models.ramanseg_training:ENTRY",
    "ramanseg_noproj": "ramanseg.models.ramanseg_training:ENTRY",
    "hybrid_unet": "ramanseg.models.hybrid_unet:ENTRY",
}


def register_model(name: str, entry: ModelEntry | str) -> None:
    """Add or replace a model in :data:`MODEL_REGISTRY`.

    Args:
        name: the model name used by ``--model`` and ``config["models"][name]``.
        entry: the entry, or ``"module:attribute"`` naming it.
    """
    MODEL_REGISTRY[name] = entry


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of a model.

    Args:
        name: the model name.

    Returns:
        Its entry.

    Raises:
        ValueError: an unknown name, or a registry string that names no ``ModelEntry``.
    """
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODEL_REGISTRY)}")
    entry = MODEL_REGISTRY[name]
    if isinstance(entry, str):
        module_name, _, attribute = entry.partition(":")
        entry = getattr(importlib.import_module(module_name), attribute, None)
        if not isinstance(entry, ModelEntry):
            raise ValueError(f"registry entry {MODEL_REGISTRY[name]!r} is not a ModelEntry")
        MODEL_REGISTRY[name] = entry
    return entry


def load_trained_model(
    weights_dir: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained model from ``model.json`` and load ``model.pt``.

    Args:
        weights_dir: the training output folder.
        device: where to put the model.

    Returns:
        The model in eval mode on ``device``, and the metadata of ``model.json``.

    Raises:
        InputError: a missing or unreadable ``model.json`` / ``model.pt``, or weights that
            do not fit the architecture.
        ValueError: a model name not in the registry.
    """
    metadata = read_metadata(weights_dir)
    name, architecture = metadata["model"], metadata["architecture"]
    weights = weights_path(weights_dir)
    model = get_model_entry(name).build(**architecture)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise InputError(
            f"the weights do not fit the {name} architecture of model.json ({error})",
            path=weights,
            fix="run train-model again",
        ) from error
    return model.to(device).eval(), metadata
