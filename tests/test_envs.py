"""The conda environments pin exactly the versions of pyproject.toml."""

from __future__ import annotations

import tomllib

import pytest
import yaml
from packaging.requirements import Requirement

from tests.conftest import REPO

ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))


def _pins(requirements):
    pins = {}
    for text in requirements:
        requirement = Requirement(text)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"{text} is not pinned"
        pins[requirement.name.lower()] = specifiers[0].version
    return pins


@pytest.fixture(scope="module")
def pyproject_pins():
    with (REPO / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)["project"]
    pins = _pins(project["dependencies"])
    pins.update(_pins(project["optional-dependencies"]["test"]))
    return pins


def test_there_are_environments_for_the_rule_groups():
    assert {path.stem for path in ENV_FILES} >= {"ramanseg", "torch", "nnunet"}


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda path: path.name)
def test_environment_pins_equal_pyproject(env_file, pyproject_pins):
    with env_file.open() as handle:
        environment = yaml.safe_load(handle)
    dependencies = environment["dependencies"]
    assert "python=3.11" in dependencies
    pip_section = next(item["pip"] for item in dependencies if isinstance(item, dict))
    env_pins = _pins(pip_section)
    assert env_pins, f"{env_file.name} pins nothing"
    for name, version in env_pins.items():
        assert name in pyproject_pins, f"{env_file.name}: {name} is not a dependency in pyproject"
        assert version == pyproject_pins[name], (
            f"{env_file.name}: {name}=={version} but pyproject.toml pins {pyproject_pins[name]}"
        )


def test_every_rule_uses_an_existing_environment():
    rules_dir = REPO / "workflow" / "rules"
    for smk in rules_dir.glob("*.smk"):
        for line in smk.read_text().splitlines():
            stripped = line.strip().strip('"')
            if stripped.startswith("../../envs/"):
                assert (rules_dir / stripped).resolve().is_file(), f"{smk.name}: {stripped}"
