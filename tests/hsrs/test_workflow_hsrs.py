"""The `hsrs` target: what it plans with and without the C. elegans stack, and a wrong
`hsrs.celegans_dir` stopping the workflow before any job."""

from __future__ import annotations

import json

import pytest

from tests.hsrs.test_celegans import write_folder
from tests.test_workflow import planned_jobs, snakemake

pytestmark = pytest.mark.workflow


def celegans(folder) -> str:
    return "hsrs=" + json.dumps({"celegans_dir": str(folder)})


def test_the_hsrs_target_plans_the_phantom_only_by_default():
    jobs = planned_jobs(snakemake("-n", "--forceall", "hsrs").stdout)
    # The hybrid U-Net, its three ablations and the 2-D U-Net: one training job each;
    # nnU-Net: export + plan, one training job per fold (3), predict + score.
    assert jobs == {
        "hsrs": 1,
        "hsrs_cells": 1,
        "hsrs_phasor": 1,
        "hsrs_train": 5,
        "hsrs_nnunet_plan": 1,
        "hsrs_nnunet_train": 3,
        "hsrs_nnunet_predict": 1,
        "hsrs_dice": 1,
    }


def test_the_hsrs_target_adds_the_celegans_stack_when_configured(tmp_path):
    folder = write_folder(tmp_path / "ce")
    result = snakemake("-n", "--forceall", "hsrs", "--config", celegans(folder))
    jobs = planned_jobs(result.stdout)
    assert jobs == {
        "hsrs": 1,
        "hsrs_cells": 1,
        "hsrs_celegans": 1,
        "hsrs_phasor": 2,
        "hsrs_train": 10,
        "hsrs_nnunet_plan": 2,
        "hsrs_nnunet_train": 6,
        "hsrs_nnunet_predict": 2,
        "hsrs_dice": 1,
    }


def test_a_wrong_celegans_dir_stops_the_workflow(tmp_path):
    result = snakemake("-n", "hsrs", "--config", celegans(tmp_path), check=False)
    assert result.returncode == 2
    assert "hsrs.celegans_dir" in result.stderr and "celegans_srs_cube.npy" in result.stderr
    assert "Traceback" not in result.stderr
