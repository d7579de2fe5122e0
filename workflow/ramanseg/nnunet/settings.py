"""The ``nnunet`` section of a validated configuration, typed, and the folder names it
implies (the workflow's rules and the package take them from here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from ramanseg.config import ConfigError, require
from ramanseg.nnunet.dataset import dataset_name
from ramanseg.nnunet.planners import plans_identifier


def model_folder_name(trainer: str, planner: str, configuration: str) -> str:
    """nnU-Net's name of a trained model's folder: ``<trainer>__<plans>__<configuration>``."""
    return f"{trainer}__{plans_identifier(planner)}__{configuration}"


@dataclass(frozen=True)
class PredictionSettings:
    """How nnU-Net's predictor runs (schema: ``nnunet.prediction`` and
    ``nnunet.fast_prediction``); the defaults are nnU-Net's own.

    Attributes:
        mirroring: test-time mirroring along every axis the trainer allows (4 forward
            passes per tile in 2-D instead of 1).
        tile_step_size: sliding-window step as a fraction of the patch (0.5: tiles
            overlap by half; 1: they only touch), in (0, 1].
        folds: the folds to ensemble: ``None`` for every trained fold, a tuple of fold
            indices, or a number ``k``: the ``k`` folds with the highest validation Dice
            (nnU-Net's ``fold_<k>/validation/summary.json``; all where fewer are trained).
        perform_everything_on_device: keep the sliding-window sums on the GPU (nnU-Net
            ignores it on a CPU).
        key: the section's dotted key, named in error messages (not compared).
    """

    mirroring: bool = True
    tile_step_size: float = 0.5
    folds: tuple[int, ...] | int | None = None
    perform_everything_on_device: bool = True
    key: str = field(default="nnunet.prediction", compare=False)

    @classmethod
    def from_section(cls, section: Mapping[str, Any], key: str) -> PredictionSettings:
        """Build from one validated prediction section (the schema filled in its defaults).

        Args:
            section: the section.
            key: its dotted key (``nnunet.prediction``), named in error messages.
        """
        folds = section["folds"]
        if folds == "all":
            folds = None
        elif not isinstance(folds, int):
            folds = tuple(int(fold) for fold in folds)
        return cls(
            mirroring=bool(section["mirroring"]),
            tile_step_size=float(section["tile_step_size"]),
            folds=folds,
            perform_everything_on_device=bool(section["perform_everything_on_device"]),
            key=key,
        )

    @property
    def needs_validation_dice(self) -> bool:
        """Whether :meth:`select_folds` ranks the folds by their validation Dice."""
        return isinstance(self.folds, int)

    def select_folds(
        self, trained: Sequence[int], validation_dice: Mapping[int, float] | None = None
    ) -> list[int]:
        """The folds to ensemble out of the ``trained`` ones.

        Args:
            trained: the folds the model has (or the split defines).
            validation_dice: each trained fold's validation Dice; needed when ``folds`` is
                a number (:attr:`needs_validation_dice`).

        Returns:
            Every trained fold for ``folds: all``; the listed folds in their order; or the
            ``k`` best folds by validation Dice (ties: the lower index; every fold where
            fewer are trained), in fold order.

        Raises:
            ConfigError: a listed fold that is not trained, naming the key.
        """
        trained = sorted(trained)
        if self.folds is None:
            return trained
        if isinstance(self.folds, int):
            if validation_dice is None:
                raise ValueError("the best folds need the folds' validation Dice")
            ranked = sorted(trained, key=lambda fold: (-validation_dice[fold], fold))
            return sorted(ranked[: self.folds])
        missing = sorted(set(self.folds) - set(trained))
        if missing:
            raise ConfigError(
                f"{self.key}.folds lists folds {missing} that this nnU-Net model does not "
                f'have (it has {trained}); list folds among those, or "all"'
            )
        return list(self.folds)


@dataclass(frozen=True)
class NnunetSettings:
    """nnU-Net's settings (schema: ``nnunet``) and the run's ``seed``, ``deterministic``
    and ``device``.

    Attributes:
        dataset_id: nnU-Net's dataset id.
        planner: the Residual-Encoder planner class name.
        configuration: ``2d``.
        trainer: the trainer class name.
        epochs, iterations_per_epoch, batch_size: our short trainer's settings (``None``:
            the trainer's own).
        fingerprint_voxels: foreground voxels sampled per channel for the fingerprint.
        keep_best_checkpoint: keep ``checkpoint_best.pth`` after training.
        prediction: the predictor's settings for the paper's results (``nnunet.prediction``,
            nnU-Net's defaults).
        fast_prediction: the fast preset for new slides (``nnunet.fast_prediction``).
        seed, deterministic, device: the run's.
    """

    dataset_id: int
    planner: str
    configuration: str
    trainer: str
    epochs: int | None
    iterations_per_epoch: int | None
    batch_size: int | None
    fingerprint_voxels: int
    keep_best_checkpoint: bool
    prediction: PredictionSettings
    fast_prediction: PredictionSettings
    seed: int
    deterministic: bool
    device: str

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> NnunetSettings:
        """Build from a configuration the schema validated (defaults filled in)."""
        nnunet = require(config, "nnunet")
        return cls(
            dataset_id=int(nnunet["dataset_id"]),
            planner=nnunet["planner"],
            configuration=nnunet["configuration"],
            trainer=nnunet["trainer"],
            epochs=nnunet.get("epochs"),
            iterations_per_epoch=nnunet.get("iterations_per_epoch"),
            batch_size=nnunet.get("batch_size"),
            fingerprint_voxels=int(nnunet["fingerprint_voxels"]),
            keep_best_checkpoint=bool(nnunet["keep_best_checkpoint"]),
            prediction=PredictionSettings.from_section(nnunet["prediction"], "nnunet.prediction"),
            fast_prediction=PredictionSettings.from_section(
                nnunet["fast_prediction"], "nnunet.fast_prediction"
            ),
            seed=int(config.get("seed", 0)),
            deterministic=bool(config.get("deterministic", False)),
            device=str(config.get("device", "auto")),
        )

    @property
    def dataset(self) -> str:
        """nnU-Net's dataset folder name (``Dataset501_RamanSeg``)."""
        return dataset_name(self.dataset_id)

    @property
    def plans(self) -> str:
        """The plans identifier the planner writes."""
        return plans_identifier(self.planner)

    def trained_model_dir(self, results: str | PurePath) -> PurePath:
        """The trained model's folder under nnU-Net's results folder ``results``."""
        return (
            PurePath(results) / self.dataset / f"{self.trainer}__{self.plans}__{self.configuration}"
        )
