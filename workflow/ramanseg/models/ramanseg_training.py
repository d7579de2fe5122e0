"""Training RamanSeg in the harness: its phases, prototype projection and registry entry.

Both variants of the paper are one :class:`RamanSegStrategy` with a :class:`PhaseSchedule`
read from ``config["models"][<name>]``:

* RamanSeg (``models.ramanseg``, ``projection: true``; paper 3.2 and ProtoPNet's schedule):
  ``epochs.warmup`` warm-up epochs (add-on, prototypes and head train, the feature extractor
  and the readout are frozen), ``epochs.joint`` joint epochs (everything but the readout),
  then, at the end of the last joint epoch, prototype projection onto the training images
  (each prototype becomes a latent patch of its own class: its nearest with
  ``projection_assignment: paper``, pairwise different ones with ``distinct``;
  :func:`~ramanseg.models.prototypes.project_prototypes`), then ``epochs.last_layer`` epochs
  training what follows the prototype layer: the head and the readout (see
  :mod:`ramanseg.models.ramanseg`). The projected prototypes are frozen from then on, so each is
  exactly a latent patch of a training image of its class; the final weights are kept
  (``model_selection = "last"``: an earlier epoch's weights are not projected).
* projection-free RamanSeg (``models.ramanseg_noproj``, ``projection: false``; paper 3.2.4):
  warm-up and joint epochs (and last-layer epochs if ``epochs.last_layer > 0``), no
  projection; the weights of the epoch with the best validation Dice are kept.

Every phase has its own optimiser (Adam, as ProtoPNet), built with one parameter group per
part of the network and the learning rates of ``learning_rates``
(:func:`~ramanseg.models.ramanseg.phase_param_groups`), weight decay
:data:`WEIGHT_DECAY` on the convolutional parts (ProtoPNet's value). The joint phase's rates
are annealed by a cosine over the phase (``joint_lr_schedule``, default ``cosine``; ProtoPNet
decays them stepwise, by 10 every 5 epochs, which suits its pretrained extractor, not our
extractor trained from scratch): the network projected at the end of the joint phase has then
settled instead of being caught in one of the swings of a constant-rate run. The loss is
:class:`~ramanseg.models.prototypes.RamanSegLoss` of the entry (``loss_weights``,
``diversity_loss``); its terms are logged as ``loss_cross_entropy``, ``loss_dice``,
``loss_diversity``, ``loss_l1`` (and ``loss_cluster``, ``loss_separation``) columns of the
training log.

With ``prototype_init: class_latents`` the prototypes start, before the first epoch, on
random latent windows of their class (the paper's Xavier-style draw otherwise). At the end
of every phase (and before and after projection) the prototypes' diversity is measured on
the training images (:func:`~ramanseg.models.prototypes.diagnostics.diversity_diagnostics`)
and logged.

A projection model's ``model.json`` also holds its projection record, key
:data:`~ramanseg.models.prototypes.PROJECTION_KEY` (one record per prototype: source
sample, latent and image location, distance, source region and its purity, see
:class:`~ramanseg.models.prototypes.PrototypeRecord`; per class the distinct count and
mean purity, ``summary``; the measurements, ``diagnostics``), read with
:func:`~ramanseg.models.prototypes.read_projection`; the interpretation draws the gallery
from it. Records and measurements are strategy state, saved in every checkpoint, so a run
resumed after the projection epoch writes the same files as an uninterrupted one. The final
prototype vectors are the state-dict entry :data:`PROTOTYPES_KEY` of ``model.pt`` (shape
``(P, D, k, k)``; their classes are :data:`PROTOTYPE_CLASS_KEY`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ramanseg.config import require
from ramanseg.models.prototypes import (
    PROJECTION_ASSIGNMENTS,
    REGION_METHODS,
    PrototypeRecord,
    RamanSegLoss,
    init_prototypes_from_latents_,
    project_prototypes,
    projection_metadata,
)
from ramanseg.models.prototypes.diagnostics import (
    class_summary,
    diversity_diagnostics,
    log_diversity,
    log_summary,
)
from ramanseg.models.ramanseg import CONFIG_KEYS, RamanSeg, phase_param_groups, set_phase
from ramanseg.models.ramanseg_schedule import PhaseSchedule
from ramanseg.models.training import (
    EpochContext,
    LossValue,
    ModelEntry,
    TrainEndContext,
    TrainingStrategy,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CLASS_NAMES",
    "ENTRY",
    "JOINT_LR_SCHEDULES",
    "OPTIONAL_ARCHITECTURE_KEYS",
    "PROTOTYPES_KEY",
    "PROTOTYPE_CLASS_KEY",
    "PROTOTYPE_INITS",
    "REGION_SCOPES",
    "WEIGHT_DECAY",
    "PhaseSchedule",
    "RamanSegStrategy",
    "ramanseg_architecture",
    "ramanseg_strategy",
]

#: ``model.pt`` key of the prototype vectors, shape ``(P, D, k, k)``.
PROTOTYPES_KEY = "prototype_layer.prototypes"
#: ``model.pt`` key of the prototypes' classes, shape ``(P,)``.
PROTOTYPE_CLASS_KEY = "prototype_layer.prototype_class"
#: Weight decay of the feature extractor, add-on and head (ProtoPNet's 1e-3).
WEIGHT_DECAY = 1e-3
#: How prototypes start (``prototype_init``): the paper's Xavier-style draw, or random latent
#: windows of their class (:func:`~ramanseg.models.prototypes.init_prototypes_from_latents_`).
PROTOTYPE_INITS = ("xavier", "class_latents")
#: Where a prototype's source region is drawn (``region_scope``): on the training patch
#: around its source (``patch``, ``models.training.patch_size``) or the whole image.
REGION_SCOPES = ("patch", "image")
#: Learning-rate schedules of the joint phase (``joint_lr_schedule``).
JOINT_LR_SCHEDULES = ("cosine", "constant")
#: Class names of the binary task, by label.
CLASS_NAMES = ("background", "tumour")
#: Architecture keys a configuration entry may set; :data:`ARCHITECTURE_DEFAULTS` otherwise.
OPTIONAL_ARCHITECTURE_KEYS = ("stride", "head_layers")
#: Architecture keyword arguments that are not in the configuration, stored in
#: ``model.json`` so that a later change of a default cannot change a trained model.
ARCHITECTURE_DEFAULTS: dict[str, Any] = {
    "num_classes": 2,
    "stride": 8,
    "base_channels": 32,
    "max_channels": 256,
    "head_layers": 2,
    "head_kernel_size": 3,
    "upsample": "probabilities",
}


def _record_from_dict(data: Mapping[str, Any]) -> PrototypeRecord:
    values = {
        key: tuple(value) if isinstance(value, list) else value for key, value in data.items()
    }
    return PrototypeRecord(**values)


class RamanSegStrategy(TrainingStrategy):
    """RamanSeg's training phases, projection and outputs (see the module docstring).

    Args:
        model: the model to be trained.
        criterion: the objective.
        schedule: the phases.
        learning_rates: ``features``, ``addon``, ``prototypes``, ``last_layer`` (and
            optionally ``head``; the add-on rate otherwise).
        weight_decay: weight decay of the convolutional groups.
        class_names: names of the classes, by label, for the projection summary.
        percentile: the source-region percentile of projection (ProtoPNet: 95).
        region: how the source region is drawn (``protopnet`` or ``peak_component``, see
            :func:`~ramanseg.models.prototypes.high_activation_bbox`).
        region_window: the side of the square around each prototype's source the region
            is drawn in (the training patch size), or None for the whole image.
        assignment: ``paper`` (each prototype takes its nearest patch) or ``distinct``
            (the prototypes of a class take different patches), see
            :func:`~ramanseg.models.prototypes.project_prototypes`.
        prototype_init: ``xavier`` (the model's own initialisation, the paper's) or
            ``class_latents`` (at the start of the first epoch, random latent windows of
            each prototype's class in the training images, drawn with ``seed``).
        seed: the seed of the ``class_latents`` draw.
        joint_lr_schedule: ``cosine`` (anneal the joint phase's rates, see
            :meth:`build_scheduler`) or ``constant``.

    Raises:
        TypeError: ``model`` is not a :class:`~ramanseg.models.ramanseg.RamanSeg`.
        ValueError: a learning rate missing or not positive for a phase of the schedule.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: RamanSegLoss,
        schedule: PhaseSchedule,
        learning_rates: Mapping[str, float],
        *,
        weight_decay: float = WEIGHT_DECAY,
        class_names: Sequence[str] = CLASS_NAMES,
        percentile: float = 95.0,
        region: str = "protopnet",
        region_window: int | None = None,
        assignment: str = "paper",
        prototype_init: str = "xavier",
        seed: int = 0,
        joint_lr_schedule: str = "cosine",
    ) -> None:
        if not isinstance(model, RamanSeg):
            raise TypeError(f"RamanSegStrategy trains a RamanSeg, got {type(model).__name__}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {percentile}")
        if region not in REGION_METHODS:
            raise ValueError(f"region must be one of {list(REGION_METHODS)}, got {region!r}")
        if assignment not in PROJECTION_ASSIGNMENTS:
            raise ValueError(
                f"projection_assignment must be one of {list(PROJECTION_ASSIGNMENTS)}, "
                f"got {assignment!r}"
            )
        if prototype_init not in PROTOTYPE_INITS:
            raise ValueError(
                f"prototype_init must be one of {list(PROTOTYPE_INITS)}, got {prototype_init!r}"
            )
        if joint_lr_schedule not in JOINT_LR_SCHEDULES:
            raise ValueError(
                f"joint_lr_schedule must be one of {list(JOINT_LR_SCHEDULES)}, "
                f"got {joint_lr_schedule!r}"
            )
        self.criterion = criterion
        self.schedule = schedule
        self.learning_rates = dict(learning_rates)
        self.weight_decay = float(weight_decay)
        self.class_names = tuple(class_names)
        self.percentile = float(percentile)
        self.region = region
        self.region_window = region_window
        self.assignment = assignment
        self.prototype_init = prototype_init
        self.seed = int(seed)
        self.joint_lr_schedule = joint_lr_schedule
        self.epochs = schedule.epochs
        self.model_selection = "last" if schedule.projection else "best"
        self.records: list[PrototypeRecord] = []
        self.diagnostics: list[dict[str, Any]] = []
        # Fail now, not at the phase change hours later: every phase's rates must exist.
        for phase in {schedule.phase(e) for e in range(1, schedule.epochs + 1)}:
            phase_param_groups(model, phase, self.learning_rates, self.weight_decay)

    def optimizer_key(self, epoch: int) -> str:
        """The phase of ``epoch``: a new optimiser at every phase change."""
        return self.schedule.phase(epoch)

    def build_optimizer(self, model: nn.Module, epoch: int) -> torch.optim.Optimizer:
        """Adam over the parameter groups of ``epoch``'s phase (chosen by phase, not by
        ``requires_grad``)."""
        groups = phase_param_groups(
            model, self.schedule.phase(epoch), self.learning_rates, self.weight_decay
        )
        return torch.optim.Adam(groups)

    def build_scheduler(
        self, optimizer: torch.optim.Optimizer, epoch: int
    ) -> torch.optim.lr_scheduler.LRScheduler | None:
        """With ``joint_lr_schedule="cosine"``, cosine annealing of the joint phase's rates.

        Epoch ``i`` of ``J`` joint epochs (from 0) trains at ``lr (1 + cos(pi i / J)) / 2``,
        so the network projected after the last joint epoch has settled. The warm-up and
        last-layer rates are constant.
        """
        if self.joint_lr_schedule == "cosine" and self.schedule.phase(epoch) == "joint":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.schedule.joint)
        return None

    def on_epoch_start(self, context: EpochContext) -> None:
        """Freeze everything but the parameters of the epoch's phase."""
        if context.epoch == 1 and self.prototype_init == "class_latents":
            samples = list(context.train_samples)
            init_prototypes_from_latents_(
                context.model,
                [s.image for s in samples],
                [s.mask for s in samples],
                torch.Generator().manual_seed(self.seed),
                device=context.device,
            )
            logger.info("prototypes initialised from latent windows of their class")
        set_phase(context.model, self.schedule.phase(context.epoch))
        if context.epoch == 1 or self.schedule.phase(context.epoch - 1) != context.model.phase:
            logger.info("RamanSeg epoch %d: %s phase", context.epoch, context.model.phase)

    def loss(self, output: Any, target: torch.Tensor, model: nn.Module) -> LossValue:
        """The RamanSeg objective, with its computed terms as named parts."""
        terms = self.criterion(output, target, model)
        parts = {
            name: value
            for name, value in (
                ("cross_entropy", terms.cross_entropy),
                ("dice", terms.dice),
                ("diversity", terms.diversity),
                ("l1", terms.l1),
                ("cluster", terms.cluster),
                ("separation", terms.separation),
            )
            if value is not None
        }
        return terms.total, parts

    def _diagnose(self, context: EpochContext, stage: str) -> None:
        """Measure the prototypes' diversity on the training images and log it."""
        samples = list(context.train_samples)
        rows = diversity_diagnostics(
            context.model,
            [s.image for s in samples],
            [s.mask for s in samples],
            diversity_weight=self.criterion.weights["diversity"],
            device=context.device,
        )
        self.diagnostics.append({"stage": stage, "epoch": context.epoch, "classes": rows})
        log_diversity(rows, stage, context.epoch)

    def on_epoch_end(self, context: EpochContext) -> None:
        """Measure the prototypes at the end of each phase; project them after the last
        joint epoch (measuring them before and after)."""
        schedule = self.schedule
        if context.epoch == schedule.warmup and schedule.joint:
            self._diagnose(context, "end of warmup")
        if context.epoch == schedule.projection_epoch:
            self._diagnose(context, "before projection")
            self._project(context)
            self._diagnose(context, "after projection")
        elif context.epoch == schedule.warmup + schedule.joint:
            self._diagnose(context, "end of joint")
        if context.epoch == schedule.epochs and schedule.last_layer:
            self._diagnose(context, "end of training")

    def _project(self, context: EpochContext) -> None:
        samples = list(context.train_samples)
        self.records = project_prototypes(
            context.model,
            [s.image for s in samples],
            [s.mask for s in samples],
            [s.sample_id for s in samples],
            assignment=self.assignment,
            percentile=self.percentile,
            region=self.region,
            region_window=self.region_window,
            device=context.device,
        )
        distances = [r.distance for r in self.records]
        logger.info(
            "projected %d prototypes (%s assignment) after epoch %d: squared distance moved "
            "mean %.4g, max %.4g",
            len(self.records),
            self.assignment,
            context.epoch,
            sum(distances) / len(distances),
            max(distances),
        )
        log_summary(
            class_summary(
                self.records,
                context.model.prototype_layer.prototypes.detach().cpu(),
                self.class_names,
            )
        )

    def on_train_end(self, context: TrainEndContext) -> dict[str, Any]:
        """The projection record of a projection model, for its ``model.json``.

        Raises:
            RuntimeError: a projection model without projection records.
        """
        if not self.schedule.projection:
            return {}
        if not self.records:
            raise RuntimeError(
                "RamanSeg was trained with projection but holds no projection records"
            )
        vectors = context.model.prototype_layer.prototypes.detach().cpu()
        return projection_metadata(
            self.records,
            summary=class_summary(self.records, vectors, self.class_names),
            diagnostics=self.diagnostics,
            settings={
                "assignment": self.assignment,
                "prototype_init": self.prototype_init,
                "region": self.region,
                "region_window": self.region_window,
                "percentile": self.percentile,
            },
        )

    def state_dict(self) -> dict[str, Any]:
        """The projection records (empty before projection) and the diagnostics so far."""
        return {
            "records": [record.to_dict() for record in self.records],
            "diagnostics": self.diagnostics,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the projection records of a checkpoint."""
        self.records = [_record_from_dict(data) for data in state.get("records", [])]
        self.diagnostics = list(state.get("diagnostics", []))


def ramanseg_architecture(config: Mapping[str, Any], name: str, in_channels: int) -> dict[str, Any]:
    """:class:`~ramanseg.models.ramanseg.RamanSeg` keyword arguments from
    ``config["models"][name]``.

    Reads ``prototypes_per_class``, ``prototype_size``, ``prototype_channels``,
    ``addon_channels``, ``dropout`` and, if present, :data:`OPTIONAL_ARCHITECTURE_KEYS`
    (``stride``, ``head_layers``); the other arguments are :data:`ARCHITECTURE_DEFAULTS`,
    written out so that ``model.json`` describes the model completely.

    Args:
        config: the configuration.
        name: the model name (``ramanseg``, ``ramanseg_noproj``, ...).
        in_channels: channels of the preprocessed stacks.

    Returns:
        The keyword arguments.

    Raises:
        ConfigError: a missing key.
    """
    section = f"models.{name}"
    entry = require(config, section)
    architecture: dict[str, Any] = {"in_channels": int(in_channels), **ARCHITECTURE_DEFAULTS}
    for key in CONFIG_KEYS:
        architecture[key] = require(config, f"{section}.{key}")
    for key in OPTIONAL_ARCHITECTURE_KEYS:
        if key in entry:
            architecture[key] = entry[key]
    return architecture


def ramanseg_strategy(config: Mapping[str, Any], name: str, model: nn.Module) -> RamanSegStrategy:
    """The :class:`RamanSegStrategy` of ``config["models"][name]``.

    Args:
        config: the configuration (``models.<name>`` with ``projection``, ``epochs``,
            ``learning_rates``, ``loss_weights``, ``diversity_loss`` and optionally
            ``joint_lr_schedule``, default ``cosine``).
        name: the model name.
        model: the model built from :func:`ramanseg_architecture`.

    Returns:
        The strategy.

    Raises:
        ConfigError: a missing key.
        ValueError: invalid phase lengths, learning rates or loss weights.
    """
    section = f"models.{name}"
    entry = require(config, section)
    schedule = PhaseSchedule.from_config(entry, section)
    learning_rates = require(config, f"{section}.learning_rates")
    try:
        criterion = RamanSegLoss.from_config(entry)
    except ValueError as error:
        raise ValueError(f"{section}: {error}") from None
    # `patch`: the box is drawn on the training patch around the prototype's source.
    scope = entry.get("region_scope", "image")
    if scope not in REGION_SCOPES:
        raise ValueError(f"{section}.region_scope must be one of {list(REGION_SCOPES)}")
    window = int(require(config, "models.training.patch_size")) if scope == "patch" else None
    try:
        return RamanSegStrategy(
            model,
            criterion,
            schedule,
            learning_rates,
            percentile=entry.get("region_percentile", 95.0),
            region=entry.get("region", "protopnet"),
            region_window=window,
            assignment=entry.get("projection_assignment", "paper"),
            prototype_init=entry.get("prototype_init", "xavier"),
            seed=int(config.get("seed", 0)),
            joint_lr_schedule=entry.get("joint_lr_schedule", "cosine"),
        )
    except ValueError as error:
        raise ValueError(f"{section}: {error}") from None


#: The registry entry of both RamanSeg variants (``ramanseg``, ``ramanseg_noproj``): the
#: builders receive the model name and read its own configuration section.
ENTRY = ModelEntry(architecture=ramanseg_architecture, build=RamanSeg, strategy=ramanseg_strategy)
