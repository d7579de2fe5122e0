"""`snakemake package` and `snakemake predict`: tiny models trained and packaged, then new
slides without annotations segmented in a fresh directory from the package alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import shapely
import tifffile
import yaml

from ramanseg.annotations import rasterize_annotations, read_qupath_geojson
from ramanseg.settings import AnnotationSettings
from tests.conftest import REPO
from tests.test_workflow import snakemake, tiny_config

pytestmark = pytest.mark.workflow

MODELS = ["unet", "nnunet", "ramanseg"]


def run(workdir: Path, *args: str, check: bool = True):
    return snakemake(
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(REPO / "config" / "config.yaml"), *args,
        check=check,
    )  # fmt: skip


def test_package_then_predict_new_slides_from_the_package_alone(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    config = tiny_config(tmp_path)
    extra = tmp_path / "package.yaml"
    extra.write_text(yaml.safe_dump({"package": {"models": MODELS}}))
    run(train, str(config), str(extra), "--cores", "2", "package")
    package = train / "results" / "package" / "models.zip"
    assert package.is_file()

    # A fresh directory with only the package and two slides: no annotations, one without
    # H&E (its tissue then comes from the SRS stack).
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(package, fresh / "models.zip")
    phantom = train / "resources" / "phantom"
    slides = sorted((phantom / "srs").glob("*.ome.tif"))[:2]
    rows = ["sample_id\tpatient_id\tsrs\the\tannotations"]
    for index, srs in enumerate(slides):
        sample = srs.name.removesuffix(".ome.tif")
        shutil.copy(srs, fresh / srs.name)
        he = ""
        if index == 0:
            shutil.copy(phantom / "he" / f"{sample}.tif", fresh / f"{sample}.he.tif")
            he = f"{sample}.he.tif"
        rows.append(f"new{index}\tx{index}\t{srs.name}\t{he}\t")
    (fresh / "slides.tsv").write_text("\n".join(rows) + "\n")
    predict_config = tmp_path / "predict.yaml"
    predict_config.write_text(yaml.safe_dump({"predict": {"min_area_px": 0}}))
    # No target named: with a package configured, `predict` is the default target.
    predict_args = ["--config", "predict_samplesheet=slides.tsv", "model_package=models.zip"]
    run(fresh, str(predict_config), "--cores", "2", *predict_args)
    run(fresh, str(predict_config), "--report", "report.html", *predict_args)
    assert (fresh / "report.html").stat().st_size > 10_000
    (fresh / "report.html").unlink()
    # Nothing was read or written outside it but the results (no training data).
    inputs = {"models.zip", "slides.tsv", *(p.name for p in fresh.glob("*.tif"))}
    assert {p.name for p in fresh.iterdir()} == inputs | {".snakemake", "results"}
    assert sorted(p.name for p in (fresh / "results").iterdir()) == [
        "benchmarks", "logs", "predict",
    ]  # fmt: skip

    results = fresh / "results" / "predict"
    settings = AnnotationSettings(labels={"Tumor": 1}, ignore=frozenset(), unclassified="error")
    for sample in ("new0", "new1"):
        assert (results / sample / "overlay.png").stat().st_size > 1000
        for model in MODELS:
            mask = tifffile.imread(results / sample / f"{model}.mask.ome.tif")
            probability = tifffile.imread(results / sample / f"{model}.probability.ome.tif")
            assert mask.shape == probability.shape == (48, 64)
            geojson = results / sample / f"{model}.geojson"
            document = json.loads(geojson.read_text())
            for feature in document["features"]:
                assert shapely.geometry.shape(feature["geometry"]).is_valid
            _, back = rasterize_annotations(
                read_qupath_geojson(geojson, sample), mask.shape, settings, sample
            )
            assert np.mean(back == mask) >= 0.99, (sample, model)
        # RamanSeg's "this looks like that", from the source patches the package carries.
        assert (results / sample / "explanation.png").stat().st_size > 1000
    summary = (results / "summary.csv").read_text()
    assert summary.count("\n") == 1 + 2 * len(MODELS)
    assert "tumour_area_um2" in summary and "Dice" in (results / "summary.md").read_text()

    # A slide with a channel count other than the package's stops the plan, naming it.
    three = np.zeros((3, 48, 64), dtype=np.uint16)
    tifffile.imwrite(fresh / "three.tif", three, photometric="minisblack")
    (fresh / "bad.tsv").write_text(rows[0] + "\nbad\tx\tthree.tif\t\t\n")
    result = run(
        fresh, "-n", "predict",
        "--config", "predict_samplesheet=bad.tsv", "model_package=models.zip",
        check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "three.tif" in output and "3 channels" in output
    assert "Traceback" not in output
