"""The files of a training folder, and checkpointing a run so that a rerun resumes it.

A checkpoint (``checkpoint_last.pt``) is written after every epoch: model, optimiser,
scheduler, gradient scaler, epoch, RNG states, history and the strategy's state; state
dicts and tensors only, loaded with ``torch.load(..., weights_only=True)``. It carries a
signature of the run (:func:`run_signature`), and only a run with the same signature
resumes from it; in deterministic mode a resumed run ends with the same weights and log as
an uninterrupted one. The best epoch's weights are kept in ``checkpoint_best.pt``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ramanseg.errors import InputError
from ramanseg.fileio import atomic_path
from ramanseg.models.folder import (  # noqa: F401 (re-exported: the folder's names)
    BEST_WEIGHTS_NAME,
    CHECKPOINT_NAME,
    LOG_NAME,
    METADATA_NAME,
    WEIGHTS_NAME,
)

if TYPE_CHECKING:
    from ramanseg.models.strategy import TrainingSettings, TrainingStrategy

logger = logging.getLogger(__name__)

LOG_COLUMNS = ("epoch", "train_loss", "val_dice", "lr", "seconds")
#: Bumped when the checkpoint layout changes, so an old checkpoint is not misread.
CHECKPOINT_FORMAT = 1


@dataclass
class TrainingState:
    """What a run carries from epoch to epoch, and its checkpoint holds.

    Attributes:
        scaler: the gradient scaler (disabled without mixed precision).
        epoch: the last completed epoch (0 before the first).
        history: one log row per completed epoch.
        best_epoch: the epoch of the best validation Dice so far (0: none).
        best_dice: that Dice.
        optimizer: the optimiser of the current optimiser key (None before the first epoch).
        scheduler: its learning-rate scheduler, or None.
        optimizer_key: the strategy's key the optimiser was built for.
    """

    scaler: torch.amp.GradScaler
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_dice: float = -math.inf
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    optimizer_key: str | None = None


def rng_state() -> dict[str, Any]:
    """Python, NumPy and PyTorch generator states as tensors and plain numbers."""
    version, python_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python_version": version,
        "python_state": torch.tensor(python_state, dtype=torch.int64),
        "python_gauss": gauss,
        "numpy_kind": kind,
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_pos": int(pos),
        "numpy_has_gauss": int(has_gauss),
        "numpy_gauss": float(cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    python_state = tuple(int(v) for v in state["python_state"].tolist())
    random.setstate((state["python_version"], python_state, state["python_gauss"]))
    np.random.set_state(  # noqa: NPY002
        (
            state["numpy_kind"],
            state["numpy_keys"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    # GPU states only when the GPU count matches (resuming a GPU run on the CPU is allowed).
    if (
        state["cuda"]
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state dict on the CPU."""
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


def save_atomically(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file, so that a kill leaves no partial file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def best_weights_epoch(path: Path) -> int | None:
    """The epoch of the saved best weights, None without them."""
    if not path.is_file():
        return None
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def write_training_log(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """Write the history as the CSV log: :data:`LOG_COLUMNS`, then the loss parts."""
    extra = sorted({key for row in history for key in row} - set(LOG_COLUMNS))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*LOG_COLUMNS, *extra], restval="")
        writer.writeheader()
        writer.writerows(history)


def run_signature(
    model_name: str,
    architecture: Mapping[str, Any],
    hyperparameters: Mapping[str, Any],
    settings: TrainingSettings,
    epochs: int,
    train_ids: Sequence[str],
    val_ids: Sequence[str],
) -> str:
    """What a checkpoint must match to be resumed (the device may change, nothing else)."""
    run = asdict(settings)
    run.pop("device")
    return json.dumps(
        {
            "model": model_name,
            "architecture": architecture,
            "hyperparameters": hyperparameters,
            "settings": run,
            "epochs": epochs,
            "train": list(train_ids),
            "val": list(val_ids),
        },
        sort_keys=True,
        default=str,
    )


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint at ``path``, None without one; a damaged file is an InputError."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises several types for a damaged or foreign file
        raise InputError(
            f"the training checkpoint cannot be read ({type(error).__name__}: {error})",
            path=path,
            fix="delete it (or pass --restart) to train from scratch",
        ) from error


def resume(
    state: TrainingState,
    model: nn.Module,
    strategy: TrainingStrategy,
    outdir: Path,
    signature: str,
    device: torch.device,
    *,
    use_amp: bool,
    restart: bool,
) -> bool:
    """Restore ``state``, the model and the RNG states from ``outdir``'s checkpoint.

    A checkpoint of another run (format, signature or optimiser key differ) is ignored
    with a warning; without one to resume, stale checkpoint files are deleted.

    Args:
        state: the fresh run state, updated in place.
        model: the model, on ``device``; its weights are replaced.
        strategy: the strategy, whose state is restored and which rebuilds the optimiser.
        outdir: the training folder.
        signature: :func:`run_signature` of this run.
        device: the training device.
        use_amp: mixed precision (restore the gradient scaler).
        restart: ignore an existing checkpoint.

    Returns:
        Whether the run resumes.

    Raises:
        InputError: an unreadable checkpoint.
    """
    checkpoint_path, best_path = outdir / CHECKPOINT_NAME, outdir / BEST_WEIGHTS_NAME
    checkpoint = None if restart else load_checkpoint(checkpoint_path, device)
    if checkpoint is not None and (
        checkpoint.get("format") != CHECKPOINT_FORMAT
        or checkpoint.get("signature") != signature
        or checkpoint.get("optimizer_key") != strategy.optimizer_key(int(checkpoint["epoch"]))
    ):
        logger.warning(
            "%s was written by a run with other settings; training from scratch", checkpoint_path
        )
        checkpoint = None
    if checkpoint is None:
        for stale in (checkpoint_path, best_path):
            stale.unlink(missing_ok=True)
        return False
    state.epoch = start_epoch = int(checkpoint["epoch"])
    model.load_state_dict(checkpoint["model"])
    # Rebuild the optimiser of the last completed epoch as the uninterrupted run built
    # it: for the first epoch with the same key.
    state.optimizer_key = strategy.optimizer_key(start_epoch)
    first = start_epoch
    while first > 1 and strategy.optimizer_key(first - 1) == state.optimizer_key:
        first -= 1
    state.optimizer = strategy.build_optimizer(model, first)
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.scheduler = strategy.build_scheduler(state.optimizer, first)
    if state.scheduler is not None and checkpoint["scheduler"] is not None:
        state.scheduler.load_state_dict(checkpoint["scheduler"])
    if use_amp and checkpoint["scaler"] is not None:
        state.scaler.load_state_dict(checkpoint["scaler"])
    set_rng_state(checkpoint["rng"])
    strategy.load_state_dict(checkpoint.get("strategy") or {})
    state.history = list(checkpoint["history"])
    state.best_epoch = int(checkpoint["best_epoch"])
    state.best_dice = float(checkpoint["best_dice"])
    # Killed between the checkpoint and the best weights of its epoch: those weights
    # are the checkpoint's own.
    if state.best_epoch == start_epoch and best_weights_epoch(best_path) != start_epoch:
        save_atomically({"epoch": start_epoch, "model": cpu_state_dict(model)}, best_path)
    return True


def save_checkpoint(
    path: Path,
    state: TrainingState,
    model: nn.Module,
    strategy: TrainingStrategy,
    signature: str,
    *,
    use_amp: bool,
) -> None:
    """Write the checkpoint of the run after ``state.epoch``.

    Args:
        path: ``checkpoint_last.pt``.
        state: the run state after the epoch.
        model: the model.
        strategy: the strategy (its state is saved).
        signature: :func:`run_signature` of the run.
        use_amp: mixed precision (save the gradient scaler).
    """
    # The RNG state is taken after everything of this epoch, so the next epoch starts
    # from the same state whether or not the process stops here.
    save_atomically(
        {
            "format": CHECKPOINT_FORMAT,
            "signature": signature,
            "epoch": state.epoch,
            "model": model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "optimizer_key": state.optimizer_key,
            "scheduler": None if state.scheduler is None else state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict() if use_amp else None,
            "rng": rng_state(),
            "history": state.history,
            "best_epoch": state.best_epoch,
            "best_dice": state.best_dice,
            "strategy": strategy.state_dict(),
        },
        path,
    )
