"""The phantom's settings and design: which samples and patients it has, and which
samples take which variant of the input contract."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ramanseg.config import ConfigError, require

#: The input contract's variants the phantom can write (``phantom.variants``), each the
#: fraction of samples that take it: an empty ``he`` column (no H&E image); the SRS stack
#: as a plain multi-page TIFF without metadata, or channels last ``(Y, X, C)`` with its
#: axes in the TIFF's metadata (both instead of the OME-TIFF); the image drawn
#: ``width x height`` instead of ``height x width``; lymphocyte aggregates annotated as the
#: extra class ``Immune cells``; one annotation without a class (a region of interest).
VARIANTS = (
    "without_he",
    "plain_tiff",
    "channels_last",
    "transposed",
    "immune_cells",
    "unclassified",
)

#: SRS file formats: the OME-TIFF (default) and the two variants that replace it.
SRS_FORMATS = ("ome", "plain_tiff", "channels_last")


@dataclass(frozen=True)
class PhantomSettings:
    """The ``phantom`` section, checked.

    Attributes:
        patients: the number of patients.
        samples: the number of samples (at least one per patient).
        height: image rows (columns of a ``transposed`` sample).
        width: image columns (rows of a ``transposed`` sample).
        seed: the seed everything derives from.
        variants: the fraction of samples taking each of :data:`VARIANTS` (0 = none).
    """

    patients: int
    samples: int
    height: int
    width: int
    seed: int
    variants: dict[str, float] = field(default_factory=lambda: dict.fromkeys(VARIANTS, 0.0))


@dataclass(frozen=True)
class SampleVariant:
    """How one sample departs from the default layout of the input contract.

    Attributes:
        he: whether an H&E image is written and named in the sample sheet.
        srs_format: one of :data:`SRS_FORMATS`.
        transposed: drawn ``width x height`` (rows and columns of the setting swapped).
        immune_cells: has lymphocyte aggregates, annotated as ``Immune cells``.
        unclassified: its annotations hold one feature without a class.
    """

    he: bool = True
    srs_format: str = "ome"
    transposed: bool = False
    immune_cells: bool = False
    unclassified: bool = False


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
    values["variants"] = _variant_fractions(config)
    return PhantomSettings(**values)


def _variant_fractions(config: Mapping[str, Any]) -> dict[str, float]:
    """``phantom.variants`` checked, every variant present (absent ones 0)."""
    given = require(config, "phantom").get("variants") or {}
    unknown = sorted(set(given) - set(VARIANTS))
    if unknown:
        raise ConfigError(f"phantom.variants has unknown keys {unknown}; known: {list(VARIANTS)}")
    fractions = {}
    for key in VARIANTS:
        value = given.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ConfigError(
                f"phantom.variants.{key} must be a fraction of the samples in [0, 1], got {value!r}"
            )
        fractions[key] = float(value)
    return fractions


def variant_count(fraction: float, samples: int) -> int:
    """The number of samples that take a variant: rounded up, so any fraction > 0 gives
    at least one sample.

    Args:
        fraction: the variant's ``phantom.variants`` value, in [0, 1].
        samples: the number of samples.
    """
    # The tolerance keeps an exact product (0.1 x 30 = 3.0000000000000004) from rounding up.
    return min(samples, math.ceil(fraction * samples - 1e-9))


def sample_variants(config: Mapping[str, Any]) -> list[SampleVariant]:
    """Which variant each sample of :func:`phantom_design` takes.

    Each variant goes to :func:`variant_count` samples, chosen by a seeded shuffle of its
    own (``SeedSequence([seed, 5, k])`` for the ``k``-th of :data:`VARIANTS`), so that
    variants mix: a sample may, say, lack its H&E and have a channels-last stack. The two
    SRS formats share one shuffle and never fall on the same sample. Cheap: no image is
    generated.

    Args:
        config: the workflow configuration (``phantom``).

    Returns:
        One :class:`SampleVariant` per sample, in design order; all default when
        ``phantom.variants`` is absent or all 0.

    Raises:
        ConfigError: a fraction outside [0, 1], an unknown key, or more samples for the
            two SRS formats together than there are samples.
    """
    settings = phantom_settings(config)
    n = settings.samples
    counts = {key: variant_count(settings.variants[key], n) for key in VARIANTS}
    if counts["plain_tiff"] + counts["channels_last"] > n:
        raise ConfigError(
            f"phantom.variants.plain_tiff and phantom.variants.channels_last together ask "
            f"for {counts['plain_tiff'] + counts['channels_last']} of {n} samples; each "
            "sample has one SRS file, so their sum must be at most 1"
        )

    def shuffled(key: str) -> list[int]:
        seeds = np.random.SeedSequence([settings.seed, 5, VARIANTS.index(key)])
        return np.random.default_rng(seeds).permutation(n).tolist()

    taking = {key: set(shuffled(key)[: counts[key]]) for key in VARIANTS}
    # channels_last continues plain_tiff's shuffle, so the two formats never meet.
    formats = shuffled("plain_tiff")
    taking["channels_last"] = set(formats[counts["plain_tiff"] :][: counts["channels_last"]])
    return [
        SampleVariant(
            he=i not in taking["without_he"],
            srs_format=next(
                (key for key in ("plain_tiff", "channels_last") if i in taking[key]), "ome"
            ),
            transposed=i in taking["transposed"],
            immune_cells=i in taking["immune_cells"],
            unclassified=i in taking["unclassified"],
        )
        for i in range(n)
    ]


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
