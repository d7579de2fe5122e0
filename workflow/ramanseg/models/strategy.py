"""What differs between the models the training harness trains, and how it is described.

A model supplies a :class:`TrainingStrategy`: the optimiser (and an optional learning-rate
scheduler), the loss (computed from the model's output object, which need not be a tensor),
the number of epochs, which epoch's weights to keep, and hooks run at the start and end of
every epoch (RamanSeg's training phases: warm-up, joint, prototype projection, last layer).
The hooks see an :class:`EpochContext` or a :class:`TrainEndContext`. Models without phases
use :class:`SupervisedStrategy`. :class:`TrainingSettings` holds the model-independent
settings; :func:`soft_dice_loss` is the Dice loss the baselines train with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ramanseg.config import require
from ramanseg.models.data import PatchSampler, Sample
from ramanseg.models.inference import BLEND_MODES, foreground_probability


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


# --- settings and strategies ---------------------------------------------------------------


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

    def on_train_end(self, context: TrainEndContext) -> dict[str, Any]:
        """Run once after the last epoch, before ``model.pt`` and ``model.json`` are written.

        Also run when a resumed run finds every epoch done; a kill during it is repaired by
        the rerun, which resumes from the last checkpoint and calls it again.

        Args:
            context: the trained model and the output folder.

        Returns:
            Entries the model adds to its ``model.json`` (RamanSeg: its projection
            record), so that every model's training writes the same three files.
        """
        return {}

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
