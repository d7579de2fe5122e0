"""The phantom's settings and design: which samples and patients it has."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ramanseg.config import ConfigError, require


@dataclass(frozen=True)
class PhantomSettings:
    """The ``phantom`` section, checked."""

    patients: int
    samples: int
    height: int
    width: int
    seed: int


def phantom_settings(config: Mapping[str, Any]) -> PhantomSettings:
    """Read and check ``config["phantom"]``.

    Args:
        config: the workflow configuration (at least its ``phantom`` section).

    Raises:
        ConfigError: naming the offending ``phantom.*`` key.
    """
    values = {}
    minimum = {"patients": 1, "samples": 1, "height": 32, "width": 32, "seed": 0}
    for key, low in minimum.items():
        value = require(config, f"phantom.{key}")
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"phantom.{key} must be an integer >= {low}, got {value!r}")
        values[key] = value
    if values["samples"] < values["patients"]:
        raise ConfigError(
            f"phantom.samples ({values['samples']}) must be at least phantom.patients "
            f"({values['patients']}): every patient needs a sample"
        )
    return PhantomSettings(**values)


def phantom_design(config: Mapping[str, Any]) -> pd.DataFrame:
    """Which samples the phantom has and which patient each belongs to.

    Patients ``P01``, ``P02``, ... get between one and a few samples each, unevenly (a
    seeded multinomial over Dirichlet weights, at least one per patient, at most twice
    the average), as real cohorts do. For the demo's 10 patients / 32 samples and seed 0
    this gives sample counts that admit the paper's 19 / 8 / 5 patient-grouped split.
    Cheap: no image is generated.

    Args:
        config: the workflow configuration (``phantom.patients``, ``phantom.samples``,
            ``phantom.seed``).

    Returns:
        A DataFrame with columns ``sample_id``, ``patient_id``, one row per sample, in
        patient order; the row index is the sample's index for :func:`generate_sample`.

    Raises:
        ConfigError: if ``phantom.samples`` < ``phantom.patients`` or a key is invalid.
    """
    settings = phantom_settings(config)
    n_patients, n_samples = settings.patients, settings.samples
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 0]))
    # Cap the count per patient so no single patient dominates a split.
    cap = max(2, math.ceil(2 * n_samples / n_patients))
    counts = np.ones(n_patients, dtype=int)
    weights = rng.dirichlet(np.full(n_patients, 4.0))
    for _ in range(n_samples - n_patients):
        open_ = counts < cap
        # Fall back to uncapped when every patient is at the cap (tiny cohorts).
        p = weights * open_ if open_.any() else weights
        counts[rng.choice(n_patients, p=p / p.sum())] += 1
    width = max(2, len(str(n_patients)))
    rows = []
    for patient, count in enumerate(counts, start=1):
        patient_id = f"P{patient:0{width}d}"
        rows.extend((f"{patient_id}_S{k}", patient_id) for k in range(1, count + 1))
    return pd.DataFrame(rows, columns=["sample_id", "patient_id"])
