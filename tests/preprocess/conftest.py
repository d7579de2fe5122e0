"""Fixtures of the preprocessing tests."""

from __future__ import annotations

import pytest

from tests.preprocess import with_small_channels


@pytest.fixture()
def small_config(config) -> dict:
    """The demo configuration with the four channels of the small samples."""
    return with_small_channels(config)
