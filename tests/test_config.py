"""The configuration files and their schema."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml
from snakemake.cli import parse_config as snakemake_parse_config
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate as snakemake_validate

from ramanseg.config import (
    SCHEMA_DIR,
    ConfigError,
    channel_names,
    channel_roles,
    check_config_semantics,
    class_names,
    coerce_command_line_values,
    foreground_classes,
    load_config_files,
    merge_configs,
    parse_settings,
    raman_wavenumbers,
    validate_config,
)
from tests.conftest import DEMO_CONFIG, PAPER_CONFIG

SCHEMA = str(SCHEMA_DIR / "config.schema.yaml")


def test_demo_config_has_the_papers_channel_layout(demo_config):
    names = channel_names(demo_config)
    roles = channel_roles(demo_config)
    assert len(names) == 24 == len(set(names))
    assert roles == ["raman"] * 21 + ["transmission", "tpef", "shg"]
    wavenumbers = raman_wavenumbers(demo_config)
    assert wavenumbers[0] == 2802.0 and wavenumbers[-1] == 3094.0
    assert wavenumbers == sorted(wavenumbers)


def test_demo_config_maps_tumor_and_necrosis_to_foreground(demo_config):
    assert foreground_classes(demo_config) == ["Tumor", "Necrosis"]
    assert class_names(demo_config)[:2] == ["Tumor", "Necrosis"]


def test_paper_settings_layer_over_the_demo():
    paper = load_config_files([DEMO_CONFIG, PAPER_CONFIG])
    assert (paper["split"]["train"], paper["split"]["val"], paper["split"]["test"]) == (19, 8, 5)
    assert paper["split"]["folds"] == 5
    assert paper["models"]["ramanseg"]["prototypes_per_class"] == 15
    assert paper["models"]["ramanseg_noproj"]["prototypes_per_class"] == 60
    assert paper["models"]["ramanseg_noproj"]["addon_channels"] == 128
    assert paper["models"]["ramanseg_noproj"]["dropout"] == 0.5
    assert paper["models"]["ramanseg_noproj"]["projection"] is False
    assert paper["models"]["unet"]["learning_rate"] == 1e-4
    assert paper["models"]["unet"]["weight_decay"] == 1e-3
    assert paper["nnunet"]["trainer"] == "nnUNetTrainer"
    # The data section is untouched: the paper's settings apply to the configured data.
    assert paper["samplesheet"] == ""
    assert paper["phantom"]["samples"] == 32 and paper["phantom"]["patients"] == 10


def test_paper_yaml_holds_no_user_data_path():
    with PAPER_CONFIG.open() as handle:
        assert "samplesheet" not in yaml.safe_load(handle)


def test_wrong_type_is_rejected_naming_the_field(demo_config):
    bad = copy.deepcopy(demo_config)
    bad["split"]["train"] = "nineteen"
    with pytest.raises(ConfigError, match=r"split\.train: 'nineteen' is not of type 'integer'"):
        validate_config(bad)


def test_wrong_type_is_rejected_by_snakemakes_validate(demo_config):
    bad = copy.deepcopy(demo_config)
    bad["preprocess"]["percentiles"]["raman"] = [5, "95"]
    with pytest.raises(WorkflowError, match=r"'95' is not of type 'number'") as info:
        snakemake_validate(bad, SCHEMA)
    assert "percentiles" in str(info.value) and "raman" in str(info.value)


def test_unknown_key_is_rejected_naming_it(demo_config):
    bad = copy.deepcopy(demo_config)
    bad["preprocess"]["percentile"] = {"raman": [5, 95]}
    with pytest.raises(ConfigError, match=r"preprocess: .*'percentile' was unexpected"):
        validate_config(bad)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("device", "gpu", r"device: 'gpu' does not match"),
        ("channels", [{"name": "A", "role": "fluorescence"}], r"channels\.0\.role"),
        ("annotations", {"classes": {"Tumor": 2}}, r"annotations\.classes\.Tumor"),
    ],
)
def test_invalid_values_name_their_key(demo_config, key, value, message):
    bad = copy.deepcopy(demo_config)
    bad[key] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(bad)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"does-not-exist\.yaml"):
        load_config_files([tmp_path / "does-not-exist.yaml"])


def test_settings_accept_a_subset_and_fill_defaults():
    settings = parse_settings('{"split": {"train": 3, "val": 1, "test": 1}}')
    assert settings["split"]["folds"] == 5
    with pytest.raises(ConfigError, match=r"split\.test"):
        parse_settings('{"split": {"train": 3, "val": 1, "test": "1"}}')
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_settings("{split")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("split:\n  train: 3\n   val: 1\n", 3),  # a bad indent
        ("annotations:\n  classes: {Tumor: 1\n", 3),  # an unclosed flow mapping
        ("seed: 0\n\tdevice: cpu\n", 2),  # a tab
    ],
)
def test_yaml_syntax_error_names_the_file_and_line(tmp_path, text, line):
    # Issue 13, defect 9: yaml's own exception reached the user as a traceback.
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"'{path}' is not valid YAML at line {line}\b"):
        load_config_files([DEMO_CONFIG, path])
    with pytest.raises(ConfigError, match=rf"'{path}' is not valid YAML at line {line}\b"):
        parse_settings(f"@{path}")


def test_settings_file_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.json' does not exist"):
        parse_settings(f"@{tmp_path / 'nope.json'}")


def test_config_file_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfseed: 7\n")
    assert load_config_files([DEMO_CONFIG, path])["seed"] == 7


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("percentiles.raman", [95, 5], "preprocess.percentiles.raman: low 95 must be below high 5"),
        ("percentiles.shg", [50, 50], "preprocess.percentiles.shg: low 50 must be below high 50"),
        ("foreground_fraction", [0.9, 0.1], "preprocess.foreground_fraction: low 0.9 must be"),
    ],
)
def test_low_above_high_is_rejected_naming_the_key(demo_config, key, value, message):
    # Each number passes the schema; only their order is wrong.
    bad = copy.deepcopy(demo_config)
    section, _, name = key.rpartition(".")
    (bad["preprocess"][section] if section else bad["preprocess"])[name] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config_semantics(bad)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(bad)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_settings(json.dumps({"preprocess": bad["preprocess"]}))


def test_semantic_checks_pass_valid_and_partial_configs(demo_config):
    check_config_semantics(demo_config)
    check_config_semantics({"split": {"train": 3, "val": 1, "test": 1}})


def test_cli_with_low_above_high_in_a_config_file_exits_2(tmp_path, capsys):
    from ramanseg.cli import main

    override = tmp_path / "override.yaml"
    override.write_text("preprocess:\n  percentiles:\n    raman: [95, 5]\n")
    args = ["preprocess", "--sample", "S1", "--srs", "x.tif", "--annotations", "x.geojson"]
    args += ["--outdir", str(tmp_path / "out"), "--config", str(DEMO_CONFIG), str(override)]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert "preprocess.percentiles.raman: low 95 must be below high 5" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (["seeds=[0,1,2]"], {"seeds": [0, 1, 2]}),
        (["cross_validation=true", "seed=3"], {"cross_validation": True, "seed": 3}),
        (["split={folds: 3}"], {"split": {"folds": 3}}),
        # nnU-Net's folds are "all", a list of folds or a count (a oneOf).
        (
            ["nnunet={prediction: {folds: [0, 1], tile_step_size: 1e-1, mirroring: false}}"],
            {
                "nnunet": {
                    "prediction": {"folds": [0, 1], "tile_step_size": 0.1, "mirroring": False}
                }
            },
        ),
        (["nnunet={prediction: {folds: all}}"], {"nnunet": {"prediction": {"folds": "all"}}}),
        (["nnunet={fast_prediction: {folds: 3}}"], {"nnunet": {"fast_prediction": {"folds": 3}}}),
        # `KEY=` (None) unsets a path.
        (["model_package="], {"model_package": ""}),
        # Strings where the schema wants strings stay strings.
        (["predict={models: [ramanseg, unet]}"], {"predict": {"models": ["ramanseg", "unet"]}}),
    ],
)
def test_command_line_values_take_the_schemas_types(demo_config, entries, expected):
    # The values exactly as Snakemake's `--config` hands them over.
    coerced = coerce_command_line_values(snakemake_parse_config(entries))
    assert coerced == expected
    validate_config(merge_configs(demo_config, coerced))


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["seeds=[a]"], r"seeds\.0: 'a' is not of type 'integer'"),
        (["seeds=[-1]"], r"seeds\.0: -1 is less than the minimum of 0"),
        (["cross_validation=maybe"], r"cross_validation: 'maybe' is not of type 'boolean'"),
        (["split={folds: three}"], r"split\.folds: 'three' is not of type 'integer'"),
    ],
)
def test_unparsable_command_line_values_are_named(demo_config, entries, message):
    coerced = coerce_command_line_values(snakemake_parse_config(entries))
    with pytest.raises(ConfigError, match=message):
        validate_config(merge_configs(demo_config, coerced))
