"""The `slurm` profile's content, its dry run, and the cluster harness's decisions.

None of these needs a running cluster (test_slurm.py has the real runs).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from tests.cluster import slurm_cluster
from tests.cluster.slurm_cluster import (
    ClusterUnavailable,
    SlurmCluster,
    parse_records,
    start_or_skip,
)
from tests.conftest import REPO

PROFILE = REPO / "slurm" / "config.yaml"


@pytest.fixture(scope="module")
def profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


def test_profile_selects_the_slurm_executor_with_retries_and_squeue_status(profile):
    assert profile["executor"] == "slurm"
    assert profile["retries"] >= 1
    assert profile["latency-wait"] >= 10
    assert profile["slurm-status-command"] == "squeue"
    assert profile["jobs"] >= 5  # at least the 5 nnU-Net folds at once


def test_profile_hard_codes_no_site_or_rule_settings(profile):
    text = yaml.safe_dump(profile)
    for key in ("slurm_account", "slurm_partition", "partition", "account"):
        assert key not in text, f"the profile must not set {key}"
    # Threads, memory, runtime and GPUs come from the workflow's rules.
    assert "set-resources" not in profile and "set-threads" not in profile
    assert not {"mem_mb", "runtime", "gpu"} & set(profile.get("default-resources") or {})


def test_profile_dry_run_needs_no_cluster(tmp_path):
    (tmp_path / "Snakefile").write_text(
        'rule a:\n    output: "a.txt"\n    resources: gpu=1, runtime=5\n'
        '    shell: "touch {output}"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", str(PROFILE.parent), "-n"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gpu=1" in result.stdout + result.stderr


def test_partition_example_is_a_valid_partition_config():
    from snakemake_executor_plugin_slurm.partitions import read_partition_file

    partitions = read_partition_file(REPO / "slurm" / "partitions.example.yaml")
    assert {p.name: p.limits.max_gpu > 0 for p in partitions} == {"cpu": False, "gpu": True}


def test_record_parsing_keeps_values_with_blanks():
    records = parse_records("JobId=7 Comment=rule_a Reason=a b c Partition=cpu\nJobId=8\n")
    assert records == [
        {"JobId": "7", "Comment": "rule_a", "Reason": "a b c", "Partition": "cpu"},
        {"JobId": "8"},
    ]


def test_without_root_the_cluster_is_skipped_or_required(monkeypatch):
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 1000)
    monkeypatch.delenv(slurm_cluster.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        start_or_skip(SlurmCluster())
    monkeypatch.setenv(slurm_cluster.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=r"RAMANSEG_REQUIRE_SLURM=1.*needs root"):
        start_or_skip(SlurmCluster())


def test_missing_packages_without_apt_are_a_clear_reason(monkeypatch):
    monkeypatch.setattr(slurm_cluster.shutil, "which", lambda name: None)
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 0)
    with pytest.raises(ClusterUnavailable, match="no apt-get"):
        slurm_cluster.install_slurm()


def test_every_rule_takes_threads_and_resources_from_the_config():
    """The profile knows no rule: each rule must pass all four values to the executor."""
    rules = {}
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = path.read_text()
        starts = [(m.start(), m.group(1)) for m in re.finditer(r"^\s*rule (\w+):", text, re.M)]
        ends = [start for start, _ in starts[1:]] + [len(text)]
        for (start, name), end in zip(starts, ends[: len(starts)], strict=True):
            rules[name] = (path.name, text[start:end])
    assert rules
    for name, (file, block) in rules.items():
        if "shell:" not in block:
            continue  # a target rule (like `paper`): no job is submitted for it
        spec = rf'rule_resources\("{name}"\)'
        for pattern in (
            rf"threads:\s*{spec}\[\"threads\"\]",
            rf"mem_mb={spec}\[\"mem_mb\"\]",
            rf"runtime={spec}\[\"runtime\"\]",
            rf"gpu={spec}\[\"gpu\"\]",
        ):
            assert re.search(pattern, block), f"rule {name} ({file}) lacks {pattern}"
