"""The spectra rules: `snakemake spectra` plans its jobs; a bad dataset entry stops the
dry run with the key."""

from __future__ import annotations

import pytest
import yaml

from tests.test_workflow import planned_jobs, snakemake

pytestmark = pytest.mark.workflow


def test_spectra_target_plans_one_job_per_dataset():
    jobs = planned_jobs(snakemake("-n", "--forceall", "spectra").stdout)
    assert jobs == {
        "spectra": 1,
        "spectra_summary": 1,
        "spectra_dataset": 3,
        "spectra_synthetic": 1,
    }


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("nope", "spectra.datasets.chondro.transfer_from`: 'nope' is not a dataset"),
        ("chondro", "cannot be its own pretraining task"),
    ],
)
def test_a_bad_transfer_source_stops_the_dry_run(tmp_path, source, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "spectra": {
                    "datasets": {
                        "chondro": {
                            "table": "resources/spectra/chondro.csv.xz",
                            "transfer_from": source,
                        }
                    }
                }
            }
        )
    )
    result = snakemake("-n", "spectra", "--configfile", "config/config.yaml", str(bad), check=False)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stdout + result.stderr
