"""``ramanseg bench-preprocess``."""

from __future__ import annotations

import json
import warnings

import pytest

from ramanseg.cli import main
from ramanseg.preprocess import PreprocessWarning
from tests.preprocess import settings_json, with_small_channels


def test_cli_bench_preprocess(tmp_path, config):
    small_config = with_small_channels(config)
    out = tmp_path / "bench" / "preprocess.json"
    # Two repeats: both orders (baseline first, then preprocessing first).
    args = ["bench-preprocess", "--size", "48", "--channels", "5", "--repeats", "2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreprocessWarning)
        assert main([*args, "--out", str(out), "--settings", settings_json(small_config)]) == 0
    report = json.loads(out.read_text())
    assert report["size"] == 48 and report["channels"] == 5 and report["repeats"] == 2
    assert len(report["baseline_runs"]) == len(report["preprocess_runs"]) == 2
    assert len(report["qc_figure_runs"]) == 2 and report["qc_figure_seconds"] > 0
    assert report["ratio"] == pytest.approx(
        report["preprocess_seconds"] / report["baseline_seconds"]
    )
    assert report["ratio_of_minima"] == pytest.approx(
        min(report["preprocess_runs"]) / min(report["baseline_runs"])
    )
    assert report["ratio_with_qc_figure"] == pytest.approx(
        (report["preprocess_seconds"] + report["qc_figure_seconds"]) / report["baseline_seconds"]
    )
    assert sorted(p.name for p in out.parent.iterdir()) == ["preprocess.json"]
