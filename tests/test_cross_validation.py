"""Cross-validated evaluation, nnU-Net's fold validation predictions and repeated seeds."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import tifffile

from ramanseg.cli import main
from ramanseg.config import ConfigError
from ramanseg.cross_validation import HEADING as CV_HEADING
from ramanseg.cross_validation import held_out_fold, run_evaluate_cv
from ramanseg.errors import InputError
from ramanseg.evaluate import EvaluationSettings
from ramanseg.nnunet.validation import export_fold_predictions
from ramanseg.predictions import read_prediction, write_prediction
from ramanseg.repeats import RepeatSettings
from ramanseg.seeds import HEADING as SEEDS_HEADING
from ramanseg.seeds import run_evaluate_seeds

SIZE = 4
#: Four training samples of three patients; samples A, B (patient P1) are fold 0's.
FOLDS = [{"train": ["C", "D"], "val": ["A", "B"]}, {"train": ["A", "B"], "val": ["C", "D"]}]
PATIENTS = {"A": "P1", "B": "P1", "C": "P2", "D": "P3", "T": "P4"}


def _truth() -> np.ndarray:
    truth = np.zeros((SIZE, SIZE), np.uint8)
    truth[:2, :] = 1  # 8 tumour pixels of 16
    return truth


def _prediction(tumour_rows: int) -> np.ndarray:
    """Dice 2 TP / (2 TP + FP + FN) against :func:`_truth` for 1..4 predicted rows."""
    probability = np.zeros((SIZE, SIZE), np.float32)
    probability[:tumour_rows, :] = 1.0
    return probability


@pytest.fixture()
def data(tmp_path):
    preprocessed = tmp_path / "preprocessed"
    for sample in PATIENTS:
        folder = preprocessed / sample
        folder.mkdir(parents=True)
        tifffile.imwrite(folder / "mask.tif", _truth())
        tifffile.imwrite(folder / "foreground.tif", np.ones((SIZE, SIZE), np.uint8))
        tifffile.imwrite(folder / "classes.tif", np.where(_truth() == 1, 1, 4).astype(np.uint8))
    split = tmp_path / "split.json"
    split.write_text(
        json.dumps({"train": ["A", "B", "C"], "val": ["D"], "test": ["T"], "folds": FOLDS})
    )
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(
        "sample_id\tpatient_id\tsrs\the\tannotations\n"
        + "".join(f"{s}\t{p}\t{s}.tif\t\t{s}.geojson\n" for s, p in PATIENTS.items())
    )
    return {"preprocessed": preprocessed, "split": split, "sheet": sheet, "root": tmp_path}


def _truth_args(preprocessed, samples) -> list[str]:
    args = []
    for option, name in (("--truth", "mask"), ("--classes", "classes"),
                         ("--foregrounds", "foreground")):  # fmt: skip
        args += [option, *(str(preprocessed / s / f"{name}.tif") for s in samples)]
    return args


# --------------------------------------------------------------------------------------------
# Cross-validation


def _write_cv_predictions(root, rows_by_model) -> list:
    """``rows_by_model[model][sample]`` predicted tumour rows, each by its own fold."""
    fold_of = held_out_fold({"folds": FOLDS})
    paths = []
    for model, rows in rows_by_model.items():
        for sample, count in rows.items():
            folder = root / "predictions" / "cv" / f"fold{fold_of[sample]}" / model
            paths.append(write_prediction(folder, sample, _prediction(count))[0])
    return paths


def _cv_cli(data, paths, models=("nnunet", "unet")) -> int:
    return main(
        [
            "evaluate-cv",
            "--predictions",
            *map(str, paths),
            "--models",
            *models,
            *_truth_args(data["preprocessed"], "ABCD"),
            "--split",
            str(data["split"]),
            "--samples",
            str(data["sheet"]),
            "--out-prefix",
            str(data["root"] / "evaluation" / "results_cv"),
            "--settings",
            json.dumps({"seed": 0, "evaluate": {"bootstrap_resamples": 200}}),
        ]
    )


def test_every_training_sample_is_evaluated_once_by_the_fold_that_held_it_out(data):
    # nnunet exact everywhere; unet predicts 4 rows on A (Dice 2/3) and exactly elsewhere.
    paths = _write_cv_predictions(
        data["root"],
        {"nnunet": dict.fromkeys("ABCD", 2), "unet": {**dict.fromkeys("ABCD", 2), "A": 4}},
    )
    assert _cv_cli(data, paths) == 0
    out = data["root"] / "evaluation"
    per_sample = pd.read_csv(out / "results_cv_per_sample.csv")
    assert sorted(per_sample["sample"]) == sorted("AABBCCDD")  # never the test sample T
    assert dict(zip(per_sample["sample"], per_sample["fold"], strict=True)) == {
        "A": 0, "B": 0, "C": 1, "D": 1
    }  # fmt: skip
    table = pd.read_csv(out / "results_cv.csv").set_index("model")
    assert table.loc["nnunet", "dice_mean"] == pytest.approx(100.0)
    assert table.loc["unet", "dice_mean"] == pytest.approx((200 / 3 + 300) / 4)
    assert table.loc["unet", "n_patients"] == 3
    assert not [column for column in table.columns if column.startswith("paper_")]
    # The paired patient bootstrap of unet - nnunet: only P1's draws move it, never above 0.
    assert table.loc["unet", "dice_difference_ci_high"] <= 0
    markdown = (out / "results_cv.md").read_text()
    assert markdown.startswith(CV_HEADING)
    assert "over the held-out samples" in markdown and "(paper)" not in markdown
    assert "results_cv_comparisons.csv" in markdown
    folds = pd.read_csv(out / "results_cv_folds.csv").set_index("model")
    # unet: fold 0 holds out A (Dice 2/3) and B (1), fold 1 C and D (1 each).
    assert folds.loc["unet", "dice_fold0"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert folds.loc["unet", "dice_fold1"] == pytest.approx(100.0)
    assert "| U-Net | 83.3 | 100.0 |" in markdown
    first = {path.name: path.read_bytes() for path in out.iterdir()}
    assert _cv_cli(data, paths) == 0
    assert {path.name: path.read_bytes() for path in out.iterdir()} == first


def test_a_prediction_from_a_fold_that_trained_on_the_sample_is_refused(data, capsys):
    paths = _write_cv_predictions(data["root"], {"nnunet": dict.fromkeys("ABCD", 2)})
    # Fold 1 trained on A: its prediction of A would flatter the model.
    wrong = write_prediction(data["root"] / "predictions" / "cv" / "fold1" / "unet", "A",
                             _prediction(2))[0]  # fmt: skip
    assert _cv_cli(data, [*paths, wrong], models=("nnunet",)) == 2
    error = capsys.readouterr().err
    assert "fold 1 trained on this sample, which fold 0 holds out" in error and "A" in error
    assert not (data["root"] / "evaluation").exists()


def test_a_missing_held_out_prediction_names_the_model_and_sample(data):
    paths = _write_cv_predictions(data["root"], {"nnunet": dict.fromkeys("ABC", 2)})
    with pytest.raises(InputError, match="model 'nnunet' has no prediction") as error:
        run_evaluate_cv(
            paths,
            ["nnunet"],
            data["preprocessed"],
            data["split"],
            data["sheet"],
            data["root"] / "results_cv",
            EvaluationSettings(resamples=10),
        )
    assert error.value.sample == "D"


def test_cross_validation_needs_folds(data):
    data["split"].write_text(json.dumps({"train": ["A"], "val": [], "test": ["T"], "folds": []}))
    with pytest.raises(InputError, match="at least 2 folds"):
        run_evaluate_cv([], ["nnunet"], data["preprocessed"], data["split"], data["sheet"],
                        data["root"] / "results_cv")  # fmt: skip


# --------------------------------------------------------------------------------------------
# nnU-Net's fold validation predictions


def _nnunet_fold(root, masks) -> object:
    validation = root / "fold_0" / "validation"
    validation.mkdir(parents=True)
    cases = []
    for sample, mask in masks.items():
        tifffile.imwrite(validation / f"{sample}.tif", mask)
        # nnU-Net records the absolute path of its training machine.
        cases.append({"prediction_file": f"/elsewhere/fold_0/validation/{sample}.tif"})
    summary = validation / "summary.json"
    summary.write_text(json.dumps({"foreground_mean": {"Dice": 1.0}, "metric_per_case": cases}))
    return summary


def test_nnunet_validation_predictions_in_the_shared_format(tmp_path):
    summary = _nnunet_fold(tmp_path, {"A": _truth(), "B": np.zeros((SIZE, SIZE), np.uint8)})
    outdir = tmp_path / "predictions" / "cv" / "fold0" / "nnunet"
    export_fold_predictions(summary, ["A", "B"], outdir)
    mask, probability = read_prediction(outdir, "A")
    assert np.array_equal(mask, _truth()) and np.array_equal(probability, _truth())
    assert not read_prediction(outdir, "B")[0].any()


def test_nnunet_validation_of_other_folds_or_labels_is_refused(tmp_path):
    summary = _nnunet_fold(tmp_path, {"A": _truth(), "B": 2 * _truth()})
    with pytest.raises(InputError, match="did not validate on the held-out sample") as error:
        export_fold_predictions(summary, ["A", "C"], tmp_path / "out")
    assert error.value.sample == "C"
    with pytest.raises(InputError, match="not a 2-D mask of 0 and 1"):
        export_fold_predictions(summary, ["B"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_nnunet_fold_predictions(tmp_path, capsys):
    summary = _nnunet_fold(tmp_path, {"A": _truth(), "B": _truth()})
    split = tmp_path / "fold0.json"
    split.write_text(json.dumps({"train": ["C"], "val": [], "test": ["A", "B"], "folds": []}))
    outdir = tmp_path / "predictions" / "cv" / "fold0" / "nnunet"
    args = ["nnunet-fold-predictions", "--split", str(split), "--outdir", str(outdir)]
    assert main([*args, "--summary", str(summary)]) == 0
    assert sorted(path.name for path in outdir.iterdir()) == [
        "A.mask.tif", "A.probability.tif", "B.mask.tif", "B.probability.tif"
    ]  # fmt: skip
    # A fold that never finished: exit 2 naming the summary and the fix, no traceback.
    missing = tmp_path / "fold_1" / "validation" / "summary.json"
    assert main([*args, "--summary", str(missing)]) == 2
    error = capsys.readouterr().err
    assert "validation summary does not exist" in error and "fold_1" in error
    assert "Traceback" not in error


# --------------------------------------------------------------------------------------------
# Repeated seeds


def _seeds_cli(data, paths, seeds, models=("unet",), reference="unet") -> int:
    return main(
        [
            "evaluate-seeds",
            "--predictions",
            *map(str, paths),
            "--seeds",
            *map(str, seeds),
            "--models",
            *models,
            *_truth_args(data["preprocessed"], "T"),
            "--split",
            str(data["split"]),
            "--out-prefix",
            str(data["root"] / "evaluation" / "results_seeds"),
            "--settings",
            json.dumps({"evaluate": {"reference_model": reference}}),
        ]
    )


def _seed_predictions(data, model, rows):
    """One prediction of sample T per seed ({seed: predicted tumour rows}); seed 0 is the
    main run (results/predictions/<model>), the others have their own folders."""
    return [
        write_prediction(
            data["root"] / "predictions" / ("" if seed == 0 else f"seed{seed}") / model,
            "T",
            _prediction(count),
        )[0]
        for seed, count in rows.items()
    ]


def test_the_spread_over_seeds_and_the_difference_paired_by_seed(data):
    # Dice 1, 2/3, 4/5 for U-Net; nnU-Net (the reference) 2/3, 2/3, 1.
    unet, nnunet = {0: 2, 1: 4, 2: 3}, {0: 4, 1: 4, 2: 2}
    paths = _seed_predictions(data, "unet", unet) + _seed_predictions(data, "nnunet", nnunet)
    assert _seeds_cli(data, paths, [*unet, *nnunet], ("nnunet", "unet"), "nnunet") == 0
    out = data["root"] / "evaluation"
    table = pd.read_csv(out / "results_seeds.csv").set_index("model")
    dice = np.array([100.0, 200 / 3, 80.0])
    assert table.loc["unet", "seeds"] == "0 1 2"
    assert [table.loc["unet", f"dice_seed{seed}"] for seed in unet] == pytest.approx(dice)
    assert table.loc["unet", "dice_mean"] == pytest.approx(dice.mean())
    assert table.loc["unet", "dice_sd"] == pytest.approx(dice.std(ddof=1))
    assert table.loc["unet", "dice_min"] == pytest.approx(200 / 3)
    # Paired by seed: U-Net minus nnU-Net trained with the same seed.
    difference = dice - np.array([200 / 3, 200 / 3, 100.0])
    assert table.loc["unet", "dice_diff_mean"] == pytest.approx(difference.mean(), abs=1e-4)
    assert table.loc["unet", "dice_diff_sd"] == pytest.approx(difference.std(ddof=1), abs=1e-4)
    assert (table.loc["unet", "seeds_higher"], table.loc["unet", "n_paired_seeds"]) == (1, 3)
    assert table.loc["nnunet", "dice_diff_mean"] == 0 and table.loc["nnunet", "seeds_higher"] == 0
    runs = pd.read_csv(out / "results_seeds_runs.csv")
    assert list(runs["seed"]) == [0, 1, 2, 0, 1, 2] and set(runs["n_samples"]) == {1}
    markdown = (out / "results_seeds.md").read_text()
    assert markdown.startswith(SEEDS_HEADING)
    assert (
        f"| U-Net | 0 1 2 | 100.0, 66.7, 80.0 | {dice.mean():.1f} ± {dice.std(ddof=1):.1f} |"
        in markdown
    )
    assert (
        f"| {difference.mean():+.1f} ± {difference.std(ddof=1):.1f} (1 of 3 higher) |" in markdown
    )
    assert "| Dice − nnU-Net, paired by seed |" in markdown
    # Four predicted rows of four label every pixel tumour: those seeds are one-sided.
    assert table.loc["unet", "one_sided_seeds"] == "1"
    assert table.loc["nnunet", "one_sided_seeds"] == "0 1"
    assert "**ONE-SIDED PREDICTION**" in markdown and "U-Net, seed 1 labels most" in markdown
    for suffix, magic in ((".png", b"\x89PNG"), (".pdf", b"%PDF")):
        assert (out / f"results_seeds_dice{suffix}").read_bytes().startswith(magic)
    assert "nnU-Net is retrained in all its folds per seed" in markdown


def test_identical_models_differ_by_zero_in_every_seed(data):
    rows = {0: 2, 1: 4}
    paths = _seed_predictions(data, "unet", rows) + _seed_predictions(data, "nnunet", rows)
    assert _seeds_cli(data, paths, [*rows, *rows], ("nnunet", "unet"), "nnunet") == 0
    table = pd.read_csv(data["root"] / "evaluation" / "results_seeds.csv").set_index("model")
    assert table.loc["unet", "dice_diff_mean"] == 0 and table.loc["unet", "dice_diff_sd"] == 0
    assert table.loc["unet", "seeds_higher"] == 0


def test_a_reference_that_is_not_repeated_is_refused(data, capsys):
    paths = _seed_predictions(data, "unet", {0: 2, 1: 4})
    assert _seeds_cli(data, paths, [0, 1], ("unet",), "nnunet") == 2
    assert "evaluate.reference_model is 'nnunet'" in capsys.readouterr().err
    assert not (data["root"] / "evaluation").exists()


def test_one_seed_has_no_spread(data):
    path = write_prediction(data["root"] / "predictions" / "unet", "T", _prediction(2))[0]
    summary = run_evaluate_seeds([path], [0], ["unet"], data["preprocessed"], data["split"],
                                 data["root"] / "results_seeds")  # fmt: skip
    assert summary.loc[0, "dice_mean"] == 100.0 and math.isnan(summary.loc[0, "dice_sd"])


def test_seeds_need_one_seed_per_file_and_every_seed_of_every_model(data, capsys):
    path = write_prediction(data["root"] / "predictions" / "unet", "T", _prediction(2))[0]
    assert _seeds_cli(data, [path], [0, 1]) == 2
    assert "1 prediction files but 2 seeds" in capsys.readouterr().err
    other = write_prediction(data["root"] / "predictions" / "seed1" / "unetr", "T", _prediction(2))[
        0
    ]
    # Seed 1 has no unet prediction.
    assert _seeds_cli(data, [path, other], [0, 1]) == 2
    assert "model 'unet' has no prediction" in capsys.readouterr().err
    assert not (data["root"] / "evaluation").exists()


# --------------------------------------------------------------------------------------------
# The runs the workflow plans


def _repeats(**keys) -> RepeatSettings:
    config = {"cross_validation": False, "split": {"folds": 5}, "seeds": [0], "seed": 0}
    return RepeatSettings.from_config({**config, **keys})


def test_runs_of_folds_and_seeds():
    assert list(_repeats().folds) == [] and _repeats().seed_runs("unet") == []
    repeats = _repeats(cross_validation=True, seeds=[2, 0, 1])
    assert list(repeats.folds) == [0, 1, 2, 3, 4]
    # The global seed's run is the main run: no model is trained twice with one seed.
    assert repeats.seed_runs("unet") == ["seed2/unet", "unet", "seed1/unet"]
    assert repeats.fold_run(3, "unet") == "cv/fold3/unet"


def test_cross_validation_without_folds_is_a_config_error():
    with pytest.raises(ConfigError, match="cross_validation needs at least 2 folds"):
        _repeats(cross_validation=True, split={"folds": 0})
