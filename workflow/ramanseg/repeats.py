"""Which extra training runs the workflow plans: one per fold, one per extra seed.

Cross-validated evaluation (``cross_validation``, :mod:`ramanseg.cross_validation`)
and repeated seeds (``seeds``, :mod:`ramanseg.seeds`) both train each model again. The
runs are named like the model folders they write, below ``results/models/`` and
``results/predictions/``:

* ``cv/fold<k>/<model>``: trained on fold ``k``'s split (:func:`ramanseg.split.fold_split`),
  predicting the fold's held-out samples;
* ``seed<k>/<model>``: trained with seed ``k`` on the main split, predicting the test
  samples; seed ``k`` equal to the global ``seed`` is the main run ``<model>`` itself.
  nnU-Net's run ``seed<k>/nnunet`` trains all its folds into ``results/nnunet/seed<k>/trained``
  from the main run's preprocessed data.

This module imports nothing heavy: every Snakemake run reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ramanseg.catalog import EVALUATED_MODELS
from ramanseg.config import ConfigError

#: The models trained once per fold: every model of the results table (nnU-Net's own
#: folds already are).
CV_MODELS: tuple[str, ...] = EVALUATED_MODELS
#: The models trained once per seed: every model of the results table too.
SEED_MODELS: tuple[str, ...] = EVALUATED_MODELS


@dataclass(frozen=True)
class RepeatSettings:
    """The repeated trainings of a validated configuration.

    Attributes:
        cross_validation: ``cross_validation``.
        n_folds: ``split.folds``.
        seeds: ``seeds``, in the configured order.
        seed: the global ``seed`` (the main run's).
    """

    cross_validation: bool
    n_folds: int
    seeds: tuple[int, ...]
    seed: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RepeatSettings:
        """Build from a validated configuration.

        Raises:
            ConfigError: cross-validation with fewer than 2 folds.
        """
        settings = cls(
            cross_validation=bool(config["cross_validation"]),
            n_folds=int(config["split"]["folds"]),
            seeds=tuple(int(seed) for seed in config["seeds"]),
            seed=int(config["seed"]),
        )
        if settings.cross_validation and settings.n_folds < 2:
            raise ConfigError(
                f"cross_validation needs at least 2 folds, but split.folds is "
                f"{settings.n_folds}; set split.folds to 2 or more, or cross_validation to false"
            )
        return settings

    @property
    def repeats_seeds(self) -> bool:
        """More than one seed: the seed table is made."""
        return len(self.seeds) > 1

    @property
    def folds(self) -> range:
        """The folds trained for the cross-validated evaluation (none when it is off)."""
        return range(self.n_folds if self.cross_validation else 0)

    def seed_run(self, seed: int, model: str) -> str:
        """The run of ``model`` with ``seed``: the main run for the global seed."""
        return model if seed == self.seed else f"seed{seed}/{model}"

    def seed_runs(self, model: str) -> list[str]:
        """Every seed's run of ``model`` (empty with one seed: nothing is repeated)."""
        if not self.repeats_seeds:
            return []
        return [self.seed_run(seed, model) for seed in self.seeds]

    @staticmethod
    def fold_run(fold: int, model: str) -> str:
        """The run of ``model`` on fold ``fold``."""
        return f"cv/fold{fold}/{model}"
