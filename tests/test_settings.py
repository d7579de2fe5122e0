"""The typed settings of the data stages: built once from a validated configuration, with
the configuration's values and the schema's defaults, never defaults of their own."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from ramanseg import config as config_module
from ramanseg.config import ConfigError, load_config_files, parse_settings, validate_config
from ramanseg.phantom import PhantomSettings
from ramanseg.settings import (
    AnnotationSettings,
    BottleneckSettings,
    Channel,
    ChannelLayout,
    PreprocessSettings,
)
from tests.conftest import DEMO_CONFIG, PAPER_CONFIG

CONFIGURATIONS = {"demo": [DEMO_CONFIG], "paper": [DEMO_CONFIG, PAPER_CONFIG]}


@pytest.fixture(scope="module", params=sorted(CONFIGURATIONS))
def validated(request) -> dict:
    """The demo and the paper configuration, validated with defaults filled in."""
    return load_config_files(CONFIGURATIONS[request.param])


def test_channels_are_the_configured_ones(validated):
    layout = ChannelLayout.from_config(validated)
    configured = validated["channels"]
    assert layout.names == [c["name"] for c in configured]
    assert layout.roles == [c["role"] for c in configured]
    assert [c.wavenumber for c in layout.channels] == [c.get("wavenumber") for c in configured]
    assert len(layout) == len(configured)
    raman = [i for i, c in enumerate(configured) if c["role"] == "raman"]
    assert layout.raman_indices == raman
    assert layout.raman_wavenumbers == [configured[i]["wavenumber"] for i in raman]


def test_annotations_are_the_configured_ones(validated):
    section = validated["annotations"]
    settings = AnnotationSettings.from_config(validated)
    assert dict(settings.labels) == section["classes"]
    # The order of the classes gives the class-map values: it must survive.
    assert settings.class_names == list(section["classes"])
    assert [settings.class_value(n) for n in settings.class_names] == list(
        range(1, len(section["classes"]) + 1)
    )
    assert settings.foreground_classes == [n for n, v in section["classes"].items() if v == 1]
    assert settings.ignore == frozenset(section["ignore"])
    assert settings.unclassified == section["unclassified"]


def test_preprocessing_and_bottleneck_are_the_configured_ones(validated):
    section = validated["preprocess"]
    settings = PreprocessSettings.from_config(validated)
    assert {role: list(pair) for role, pair in settings.percentiles.items()} == dict(
        section["percentiles"]
    )
    assert settings.foreground_clusters == section["foreground_clusters"]
    assert list(settings.foreground_fraction) == section["foreground_fraction"]
    assert settings.drift_correction is section["drift_correction"]
    assert settings.nonfinite == section["nonfinite"]
    assert settings.seed == validated["seed"]
    bottleneck = BottleneckSettings.from_config(validated)
    assert bottleneck.reference_size == validated["bottleneck"]["reference_size"]
    assert list(bottleneck.sizes) == validated["bottleneck"]["sizes"]


def test_phantom_settings_are_the_configured_ones(validated):
    section = validated["phantom"]
    settings = PhantomSettings.from_config(validated)
    for key in ("patients", "samples", "height", "width", "seed"):
        assert getattr(settings, key) == section[key]
    assert dict(settings.variants) == section["variants"]
    assert settings.channels == ChannelLayout.from_config(validated)
    assert settings.annotations == AnnotationSettings.from_config(validated)


def test_settings_are_frozen(demo_config):
    layout = ChannelLayout.from_config(demo_config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        layout.channels = ()


def _with_schema_defaults(monkeypatch, changes: dict[str, object]) -> None:
    """Make ``load_schema("config")`` return the schema with other defaults.

    Args:
        changes: ``{"section.key": new default}``.
    """
    original = config_module.load_schema

    def patched(name: str) -> dict:
        schema = copy.deepcopy(original(name))
        for dotted, value in changes.items():
            node = schema
            for part in dotted.split("."):
                node = node["properties"][part]
            assert "default" in node, f"{dotted} has no default in the schema"
            node["default"] = value
        return schema

    monkeypatch.setattr(config_module, "load_schema", patched)


def test_every_default_comes_from_the_schema(monkeypatch, demo_config):
    """Change the schema's defaults: the typed settings follow, so none is repeated in code."""
    _with_schema_defaults(
        monkeypatch,
        {
            "seed": 11,
            "annotations.ignore": ["Region*"],
            "annotations.unclassified": "ignore",
            "preprocess.foreground_clusters": 4,
            "preprocess.foreground_fraction": [0.1, 0.9],
            "preprocess.drift_correction": False,
            "preprocess.nonfinite": "repair",
            "phantom.patients": 3,
            "phantom.samples": 5,
            "phantom.height": 40,
            "phantom.width": 50,
            "phantom.seed": 9,
            "phantom.variants.transposed": 0.5,
        },
    )
    # Only what has no default in the schema: every other key falls back to it.
    given = {
        "channels": demo_config["channels"],
        "annotations": {"classes": demo_config["annotations"]["classes"]},
        "preprocess": {"percentiles": demo_config["preprocess"]["percentiles"]},
        "phantom": {},
    }
    validated = validate_config(given, partial=True)
    annotations = AnnotationSettings.from_config(validated)
    assert annotations.ignore == {"Region*"} and annotations.unclassified == "ignore"
    preprocess = PreprocessSettings.from_config(validated)
    assert (preprocess.foreground_clusters, preprocess.foreground_fraction) == (4, (0.1, 0.9))
    assert (preprocess.drift_correction, preprocess.nonfinite, preprocess.seed) == (
        False,
        "repair",
        11,
    )
    phantom = PhantomSettings.from_config(validated)
    assert (phantom.patients, phantom.samples, phantom.height, phantom.width) == (3, 5, 40, 50)
    assert phantom.seed == 9 and phantom.variants["transposed"] == 0.5


SECTIONS = {
    "annotations": AnnotationSettings,
    "preprocess": PreprocessSettings,
    "phantom": PhantomSettings,
}


def _defaulted_keys(schema: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The key paths under ``schema`` that have a default."""
    found = []
    for name, node in schema.get("properties", {}).items():
        if "default" in node:
            found.append((*prefix, name))
        found += _defaulted_keys(node, (*prefix, name))
    return found


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_no_default_falls_back_in_code(demo_config, section):
    """Without a key the schema gives a default for, the typed settings cannot be built:
    they read the validated value and have no default of their own to fall back to."""
    schema = config_module.load_schema("config")
    keys = _defaulted_keys(schema["properties"][section], (section,))
    keys += [("seed",)] if section == "preprocess" else []
    # The dataset folder is the phantom command's --outdir (the workflow passes it).
    if section == "phantom":
        keys.remove(("phantom", "outdir"))
    assert keys
    for path in keys:
        config = copy.deepcopy(demo_config)
        node = config
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]
        with pytest.raises(KeyError):
            SECTIONS[section].from_config(config)


def test_a_section_a_command_needs_but_was_not_given_is_named():
    settings = parse_settings('{"channels": [{"name": "a", "role": "tpef"}]}')
    for build, key in (
        (AnnotationSettings.from_config, "annotations"),
        (PreprocessSettings.from_config, "preprocess"),
        (BottleneckSettings.from_config, "bottleneck"),
        (PhantomSettings.from_config, "phantom"),
    ):
        with pytest.raises(ConfigError, match=f"'{key}' is required here but missing"):
            build(settings)
    with pytest.raises(ConfigError, match="'channels' is required"):
        ChannelLayout.from_config({})


def test_a_rules_settings_are_not_checked_against_sections_it_does_not_pass():
    """The ``preprocess`` rule passes ``channels``, ``annotations``, ``preprocess`` and
    ``seed``: classes without the default ``interpret.ablation_class`` (Epithelium) must
    not stop it, though the default ``interpret`` section is filled in."""
    classes = {"annotations": {"classes": {"Tumor": 1, "Normal": 0}}}
    settings = parse_settings(json.dumps(classes))
    assert AnnotationSettings.from_config(settings).class_names == ["Tumor", "Normal"]
    # Given, the section is checked.
    with pytest.raises(ConfigError, match="ablation_class 'Epithelium' is not in"):
        parse_settings(json.dumps({**classes, "interpret": {}}))


def test_the_display_channel_is_the_raman_band_nearest_2930():
    layout = ChannelLayout(
        (Channel("a", "raman", 2850.0), Channel("b", "raman", 2940.0), Channel("c", "tpef"))
    )
    assert layout.display_index() == 1
    assert layout.display_index("c") == 2
    with pytest.raises(ConfigError, match="'d' is not a channel"):
        layout.display_index("d")
    # Without wavenumbers the first Raman channel, without Raman bands channel 0.
    assert ChannelLayout((Channel("t", "tpef"), Channel("r", "raman"))).display_index() == 1
    assert ChannelLayout((Channel("t", "tpef"),)).display_index() == 0


def test_the_config_accessors_are_the_typed_values(demo_config):
    """The accessors other stages still call are thin wrappers: one place."""
    layout = ChannelLayout.from_config(demo_config)
    annotations = AnnotationSettings.from_config(demo_config)
    assert config_module.channel_names(demo_config) == layout.names
    assert config_module.channel_roles(demo_config) == layout.roles
    assert config_module.raman_wavenumbers(demo_config) == layout.raman_wavenumbers
    assert config_module.display_channel_index(demo_config) == layout.display_index()
    assert config_module.class_names(demo_config) == annotations.class_names
    assert config_module.foreground_classes(demo_config) == annotations.foreground_classes


def test_more_classes_than_a_class_map_holds_are_rejected_by_the_schema():
    too_many = {"annotations": {"classes": {f"class {i}": 0 for i in range(255)}}}
    with pytest.raises(ConfigError, match=r"annotations\.classes: .* too many properties"):
        validate_config(too_many, partial=True)
    most = {"annotations": {"classes": {f"class {i}": 0 for i in range(254)}}}
    assert len(AnnotationSettings.from_config(validate_config(most, partial=True)).labels) == 254


def _without_stroma(config: dict) -> None:
    del config["annotations"]["classes"]["Stroma"]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"phantom": {"patients": 5, "samples": 4}}, "at least phantom.patients"),
        (
            {"phantom": {"variants": {"plain_tiff": 0.6, "channels_last": 0.5}}},
            "together ask for",
        ),
        (_without_stroma, r"must name the phantom's classes .*missing: \['Stroma'\]"),
        ({"channels": [{"name": "r", "role": "raman"}]}, r"channels\[0\]\.wavenumber"),
    ],
)
def test_what_only_the_phantom_needs_is_checked_when_its_settings_are_built(
    demo_config, change, match
):
    """Valid values that the phantom cannot write: a configuration for one's own data may
    hold them, so they stop only the phantom."""
    config = copy.deepcopy(demo_config)
    if callable(change):
        change(config)
    else:
        config = config_module.merge_configs(config, change)
    validated = validate_config(config)  # a valid configuration ...
    with pytest.raises(ConfigError, match=match):  # ... that the phantom cannot write
        PhantomSettings.from_config(validated)
