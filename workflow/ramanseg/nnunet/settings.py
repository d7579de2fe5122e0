"""The ``nnunet`` section of a validated configuration, typed, and the folder names it
implies (the workflow's rules and the package take them from here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from ramanseg.config import require
from ramanseg.nnunet.dataset import dataset_name
from ramanseg.nnunet.planners import plans_identifier


def model_folder_name(trainer: str, planner: str, configuration: str) -> str:
    """nnU-Net's name of a trained model's folder: ``<trainer>__<plans>__<configuration>``."""
    return f"{trainer}__{plans_identifier(planner)}__{configuration}"


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
