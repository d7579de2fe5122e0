"""Training and `snakemake predict`: a target of one mode asked for in the other stops the
dry run with the setting to change (workflow/rules/modes.smk)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ramanseg.package import write_package
from ramanseg.settings import ChannelLayout
from tests.conftest import REPO
from tests.sample_files import write_sample, write_sheet
from tests.test_package import model_folder
from tests.test_workflow import snakemake

pytestmark = pytest.mark.workflow


def dry_run(workdir: Path, *args: str):
    return snakemake(
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(REPO / "config" / "config.yaml"),
        "-n", *args,
        check=False,
    )  # fmt: skip


@pytest.fixture()
def prediction_folder(tmp_path, config) -> Path:
    """A folder with a small package (one U-Net) and the sheet of one new slide."""
    names = ChannelLayout.from_config(config).names
    folder = model_folder(tmp_path / "trained" / "unet", names)
    workdir = tmp_path / "fresh"
    workdir.mkdir()
    write_package(workdir / "models.zip", config, torch_models={"unet": folder})
    srs, _, _ = write_sample(workdir, "new0", he=False)
    write_sheet(workdir, [("new0", "x0", srs, "", "")], name="slides.tsv")
    return workdir


def test_predict_without_a_package_says_what_to_set(tmp_path):
    for args in (["predict"], ["predict", "--config", "predict_samplesheet=slides.tsv"]):
        result = dry_run(tmp_path, *args)
        output = result.stdout + result.stderr
        assert result.returncode == 2, output
        assert "config key `model_package` is empty" in output
        assert "--config model_package=path/to/models.zip predict_samplesheet=" in output
        assert "Traceback" not in output and "MissingRuleException" not in output


PREDICT_ARGS = ["--config", "model_package=models.zip", "predict_samplesheet=slides.tsv"]


def test_the_package_plans_the_prediction(prediction_folder):
    for target in ([], ["predict"]):
        result = dry_run(prediction_folder, *target, *PREDICT_ARGS)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "predict_slides" in result.stdout


@pytest.mark.parametrize("target", ["package", "all", "paper"])
def test_a_training_target_with_a_package_set_says_what_to_change(prediction_folder, target):
    result = dry_run(prediction_folder, target, *PREDICT_ARGS)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert f"`snakemake {target}` is a target of training" in output
    assert "config key `model_package` is set (models.zip)" in output
    assert "Traceback" not in output and "MissingRuleException" not in output
    # The fix it names: an empty `model_package` plans training.
    assert f"`snakemake {target} --config model_package=`" in output
    assert dry_run(prediction_folder, target, "--config", "model_package=").returncode == 0


def test_a_training_target_with_only_a_package_set_says_what_to_change(prediction_folder):
    result = dry_run(prediction_folder, "package", "--config", "model_package=models.zip")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "`predict_samplesheet` is empty" in output
    assert "To train instead, leave `model_package` empty (--config model_package=)" in output


def test_the_training_targets_named_are_training_targets():
    # The list modes.smk refuses in prediction mode names real targets of training.
    listed = set(snakemake("--list-target-rules").stdout.split())
    text = (REPO / "workflow" / "rules" / "modes.smk").read_text()
    names = text.split("TRAINING_TARGETS = [", 1)[1].split("]", 1)[0]
    targets = {name.strip().strip('"') for name in names.split(",")}
    assert targets and targets <= listed
