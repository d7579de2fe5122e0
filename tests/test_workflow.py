"""The Snakemake workflow: lint, dry runs of both configurations, and a tiny real run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import tifffile
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.workflow


def snakemake(*args: str, cwd: Path = REPO, check: bool = True) -> subprocess.CompletedProcess:
    """Run Snakemake from this interpreter's environment."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and result.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def planned_jobs(output: str) -> dict[str, int]:
    """The job counts per rule from a dry run's summary table."""
    counts = {}
    for line in output.splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


def test_lint_is_clean():
    result = snakemake("--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dry_run_plans_the_demo():
    result = snakemake("-n", "--forceall")
    jobs = planned_jobs(result.stdout)
    expected = {"all": 1, "phantom": 1, "preprocess": 32, "qc_figure": 32, "split": 1}
    expected |= {"bottleneck": 1}
    expected |= {"nnunet_export": 1, "nnunet_plan": 1, "nnunet_train": 5, "nnunet_predict": 1}
    expected |= {"fit_baseline": 1, "fit_pixel_cnn": 1, "fit_phasor": 1}
    assert expected.items() <= jobs.items()
    # One training rule: U-Net, UNETR, RamanSeg with and without projection, the hybrid
    # U-Net, and the two other prototype counts of the sweep.
    assert (jobs["train_model"], jobs["predict_model"]) == (7, 5)
    assert jobs["sweep_summary"] == 1
    assert jobs["evaluate"] == jobs["interpret_nnunet"] == jobs["interpret_prototypes"] == 1


def test_the_data_target_stops_after_preprocessing_and_qc_figures():
    jobs = planned_jobs(snakemake("-n", "--forceall", "data").stdout)
    assert jobs == {"data": 1, "phantom": 1, "preprocess": 32, "qc_figure": 32}


def test_dry_run_plans_the_paper_settings_on_paper_scale_synthetic_data():
    result = snakemake("-n", "--forceall", "--configfile", "config/paper.yaml")
    jobs = planned_jobs(result.stdout)
    assert jobs["preprocess"] == 32 and jobs["phantom"] == 1
    # nnU-Net's 5 folds once per seed of `seeds: [0, 1, 2]`.
    assert jobs["nnunet_train"] == 5 * 3 and jobs["nnunet_predict"] == 3
    # The paper's settings reach the jobs: nnU-Net's standard trainer, on a GPU.
    detail = snakemake("-n", "--forceall", "-p", "--configfile", "config/paper.yaml").stdout
    assert '"trainer": "nnUNetTrainer"' in detail
    assert re.search(r"rule nnunet_train:(?:.|\n)*?resources: .*gpu=1", detail)


def test_missing_samplesheet_names_the_config_key(tmp_path):
    missing = tmp_path / "missing.tsv"
    result = snakemake("-n", "--config", f"samplesheet={missing}", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "config key `samplesheet`" in output
    assert str(missing) in output


def test_an_empty_samplesheet_stops_the_dry_run_without_a_traceback(tmp_path):
    # Issue 13, defect 9: a zero-byte sheet gave pandas' traceback under `snakemake -n`.
    empty = tmp_path / "samples.tsv"
    empty.write_bytes(b"")
    result = snakemake("-n", "--config", f"samplesheet={empty}", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "config key `samplesheet`" in output and str(empty) in output
    assert "Traceback" not in output and 'File "' not in output


def test_wrong_config_type_stops_the_workflow_naming_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"split": {"train": "many", "val": 1, "test": 1}}))
    result = snakemake("-n", "--configfile", str(bad), check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "'many' is not of type 'integer'" in output and "train" in output


def tiny_config(workdir: Path) -> Path:
    """A configuration small enough to run every rule in seconds."""
    config = {
        "phantom": {"patients": 4, "samples": 6, "height": 48, "width": 64, "seed": 3},
        "split": {"train": 3, "val": 1, "test": 2, "folds": 2},
        "bottleneck": {"reference_size": 16, "sizes": [8, 4, 2]},
        "nnunet": {"epochs": 1, "iterations_per_epoch": 2, "batch_size": 2},
        "models": {
            "training": {"patch_size": 32, "batch_size": 4, "patches_per_epoch": 8},
            "unet": {"epochs": 1, "base_channels": 4},
            "unetr": {"epochs": 1, "hidden_size": 48, "feature_size": 4},
            "hybrid_unet": {"epochs": 1, "spectral_features": 2, "levels": 2},
            "ramanseg": {
                "prototypes_per_class": 2,
                "addon_channels": 8,
                "prototype_channels": 8,
                "epochs": {"warmup": 1, "joint": 1, "last_layer": 1},
            },
            "ramanseg_noproj": {
                "prototypes_per_class": 3,
                "addon_channels": 8,
                "prototype_channels": 8,
                "epochs": {"warmup": 1, "joint": 1, "last_layer": 0},
            },
            "prototype_sweep": {"prototypes_per_class": [1, 2]},
        },
        "interpret": {"ig_steps": 4, "internal_batch_size": 4},
        "spectra": {"pixel_model": {"pixels": 2000, "epochs": 1}},
        "resources": {"default": {"threads": 1, "mem_mb": 1000, "runtime": 10, "gpu": 0}},
    }
    path = workdir / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def check_intervals(table: pd.DataFrame) -> pd.DataFrame:
    """Assert a results table is possible: Dice in [0, 100], each mean inside its patient
    bootstrap interval, the reference model named, the one-sided column present; the rows
    that have an interval."""
    assert table["dice_mean"].between(0, 100).all()
    with_ci = table.dropna(subset=["dice_ci_low", "dice_ci_high"])
    assert (with_ci["dice_ci_low"] <= with_ci["dice_mean"] + 1e-9).all()
    assert (with_ci["dice_mean"] <= with_ci["dice_ci_high"] + 1e-9).all()
    assert (table["reference"] == "nnunet").all() and "one_sided" in table.columns
    return with_ci


def test_tiny_demo_runs_every_rule(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = tiny_config(tmp_path)
    snakemake(
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(REPO / "config" / "config.yaml"), str(config),
        "--cores", "2",
    )  # fmt: skip
    sheet = workdir / "resources" / "phantom" / "samples.tsv"
    sample_ids = [line.split("\t")[0] for line in sheet.read_text().splitlines()[1:]]
    assert len(sample_ids) == 6
    for sample in sample_ids:
        stack = tifffile.imread(workdir / "results" / "preprocessed" / sample / "stack.ome.tif")
        assert stack.shape == (24, 48, 64) and stack.dtype == "float32"
        assert 0.0 <= stack.min() and stack.max() <= 1.0
        assert (workdir / "results" / "logs" / "preprocess" / f"{sample}.log").is_file()
        assert (workdir / "results" / "benchmarks" / "preprocess" / f"{sample}.tsv").is_file()
    split = json.loads((workdir / "results" / "split" / "split.json").read_text())
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(sample_ids)
    assert len(split["folds"]) == 2
    table = (workdir / "results" / "bottleneck" / "bottleneck.csv").read_text()
    assert table.count("\n") >= 4
    # The split the DAG was planned with is the one the split rule wrote.
    for model in (
        "nnunet",
        "unet",
        "unetr",
        "ramanseg",
        "ramanseg_noproj",
        "hybrid_unet",
        "logreg",
        "pixel_cnn",
        "phasor",
    ):
        written = sorted(
            p.name for p in (workdir / "results" / "predictions" / model).glob("*.tif")
        )
        expected = sorted(
            f"{s}.{kind}.tif" for s in split["test"] for kind in ("mask", "probability")
        )
        assert written == expected, model
    for name in ("results_comparisons.csv", "results_paired.png", "results_forest.png"):
        assert (workdir / "results" / "evaluation" / name).is_file()
    # Through the rule: every mean lies in its patient bootstrap interval, every Dice in
    # [0, 100], and the table and its notes say how the intervals and marks were made.
    table = pd.read_csv(workdir / "results" / "evaluation" / "results.csv")
    with_ci = check_intervals(table)
    markdown = (workdir / "results" / "evaluation" / "results.md").read_text()
    assert "| Dice 95 % CI |" in markdown and "Dice vs nnU-Net: difference" in markdown
    if with_ci.empty:  # one test patient
        assert "one patient: no CI" in markdown
    results = (workdir / "results" / "evaluation" / "results.csv").read_text()
    for model in (
        "unet",
        "unetr",
        "nnunet",
        "ramanseg",
        "ramanseg_noproj",
        "hybrid_unet",
        "logreg",
        "pixel_cnn",
        "phasor",
    ):
        assert model in results
    sweep = (workdir / "results" / "sweep" / "prototype_sweep.csv").read_text()
    assert sweep.count("\n") == 3  # header + two counts
    for name in ("gradcam_folds", "integrated_gradients", "feature_ablation"):
        assert (workdir / "results" / "interpret" / "nnunet" / f"{name}.png").is_file()
    for name in ("class_proportions", "kmeans_inertia", "prototype_gallery"):
        assert (workdir / "results" / "interpret" / "ramanseg" / f"{name}.png").is_file()
    assert (workdir / "results" / "report" / "rule_times.csv").is_file()
    # The HTML report collects every table and figure.
    snakemake(
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(REPO / "config" / "config.yaml"), str(config),
        "--report", "report.html",
    )  # fmt: skip
    assert (workdir / "report.html").stat().st_size > 10_000
    # The prototype figures' captions carry this run's measurements, into the report.
    caption = workdir / "results" / "interpret" / "ramanseg" / "captions" / "kmeans_inertia.rst"
    status = caption.read_text().splitlines()[0]
    assert status.startswith(("**This run:**", "**PROTOTYPE COLLAPSE"))
    assert "distinct source patches of" in (workdir / "report.html").read_text()
    # Nothing is left to do: a second invocation plans no job.
    again = snakemake(
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(REPO / "config" / "config.yaml"), str(config),
        "-n",
    )  # fmt: skip
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"preprocess": {"percentiles": {"raman": [95, 5]}}},
            "preprocess.percentiles.raman: low 95 must be below high 5",
        ),
        (
            {"resources": {"rules": {"qc_figures": {"threads": 1}}}},
            "config key `resources.rules`: no rule is named qc_figures",
        ),
        (
            {"phantom": {"patients": 10, "samples": 3}},
            "phantom.samples (3) must be at least phantom.patients (10)",
        ),
    ],
)
def test_config_errors_the_schema_cannot_see_stop_the_dry_run(tmp_path, config, message):
    # Issue 13, defect 4: low >= high passed the schema and the dry run, then every
    # preprocess job died; a misspelt rule name silently gave the rule default resources.
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(bad), check=False)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stdout + result.stderr
