"""Evaluation: hand-computed metrics, empty-set conventions, the results table and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import tifffile

from ramanseg.cli import main
from ramanseg.errors import InputError
from ramanseg.evaluate import (
    Confusion,
    EvaluationSettings,
    confusion,
    evaluate_models,
    evaluation_region,
    evaluation_settings,
    metrics,
    read_patients,
    run_evaluate,
)
from ramanseg.evaluation_report import (
    markdown_results,
    read_paper_results,
    results_table,
    summarise,
)
from ramanseg.predictions import masks_by_model, write_prediction
from tests.conftest import REPO
from tests.interpret import register_commands

PAPER = REPO / "resources" / "paper_results.csv"


def test_metrics_of_a_hand_counted_confusion_matrix():
    truth = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    prediction = np.array([[1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    # TP: (0,0) (1,0) (1,1) = 3; FN: (0,1) = 1; FP: (1,2) (2,2) = 2; TN: 16 - 6 = 10.
    counts = confusion(prediction, truth)
    assert counts == Confusion(tp=3, fp=2, fn=1, tn=10)
    values = metrics(counts)
    assert values["dice"] == pytest.approx(6 / 9)  # 2 TP / (2 TP + FP + FN)
    assert values["sensitivity"] == pytest.approx(3 / 4)
    assert values["specificity"] == pytest.approx(10 / 12)


def test_region_restricts_every_count():
    truth = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    prediction = np.array([[1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    region = np.zeros((4, 4), bool)
    region[:2, :] = True  # the top two rows: TP 3, FN 1, FP (1,2) only, TN 3
    assert confusion(prediction, truth, region) == Confusion(tp=3, fp=1, fn=1, tn=3)


def test_empty_prediction_and_empty_truth_conventions():
    empty = np.zeros((3, 3), np.uint8)
    some = np.zeros((3, 3), np.uint8)
    some[1, 1] = 1
    both_empty = metrics(confusion(empty, empty))
    assert both_empty["dice"] == 1.0
    assert math.isnan(both_empty["sensitivity"])  # no true tumour pixel
    assert both_empty["specificity"] == 1.0
    missed = metrics(confusion(empty, some))  # empty prediction, tumour present
    assert missed == {"dice": 0.0, "sensitivity": 0.0, "specificity": 1.0}
    invented = metrics(confusion(some, empty))  # tumour predicted, none present
    assert invented["dice"] == 0.0
    assert math.isnan(invented["sensitivity"])
    assert invented["specificity"] == pytest.approx(8 / 9)
    full = np.ones((3, 3), np.uint8)
    assert math.isnan(metrics(confusion(full, full))["specificity"])  # no true negative


def test_evaluation_regions():
    foreground = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 0]])
    classes = np.array([[0, 0, 0], [0, 3, 0], [0, 0, 0]])
    tissue = evaluation_region("tissue", (3, 3), foreground, classes)
    assert tissue.sum() == 3 and tissue[1, 1] and tissue[0, 0]
    annotated = evaluation_region("annotated", (3, 3), None, classes)
    assert annotated.sum() == 1
    assert evaluation_region("all", (3, 3), None, None).all()
    with pytest.raises(ValueError, match=r"evaluate\.pixels"):
        evaluation_region("glass", (3, 3), None, None)


def test_summary_leaves_undefined_values_out_and_counts_them():
    per_sample = pd.DataFrame(
        {
            "model": ["a", "a", "a"],
            "dice": [0.5, 1.0, 0.0],
            "sensitivity": [0.5, math.nan, 1.0],
            "specificity": [1.0, 0.5, 0.5],
        }
    )
    row = summarise(per_sample).iloc[0]
    assert row["n_samples"] == 3
    assert row["dice_mean"] == pytest.approx(50.0)
    assert row["dice_std"] == pytest.approx(np.std([50.0, 100.0, 0.0]))  # ddof = 0
    assert row["sensitivity_n"] == 2
    assert row["sensitivity_mean"] == pytest.approx(75.0)
    assert row["specificity_mean"] == pytest.approx(200 / 3)


def test_paper_results_resource_holds_the_papers_table():
    paper = read_paper_results(PAPER).set_index("model")
    assert list(paper.index) == ["unet", "unetr", "nnunet", "ramanseg", "ramanseg_noproj"]
    assert paper.loc["nnunet", ["dice_mean", "dice_std"]].tolist() == [80.9, 10.4]
    assert paper.loc["ramanseg", ["sensitivity_mean", "specificity_mean"]].tolist() == [95.9, 79.1]
    assert paper.loc["ramanseg_noproj", "label"] == "Projection-free RamanSeg"
    assert paper.loc["unet", ["sensitivity_std", "specificity_std"]].tolist() == [23.6, 5.5]


def test_paper_bottleneck_resource_keeps_the_lost_sizes_empty():
    table = pd.read_csv(REPO / "resources" / "paper_bottleneck.csv")
    assert table["mean_dice"].tolist() == [1.0, 0.9804, 0.9581, 0.9113, 0.8356]
    assert table["feature_map_size"].isna().all()
    assert table["note"].str.contains("lost").all()


def test_markdown_puts_ours_beside_the_papers():
    summary = pd.DataFrame(
        {
            "model": ["nnunet", "logreg"],
            "n_samples": [2, 2],
            "dice_mean": [70.0, 40.0],
            "dice_std": [5.0, 1.0],
            "dice_n": [2, 2],
            "sensitivity_mean": [60.0, math.nan],
            "sensitivity_std": [2.0, math.nan],
            "sensitivity_n": [1, 0],
            "specificity_mean": [90.0, 80.0],
            "specificity_std": [1.0, 3.0],
            "specificity_n": [2, 2],
        }
    )
    table = results_table(summary, read_paper_results(PAPER))
    assert table.loc[0, "label"] == "nnU-Net"
    assert table.loc[0, "paper_dice_mean"] == 80.9
    assert math.isnan(table.loc[1, "paper_dice_mean"])
    text = markdown_results(table, "tissue")
    assert "| nnU-Net | 2 | 70.0 ± 5.0 | 80.9 ± 10.4 | 60.0 ± 2.0 (n=1) | 83.5 ± 14.5 |" in text
    assert "| Per-pixel logistic regression | 2 | 40.0 ± 1.0 | n/a | n/a | n/a |" in text
    assert "pixels counted: tissue" in text


def test_markdown_intervals_say_why_there_is_none():
    summary = pd.DataFrame(
        {
            "model": ["logreg"],
            "n_samples": [3],
            **{f"{m}_{s}": [50.0] for m in ("dice", "specificity") for s in ("mean", "std")},
            "dice_n": [3],
            "specificity_n": [3],
            "sensitivity_mean": [math.nan],
            "sensitivity_std": [math.nan],
            "sensitivity_n": [0],
        }
    )
    intervals = pd.DataFrame(
        {
            "model": ["logreg"],
            "n_patients": [2],
            "ci_degenerate": [False],
            "dice_ci_low": [40.0],
            "dice_ci_high": [60.0],
            "dice_n_patients": [2],
            "sensitivity_ci_low": [math.nan],  # undefined on every sample
            "sensitivity_ci_high": [math.nan],
            "sensitivity_n_patients": [0],
            "specificity_ci_low": [math.nan],  # defined on one patient's samples only
            "specificity_ci_high": [math.nan],
            "specificity_n_patients": [1],
        }
    )
    text = markdown_results(results_table(summary, None, intervals), "tissue", 0.9, 100, 7)
    assert (
        "| Per-pixel logistic regression | 3 | 2 | 50.0 ± 50.0 | [40.0, 60.0] | n/a "
        "| n/a | n/a | n/a |" in text
    )
    assert "| 50.0 ± 50.0 | one patient: no CI | n/a |" in text
    assert "90 % CI" in text and "100 resamples, seed 7" in text


# --------------------------------------------------------------------------------------------
# On files: two samples, two models.


def _write_sample(root, sample, truth, foreground, classes):
    folder = root / sample
    folder.mkdir(parents=True)
    tifffile.imwrite(folder / "mask.tif", truth.astype(np.uint8))
    tifffile.imwrite(folder / "foreground.tif", foreground.astype(np.uint8))
    tifffile.imwrite(folder / "classes.tif", classes.astype(np.uint8))


@pytest.fixture()
def fake_run(tmp_path, monkeypatch):
    """Preprocessed ground truth, a split and predictions of nnunet and logreg."""
    register_commands(monkeypatch, "ramanseg.evaluate")
    preprocessed = tmp_path / "preprocessed"
    truth_a = np.zeros((6, 6), np.uint8)
    truth_a[:3, :3] = 1  # 9 tumour pixels
    truth_b = np.zeros((6, 6), np.uint8)  # no tumour at all
    tissue = np.ones((6, 6), np.uint8)
    tissue[:, 5] = 0  # the last column is glass
    classes = np.where(truth_a == 1, 1, 4)
    _write_sample(preprocessed, "A", truth_a, tissue, classes * tissue)
    _write_sample(preprocessed, "B", truth_b, tissue, 4 * tissue)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "val": [], "test": ["A", "B"], "folds": []}))
    sheet = tmp_path / "samples.tsv"  # the evaluation reads only the patients
    sheet.write_text(
        "sample_id\tpatient_id\tsrs\the\tannotations\n"
        "A\tP1\tA.ome.tif\t\tA.geojson\n"
        "B\tP2\tB.ome.tif\t\tB.geojson\n"
        "C\tP3\tC.ome.tif\t\tC.geojson\n"
    )
    predictions = tmp_path / "predictions"
    nnunet_a = np.zeros((6, 6), np.float32)
    nnunet_a[:3, :2] = 1.0  # TP 6, FN 3
    nnunet_a[5, 5] = 1.0  # a false positive on glass: not counted with pixels=tissue
    write_prediction(predictions / "nnunet", "A", nnunet_a)
    write_prediction(predictions / "nnunet", "B", np.zeros((6, 6), np.float32))
    logreg_a = np.zeros((6, 6), np.float32)
    logreg_a[:3, :3] = 1.0
    logreg_a[4, 0] = 1.0  # FP 1 in tissue
    write_prediction(predictions / "logreg", "A", logreg_a)
    logreg_b = np.zeros((6, 6), np.float32)
    logreg_b[0, 0] = 1.0
    write_prediction(predictions / "logreg", "B", logreg_b)
    return {
        "preprocessed": preprocessed,
        "split": split,
        "sheet": sheet,
        "predictions": predictions,
        "out": tmp_path / "evaluation" / "results",
    }


def _masks(run) -> dict:
    return masks_by_model(sorted(run["predictions"].glob("*/*.mask.tif")))


def test_per_sample_metrics_on_files(fake_run):
    table = evaluate_models(
        _masks(fake_run), ["nnunet", "logreg"], fake_run["preprocessed"], ["A", "B"]
    ).set_index(["model", "sample"])
    # nnunet on A, 30 tissue pixels: TP 6, FN 3, FP 0 (the glass one is outside), TN 21.
    row = table.loc[("nnunet", "A")]
    assert (row.tp, row.fp, row.fn, row.tn, row.pixels) == (6, 0, 3, 21, 30)
    assert row.dice == pytest.approx(12 / 15)
    assert table.loc[("nnunet", "B"), "dice"] == 1.0  # both empty
    assert math.isnan(table.loc[("nnunet", "B"), "sensitivity"])
    assert table.loc[("logreg", "B"), "dice"] == 0.0  # tumour invented
    assert table.loc[("logreg", "A"), "specificity"] == pytest.approx(20 / 21)
    everything = evaluate_models(
        _masks(fake_run), ["nnunet"], fake_run["preprocessed"], ["A"], pixels="all"
    )
    assert everything.loc[0, "fp"] == 1 and everything.loc[0, "pixels"] == 36


def _cli(run, models=("nnunet", "logreg"), **evaluate):
    preprocessed = run["preprocessed"]
    return main(
        [
            "evaluate",
            "--predictions",
            *map(str, sorted(run["predictions"].glob("*/*.mask.tif"))),
            "--models",
            *models,
            "--truth",
            *map(str, sorted(preprocessed.glob("*/mask.tif"))),
            "--classes",
            *map(str, sorted(preprocessed.glob("*/classes.tif"))),
            "--foregrounds",
            *map(str, sorted(preprocessed.glob("*/foreground.tif"))),
            "--split",
            str(run["split"]),
            "--samples",
            str(run["sheet"]),
            "--paper",
            str(PAPER),
            "--out-prefix",
            str(run["out"]),
            "--settings",
            json.dumps({"seed": 0, "evaluate": {"bootstrap_resamples": 200, **evaluate}}),
        ]
    )


def test_cli_writes_the_table_beside_the_paper_deterministically(fake_run):
    assert _cli(fake_run) == 0
    out = fake_run["out"]
    names = [
        "results.csv",
        "results.parquet",
        "results.md",
        "results_per_sample.csv",
        "results_per_sample.parquet",
        "results_dice.png",
        "results_dice.pdf",
        "results_comparisons.csv",
        "results_comparisons.parquet",
        "results_paired.png",
        "results_paired.pdf",
        "results_forest.png",
        "results_forest.pdf",
    ]
    first = {name: (out.parent / name).read_bytes() for name in names}
    table = pd.read_csv(out.parent / "results.csv").set_index("model")
    # nnunet Dice: A 0.8, B 1.0 -> mean 90, std 10 (ddof 0).
    assert table.loc["nnunet", "dice_mean"] == pytest.approx(90.0)
    assert table.loc["nnunet", "dice_std"] == pytest.approx(10.0)
    assert table.loc["nnunet", "sensitivity_n"] == 1
    assert table.loc["nnunet", "paper_dice_mean"] == 80.9
    # Two patients (A: P1, B: P2), one sample each: drawing (P1, P1), (P1, P2) or (P2, P2)
    # gives 80, 90 or 100.
    assert table.loc["nnunet", "n_patients"] == 2
    assert (table.loc["nnunet", "dice_ci_low"], table.loc["nnunet", "dice_ci_high"]) == (80, 100)
    # logreg - nnunet: A 18/19 - 0.8, B 0 - 1.
    assert table.loc["logreg", "dice_difference"] == pytest.approx((100 * 18 / 19 - 80 - 100) / 2)
    assert table.loc["logreg", "reference"] == "nnunet"
    assert math.isnan(table.loc["nnunet", "dice_difference"])
    markdown = (out.parent / "results.md").read_text()
    assert (
        "| nnU-Net | 2 | 2 | 90.0 ± 10.0 | [80.0, 100.0] | 80.9 ± 10.4 | 66.7 ± 0.0 (n=1) "
        "| one patient: no CI | 83.5 ± 14.5 |" in markdown
    )
    assert markdown.count("| reference |") == 1
    assert "| -42.6 [-100.0, 14.7] ns |" in markdown
    assert "With 2 samples the smallest possible p is 0.5" in markdown
    assert "200 resamples, seed 0" in markdown
    per_sample = pd.read_parquet(out.parent / "results_per_sample.parquet")
    assert len(per_sample) == 4
    assert list(per_sample["patient"]) == ["P1", "P2", "P1", "P2"]
    comparisons = pd.read_csv(out.parent / "results_comparisons.csv")
    assert list(comparisons.columns[:2]) == ["model", "label"]
    row = comparisons.iloc[0]
    assert (row.model, row.reference, row.n_samples, row.n_patients) == ("logreg", "nnunet", 2, 2)
    assert row.p_value == 1.0  # two samples, one better, one worse
    assert first["results_dice.png"].startswith(b"\x89PNG")
    assert _cli(fake_run) == 0
    assert {name: (out.parent / name).read_bytes() for name in names} == first


def test_a_model_that_labels_all_tissue_tumour_is_flagged(fake_run, caplog):
    everything = np.ones((6, 6), np.float32)
    for sample in ("A", "B"):
        write_prediction(fake_run["predictions"] / "logreg", sample, everything)
    with caplog.at_level("WARNING"):
        assert _cli(fake_run) == 0
    table = pd.read_csv(fake_run["out"].parent / "results.csv").set_index("model")
    assert table.loc["logreg", "one_sided"] == "tumour"
    assert pd.isna(table.loc["nnunet", "one_sided"])  # written as "" in the CSV
    markdown = (fake_run["out"].parent / "results.md").read_text()
    assert "**ONE-SIDED PREDICTION**" in markdown
    assert "Per-pixel logistic regression labels most non-tumour pixels tumour" in markdown
    assert "ONE-SIDED PREDICTION: Per-pixel logistic regression" in caplog.text


def test_missing_prediction_names_the_model_and_its_rule(fake_run, capsys):
    (fake_run["predictions"] / "logreg" / "B.mask.tif").unlink()
    assert _cli(fake_run) == 2
    message = capsys.readouterr().err
    assert "model 'logreg'" in message and "fit_baseline" in message and "'B'" in message
    assert not fake_run["out"].parent.exists()
    with pytest.raises(InputError, match=r"predict_model \(model=unet\)"):
        evaluate_models(_masks(fake_run), ["unet"], fake_run["preprocessed"], ["A"])


def _set_patients(run, patients):
    rows = [f"{s}\t{p}\t{s}.ome.tif\t\t{s}.geojson" for s, p in patients.items()]
    run["sheet"].write_text("sample_id\tpatient_id\tsrs\the\tannotations\n" + "\n".join(rows))


def test_one_test_patient_says_no_interval_can_be_given(fake_run):
    _set_patients(fake_run, {"A": "P1", "B": "P1"})
    assert _cli(fake_run) == 0
    out = fake_run["out"].parent
    table = pd.read_csv(out / "results.csv").set_index("model")
    assert table["ci_degenerate"].all() and (table["n_patients"] == 1).all()
    assert table["dice_ci_low"].isna().all() and table["dice_ci_high"].isna().all()
    markdown = (out / "results.md").read_text()
    assert "| nnU-Net | 2 | 1 | 90.0 ± 10.0 | one patient: no CI | 80.9 ± 10.4 |" in markdown
    assert "| -42.6 (one patient: no CI) ns |" in markdown
    assert "[90.0, 90.0]" not in markdown  # no interval pretending to be one
    comparisons = pd.read_csv(out / "results_comparisons.csv")
    assert comparisons["ci_degenerate"].all() and (comparisons["n_patients"] == 1).all()
    assert comparisons["ci_low"].isna().all() and comparisons["ci_high"].isna().all()


def test_identical_models_are_not_told_apart(fake_run):
    # logreg's predictions replaced by nnunet's: difference 0, interval [0, 0], p = 1.
    for sample in ("A", "B"):
        source = fake_run["predictions"] / "nnunet" / f"{sample}.mask.tif"
        (fake_run["predictions"] / "logreg" / f"{sample}.mask.tif").write_bytes(source.read_bytes())
    assert _cli(fake_run) == 0
    row = pd.read_csv(fake_run["out"].parent / "results_comparisons.csv").iloc[0]
    assert (row.mean_difference, row.ci_low, row.ci_high, row.p_value) == (0, 0, 0, 1)
    assert "| +0.0 [0.0, 0.0] ns |" in (fake_run["out"].parent / "results.md").read_text()


def test_a_test_sample_missing_from_the_sheet_is_named(fake_run, capsys):
    _set_patients(fake_run, {"A": "P1", "C": "P3"})
    assert _cli(fake_run) == 2
    message = capsys.readouterr().err
    assert "'B'" in message and "samples.tsv" in message and "Fix:" in message
    assert "Traceback" not in message
    assert not fake_run["out"].parent.exists()


def test_a_sheet_that_disagrees_with_the_split_about_patients_is_refused(fake_run, capsys):
    split = json.loads(fake_run["split"].read_text())
    split["patients"] = {"train": [], "val": [], "test": ["P1", "P2"], "unused": []}
    fake_run["split"].write_text(json.dumps(split))
    assert _cli(fake_run) == 0  # agrees
    _set_patients(fake_run, {"A": "P1", "B": "P7"})
    assert _cli(fake_run) == 2
    message = capsys.readouterr().err
    assert "P7" in message and "split" in message and "samples.tsv" in message


def test_a_reference_model_that_is_not_evaluated_stops_the_command(fake_run, capsys):
    assert _cli(fake_run, reference_model="unet") == 2
    message = capsys.readouterr().err
    assert "evaluate.reference_model" in message and "nnunet, logreg" in message
    assert not fake_run["out"].parent.exists()
    assert _cli(fake_run, reference_model="logreg") == 0  # any evaluated model may be it
    markdown = (fake_run["out"].parent / "results.md").read_text()
    assert "Dice vs Per-pixel logistic regression" in markdown


def test_the_reference_alone_is_evaluated_without_comparisons(fake_run):
    for sample in ("A", "B"):
        (fake_run["predictions"] / "logreg" / f"{sample}.mask.tif").unlink()
    assert _cli(fake_run, models=["nnunet"]) == 0
    out = fake_run["out"].parent
    assert len(pd.read_csv(out / "results_comparisons.csv")) == 0
    assert "| nnU-Net | 2 | 2 | 90.0 ± 10.0 | [80.0, 100.0] |" in (out / "results.md").read_text()


def test_evaluation_settings_come_from_the_schema_defaults():
    from ramanseg.config import parse_settings

    assert evaluation_settings(parse_settings("{}")) == EvaluationSettings()
    evaluate = {"bootstrap_resamples": 50, "confidence_level": 0.9, "reference_model": "unet"}
    settings = evaluation_settings(parse_settings(json.dumps({"seed": 4, "evaluate": evaluate})))
    assert (settings.seed, settings.resamples, settings.confidence_level) == (4, 50, 0.9)
    assert settings.reference_model == "unet" and settings.pixels == "tissue"


def test_read_patients_without_a_recorded_test_patient_list(fake_run):
    assert read_patients(fake_run["sheet"], ["B", "A"]) == {"B": "P2", "A": "P1"}


CAPTIONS = [
    "results_table",
    "results_dice",
    "results_per_sample",
    "results_comparisons",
    "results_paired",
    "results_forest",
    "gradcam_folds",
    "gradcam_mean",
    "integrated_gradients",
    "feature_ablation",
    "class_proportions",
    "kmeans_inertia",
    "prototype_gallery",
    "rule_times",
]


@pytest.mark.parametrize("target_pixel", ["auto", [40, 50]])
def test_report_captions_render_with_the_demo_configuration(monkeypatch, target_pixel):
    import types

    import jinja2

    from ramanseg.config import load_config_files
    from tests.conftest import DEMO_CONFIG

    config = load_config_files([DEMO_CONFIG])
    config["interpret"]["target_pixel"] = target_pixel
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
    snakemake = types.SimpleNamespace(config=config)
    for name in CAPTIONS:
        source = (REPO / "workflow" / "report" / f"{name}.rst").read_text()
        text = environment.from_string(source).render(snakemake=snakemake)
        assert "{{" not in text and len(text) > 100, name


@pytest.mark.workflow
def test_the_dry_run_refuses_a_reference_model_that_is_not_evaluated():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--config", "evaluate={reference_model: unet2}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "evaluate.reference_model is 'unet2'" in result.stderr and "nnunet" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_sections_are_appended_to_results_md(fake_run, tmp_path):
    # The cross-validated and repeated-seed tables become sections of results.md.
    section = tmp_path / "results_cv.md"
    section.write_text("## Cross-validated evaluation\n\n| a |\n")
    run_evaluate(
        _masks(fake_run), ["nnunet", "logreg"], fake_run["preprocessed"], fake_run["split"],
        fake_run["sheet"], fake_run["out"], PAPER, EvaluationSettings(resamples=10),
        sections=[section],
    )  # fmt: skip
    markdown = (fake_run["out"].parent / "results.md").read_text()
    assert markdown.endswith("\n\n## Cross-validated evaluation\n\n| a |\n")
    assert markdown.index("| nnU-Net |") < markdown.index("## Cross-validated")
    with pytest.raises(InputError, match=r"a section of results\.md does not exist"):
        run_evaluate(
            _masks(fake_run), ["nnunet"], fake_run["preprocessed"], fake_run["split"],
            fake_run["sheet"], tmp_path / "other" / "results", PAPER,
            EvaluationSettings(resamples=10), sections=[tmp_path / "missing.md"],
        )  # fmt: skip
    assert not (tmp_path / "other").exists()


# The options and the run boilerplate the evaluation commands share
# (ramanseg.evaluate.add_evaluation_arguments, evaluation_arguments).

EVALUATION_COMMANDS = {
    "evaluate": ["--samples", "samples.tsv"],
    "evaluate-cv": ["--samples", "samples.tsv"],
    "evaluate-seeds": ["--seeds", "0"],
}


@pytest.mark.parametrize("command", EVALUATION_COMMANDS)
def test_the_evaluation_commands_share_their_options(command):
    from ramanseg.cli import build_parser

    shared = ["--predictions", "a/unet/S1.mask.tif", "--models", "unet", "--truth",
              "p/S1/mask.tif", "--classes", "p/S1/classes.tif", "--foregrounds",
              "p/S1/foreground.tif", "--split", "split.json", "--out-prefix", "out/results",
              "--settings", '{"evaluate": {"pixels": "all"}}']  # fmt: skip
    parser = build_parser(["ramanseg.evaluate", "ramanseg.cross_validation", "ramanseg.seeds"])
    args = vars(parser.parse_args([command, *shared, *EVALUATION_COMMANDS[command]]))
    assert {key: str(args[key]) for key in ("split", "out_prefix", "settings")} == {
        "split": "split.json",
        "out_prefix": "out/results",
        "settings": '{"evaluate": {"pixels": "all"}}',
    }
    assert args["models"] == ["unet"] and args["foregrounds"] == ["p/S1/foreground.tif"]
    with pytest.raises(SystemExit):  # --truth is required by every one of them
        parser.parse_args([command, *shared[:4], *shared[6:], *EVALUATION_COMMANDS[command]])


@pytest.mark.parametrize("command", EVALUATION_COMMANDS)
def test_every_evaluation_command_names_a_truth_file_of_the_wrong_kind(command, tmp_path, capsys):
    wrong = tmp_path / "S1" / "classes.tif"
    argv = [command, "--predictions", str(tmp_path / "unet" / "S1.mask.tif"), "--models",
            "unet", "--truth", str(wrong), "--split", str(tmp_path / "split.json"),
            "--out-prefix", str(tmp_path / "out"), "--settings", "{}"]  # fmt: skip
    assert main([*argv, *EVALUATION_COMMANDS[command]]) == 2
    error = capsys.readouterr().err
    assert f"ramanseg {command}: error:" in error
    assert "expected a mask.tif file among the masks" in error and str(wrong) in error
    assert not list(tmp_path.glob("out*"))


@pytest.mark.parametrize("command", EVALUATION_COMMANDS)
def test_every_evaluation_command_checks_its_settings(command, tmp_path, capsys):
    argv = [command, "--predictions", "unet/S1.mask.tif", "--models", "unet", "--truth",
            "S1/mask.tif", "--split", "split.json", "--out-prefix", str(tmp_path / "out"),
            "--settings", '{"evaluate": {"pixels": "some"}}']  # fmt: skip
    assert main([*argv, *EVALUATION_COMMANDS[command]]) == 2
    assert "evaluate.pixels" in capsys.readouterr().err
