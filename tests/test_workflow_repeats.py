"""The workflow's cross-validated evaluation and repeated seeds: planned jobs and a tiny run."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from ramanseg.catalog import EVALUATED_MODELS, TORCH_MODELS
from tests.conftest import REPO
from tests.test_workflow import check_intervals, planned_jobs, snakemake, tiny_config

pytestmark = pytest.mark.workflow

#: The rules that only cross-validation or repeated seeds plan.
REPEAT_RULES = {
    "fold_split",
    "predict_cv",
    "nnunet_cv_predictions",
    "evaluate_cv",
    "evaluate_seeds",
}


def _config(tmp_path, **keys):
    path = tmp_path / "repeats.yaml"
    path.write_text(yaml.safe_dump(keys))
    return str(path)


def _tiny_run(tmp_path, target, **keys):
    """Run the workflow up to ``target`` on the tiny configuration with ``keys`` set; the
    working directory."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    tiny = tiny_config(tmp_path)
    tiny.write_text(yaml.safe_dump({**yaml.safe_load(tiny.read_text()), **keys}))
    snakemake(
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(REPO / "config" / "config.yaml"), str(tiny),
        "--cores", "2",
        target,
    )  # fmt: skip
    return workdir


def test_the_demo_plans_no_repeated_training():
    jobs = planned_jobs(snakemake("-n", "--forceall").stdout)
    assert not REPEAT_RULES & set(jobs)
    # Our PyTorch models and the sweep's two other prototype counts; their predictions.
    assert (jobs["train_model"], jobs["predict_model"]) == (
        len(TORCH_MODELS) + 2,
        len(TORCH_MODELS),
    )


def test_three_seeds_and_cross_validation_plan_every_run(tmp_path):
    config = _config(tmp_path, seeds=[0, 1, 2], cross_validation=True)
    result = snakemake("-n", "--forceall", "-p", "--configfile", config)
    jobs = planned_jobs(result.stdout)
    # Our PyTorch models: the main run, seeds 1 and 2, 5 folds; the sweep's 2 other counts.
    models = len(TORCH_MODELS)
    assert jobs["train_model"] == models * (1 + 2 + 5) + 2
    # Their test predictions per seed; their held-out ones once per model.
    assert jobs["predict_model"] == models * 3 and jobs["predict_cv"] == models
    # nnU-Net: its 5 folds and their ensemble's prediction once per seed.
    assert jobs["fold_split"] == 5 and jobs["nnunet_train"] == 5 * 3
    assert jobs["nnunet_predict"] == 3 and jobs["nnunet_plan"] == 1
    assert jobs["nnunet_cv_predictions"] == jobs["evaluate_cv"] == jobs["evaluate_seeds"] == 1
    assert jobs["fit_baseline_cv"] == jobs["fit_pixel_cnn_cv"] == jobs["fit_phasor_cv"] == 1
    # The per-pixel baselines once per seed.
    assert jobs["fit_baseline"] == jobs["fit_pixel_cnn"] == jobs["fit_phasor"] == 3
    # Seed 1's U-Net trains with seed 1 on the main split; fold 3's with the fold's split.
    commands = [line for line in result.stdout.splitlines() if "train-model --model unet " in line]
    seed1 = next(c for c in commands if "--outdir results/models/seed1/unet " in c)
    assert '"seed": 1,' in seed1 and "--split results/split/split.json" in seed1
    fold3 = next(c for c in commands if "--outdir results/models/cv/fold3/unet " in c)
    assert '"seed": 0,' in fold3 and "--split results/split/cv/fold3.json" in fold3
    # Seed 2's nnU-Net folds train with seed 2 into their own results folder.
    nnunet = [line for line in result.stdout.splitlines() if "nnunet-train " in line]
    seed2 = [c for c in nnunet if "--trained-dir results/nnunet/seed2/trained " in c]
    assert len(seed2) == 5 and all('"seed": 2,' in c for c in seed2)
    main = [c for c in nnunet if "--trained-dir results/nnunet/trained " in c]
    assert len(main) == 5 and all('"seed": 0,' in c for c in main)
    logreg = [line for line in result.stdout.splitlines() if "fit-baseline " in line]
    assert any("--outdir results/predictions/seed1/logreg " in c and '"seed": 1,' in c
               for c in logreg)  # fmt: skip
    # The tables become sections of results.md.
    assert "--sections results/evaluation/results_cv.md results/evaluation/results_seeds.md" in (
        result.stdout
    )


def test_seeds_given_with_snakemakes_config_option_plan_every_run():
    # Snakemake's `--config` hands over the list's items (and `true`) as strings.
    args = ["--config", "seeds=[0,1,2]", "cross_validation=true"]
    jobs = planned_jobs(snakemake("-n", "--forceall", *args).stdout)
    assert jobs["train_model"] == len(TORCH_MODELS) * (1 + 2 + 5) + 2
    assert jobs["evaluate_seeds"] == jobs["evaluate_cv"] == 1


def test_a_seed_that_is_no_number_stops_the_dry_run_naming_the_key():
    result = snakemake("-n", "--config", "seeds=[0,a]", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "'a' is not of type 'integer'" in output and "instance['seeds'][1]" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"seeds": [0, 0]}, "has non-unique elements"),
    ],
)
def test_impossible_repeats_stop_the_dry_run(tmp_path, keys, message):
    result = snakemake("-n", "--configfile", _config(tmp_path, **keys), check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stderr or "ValidationError" in result.stderr


def test_tiny_cross_validated_run(tmp_path):
    # Only the cross-validated table's jobs (the tiny demo test runs the others; the seeds
    # reuse the models' own rules, checked by the dry run above).
    workdir = _tiny_run(tmp_path, "results/evaluation/results_cv.md", cross_validation=True)
    evaluation = workdir / "results" / "evaluation"
    split = json.loads((workdir / "results" / "split" / "split.json").read_text())
    per_sample = pd.read_csv(evaluation / "results_cv_per_sample.csv")
    # Every training + validation sample, once per model, predicted by the fold holding it out.
    held_out = {s: k for k, fold in enumerate(split["folds"]) for s in fold["val"]}
    assert sorted(per_sample["sample"].unique()) == sorted(split["train"] + split["val"])
    assert all(
        held_out[s] == k for s, k in zip(per_sample["sample"], per_sample["fold"], strict=True)
    )
    assert sorted(per_sample["model"].unique()) == sorted(EVALUATED_MODELS)
    assert per_sample.groupby("model").size().eq(len(held_out)).all()
    # Each fold's model trained without its held-out samples.
    for fold, samples in enumerate(fold["val"] for fold in split["folds"]):
        trained = json.loads(
            (
                workdir / "results" / "models" / "cv" / f"fold{fold}" / "unet" / "model.json"
            ).read_text()
        )
        assert not set(samples) & set(trained["train_samples"] + trained["val_samples"])
    assert (evaluation / "results_cv.md").read_text().startswith("## Cross-validated evaluation")
    assert not check_intervals(pd.read_csv(evaluation / "results_cv.csv")).empty
    folds = pd.read_csv(evaluation / "results_cv_folds.csv")
    assert list(folds.columns[2:]) == ["dice_fold0", "dice_fold1"]


def test_tiny_repeated_seeds_run(tmp_path):
    # Only the repeated-seeds table's jobs: every model of the table, seeds 0 (the main
    # run) and 1, through the same rules as the demo's.
    workdir = _tiny_run(tmp_path, "results/evaluation/results_seeds.md", seeds=[0, 1])
    results = workdir / "results"
    split = json.loads((results / "split" / "split.json").read_text())
    per_sample = pd.read_csv(results / "evaluation" / "results_seeds_per_sample.csv")
    assert sorted(per_sample["model"].unique()) == sorted(EVALUATED_MODELS)
    # Every model, both seeds, every test sample, each once.
    counts = per_sample.groupby(["model", "seed"]).size()
    assert len(counts) == 2 * len(EVALUATED_MODELS) and counts.eq(len(split["test"])).all()
    assert per_sample["dice"].between(0, 1).all()
    # Seed 1's runs were trained with seed 1 (the main runs with seed 0).
    for model in ("unet", "logreg", "phasor"):
        record = json.loads((results / "models" / "seed1" / model / "model.json").read_text())
        main = json.loads((results / "models" / model / "model.json").read_text())
        assert (record["seed"], main["seed"]) == (1, 0)
    # nnU-Net's seed-1 folds are trained anew: other weights than the main run's.
    import torch

    (main_fold,) = (results / "nnunet" / "trained").glob("*/*/fold_0/checkpoint_final.pth")
    seed_fold = results / "nnunet" / "seed1" / main_fold.relative_to(results / "nnunet")
    weights = [
        torch.load(path, map_location="cpu", weights_only=False)["network_weights"]
        for path in (main_fold, seed_fold)
    ]
    assert weights[0].keys() == weights[1].keys()
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert (results / "predictions" / "seed1" / "nnunet" / "timing.json").is_file()
    table = pd.read_csv(results / "evaluation" / "results_seeds.csv").set_index("model")
    assert set(table["seeds"]) == {"0 1"} and table["dice_sd"].notna().all()
    markdown = (results / "evaluation" / "results_seeds.md").read_text()
    assert markdown.startswith("## Repeated seeds") and "nnU-Net |" in markdown
    assert (results / "evaluation" / "results_seeds_dice.png").read_bytes().startswith(b"\x89PNG")
