"""The spectra commands through the real CLI: outputs, and bad input exiting 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ramanseg.spectra.synthetic import lorentzian_spectra
from tests.conftest import REPO


def _settings(config, **training):
    spectra = config["spectra"]
    spectra["training"].update(epochs=2, patience=2, **training)
    spectra["transfer"]["pretrain_epochs"] = 1
    spectra["bootstrap"]["resamples"] = 20
    spectra["datasets"]["tiny"] = {"table": "", "positive": ["planted"]}
    return json.dumps({"seed": 0, "spectra": spectra})


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "ramanseg", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


@pytest.fixture()
def tiny_table(tmp_path):
    # 300 bands (600-1797 cm-1 every 4) keep the test quick.
    frame = lorentzian_spectra(80, n_groups=10, seed=0, wavenumbers=np.arange(600.0, 1800.0, 4.0))
    path = tmp_path / "tiny.parquet"
    frame.to_parquet(path)
    return path


def test_spectra_run_writes_metrics_figures_and_weights(tmp_path, config, tiny_table):
    outdir = tmp_path / "out"
    result = _run(
        "spectra-run",
        "--dataset",
        "tiny",
        "--table",
        tiny_table,
        "--source",
        REPO / "resources/spectra/bladder.csv.xz",
        "--outdir",
        outdir,
        "--settings",
        _settings(config),
    )
    assert result.returncode == 0, result.stderr
    metrics = pd.read_csv(outdir / "metrics.csv")
    assert set(metrics["model"]) == {"cnn", "resnet", "svm", "svm_ga"}
    assert len(metrics) == 20
    assert (
        (metrics["ci_low"] <= metrics["value"]) & (metrics["value"] <= metrics["ci_high"])
    ).all()
    for name in ("training_curves", "confusion", "spectra", "explanations"):
        assert (outdir / f"{name}.png").stat().st_size > 1000
    assert (outdir / "cnn.pt").is_file()
    summary = _run(
        "spectra-summary", "--metrics", outdir / "metrics.csv", "--out-prefix", tmp_path / "all"
    )
    assert summary.returncode == 0, summary.stderr
    assert "1D ResNet (transfer)" in (tmp_path / "all.md").read_text()


def test_a_bad_table_exits_2_names_it_and_writes_nothing(tmp_path, config):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"1000": [1.0, 2.0], "1001": [1.0, np.nan], "label": ["a", "b"]}).to_csv(
        path, index=False
    )
    outdir = tmp_path / "out"
    result = _run(
        "spectra-run",
        "--dataset",
        "tiny",
        "--table",
        path,
        "--outdir",
        outdir,
        "--settings",
        _settings(config),
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "'tiny'" in result.stderr and str(path) in result.stderr and "`group`" in result.stderr
    assert not outdir.exists() or not any(outdir.iterdir())


def test_a_window_longer_than_the_spectra_exits_2_naming_the_key(tmp_path, config, tiny_table):
    config["spectra"]["preprocessing"]["savgol"]["window"] = 401
    result = _run(
        "spectra-run",
        "--dataset",
        "tiny",
        "--table",
        tiny_table,
        "--outdir",
        tmp_path / "out",
        "--settings",
        _settings(config),
    )
    assert result.returncode == 2
    assert "spectra.preprocessing.savgol.window" in result.stderr
    assert "Traceback" not in result.stderr
