"""Fixtures shared by the tests of the training harness."""

from __future__ import annotations

import pytest

from ramanseg.models.data import Sample
from tests.models.test_training import make_sample


@pytest.fixture(scope="module")
def samples() -> tuple[list[Sample], list[Sample]]:
    """Three training samples and one validation sample of the tiny synthetic task."""
    return [make_sample(f"tr{i}", i) for i in range(3)], [make_sample("va0", 10)]
