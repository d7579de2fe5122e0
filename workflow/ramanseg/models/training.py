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
  writes a model's own outputs (RamanSeg's ``prototypes.json`` and gallery) to ``outdir``;
* device choice (``auto``, ``cpu``, ``cuda``, ``cuda:N``), float16 mixed precision on CUDA
  only, seeds (Python, NumPy, PyTorch) and a deterministic mode.

Models are found by name in :data:`MODEL_REGISTRY` (see :class:`ModelEntry`).
"""

from __future__ import annotations

import csv
import importlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import ramanseg
from ramanseg.config import require
from ramanseg.errors import InputError
from ramanseg.fileio import atomic_path
from ramanseg.metrics import dice_score
from ramanseg.models.data import PatchSampler, Sample
from ramanseg.models.inference import (
    BLEND_MODES,
    foreground_probability,
    model_predictor,
    sliding_window_probability,
)
from ramanseg.runtime import configure_reproducibility, resolve_device

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint_last.pt"
BEST_WEIGHTS_NAME = "checkpoint_best.pt"
WEIGHTS_NAME = "model.pt"
METADATA_NAME = "model.json"
LOG_NAME = "training_log.csv"
LOG_COLUMNS = ("epoch", "train_loss", "val_dice", "lr", "seconds")
#: Bumped when the checkpoint layout changes, so an old checkpoint is not misread.
CHECKPOINT_FORMAT = 1
#: cuBLAS needs this for deterministic matrix products on CUDA (PyTorch's reproducibility notes).


def _rng_state() -> dict[str, Any]:
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


def _set_rng_state(state: Mapping[str, Any]) -> None:
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


# --- losses and metrics ---------------------------------------------------------------------


def soft_dice_loss(
    probability: torch.Tensor, target: torch.Tensor, smooth: float = 1.0
) -> torch.Tensor:
    """Soft Dice loss on the foreground probability, over the whole batch.

    ``1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s)``, with the sums over every pixel of
    every patch in the batch (nnU-Net's "batch Dice"): a patch without tumour then does
    not dominate the loss, as its own Dice would. The smoothing ``s`` (1 pixel) keeps the
    loss defined for a batch without tumour (it then drives the probabilities to zero)
    and is negligible next to the thousands of pixels of a real batch.

    Args:
        probability: foreground probability (N, H, W) or (N, 1, H, W), in [0, 1].
        target: labels of the same shape without the channel, 1 = foreground.
        smooth: the smoothing term, non-negative.

    Returns:
        The scalar loss, float32.

    Raises:
        ValueError: if the shapes differ or ``smooth`` is negative.
    """
    if probability.ndim == 4 and probability.shape[1] == 1:
        probability = probability[:, 0]
    if probability.shape != target.shape:
        raise ValueError(
            f"probability shape {tuple(probability.shape)} differs from target shape "
            f"{tuple(target.shape)}"
        )
    if smooth < 0:
        raise ValueError(f"smooth must be non-negative, got {smooth}")
    probability = probability.float()
    target = target.float()
    intersection = (probability * target).sum()
    denominator = probability.sum() + target.sum()
    return 1.0 - (2.0 * intersection + smooth) / (denominator + smooth)


# --- settings, strategies, registry ---------------------------------------------------------


@dataclass(frozen=True)
class TrainingSettings:
    """Model-independent training settings.

    Attributes:
        patch_size: side of the square training patches (``models.training.patch_size``);
            also the sliding-window size for validation and prediction.
        batch_size: patches per batch (``models.training.batch_size``).
        patches_per_epoch: patches per epoch (``models.training.patches_per_epoch``).
        horizontal_flip: random flips along X (``models.training.horizontal_flip``).
        mixed_precision: float16 autocast and gradient scaling; used on CUDA only
            (``models.training.mixed_precision``).
        tumour_fraction: fraction of patches centred on tumour pixels; not in the
            configuration schema, 0.5 ("half") by default.
        seed: the global ``seed``.
        deterministic: the global ``deterministic``.
        device: the global ``device``.
        overlap: sliding-window overlap for validation.
        blend: sliding-window blending for validation.
    """

    patch_size: int
    batch_size: int
    patches_per_epoch: int
    horizontal_flip: bool = True
    mixed_precision: bool = True
    tumour_fraction: float = 0.5
    seed: int = 0
    deterministic: bool = True
    device: str = "auto"
    overlap: float = 0.5
    blend: str = "gaussian"

    def __post_init__(self) -> None:
        for name in ("patch_size", "batch_size", "patches_per_epoch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.tumour_fraction <= 1.0:
            raise ValueError(f"tumour_fraction must lie in [0, 1], got {self.tumour_fraction}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must lie in [0, 1), got {self.overlap}")
        if self.blend not in BLEND_MODES:
            raise ValueError(f"blend must be one of {BLEND_MODES}, got {self.blend!r}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> TrainingSettings:
        """Settings from the workflow configuration.

        Args:
            config: the configuration (``models.training``, ``seed``, ``deterministic``,
                ``device``).
            **overrides: fields to set explicitly.

        Returns:
            The settings.

        Raises:
            ConfigError: a required key is missing.
        """
        training = require(config, "models.training")
        values = {
            "patch_size": require(config, "models.training.patch_size"),
            "batch_size": require(config, "models.training.batch_size"),
            "patches_per_epoch": require(config, "models.training.patches_per_epoch"),
            "horizontal_flip": training.get("horizontal_flip", True),
            "mixed_precision": training.get("mixed_precision", True),
            "seed": config.get("seed", 0),
            "deterministic": config.get("deterministic", True),
            "device": config.get("device", "auto"),
        }
        values.update(overrides)
        return cls(**values)


@dataclass
class EpochContext:
    """What an epoch hook sees.

    Attributes:
        epoch: the epoch, counted from 1.
        epochs: the number of epochs in the run.
        model: the model (on ``device``).
        optimizer: the optimiser.
        device: the training device.
        sampler: the training patch sampler.
        train_samples: the training samples (e.g. for prototype projection).
        val_samples: the validation samples.
    """

    epoch: int
    epochs: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    sampler: PatchSampler
    train_samples: Sequence[Sample]
    val_samples: Sequence[Sample]


@dataclass
class TrainEndContext:
    """What :meth:`TrainingStrategy.on_train_end` sees.

    Attributes:
        model: the model holding the weights that are kept (``model.pt``), on ``device``.
        device: the training device.
        outdir: the training output folder, for the model's own output files.
        selected_epoch: the epoch whose weights are kept.
        train_samples: the training samples.
        val_samples: the validation samples.
    """

    model: nn.Module
    device: torch.device
    outdir: Path
    selected_epoch: int
    train_samples: Sequence[Sample]
    val_samples: Sequence[Sample]


LossValue = torch.Tensor | tuple[torch.Tensor, Mapping[str, torch.Tensor | float]]


class TrainingStrategy:
    """Model-specific training behaviour; subclass it for a model with its own needs.

    Per epoch the harness (1) builds a new optimiser (and scheduler) if
    :meth:`optimizer_key` differs from the previous epoch's, (2) calls
    :meth:`on_epoch_start`, (3) trains on the epoch's batches with :meth:`loss`,
    (4) calls :meth:`on_epoch_end`, (5) validates, steps the scheduler and checkpoints.
    A model with training phases (RamanSeg: warm-up, joint, last layer) returns the
    phase from :meth:`optimizer_key`, builds that phase's optimiser in
    :meth:`build_optimizer` and freezes / unfreezes parameters in :meth:`on_epoch_start`.

    Hooks must derive their effect from the epoch number alone (freeze these parameters
    in epoch ``e``, set that learning rate): on a resume they are run again for the
    remaining epochs only, and what they changed that is not in a state dict (such as
    ``requires_grad``) must come out the same. For the same reason
    :meth:`build_optimizer` must choose parameters by the epoch (phase), not by their
    current ``requires_grad``: on a resume it is called before the hooks have run.

    Attributes:
        epochs: the number of epochs.
        model_selection: ``best`` keeps the weights of the epoch with the highest
            validation Dice (the first such epoch on ties); ``last`` keeps the final
            weights (RamanSeg after its last-layer phase, say).
    """

    epochs: int = 1
    model_selection: str = "best"

    def optimizer_key(self, epoch: int) -> str | None:
        """Which optimiser trains ``epoch``; a new one is built whenever the key changes.

        Args:
            epoch: the epoch, counted from 1.

        Returns:
            The key (e.g. the training phase); the default None means one optimiser for
            the whole run.
        """
        return None

    def build_optimizer(self, model: nn.Module, epoch: int) -> torch.optim.Optimizer:
        """The optimiser for ``epoch`` (and following epochs with the same key).

        Called with the model on its device, before :meth:`on_epoch_start` of ``epoch``.

        Args:
            model: the model.
            epoch: the first epoch the optimiser trains.

        Returns:
            The optimiser.
        """
        raise NotImplementedError

    def build_scheduler(
        self, optimizer: torch.optim.Optimizer, epoch: int
    ) -> torch.optim.lr_scheduler.LRScheduler | None:
        """A learning-rate scheduler for the optimiser, stepped after every epoch.

        Args:
            optimizer: the optimiser just built.
            epoch: the first epoch it trains.

        Returns:
            The scheduler, or None for constant rates.
        """
        return None

    def loss(self, output: Any, target: torch.Tensor, model: nn.Module) -> LossValue:
        """The training loss of a batch.

        Args:
            output: the model's output object for the batch.
            target: int64 labels (N, P, P), 1 = tumour.
            model: the model (for penalties on its weights).

        Returns:
            The scalar loss, or the loss and named parts to log (their epoch means become
            ``loss_<name>`` columns of the training log).
        """
        raise NotImplementedError

    def on_epoch_start(self, context: EpochContext) -> None:
        """Run before an epoch's first batch (e.g. switch a training phase).

        Args:
            context: the epoch.
        """

    def on_epoch_end(self, context: EpochContext) -> None:
        """Run after an epoch's last batch, before validation and the checkpoint (e.g.
        project prototypes onto training patches).

        Args:
            context: the epoch.
        """

    def on_train_end(self, context: TrainEndContext) -> None:
        """Run once after the last epoch, before ``model.pt`` and ``model.json`` are written
        (e.g. write the model's own outputs to ``context.outdir``).

        Also run when a resumed run finds every epoch done; a kill during it is repaired by
        the rerun, which resumes from the last checkpoint and calls it again.

        Args:
            context: the trained model and the output folder.
        """

    def state_dict(self) -> dict[str, Any]:
        """Strategy state the hooks built up and a resume must restore (e.g. projection
        records), saved in every checkpoint.

        Returns:
            Tensors, numbers, strings and lists / dicts of them (what
            ``torch.load(..., weights_only=True)`` reads); the default has none.
        """
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, on a resume (before any hook runs).

        Args:
            state: the saved state (empty for a checkpoint of a strategy without state).
        """


class SupervisedStrategy(TrainingStrategy):
    """A loss function and an optimiser factory, for models without phases.

    Args:
        loss_fn: ``loss_fn(output, target) -> scalar``.
        optimizer_factory: ``optimizer_factory(parameters) -> Optimizer``.
        epochs: the number of epochs.
        scheduler_factory: ``scheduler_factory(optimizer) -> LRScheduler``, or None.
        model_selection: ``best`` or ``last``.

    Raises:
        ValueError: ``epochs < 1`` or an unknown ``model_selection``.
    """

    def __init__(
        self,
        loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
        optimizer_factory: Callable[..., torch.optim.Optimizer],
        epochs: int,
        *,
        scheduler_factory: Callable[[torch.optim.Optimizer], Any] | None = None,
        model_selection: str = "best",
    ) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        if model_selection not in ("best", "last"):
            raise ValueError(f"model_selection must be 'best' or 'last', got {model_selection!r}")
        self.loss_fn = loss_fn
        self.optimizer_factory = optimizer_factory
        self.scheduler_factory = scheduler_factory
        self.epochs = epochs
        self.model_selection = model_selection

    def build_optimizer(self, model: nn.Module, epoch: int) -> torch.optim.Optimizer:
        return self.optimizer_factory(model.parameters())

    def build_scheduler(self, optimizer: torch.optim.Optimizer, epoch: int) -> Any:
        return None if self.scheduler_factory is None else self.scheduler_factory(optimizer)

    def loss(self, output: Any, target: torch.Tensor, model: nn.Module) -> LossValue:
        return self.loss_fn(output, target)


def dice_loss_on_output(model: nn.Module) -> Callable[[Any, torch.Tensor], torch.Tensor]:
    """A loss ``(output, target) -> soft Dice`` on the model's foreground probability.

    Args:
        model: the model (it may define ``foreground_probability``).

    Returns:
        The loss function.
    """

    def loss(output: Any, target: torch.Tensor) -> torch.Tensor:
        return soft_dice_loss(foreground_probability(model, output), target)

    return loss


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


# --- the harness ----------------------------------------------------------------------------


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


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


def _save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _best_epoch(path: Path) -> int | None:
    """The epoch of the saved best weights, None without them."""
    if not path.is_file():
        return None
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def _write_log(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    extra = sorted({key for row in history for key in row} - set(LOG_COLUMNS))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*LOG_COLUMNS, *extra], restval="")
        writer.writeheader()
        writer.writerows(history)


def _signature(
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


def _load_checkpoint(path: Path, device: torch.device) -> dict[str, Any] | None:
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
    hyperparameters = dict(hyperparameters or {})
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = outdir / CHECKPOINT_NAME
    best_path = outdir / BEST_WEIGHTS_NAME
    log_path = outdir / LOG_NAME

    device = resolve_device(settings.device)
    configure_reproducibility(settings.seed, settings.deterministic, device)
    use_amp = settings.mixed_precision and device.type == "cuda"
    model.to(device)
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    optimizer_key: str | None = None
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    signature = _signature(
        model_name,
        architecture,
        hyperparameters,
        settings,
        epochs,
        [s.sample_id for s in train_samples],
        [s.sample_id for s in val_samples],
    )

    start_epoch, history = 0, []
    best_epoch, best_dice = 0, -math.inf
    checkpoint = None if restart else _load_checkpoint(checkpoint_path, device)
    if checkpoint is not None and (
        checkpoint.get("format") != CHECKPOINT_FORMAT
        or checkpoint.get("signature") != signature
        or checkpoint.get("optimizer_key") != strategy.optimizer_key(int(checkpoint["epoch"]))
    ):
        logger.warning(
            "%s was written by a run with other settings; training from scratch", checkpoint_path
        )
        checkpoint = None
    if checkpoint is not None:
        start_epoch = int(checkpoint["epoch"])
        model.load_state_dict(checkpoint["model"])
        # Rebuild the optimiser of the last completed epoch as the uninterrupted run built
        # it: for the first epoch with the same key.
        optimizer_key = strategy.optimizer_key(start_epoch)
        first = start_epoch
        while first > 1 and strategy.optimizer_key(first - 1) == optimizer_key:
            first -= 1
        optimizer = strategy.build_optimizer(model, first)
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler = strategy.build_scheduler(optimizer, first)
        if scheduler is not None and checkpoint["scheduler"] is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        if use_amp and checkpoint["scaler"] is not None:
            scaler.load_state_dict(checkpoint["scaler"])
        _set_rng_state(checkpoint["rng"])
        strategy.load_state_dict(checkpoint.get("strategy") or {})
        history = list(checkpoint["history"])
        best_epoch, best_dice = int(checkpoint["best_epoch"]), float(checkpoint["best_dice"])
        # Killed between the checkpoint and the best weights of its epoch: those weights
        # are the checkpoint's own.
        if best_epoch == start_epoch and _best_epoch(best_path) != start_epoch:
            _save({"epoch": start_epoch, "model": _cpu_state(model)}, best_path)
        logger.info("resuming %s after epoch %d of %d", model_name, start_epoch, epochs)
    else:
        for stale in (checkpoint_path, best_path):
            stale.unlink(missing_ok=True)

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

    for epoch in range(start_epoch + 1, epochs + 1):
        started = time.perf_counter()
        key = strategy.optimizer_key(epoch)
        if optimizer is None or key != optimizer_key:
            optimizer = strategy.build_optimizer(model, epoch)
            scheduler = strategy.build_scheduler(optimizer, epoch)
            optimizer_key = key
        context = EpochContext(
            epoch, epochs, model, optimizer, device, sampler, train_samples, val_samples
        )
        strategy.on_epoch_start(context)
        lr = float(optimizer.param_groups[0]["lr"])
        model.train()
        losses: list[float] = []
        parts: dict[str, list[float]] = {}
        bar = tqdm(
            sampler.batches(epoch),
            total=len(sampler),
            desc=f"{model_name} epoch {epoch}/{epochs}",
            disable=False if progress else (None if progress is None else True),
            leave=False,
        )
        for step, batch in enumerate(bar, start=1):
            image = batch.image.to(device, non_blocking=True)
            target = batch.target.to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=use_amp):
                output = model(image)
                value = strategy.loss(output, target, model)
            loss, named = value if isinstance(value, tuple) else (value, {})
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{model_name}: non-finite training loss {loss.item()} in epoch {epoch}, "
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
        strategy.on_epoch_end(context)
        val_dice = validate(model, val_samples, settings, device, mixed_precision=use_amp)
        bar.set_postfix(loss=f"{np.mean(losses):.4f}", dice=f"{val_dice:.4f}")
        bar.close()
        if scheduler is not None:
            scheduler.step()

        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "val_dice": val_dice,
            "lr": lr,
            "seconds": round(time.perf_counter() - started, 3),
        }
        row.update({f"loss_{key}": float(np.mean(values)) for key, values in parts.items()})
        history.append(row)
        improved = strategy.model_selection == "best" and val_dice > best_dice
        if improved:
            best_epoch, best_dice = epoch, val_dice
        # The RNG state is taken after everything of this epoch, so the next epoch starts
        # from the same state whether or not the process stops here.
        _save(
            {
                "format": CHECKPOINT_FORMAT,
                "signature": signature,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "optimizer_key": optimizer_key,
                "scheduler": None if scheduler is None else scheduler.state_dict(),
                "scaler": scaler.state_dict() if use_amp else None,
                "rng": _rng_state(),
                "history": history,
                "best_epoch": best_epoch,
                "best_dice": best_dice,
                "strategy": strategy.state_dict(),
            },
            checkpoint_path,
        )
        # After the checkpoint: a kill in between is repaired on resume (see above).
        if improved:
            _save({"epoch": epoch, "model": _cpu_state(model)}, best_path)
        _write_log(log_path, history)
        logger.info(
            "%s epoch %d/%d: train loss %.4f, val Dice %.4f, lr %.3g, %.1f s",
            model_name,
            epoch,
            epochs,
            row["train_loss"],
            val_dice,
            lr,
            row["seconds"],
        )

    # "best" without a usable validation Dice (no validation samples) keeps the last epoch.
    if strategy.model_selection == "best" and best_epoch > 0:
        saved = torch.load(best_path, map_location="cpu", weights_only=True)
        weights, selected = saved["model"], int(saved["epoch"])
        model.load_state_dict(weights)
    else:
        weights, selected = _cpu_state(model), epochs
    selected_dice = float(history[selected - 1]["val_dice"]) if history else math.nan
    strategy.on_train_end(
        TrainEndContext(model, device, outdir, selected, train_samples, val_samples)
    )
    weights_path, metadata_path = outdir / WEIGHTS_NAME, outdir / METADATA_NAME
    metadata = {
        "model": model_name,
        "architecture": dict(architecture),
        "in_channels": next(iter(channels)),
        "channel_names": list(train_samples[0].channel_names),
        "patch_size": settings.patch_size,
        "epochs": epochs,
        "selection": strategy.model_selection,
        "selected_epoch": selected,
        "val_dice": None if math.isnan(selected_dice) else selected_dice,
        "hyperparameters": hyperparameters,
        "train_samples": [s.sample_id for s in train_samples],
        "val_samples": [s.sample_id for s in val_samples],
        "seed": settings.seed,
        "deterministic": settings.deterministic,
        "ramanseg_version": ramanseg.__version__,
        "torch_version": torch.__version__,
    }
    _save(weights, weights_path)
    with atomic_path(metadata_path) as tmp:
        tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")
    _write_log(log_path, history)
    if not keep_checkpoint:
        checkpoint_path.unlink(missing_ok=True)
    best_path.unlink(missing_ok=True)
    return TrainingResult(
        weights_path, metadata_path, log_path, selected, selected_dice, start_epoch, history
    )


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
    weights_dir = Path(weights_dir)
    metadata_path, weights_path = weights_dir / METADATA_NAME, weights_dir / WEIGHTS_NAME
    for path in (metadata_path, weights_path):
        if not path.is_file():
            raise InputError(
                "the trained model file does not exist", path=path, fix="run train-model first"
            )
    try:
        metadata = json.loads(metadata_path.read_text())
        name, architecture = metadata["model"], metadata["architecture"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise InputError(
            f"model.json is not a ramanseg model description ({error})",
            path=metadata_path,
            fix="run train-model again",
        ) from error
    model = get_model_entry(name).build(**architecture)
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise InputError(
            f"the weights do not fit the {name} architecture of model.json ({error})",
            path=weights_path,
            fix="run train-model again",
        ) from error
    return model.to(device).eval(), metadata
