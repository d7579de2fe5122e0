"""The training harness shared by our PyTorch models (U-Net, UNETR, RamanSeg).

The harness is model-agnostic. It takes a model and a :class:`TrainingStrategy`, which
supplies what differs between models: the optimiser (and an optional learning-rate
scheduler), the loss (computed from the model's output object, which need not be a
tensor), the number of epochs, which epoch's weights to keep, and hooks run at the start
and end of every epoch (RamanSeg's training phases: warm-up, joint, prototype projection,
last layer). Everything else is the harness's:

* patches from :class:`~ramanseg.models.data.PatchSampler` (half centred on tumour,
  random horizontal flips), seeded per epoch;
* validation after every epoch: whole validation images predicted by sliding windows,
  mean per-sample Dice at a 0.5 threshold;
* a checkpoint after every epoch (``checkpoint_last.pt``: model, optimiser, scheduler,
  gradient scaler, epoch, RNG states, history; state dicts and tensors only, loaded with
  ``torch.load(..., weights_only=True)``), from which a rerun resumes; in deterministic
  mode a resumed run ends with the same weights and log as an uninterrupted one;
* a CSV log (``training_log.csv``: epoch, train_loss, val_dice, lr, seconds, then one
  ``loss_<part>`` column per named loss part), rewritten from the checkpoint's history
  every epoch so that it is complete after a resume;
* the final weights ``model.pt`` (state dict) and ``model.json`` (the model's registry
  name and architecture keyword arguments, so prediction rebuilds it with
  :func:`load_trained_model`);
* strategy state (:meth:`TrainingStrategy.state_dict`, e.g. RamanSeg's projection records)
  kept in the checkpoint, and a last hook (:meth:`TrainingStrategy.on_train_end`) that
  returns a model's own ``model.json`` entries (RamanSeg's projection record);
* device choice (``auto``, ``cpu``, ``cuda``, ``cuda:N``), float16 mixed precision on CUDA
  only, seeds (Python, NumPy, PyTorch) and a deterministic mode.

The pieces live in their own modules and are importable from here too: the strategy
interface and the settings in :mod:`ramanseg.models.strategy`, the checkpoint and the
training folder's file names in :mod:`ramanseg.models.checkpoint`, and the models, found by
name in :data:`MODEL_REGISTRY` (see :class:`ModelEntry`), in
:mod:`ramanseg.models.registry`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import ramanseg
from ramanseg.metrics import dice_score
from ramanseg.models.checkpoint import (
    BEST_WEIGHTS_NAME,
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    LOG_COLUMNS,
    LOG_NAME,
    METADATA_NAME,
    WEIGHTS_NAME,
    TrainingState,
    cpu_state_dict,
    resume,
    run_signature,
    save_atomically,
    save_checkpoint,
    write_training_log,
)
from ramanseg.models.data import PatchSampler, Sample
from ramanseg.models.folder import write_metadata
from ramanseg.models.inference import model_predictor, sliding_window_probability
from ramanseg.models.registry import (
    MODEL_REGISTRY,
    ModelEntry,
    get_model_entry,
    load_trained_model,
    register_model,
)
from ramanseg.models.strategy import (
    EpochContext,
    LossValue,
    SupervisedStrategy,
    TrainEndContext,
    TrainingSettings,
    TrainingStrategy,
    dice_loss_on_output,
    soft_dice_loss,
)
from ramanseg.runtime import configure_reproducibility, resolve_device

logger = logging.getLogger(__name__)

# The harness's public names, wherever they are defined (importers use this module).
__all__ = [
    "BEST_WEIGHTS_NAME",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "LOG_COLUMNS",
    "LOG_NAME",
    "METADATA_NAME",
    "MODEL_REGISTRY",
    "WEIGHTS_NAME",
    "EpochContext",
    "LossValue",
    "ModelEntry",
    "SupervisedStrategy",
    "TrainEndContext",
    "TrainingResult",
    "TrainingSettings",
    "TrainingStrategy",
    "configure_reproducibility",
    "dice_loss_on_output",
    "dice_score",
    "get_model_entry",
    "load_trained_model",
    "register_model",
    "resolve_device",
    "soft_dice_loss",
    "train",
    "validate",
]


@dataclass
class TrainingResult:
    """What a training run produced.

    Attributes:
        weights: path of ``model.pt``.
        metadata: path of ``model.json``.
        log: path of ``training_log.csv``.
        selected_epoch: the epoch whose weights were kept.
        val_dice: that epoch's validation Dice (NaN without validation samples).
        resumed_from: the epoch the run resumed after (0 for a fresh run).
        history: one row per epoch, as in the log.
    """

    weights: Path
    metadata: Path
    log: Path
    selected_epoch: int
    val_dice: float
    resumed_from: int
    history: list[dict[str, Any]] = field(default_factory=list)


def validate(
    model: nn.Module,
    samples: Sequence[Sample],
    settings: TrainingSettings,
    device: torch.device,
    *,
    mixed_precision: bool = False,
) -> float:
    """Mean per-sample Dice of whole-image sliding-window predictions at threshold 0.5.

    Args:
        model: the model, on ``device``.
        samples: the validation samples.
        settings: patch size, overlap, blending and batch size.
        device: the device.
        mixed_precision: float16 autocast (CUDA only).

    Returns:
        The mean Dice, NaN without samples.
    """
    if not samples:
        return math.nan
    predictor = model_predictor(model, device, mixed_precision=mixed_precision)
    scores = []
    for sample in samples:
        probability = sliding_window_probability(
            predictor,
            sample.image,
            settings.patch_size,
            overlap=settings.overlap,
            blend=settings.blend,
            batch_size=settings.batch_size,
            device=device,
        )
        scores.append(dice_score(probability >= 0.5, sample.mask))
    return float(np.mean(scores))


def train(
    model: nn.Module,
    strategy: TrainingStrategy,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    settings: TrainingSettings,
    outdir: str | Path,
    *,
    model_name: str,
    architecture: Mapping[str, Any],
    hyperparameters: Mapping[str, Any] | None = None,
    progress: bool | None = None,
    restart: bool = False,
    keep_checkpoint: bool = False,
) -> TrainingResult:
    """Train a model, resuming from ``outdir/checkpoint_last.pt`` when there is one.

    A checkpoint is resumed only if it was written by the same run: same model name,
    architecture, hyperparameters, settings (except the device), epochs and samples.
    Otherwise (a changed configuration: Snakemake reruns the rule) it is set aside with a
    warning and training starts afresh. When training ends, the kept weights are loaded
    into ``model``, the strategy's :meth:`~TrainingStrategy.on_train_end` runs, then
    ``model.pt``, ``model.json`` and ``training_log.csv`` are written and the checkpoints
    are deleted unless ``keep_checkpoint``.

    Args:
        model: the model, freshly built (after :func:`configure_reproducibility`).
        strategy: the model-specific behaviour.
        train_samples: the training samples.
        val_samples: the validation samples (may be empty: then the last epoch is kept).
        settings: the training settings.
        outdir: ``results/models/<model>``.
        model_name: the registry name, stored in ``model.json``.
        architecture: ``build``'s keyword arguments, stored in ``model.json``.
        hyperparameters: the model's configuration section, part of the resume check and
            stored in ``model.json``.
        progress: show tqdm bars; None shows them on a terminal only.
        restart: ignore an existing checkpoint.
        keep_checkpoint: keep ``checkpoint_last.pt`` when training ends.

    Returns:
        The paths written and the selected epoch.

    Raises:
        ValueError: no training samples, samples whose channel counts differ, a strategy
            with fewer than one epoch or an unknown model selection.
        FloatingPointError: a non-finite training loss (reported with epoch and batch).
        InputError: an unreadable checkpoint.
    """
    channels = _check_run(strategy, train_samples, val_samples)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(settings.device)
    configure_reproducibility(settings.seed, settings.deterministic, device)
    use_amp = settings.mixed_precision and device.type == "cuda"
    model.to(device)
    run = _Run(
        model=model,
        strategy=strategy,
        settings=settings,
        device=device,
        use_amp=use_amp,
        name=model_name,
        epochs=int(strategy.epochs),
        train_samples=train_samples,
        val_samples=val_samples,
        outdir=outdir,
        architecture=dict(architecture),
        hyperparameters=dict(hyperparameters or {}),
        in_channels=channels,
        progress=progress,
    )
    state = TrainingState(scaler=torch.amp.GradScaler(device.type, enabled=use_amp))
    resumed = resume(
        state, model, strategy, outdir, run.signature, device, use_amp=use_amp, restart=restart
    )
    if resumed:
        logger.info("resuming %s after epoch %d of %d", model_name, state.epoch, run.epochs)
    start_epoch = state.epoch

    sampler = PatchSampler(
        train_samples,
        settings.patch_size,
        settings.patches_per_epoch,
        settings.batch_size,
        tumour_fraction=settings.tumour_fraction,
        horizontal_flip=settings.horizontal_flip,
        seed=settings.seed,
    )
    if not sampler.has_tumour:
        logger.warning("no training sample has tumour pixels; patches are drawn uniformly")
    for epoch in range(start_epoch + 1, run.epochs + 1):
        _record_epoch(run, state, _run_epoch(run, state, sampler, epoch))
    return _finish(run, state, start_epoch, keep_checkpoint=keep_checkpoint)


@dataclass
class _Run:
    """What stays the same over the epochs of one :func:`train` call (see its arguments)."""

    model: nn.Module
    strategy: TrainingStrategy
    settings: TrainingSettings
    device: torch.device
    use_amp: bool
    name: str
    epochs: int
    train_samples: Sequence[Sample]
    val_samples: Sequence[Sample]
    outdir: Path
    architecture: dict[str, Any]
    hyperparameters: dict[str, Any]
    in_channels: int
    progress: bool | None

    @property
    def signature(self) -> str:
        """What a checkpoint must match to be resumed by this run."""
        return run_signature(
            self.name,
            self.architecture,
            self.hyperparameters,
            self.settings,
            self.epochs,
            [s.sample_id for s in self.train_samples],
            [s.sample_id for s in self.val_samples],
        )


def _check_run(
    strategy: TrainingStrategy, train_samples: Sequence[Sample], val_samples: Sequence[Sample]
) -> int:
    """The samples' channel count, after checking the samples and the strategy."""
    if not train_samples:
        raise ValueError("training needs at least one training sample")
    channels = {s.image.shape[0] for s in (*train_samples, *val_samples)}
    if len(channels) != 1:
        raise ValueError(f"samples have different channel counts: {sorted(channels)}")
    epochs = int(strategy.epochs)
    if epochs < 1:
        raise ValueError(f"the strategy must train at least one epoch, got {epochs}")
    if strategy.model_selection not in ("best", "last"):
        raise ValueError(
            f"model_selection must be 'best' or 'last', got {strategy.model_selection!r}"
        )
    return next(iter(channels))


def _run_epoch(run: _Run, state: TrainingState, sampler: PatchSampler, epoch: int) -> dict:
    """Train and validate one epoch; its log row."""
    started = time.perf_counter()
    model, strategy = run.model, run.strategy
    key = strategy.optimizer_key(epoch)
    if state.optimizer is None or key != state.optimizer_key:
        state.optimizer = strategy.build_optimizer(model, epoch)
        state.scheduler = strategy.build_scheduler(state.optimizer, epoch)
        state.optimizer_key = key
    context = EpochContext(
        epoch,
        run.epochs,
        model,
        state.optimizer,
        run.device,
        sampler,
        run.train_samples,
        run.val_samples,
    )
    strategy.on_epoch_start(context)
    lr = float(state.optimizer.param_groups[0]["lr"])
    model.train()
    bar = tqdm(
        sampler.batches(epoch),
        total=len(sampler),
        desc=f"{run.name} epoch {epoch}/{run.epochs}",
        disable=False if run.progress else (None if run.progress is None else True),
        leave=False,
    )
    losses, parts = _train_batches(run, state, bar, epoch)
    strategy.on_epoch_end(context)
    val_dice = validate(
        model, run.val_samples, run.settings, run.device, mixed_precision=run.use_amp
    )
    bar.set_postfix(loss=f"{np.mean(losses):.4f}", dice=f"{val_dice:.4f}")
    bar.close()
    if state.scheduler is not None:
        state.scheduler.step()
    row: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": float(np.mean(losses)),
        "val_dice": val_dice,
        "lr": lr,
        "seconds": round(time.perf_counter() - started, 3),
    }
    row.update({f"loss_{key}": float(np.mean(values)) for key, values in parts.items()})
    return row


def _train_batches(
    run: _Run, state: TrainingState, bar: Any, epoch: int
) -> tuple[list[float], dict[str, list[float]]]:
    """One optimiser step per batch of ``bar``; the batch losses and named loss parts."""
    losses: list[float] = []
    parts: dict[str, list[float]] = {}
    optimizer, scaler, device = state.optimizer, state.scaler, run.device
    for step, batch in enumerate(bar, start=1):
        image = batch.image.to(device, non_blocking=True)
        target = batch.target.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=run.use_amp):
            output = run.model(image)
            value = run.strategy.loss(output, target, run.model)
        loss, named = value if isinstance(value, tuple) else (value, {})
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{run.name}: non-finite training loss {loss.item()} in epoch {epoch}, "
                f"batch {step}; lower the learning rate or check the input data"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
        for key, part in named.items():
            part = part.detach() if isinstance(part, torch.Tensor) else part
            parts.setdefault(key, []).append(float(part))
        bar.set_postfix(loss=f"{np.mean(losses):.4f}")
    return losses, parts


def _record_epoch(run: _Run, state: TrainingState, row: dict[str, Any]) -> None:
    """Add the epoch to the history; write the checkpoint, best weights and log."""
    epoch, val_dice = row["epoch"], row["val_dice"]
    state.history.append(row)
    state.epoch = epoch
    improved = run.strategy.model_selection == "best" and val_dice > state.best_dice
    if improved:
        state.best_epoch, state.best_dice = epoch, val_dice
    save_checkpoint(
        run.outdir / CHECKPOINT_NAME,
        state,
        run.model,
        run.strategy,
        run.signature,
        use_amp=run.use_amp,
    )
    # After the checkpoint: a kill in between is repaired on resume (see checkpoint.resume).
    if improved:
        save_atomically(
            {"epoch": epoch, "model": cpu_state_dict(run.model)}, run.outdir / BEST_WEIGHTS_NAME
        )
    write_training_log(run.outdir / LOG_NAME, state.history)
    logger.info(
        "%s epoch %d/%d: train loss %.4f, val Dice %.4f, lr %.3g, %.1f s",
        run.name,
        epoch,
        run.epochs,
        row["train_loss"],
        val_dice,
        row["lr"],
        row["seconds"],
    )


def _finish(
    run: _Run, state: TrainingState, start_epoch: int, *, keep_checkpoint: bool
) -> TrainingResult:
    """Load the kept weights, run the strategy's last hook, write the trained model."""
    outdir, model, history = run.outdir, run.model, state.history
    best_path = outdir / BEST_WEIGHTS_NAME
    # "best" without a usable validation Dice (no validation samples) keeps the last epoch.
    if run.strategy.model_selection == "best" and state.best_epoch > 0:
        saved = torch.load(best_path, map_location="cpu", weights_only=True)
        weights, selected = saved["model"], int(saved["epoch"])
        model.load_state_dict(weights)
    else:
        weights, selected = cpu_state_dict(model), run.epochs
    selected_dice = float(history[selected - 1]["val_dice"]) if history else math.nan
    own_metadata = run.strategy.on_train_end(
        TrainEndContext(model, run.device, outdir, selected, run.train_samples, run.val_samples)
    )
    weights_path, metadata_path = outdir / WEIGHTS_NAME, outdir / METADATA_NAME
    metadata = _model_metadata(run, selected, selected_dice)
    clash = sorted(set(own_metadata) & set(metadata))
    if clash:
        raise RuntimeError(f"the training strategy's model.json entries {clash} clash")
    metadata.update(own_metadata)
    save_atomically(weights, weights_path)
    write_metadata(metadata_path, metadata)
    log_path = outdir / LOG_NAME
    write_training_log(log_path, history)
    if not keep_checkpoint:
        (outdir / CHECKPOINT_NAME).unlink(missing_ok=True)
    best_path.unlink(missing_ok=True)
    return TrainingResult(
        weights_path, metadata_path, log_path, selected, selected_dice, start_epoch, history
    )


def _model_metadata(run: _Run, selected: int, selected_dice: float) -> dict[str, Any]:
    """The content of ``model.json``."""
    return {
        "model": run.name,
        "architecture": run.architecture,
        "in_channels": run.in_channels,
        "channel_names": list(run.train_samples[0].channel_names),
        "patch_size": run.settings.patch_size,
        "epochs": run.epochs,
        "selection": run.strategy.model_selection,
        "selected_epoch": selected,
        "val_dice": None if math.isnan(selected_dice) else selected_dice,
        "hyperparameters": run.hyperparameters,
        "train_samples": [s.sample_id for s in run.train_samples],
        "val_samples": [s.sample_id for s in run.val_samples],
        "seed": run.settings.seed,
        "deterministic": run.settings.deterministic,
        "ramanseg_version": ramanseg.__version__,
        "torch_version": torch.__version__,
    }
