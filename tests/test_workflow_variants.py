"""The whole workflow, tiny and short, on a synthetic dataset holding every variant of the
input contract at once (config/variants.yaml): samples without H&E, plain multi-page and
channels-last TIFF stacks, portrait and landscape images, every QuPath export style, an
extra tissue class mapped by the configuration and features without a class."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import tifffile

from tests.conftest import DEMO_CONFIG, REPO
from tests.test_workflow import planned_jobs, snakemake, tiny_config

pytestmark = pytest.mark.workflow

VARIANTS_CONFIG = REPO / "config" / "variants.yaml"
MODELS = ("nnunet", "unet", "unetr", "ramanseg", "ramanseg_noproj", "logreg")


def _has_unclassified_feature(path: Path) -> bool:
    document = json.loads(path.read_text())
    features = document["features"] if isinstance(document, dict) else document
    return any("classification" not in feature["properties"] for feature in features)


def test_dry_run_plans_the_variant_dataset_at_demo_size():
    result = snakemake("-n", "--forceall", "--configfile", str(DEMO_CONFIG), str(VARIANTS_CONFIG))
    jobs = planned_jobs(result.stdout)
    assert jobs["phantom"] == 1 and jobs["preprocess"] == jobs["qc_figure"] == 32
    assert "resources/phantom_variants/samples.tsv" in result.stdout


def test_every_rule_runs_on_every_variant_of_the_input_contract(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    configs = [str(DEMO_CONFIG), str(VARIANTS_CONFIG), str(tiny_config(tmp_path))]
    snakemake(
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", *configs,
        "--cores", "2",
    )  # fmt: skip

    data = workdir / "resources" / "phantom_variants"
    sheet = pd.read_csv(data / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    sheet = sheet.set_index("sample_id", drop=False)
    results = workdir / "results_variants"  # config/variants.yaml: results_dir
    split = json.loads((results / "split" / "split.json").read_text())
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(sheet.index)

    # The dataset holds every variant, and so does the test set the models predict.
    axes = {}
    for sample, path in sheet["srs"].items():
        with tifffile.TiffFile(data / path) as tif:
            axes[sample] = "ome" if tif.is_ome else tif.series[0].axes
    no_he = set(sheet.index[sheet["he"] == ""])
    qc = {
        sample: json.loads((results / "preprocessed" / sample / "qc.json").read_text())
        for sample in sheet.index
    }
    shapes = {sample: tuple(qc[sample]["shape"]) for sample in sheet.index}
    immune = {s for s in sheet.index if qc[s]["class_fractions"]["Immune cells"] > 0}
    unclassified = {
        s for s in sheet.index if _has_unclassified_feature(data / sheet.loc[s, "annotations"])
    }
    documents = [json.loads((data / p).read_text()) for p in sheet["annotations"]]
    assert {type(d).__name__ for d in documents} == {"dict", "list"}
    test = set(split["test"])
    assert test & no_he
    assert {axes[s] for s in test} >= {"IYX", "YXC"}  # a plain TIFF, a channels-last stack
    assert {shapes[s] for s in test} == {(24, 48, 64), (24, 64, 48)}
    assert test & immune and test & unclassified

    # Every sample, with or without H&E, was preprocessed and got its QC figure.
    for sample in sheet.index:
        folder = results / "preprocessed" / sample
        stack = tifffile.imread(folder / "stack.ome.tif")
        assert stack.shape == shapes[sample] and stack.dtype == "float32"
        assert (folder / "qc.png").stat().st_size > 0
        assert (results / "logs" / "qc_figure" / f"{sample}.log").is_file()
        has_he = sample not in no_he
        assert qc[sample]["foreground_source"] == ("he" if has_he else "srs")
        assert qc[sample]["features"]["skipped_unclassified"] == (sample in unclassified)
    assert no_he and immune and unclassified

    # Every model's test predictions exist, in each test image's own shape.
    for model in MODELS:
        for sample in split["test"]:
            for kind in ("mask", "probability"):
                prediction = results / "predictions" / model / f"{sample}.{kind}.tif"
                assert tifffile.imread(prediction).shape == shapes[sample][1:], prediction
    table = (results / "evaluation" / "results.csv").read_text()
    assert all(model in table for model in MODELS)
