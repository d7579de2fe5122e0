"""The phantom's design: samples per patient, seeding, configuration errors."""

from __future__ import annotations

import copy
import itertools
import re

import pytest

from ramanseg import phantom
from ramanseg.config import (
    ConfigError,
)
from tests.phantom.conftest import typed

# ------------------------------------------------------------------------- design


def test_design_default_admits_the_papers_patient_grouped_split(demo):
    design = phantom.phantom_design(typed(demo))
    assert list(design.columns) == ["sample_id", "patient_id"]
    assert len(design) == 32
    assert design["sample_id"].is_unique
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", s) for s in design["sample_id"])
    counts = design.groupby("patient_id").size()
    assert list(counts.index) == [f"P{i:02d}" for i in range(1, 11)]
    assert counts.min() >= 1 and counts.nunique() > 1  # every patient, unevenly

    # Brute force: some test patients hold exactly 5 samples and, of the rest, some
    # validation patients exactly 8 (the remaining 19 train).
    patients = list(counts.index)
    found = False
    for r in range(1, len(patients)):
        for test in itertools.combinations(patients, r):
            if counts[list(test)].sum() != 5:
                continue
            rest = [p for p in patients if p not in test]
            for k in range(1, len(rest)):
                if any(counts[list(v)].sum() == 8 for v in itertools.combinations(rest, k)):
                    found = True
                    break
            if found:
                break
        if found:
            break
    assert found, f"no exact 19/8/5 patient-grouped split for counts {counts.tolist()}"


def test_design_is_seeded(demo):
    other = copy.deepcopy(demo)
    other["phantom"]["seed"] = 1
    assert phantom.phantom_design(typed(demo)).equals(phantom.phantom_design(typed(demo)))
    assert not phantom.phantom_design(typed(demo)).equals(phantom.phantom_design(typed(other)))


def test_design_rejects_fewer_samples_than_patients(demo):
    config = copy.deepcopy(demo)
    config["phantom"].update(patients=5, samples=4)
    with pytest.raises(ValueError, match=r"phantom\.samples"):
        phantom.phantom_design(typed(config))


def test_missing_phantom_class_is_a_config_error(tiny, tmp_path):
    config = copy.deepcopy(tiny)
    del config["annotations"]["classes"]["Epithelium"]
    with pytest.raises(ConfigError, match="Epithelium"):
        phantom.write_phantom(typed(config), tmp_path / "out")
    assert not (tmp_path / "out").exists()
