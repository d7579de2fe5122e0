"""Shared fixtures: the repository, its configurations, and a tiny configuration."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from ramanseg.config import load_config_files

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "config" / "config.yaml"
PAPER_CONFIG = REPO / "config" / "paper.yaml"


@pytest.fixture(scope="session")
def demo_config() -> dict:
    """The demo configuration, validated, with defaults filled in."""
    return load_config_files([DEMO_CONFIG])


@pytest.fixture()
def config(demo_config) -> dict:
    """A private copy of the demo configuration that a test may change."""
    return copy.deepcopy(demo_config)
