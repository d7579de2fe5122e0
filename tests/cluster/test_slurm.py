"""The `slurm` profile on a real one-node SLURM cluster (see slurm_cluster.py).

The cluster is started once for this module. Without root or apt-get the tests are
skipped with the reason; with `RAMANSEG_REQUIRE_SLURM=1` (CI) a cluster that cannot be
started is a failure. What runs where is checked from SLURM's own job records
(`scontrol show job`, kept for MinJobAge), not from Snakemake's word:

* a trivial workflow: a CPU job and a GPU job, the latter sent to the `gpu` partition
  per rule (`--set-resources RULE:slurm_partition=gpu`);
* the demo workflow's data stages (phantom, preprocess, split, bottleneck) and one model
  training (the U-Net, tiny) on a tiny synthetic dataset through the profile, the
  bottleneck rule given a GPU by the configuration and partitions chosen automatically
  (`--slurm-partition-config`). One running preprocess job is cancelled with `scancel`
  and must be retried by the profile's `retries`, its outputs equal to those of a local
  run; the training job is cancelled after its first checkpoint and its retry must
  resume from that checkpoint and end with the weights of an uninterrupted local run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from tests.cluster.slurm_cluster import SlurmCluster, start_or_skip
from tests.conftest import DEMO_CONFIG, REPO

pytestmark = pytest.mark.slurm

PROFILE = REPO / "slurm"
#: Rules Snakemake runs in its own process, never submitted.
LOCAL_RULES = {"all", "data"}
#: Quick status polling for seconds-long test jobs (the profile's values suit real ones).
FAST_POLLING = [
    "--slurm-init-seconds-before-status-checks", "1",
    "--seconds-between-status-checks", "1",
    "--max-status-checks-per-second", "10",
]  # fmt: skip
RUN_TIMEOUT = 300


@pytest.fixture(scope="module")
def cluster():
    cluster = start_or_skip(SlurmCluster())
    yield cluster
    cluster.stop()
    cluster.cleanup()


@dataclass
class Run:
    returncode: int
    output: str
    run_id: str | None
    seconds: float


def run_snakemake(cluster, args, cwd: Path, log: Path, while_running=None) -> Run:
    """Run Snakemake with this cluster's environment; call `while_running()` while it runs."""
    start = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "snakemake", *args],
            cwd=cwd,
            env=cluster.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            while process.poll() is None:
                if time.monotonic() - start > RUN_TIMEOUT:
                    process.terminate()  # Snakemake cancels its SLURM jobs on SIGTERM
                    process.wait(60)
                    pytest.fail(
                        f"snakemake took over {RUN_TIMEOUT} s:\n{log.read_text()[-5000:]}"
                        f"\n{cluster.logs()}"
                    )
                if while_running is not None:
                    while_running()
                time.sleep(0.2)
        finally:
            if process.poll() is None:
                process.kill()
    output = log.read_text()
    match = re.search(r"SLURM run ID: (\S+)", output)
    return Run(process.returncode, output, match and match.group(1), time.monotonic() - start)


def require_success(run: Run, cluster, workdir: Path) -> None:
    if run.returncode != 0 or run.run_id is None:
        # The SLURM log of a failed job holds the job's own Snakemake output.
        job_logs = [
            f"---- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-20:])
            for path in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))[:4]
        ]
        pytest.fail(
            f"snakemake exited with {run.returncode} (run id {run.run_id}):\n"
            f"{run.output[-6000:]}\n" + "\n".join(job_logs) + f"\n{cluster.logs(20)}",
            pytrace=False,
        )


def planned_jobs(output: str) -> dict[str, int]:
    """Jobs per rule from the `Job stats` table Snakemake prints before running."""
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not match:
            break
        if match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


def rule_of(record: dict[str, str]) -> str:
    """The rule of a SLURM job from the executor's comment `rule_<rule>[_wildcards_...]`."""
    match = re.fullmatch(r"rule_(\w+?)(?:_wildcards_.*)?", record.get("Comment", ""))
    assert match, f"job {record['JobId']} has no rule comment: {record.get('Comment')!r}"
    return match.group(1)


def gpus_requested(record: dict[str, str]) -> int:
    """GPUs of a job as slurmctld recorded them (`TresPerJob=gres:gpu:1` for --gpus=1)."""
    requested = 0
    for key in ("TresPerJob", "TresPerNode", "TresPerTask", "TresPerSocket"):
        for match in re.finditer(r"gres[:/]gpu(?::[^:,=]+)?[:=](\d+)", record.get(key, "")):
            requested += int(match.group(1))
    return requested


def minutes(slurm_time: str) -> int:
    """Minutes of a SLURM time limit `[D-]HH:MM:SS`."""
    days, _, clock = slurm_time.rpartition("-")
    hours, mins, secs = (int(part) for part in clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + mins + (secs > 0)


# -- a trivial workflow: the harness, a CPU job and a GPU job --------------------------

TRIVIAL_SNAKEFILE = """\
rule all:
    input: "cpu.txt", "gpu.txt"

rule cpu_job:
    output: "cpu.txt"
    resources: mem_mb=200, runtime=5
    shell: "echo $SLURM_JOB_ID ${{SLURM_JOB_PARTITION:-}} > {output}"

rule gpu_job:
    output: "gpu.txt"
    resources: mem_mb=200, runtime=5, gpu=1
    shell: "echo $SLURM_JOB_ID ${{CUDA_VISIBLE_DEVICES:-none}} > {output}"
"""


def test_cpu_and_gpu_jobs_of_a_trivial_workflow(cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(TRIVIAL_SNAKEFILE)
    run = run_snakemake(
        cluster,
        ["--profile", str(PROFILE), *FAST_POLLING,
         "--set-resources", "gpu_job:slurm_partition=gpu"],
        cwd=tmp_path,
        log=tmp_path / "snakemake.log",
    )  # fmt: skip
    require_success(run, cluster, tmp_path)
    jobs = {rule_of(record): record for record in cluster.jobs(run.run_id)}
    assert set(jobs) == {"cpu_job", "gpu_job"}, jobs
    assert all(record["JobState"] == "COMPLETED" for record in jobs.values())

    assert (tmp_path / "cpu.txt").read_text().split()[0] == jobs["cpu_job"]["JobId"]
    assert jobs["cpu_job"]["Partition"] == "cpu"  # the cluster's default partition
    assert gpus_requested(jobs["cpu_job"]) == 0

    gpu_id, visible = (tmp_path / "gpu.txt").read_text().split()
    assert gpu_id == jobs["gpu_job"]["JobId"]
    assert jobs["gpu_job"]["Partition"] == "gpu"
    assert gpus_requested(jobs["gpu_job"]) == 1
    assert visible != "none", "slurmd gave the GPU job no CUDA_VISIBLE_DEVICES"


# -- the demo workflow, tiny, through the profile, with one job cancelled -------------

TINY = {
    "phantom": {"patients": 3, "samples": 5, "height": 48, "width": 48, "seed": 1},
    "split": {"train": 2, "val": 1, "test": 2, "folds": 2},
    "bottleneck": {"reference_size": 16, "sizes": [8, 4]},
    # Enough epochs of a few seconds' training to cancel it between two checkpoints.
    "models": {
        "training": {"patch_size": 16, "batch_size": 2, "patches_per_epoch": 8},
        "unet": {"epochs": 40, "base_channels": 4, "levels": 2},
    },
    "resources": {
        "default": {"threads": 1, "mem_mb": 1000, "runtime": 10, "gpu": 0},
        # One rule gets a GPU through the configuration, as a training rule would.
        "rules": {"bottleneck": {"gpu": 1}},
    },
}
#: Automatic partition choice: GPU jobs can only go to `gpu`, CPU jobs prefer `cpu`.
PARTITIONS = {"partitions": {"cpu": {"max_gpu": 0}, "gpu": {"max_gpu": 2}}}
#: The data stages and one model; nnU-Net and the other models take too long for this test.
UNET = Path("results") / "models" / "unet"
TARGETS = ["data", "bottleneck", "split", str(UNET / "model.pt")]
#: The jobs to cancel (by SLURM comment) and when: a preprocess job as soon as one runs,
#: the U-Net training once it has written a checkpoint.
CANCEL = {
    "preprocess": (r"rule_preprocess_wildcards_.*", lambda workdir: True),
    "train_model": (
        r"rule_train_model_wildcards_unet",
        lambda workdir: (workdir / UNET / "checkpoint_last.pt").exists(),
    ),
}


def rule_resources(config: dict, rule: str) -> dict:
    """What `rule_resources()` in workflow/rules/common.smk gives a rule."""
    spec = {"threads": 1, "gpu": 0, **config["resources"]["default"]}
    spec.update(config["resources"].get("rules", {}).get(rule, {}))
    return spec


@dataclass
class WorkflowRun:
    run: Run
    workdir: Path
    configfiles: list[Path]
    config: dict
    jobs: list[dict[str, str]]
    cancelled: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def workflow_run(cluster, tmp_path_factory) -> WorkflowRun:
    from ramanseg.config import load_config_files

    base = tmp_path_factory.mktemp("slurm-workflow")
    tiny = base / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(TINY))
    partitions = base / "partitions.yaml"
    partitions.write_text(yaml.safe_dump(PARTITIONS))
    configfiles = [DEMO_CONFIG, tiny]
    workdir = base / "run"
    workdir.mkdir()

    cancelled: dict[str, dict[str, str]] = {}

    def cancel_running_jobs():
        if len(cancelled) == len(CANCEL):
            return
        out = cluster.command("squeue", "--noheader", "-t", "RUNNING", "-o", "%i|%k", check=False)
        for line in out.splitlines():
            job_id, _, comment = line.partition("|")
            for rule, (pattern, ready) in CANCEL.items():
                if rule not in cancelled and re.fullmatch(pattern, comment) and ready(workdir):
                    cluster.command("scancel", job_id)
                    cancelled[rule] = {"JobId": job_id, "Comment": comment}

    run = run_snakemake(
        cluster,
        ["--profile", str(PROFILE), *FAST_POLLING,
         "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(workdir),
         "--configfile", *map(str, configfiles),
         "--slurm-partition-config", str(partitions),
         "--", *TARGETS],
        cwd=base,
        log=base / "snakemake.log",
        while_running=cancel_running_jobs,
    )  # fmt: skip
    require_success(run, cluster, workdir)
    missing = set(CANCEL) - set(cancelled)
    assert not missing, f"no running {missing} job was seen to cancel:\n{run.output[-5000:]}"
    return WorkflowRun(
        run=run,
        workdir=workdir,
        configfiles=configfiles,
        config=load_config_files(configfiles),
        jobs=cluster.jobs(run.run_id),
        cancelled=cancelled,
    )


def test_workflow_outputs_after_a_slurm_run(workflow_run):
    workdir = workflow_run.workdir
    sheet = workdir / "resources" / "phantom" / "samples.tsv"
    samples = [line.split("\t")[0] for line in sheet.read_text().splitlines()[1:]]
    assert len(samples) == TINY["phantom"]["samples"]
    channels = len(workflow_run.config["channels"])
    for sample in samples:
        stack = tifffile.imread(workdir / "results" / "preprocessed" / sample / "stack.ome.tif")
        assert stack.shape == (channels, 48, 48)
        assert (workdir / "results" / "preprocessed" / sample / "qc.png").stat().st_size > 0
    assert (workdir / "results" / "split" / "split.json").stat().st_size > 0
    for ext in ("csv", "parquet", "md", "png"):
        assert (workdir / "results" / "bottleneck" / f"bottleneck.{ext}").stat().st_size > 0


def test_every_job_ran_as_a_slurm_job(workflow_run):
    planned = planned_jobs(workflow_run.run.output)
    completed: dict[str, int] = {}
    for record in workflow_run.jobs:
        if record["JobState"] == "COMPLETED":
            completed[rule_of(record)] = completed.get(rule_of(record), 0) + 1
    expected = {rule: n for rule, n in planned.items() if rule not in LOCAL_RULES}
    assert expected and completed == expected


def test_slurm_jobs_got_the_resources_of_the_configuration(workflow_run):
    """Threads, memory, runtime and GPUs of each job: the config's, as SLURM recorded them.

    GPU rules (`gpu` >= 1 in the configuration) must request GPUs and land in the `gpu`
    partition; all others request none and stay in `cpu`.
    """
    gpu_rules = set()
    for record in workflow_run.jobs:
        rule = rule_of(record)
        spec = rule_resources(workflow_run.config, rule)
        where = f"rule {rule}, SLURM job {record['JobId']}"
        assert int(record["CPUs/Task"]) == spec["threads"], where
        assert record["MinMemoryNode"] == f"{spec['mem_mb']}M", where
        assert minutes(record["TimeLimit"]) == spec["runtime"], where
        assert gpus_requested(record) == spec["gpu"], where
        assert record["Partition"] == ("gpu" if spec["gpu"] else "cpu"), where
        if spec["gpu"]:
            gpu_rules.add(rule)
    assert gpu_rules == {"bottleneck"}


@pytest.fixture(scope="module")
def local_run(workflow_run, tmp_path_factory) -> Path:
    """The same targets run locally, without SLURM and without interruption."""
    local = tmp_path_factory.mktemp("local")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2",
         "--snakefile", str(REPO / "Snakefile"), "--directory", str(local),
         "--configfile", *map(str, workflow_run.configfiles), "--", *TARGETS],
        capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return local


def assert_cancelled_then_completed(workflow_run: WorkflowRun, rule: str) -> None:
    cancelled = workflow_run.cancelled[rule]
    same_job = [r for r in workflow_run.jobs if r["Comment"] == cancelled["Comment"]]
    states = {r["JobId"]: r["JobState"] for r in same_job}
    assert states[cancelled["JobId"]] == "CANCELLED", states
    assert "COMPLETED" in states.values(), f"{cancelled['Comment']} was not retried: {states}"
    assert "SLURM status is: 'CANCELLED'" in workflow_run.run.output


def test_cancelled_job_was_retried_with_identical_outputs(workflow_run, local_run):
    assert_cancelled_then_completed(workflow_run, "preprocess")
    comment = workflow_run.cancelled["preprocess"]["Comment"]
    sample = re.fullmatch(r"rule_preprocess_wildcards_(.+)", comment).group(1)
    for name in ("stack.ome.tif", "classes.tif", "mask.tif", "foreground.tif"):
        target = Path("results") / "preprocessed" / sample / name
        on_slurm = tifffile.imread(workflow_run.workdir / target)
        here = tifffile.imread(local_run / target)
        assert on_slurm.shape == here.shape and np.array_equal(on_slurm, here), target


def test_cancelled_training_resumed_from_its_checkpoint(workflow_run, local_run):
    import torch

    assert_cancelled_then_completed(workflow_run, "train_model")
    epochs = TINY["models"]["unet"]["epochs"]
    # The retried job's log (the rule's log, written anew by the retry) says where it resumed.
    log = (workflow_run.workdir / "results" / "logs" / "models" / "train_unet.log").read_text()
    match = re.search(rf"resuming unet after epoch (\d+) of {epochs}", log)
    assert match, log[-3000:]
    assert 1 <= int(match.group(1)) < epochs

    # Resumed, it ends where an uninterrupted run ends: the same log and the same weights.
    def rows(workdir: Path) -> list[list[str]]:
        lines = (workdir / UNET / "training_log.csv").read_text().splitlines()
        seconds = lines[0].split(",").index("seconds")
        return [[v for i, v in enumerate(line.split(",")) if i != seconds] for line in lines]

    assert len(rows(workflow_run.workdir)) == epochs + 1
    assert rows(workflow_run.workdir) == rows(local_run)
    on_slurm = torch.load(workflow_run.workdir / UNET / "model.pt", weights_only=True)
    here = torch.load(local_run / UNET / "model.pt", weights_only=True)
    assert on_slurm.keys() == here.keys()
    for key in here:
        assert torch.equal(on_slurm[key], here[key]), key
