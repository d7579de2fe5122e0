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
from ramanseg.phantom.difficulty import Difficulty
from ramanseg.phantom.tissue import EXTRA_CLASSES, TISSUE_CLASSES
from ramanseg.settings import AnnotationSettings, ChannelLayout

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
    """What the phantom writes: the ``phantom`` section, and the ``channels`` and
    ``annotations`` it draws and annotates.

    Attributes:
        patients: the number of patients.
        samples: the number of samples (at least one per patient).
        height: image rows (columns of a ``transposed`` sample).
        width: image columns (rows of a ``transposed`` sample).
        seed: the seed everything derives from.
        variants: the fraction of samples taking each of :data:`VARIANTS` (0 = none).
        channels: the channels rendered, in file order.
        annotations: the classes annotated, in class-map order.
        difficulty: the ``phantom.difficulty`` knobs (all 0 by default).
    """

    patients: int
    samples: int
    height: int
    width: int
    seed: int
    variants: Mapping[str, float]
    channels: ChannelLayout
    annotations: AnnotationSettings
    difficulty: Difficulty = field(default_factory=Difficulty)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PhantomSettings:
        """The phantom's settings from a validated configuration.

        The schema checked each value and filled in the defaults; this checks only what
        relates them, and only the phantom needs (see :func:`phantom_problems`).

        Args:
            config: the validated configuration (``phantom``, ``channels``,
                ``annotations``).

        Raises:
            ConfigError: a missing section, or every problem of :func:`phantom_problems`.
        """
        section = require(config, "phantom")
        settings = cls(
            patients=section["patients"],
            samples=section["samples"],
            height=section["height"],
            width=section["width"],
            seed=section["seed"],
            variants={key: float(section["variants"][key]) for key in VARIANTS},
            channels=ChannelLayout.from_config(config),
            annotations=AnnotationSettings.from_config(config),
            difficulty=Difficulty.from_section(section["difficulty"]),
        )
        problems = phantom_problems(settings)
        if problems:
            raise ConfigError("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))
        return settings


def phantom_problems(settings: PhantomSettings) -> list[str]:
    """What the phantom cannot write with these settings, though each value is valid.

    These relations matter only when the phantom is written (a configuration for your
    own data need not name the phantom's classes), so they are checked here rather than
    in :func:`ramanseg.config.check_config_semantics`: fewer samples than patients; more
    samples for the two SRS formats together than there are samples; a class the phantom
    draws that ``annotations`` neither maps nor ignores; unclassified features that
    ``annotations.unclassified: error`` would reject; a Raman channel without a
    wavenumber (the phantom renders the spectrum at it).

    Args:
        settings: the phantom's settings.

    Returns:
        One line per problem, naming the keys (empty if none).
    """
    n = settings.samples
    problems = []
    if n < settings.patients:
        problems.append(
            f"phantom.samples ({n}) must be at least phantom.patients "
            f"({settings.patients}): every patient needs a sample"
        )
    formats = sum(variant_count(settings.variants[key], n) for key in SRS_FORMATS[1:])
    if formats > n:
        problems.append(
            f"phantom.variants.plain_tiff and phantom.variants.channels_last together ask "
            f"for {formats} of {n} samples; each sample has one SRS file, so their sum must "
            "be at most 1"
        )
    drawn = list(TISSUE_CLASSES)
    if settings.variants["immune_cells"] > 0:
        drawn += EXTRA_CLASSES
    annotations = settings.annotations
    missing = [name for name in drawn if name not in annotations.labels]
    missing = [name for name in missing if name not in annotations.ignore]
    if missing:
        problems.append(
            f"annotations.classes must name the phantom's classes {drawn} "
            f"(or annotations.ignore list them); missing: {missing}"
        )
    if settings.variants["unclassified"] > 0 and annotations.unclassified != "ignore":
        problems.append(
            "phantom.variants.unclassified writes annotations without a class, which "
            f"annotations.unclassified: {annotations.unclassified} rejects; set "
            "annotations.unclassified: ignore"
        )
    problems += [
        f"channels[{i}].wavenumber is required for a Raman channel of the phantom"
        for i, channel in enumerate(settings.channels.channels)
        if channel.role == "raman" and channel.wavenumber is None
    ]
    return problems


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


def variant_count(fraction: float, samples: int) -> int:
    """The number of samples that take a variant: rounded up, so any fraction > 0 gives
    at least one sample.

    Args:
        fraction: the variant's ``phantom.variants`` value, in [0, 1].
        samples: the number of samples.
    """
    # The tolerance keeps an exact product (0.1 x 30 = 3.0000000000000004) from rounding up.
    return min(samples, math.ceil(fraction * samples - 1e-9))


def sample_variants(settings: PhantomSettings) -> list[SampleVariant]:
    """Which variant each sample of :func:`phantom_design` takes.

    Each variant goes to :func:`variant_count` samples, chosen by a seeded shuffle of its
    own (``SeedSequence([seed, 5, k])`` for the ``k``-th of :data:`VARIANTS`), so that
    variants mix: a sample may, say, lack its H&E and have a channels-last stack. The two
    SRS formats share one shuffle and never fall on the same sample. Cheap: no image is
    generated.

    Args:
        settings: the phantom's settings (``samples``, ``seed``, ``variants``).

    Returns:
        One :class:`SampleVariant` per sample, in design order; all default when every
        ``phantom.variants`` fraction is 0.
    """
    n = settings.samples
    counts = {key: variant_count(settings.variants[key], n) for key in VARIANTS}

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


def phantom_design(settings: PhantomSettings) -> pd.DataFrame:
    """Which samples the phantom has and which patient each belongs to.

    Patients ``P01``, ``P02``, ... get between one and a few samples each, unevenly (a
    seeded multinomial over Dirichlet weights, at least one per patient, at most twice
    the average), as real cohorts do. For the demo's 10 patients / 32 samples and seed 0
    this gives sample counts that admit the paper's 19 / 8 / 5 patient-grouped split.
    Cheap: no image is generated.

    Args:
        settings: the phantom's settings (``patients``, ``samples``, ``seed``).

    Returns:
        A DataFrame with columns ``sample_id``, ``patient_id``, one row per sample, in
        patient order; the row index is the sample's index for :func:`generate_sample`.
    """
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
