"""Typed settings of the data stages, built once from a validated configuration.

:func:`ramanseg.config.validate_config` (or :func:`ramanseg.config.parse_settings`) checks
a configuration against the JSON schema, fills in the schema's defaults and checks the
relations between keys (:func:`ramanseg.config.check_config_semantics`). The classes here
turn the sections the data stages read into frozen objects, once per command, right after
that: each ``from_config`` trusts the validated configuration and repeats neither a check
nor a default. The functions below them take these objects, never the configuration.

* :class:`ChannelLayout` (``channels``): names, roles, wavenumbers, the Raman channels and
  the channel a figure shows (:meth:`ChannelLayout.display_index`);
* :class:`AnnotationSettings` (``annotations``): the classes in class-map order with their
  labels, the ignored classes, what happens to features without a class;
* :class:`PreprocessSettings` (``preprocess`` and ``seed``): percentiles per channel role,
  tissue detection, drift correction, non-finite values.

A section that a command needs but was not given (a rule's ``--settings`` holds only the
sections its command reads) is a :class:`~ramanseg.config.ConfigError` naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ramanseg.config import ConfigError, require

#: The Raman band shown wherever a figure shows one channel (the CH3 stretch near
#: 2930 cm-1, the paper's "cellular" peak, bright in tumour).
DISPLAY_WAVENUMBER = 2930.0


@dataclass(frozen=True)
class Channel:
    """One acquired channel.

    Attributes:
        name: the channel's name (written as the OME channel name).
        role: ``raman``, ``transmission``, ``tpef`` or ``shg``.
        wavenumber: the Raman shift in cm-1 (Raman bands; ``None`` otherwise).
    """

    name: str
    role: str
    wavenumber: float | None = None


@dataclass(frozen=True)
class ChannelLayout:
    """The ``channels`` section: the acquired channels in file order (channels first).

    Attributes:
        channels: one :class:`Channel` per plane of the SRS stack, in file order.
    """

    channels: tuple[Channel, ...]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ChannelLayout:
        """The channel layout of a validated configuration.

        Args:
            config: the validated configuration (``channels``).

        Raises:
            ConfigError: ``channels`` is missing (a ``--settings`` without it).
        """
        return cls(
            tuple(
                Channel(
                    name=channel["name"],
                    role=channel["role"],
                    wavenumber=channel.get("wavenumber"),
                )
                for channel in require(config, "channels")
            )
        )

    def __len__(self) -> int:
        return len(self.channels)

    @property
    def names(self) -> list[str]:
        """The channel names, in file order."""
        return [channel.name for channel in self.channels]

    @property
    def roles(self) -> list[str]:
        """The channel roles, in file order."""
        return [channel.role for channel in self.channels]

    @property
    def raman_indices(self) -> list[int]:
        """The positions of the Raman channels in the stack."""
        return [i for i, channel in enumerate(self.channels) if channel.role == "raman"]

    @property
    def raman_wavenumbers(self) -> list[float | None]:
        """The wavenumbers (cm-1) of the Raman channels, in file order."""
        return [self.channels[i].wavenumber for i in self.raman_indices]

    def display_index(self, name: str = "auto") -> int:
        """The channel a figure shows: the one place that chooses it.

        Args:
            name: a channel name, or ``auto``: the Raman band nearest
                :data:`DISPLAY_WAVENUMBER` (else the first Raman channel, else channel 0).

        Raises:
            ConfigError: a name that is not a configured channel.
        """
        names = self.names
        if name != "auto":
            if name not in names:
                raise ConfigError(f"display channel {name!r} is not a channel; channels: {names}")
            return names.index(name)
        nearest = [
            (abs(float(channel.wavenumber) - DISPLAY_WAVENUMBER), index)
            for index, channel in enumerate(self.channels)
            if channel.role == "raman" and channel.wavenumber is not None
        ]
        if nearest:
            return min(nearest)[1]
        return next(iter(self.raman_indices), 0)


@dataclass(frozen=True)
class AnnotationSettings:
    """The ``annotations`` section: how QuPath classes become the class map and the mask.

    Attributes:
        labels: each class name mapped to its binary label (1 = foreground), in
            class-map order (the first class is value 1 of the class map; 0 = not
            annotated).
        ignore: class names whose features are skipped without error.
        unclassified: ``error`` or ``ignore``: what happens to features without a class.
    """

    labels: Mapping[str, int]
    ignore: frozenset[str]
    unclassified: str

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AnnotationSettings:
        """The annotation settings of a validated configuration.

        Args:
            config: the validated configuration (``annotations``).

        Raises:
            ConfigError: ``annotations`` is missing (a ``--settings`` without it).
        """
        section = require(config, "annotations")
        return cls(
            labels=dict(section["classes"]),
            ignore=frozenset(section["ignore"]),
            unclassified=section["unclassified"],
        )

    @property
    def class_names(self) -> list[str]:
        """The class names in class-map order (value 1 is the first)."""
        return list(self.labels)

    @property
    def foreground_classes(self) -> list[str]:
        """The classes mapped to the foreground label (the paper: Tumor and Necrosis)."""
        return [name for name, label in self.labels.items() if label == 1]

    def class_value(self, name: str) -> int:
        """The class-map value of a configured class (1 + its position)."""
        return self.class_names.index(name) + 1


@dataclass(frozen=True)
class PreprocessSettings:
    """The ``preprocess`` section (paper section 3.1) and the seed of tissue detection.

    Attributes:
        percentiles: ``{role: (low, high)}`` in percent: each channel is scaled from its
            low to its high percentile.
        foreground_clusters: k-means clusters of tissue detection.
        foreground_fraction: ``(low, high)``: the plausible fraction of tissue in an image.
        drift_correction: whether column-wise drift is corrected.
        nonfinite: ``reject`` or ``repair``: what happens to NaN and infinite pixels.
        seed: the random state of the k-means of tissue detection (the global ``seed``).
    """

    percentiles: Mapping[str, tuple[float, float]]
    foreground_clusters: int
    foreground_fraction: tuple[float, float]
    drift_correction: bool
    nonfinite: str
    seed: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PreprocessSettings:
        """The preprocessing settings of a validated configuration.

        Args:
            config: the validated configuration (``preprocess``, ``seed``).

        Raises:
            ConfigError: ``preprocess`` or ``preprocess.percentiles`` is missing (neither
                has a default).
        """
        section = require(config, "preprocess")
        low, high = section["foreground_fraction"]
        return cls(
            percentiles={
                role: (pair[0], pair[1])
                for role, pair in require(config, "preprocess.percentiles").items()
            },
            foreground_clusters=section["foreground_clusters"],
            foreground_fraction=(low, high),
            drift_correction=section["drift_correction"],
            nonfinite=section["nonfinite"],
            seed=config["seed"],
        )


@dataclass(frozen=True)
class BottleneckSettings:
    """The ``bottleneck`` section (paper section 3.2.1, Table 1).

    Attributes:
        reference_size: the side (pixels) every mask is resized to first.
        sizes: the feature-map sides (pixels) the masks are downsampled to.
    """

    reference_size: int
    sizes: tuple[int, ...]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BottleneckSettings:
        """The bottleneck settings of a validated configuration.

        Args:
            config: the validated configuration (``bottleneck``).

        Raises:
            ConfigError: ``bottleneck`` is missing (a ``--settings`` without it).
        """
        section = require(config, "bottleneck")
        return cls(reference_size=section["reference_size"], sizes=tuple(section["sizes"]))
