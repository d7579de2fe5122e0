"""RamanSeg's training schedule: which phase each epoch belongs to, and when to project.

The phases themselves (what trains in each) are :data:`ramanseg.models.ramanseg.PHASES` and
:func:`ramanseg.models.ramanseg.set_phase`; the strategy that runs them is
:class:`ramanseg.models.ramanseg_training.RamanSegStrategy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ramanseg.config import ConfigError, require
from ramanseg.models.ramanseg import PHASES

__all__ = ["PhaseSchedule"]


def _non_negative_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return value


@dataclass(frozen=True)
class PhaseSchedule:
    """Which training phase each epoch belongs to, and when prototypes are projected.

    Epochs ``1 .. warmup`` are warm-up, the next ``joint`` epochs joint training, the last
    ``last_layer`` epochs last-layer training. With ``projection``, prototypes are projected
    at the end of the last joint (or, without joint epochs, warm-up) epoch.

    Attributes:
        warmup: warm-up epochs.
        joint: joint epochs.
        last_layer: last-layer epochs.
        projection: project the prototypes.

    Raises:
        ValueError: a negative or non-integer count, or no warm-up or joint epoch (the
            last-layer phase alone trains nothing that projection could use, and a
            projection-free model needs its prototypes trained).
    """

    warmup: int
    joint: int
    last_layer: int
    projection: bool

    def __post_init__(self) -> None:
        for name in ("warmup", "joint", "last_layer"):
            _non_negative_int(getattr(self, name), f"epochs.{name}")
        if not isinstance(self.projection, bool):
            raise ValueError(f"projection must be true or false, got {self.projection!r}")
        if self.warmup + self.joint < 1:
            raise ValueError(
                "RamanSeg needs at least one warm-up or joint epoch (epochs.warmup + "
                f"epochs.joint >= 1), got warmup={self.warmup}, joint={self.joint}"
            )

    @classmethod
    def from_config(
        cls, entry: Mapping[str, Any], section: str = "models.ramanseg"
    ) -> PhaseSchedule:
        """The schedule of a ``models.ramanseg`` / ``models.ramanseg_noproj`` entry.

        Args:
            entry: the entry (``epochs.{warmup,joint,last_layer}``, ``projection``).
            section: its dotted name, for error messages.

        Returns:
            The schedule.

        Raises:
            ConfigError: a missing key.
            ValueError: an invalid count (see the class).
        """
        epochs = require(entry, "epochs")
        if not isinstance(epochs, Mapping):
            raise ConfigError(f"{section}.epochs must be a mapping of phase to epochs")
        counts = {}
        for phase in PHASES:
            if phase not in epochs:
                raise ConfigError(f"configuration key '{section}.epochs.{phase}' is missing")
            counts[phase] = epochs[phase]
        try:
            return cls(projection=require(entry, "projection"), **counts)
        except ConfigError as error:
            raise ConfigError(f"{section}: {error}") from None
        except ValueError as error:
            raise ValueError(f"{section}: {error}") from None

    @property
    def epochs(self) -> int:
        """All epochs: the sum of the phases."""
        return self.warmup + self.joint + self.last_layer

    @property
    def projection_epoch(self) -> int | None:
        """The epoch at whose end prototypes are projected; None without projection."""
        return self.warmup + self.joint if self.projection else None

    def phase(self, epoch: int) -> str:
        """The phase of ``epoch`` (counted from 1): ``warmup``, ``joint`` or ``last_layer``.

        Raises:
            ValueError: an epoch outside ``1 .. epochs``.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= self.epochs:
            raise ValueError(f"epoch must be in 1..{self.epochs}, got {epoch!r}")
        if epoch <= self.warmup:
            return "warmup"
        if epoch <= self.warmup + self.joint:
            return "joint"
        return "last_layer"
