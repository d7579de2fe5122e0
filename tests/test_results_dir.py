"""The results folder (config key `results_dir`, ramanseg.results_dir): every output of
training and of `snakemake predict` goes below it; a folder that is not one of its own is
refused when the workflow starts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ramanseg.config import ConfigError
from ramanseg.results_dir import DEFAULT_RESULTS_DIR, results_dir
from tests.conftest import REPO
from tests.test_workflow import snakemake
from tests.test_workflow_modes import PREDICT_ARGS, prediction_folder  # noqa: F401 (fixture)

SHIPPED_RESOURCES = REPO / "resources"
MOVED = "runs/hard"
#: "results/" as a folder of its own, not the end of another name (`runs/results/`).
DEFAULT_FOLDER = re.compile(r"(?<![\w.-])results/")


def folder(value: str, workdir: Path, phantom: str = "resources/phantom") -> Path:
    config = {"results_dir": value, "phantom": {"outdir": phantom}}
    return results_dir(config, workdir, SHIPPED_RESOURCES)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (DEFAULT_RESULTS_DIR, "results"),
        ("results/", "results"),
        ("./results", "results"),
        ("results_hard", "results_hard"),
        ("runs//hard/", "runs/hard"),
    ],
)
def test_a_folder_inside_the_working_directory_is_kept_relative(tmp_path, value, expected):
    # Relative, as before the key existed: the demo's paths and commands stay the same.
    assert folder(value, tmp_path) == Path(expected)


def test_an_absolute_folder_is_accepted(tmp_path):
    scratch = tmp_path / "scratch" / "results"
    assert folder(str(scratch), tmp_path / "checkout") == scratch


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("../results", "leads out of the working directory"),
        ("runs/../../results", "leads out of the working directory"),
        ("~/results", "starts with `~`"),
        ("", "is the working directory"),
        (".", "is the working directory"),
        ("runs/..", "leads out of the working directory"),
        ("resources/phantom", "overlaps the synthetic dataset's folder, `phantom.outdir`"),
        ("resources/phantom/results", "overlaps the synthetic dataset's folder"),
        ("resources", "overlaps the synthetic dataset's folder"),
    ],
)
def test_a_folder_that_is_not_one_of_its_own_is_refused(tmp_path, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        folder(value, tmp_path)
    assert str(error.value).startswith(f"config key `results_dir`: {value!r} ")


def test_the_working_directory_or_a_folder_above_it_is_refused(tmp_path):
    for value in (tmp_path, tmp_path.parent, Path("/")):
        with pytest.raises(ConfigError, match="is the working directory"):
            folder(str(value), tmp_path)


def test_the_shipped_resources_are_refused_from_any_working_directory(tmp_path):
    for value in (SHIPPED_RESOURCES, SHIPPED_RESOURCES / "results", REPO):
        with pytest.raises(ConfigError, match="the workflow's shipped resources"):
            folder(str(value), tmp_path)
    with pytest.raises(ConfigError, match="the workflow's shipped resources"):
        folder("resources", REPO, phantom="data/phantom")


def test_a_results_folder_around_the_synthetic_dataset_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"`phantom.outdir` \(data/phantom\)"):
        folder("data", tmp_path, phantom="data/phantom")
    assert folder("data", tmp_path, phantom="resources/phantom") == Path("data")


def test_a_file_is_refused(tmp_path):
    (tmp_path / "results.txt").write_text("")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        folder("results.txt", tmp_path)


def dry_run(workdir: Path, *args: str, check: bool = True):
    return snakemake(
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(REPO / "config" / "config.yaml"),
        "-n", "-p", "--forceall", *args,
        check=check,
    )  # fmt: skip


def planned_files(output: str) -> list[str]:
    """Every output, log and benchmark file of a dry run's jobs."""
    files = []
    for line in output.splitlines():
        match = re.fullmatch(r"\s+(?:output|log|benchmark): (.+)", line)
        if match:
            files += match.group(1).split(", ")
    return files


def plan(output: str) -> list[str]:
    """A dry run's jobs and commands, without what changes from run to run (the command
    line, the time, the run's id, the configuration's checksum) or the order of the jobs."""
    varying = re.compile(r"\[\w{3} \w{3} .*\d{4}\]|\s+(Command|Date|Workflow ID|Config MD5): .*")
    return sorted(line for line in output.splitlines() if not varying.fullmatch(line))


@pytest.mark.workflow
def test_training_writes_every_output_below_the_results_folder(tmp_path):
    # Every target of training, with the repeated seeds and cross-validation.
    targets = ["all", "package", "hsrs", "spectra"]
    options = ["--config", "seeds=[0,1]", "cross_validation=true"]
    moved = dry_run(tmp_path, *targets, *options, f"results_dir={MOVED}").stdout
    files = planned_files(moved)
    assert len(files) > 1000
    outside = [f for f in files if not f.startswith((f"{MOVED}/", "resources/phantom/"))]
    assert outside == []
    assert not DEFAULT_FOLDER.search(moved), "a path below results/ in the plan or commands"
    # The folder is all that changes: the default plans the same jobs and commands.
    default = dry_run(tmp_path, *targets, *options).stdout
    assert plan(moved.replace(f"{MOVED}/", "results/")) == plan(default)


@pytest.mark.workflow
def test_prediction_writes_every_output_below_the_results_folder(prediction_folder):  # noqa: F811
    moved = dry_run(prediction_folder, "predict", *PREDICT_ARGS, f"results_dir={MOVED}").stdout
    files = planned_files(moved)
    assert f"{MOVED}/predict/summary.csv" in files
    assert all(f.startswith(f"{MOVED}/") for f in files), files
    assert not DEFAULT_FOLDER.search(moved), "a path below results/ in the plan or commands"


@pytest.mark.workflow
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("../results", "leads out of the working directory"),
        ("resources/phantom", "overlaps the synthetic dataset's folder, `phantom.outdir`"),
    ],
)
def test_a_bad_results_folder_stops_the_workflow_naming_the_key(tmp_path, value, message):
    result = dry_run(tmp_path, "--config", f"results_dir={value}", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert f"config key `results_dir`: {value!r}" in output and message in output
    assert "Traceback" not in output
