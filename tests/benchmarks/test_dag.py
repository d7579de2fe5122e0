"""`ramanseg bench-dag`: dry-run times for growing synthetic sample sheets."""

from __future__ import annotations

import argparse
import json

from ramanseg.benchmarks import dag as bench_dag
from ramanseg.samplesheet import read_samplesheet


def test_synthetic_samplesheet_is_valid_with_placeholder_files(tmp_path):
    sheet = bench_dag.write_samplesheet(tmp_path, 7)
    table = read_samplesheet(sheet)
    assert len(table) == 7
    assert table["patient_id"].nunique() == 3


def test_bench_dag_times_each_size_in_one_run(tmp_path):
    parser = argparse.ArgumentParser()
    bench_dag.add_commands(parser.add_subparsers())
    out = tmp_path / "dag.json"
    args = parser.parse_args(["bench-dag", "--samples", "40", "80", "--out", str(out)])
    assert args.func(args) == 0
    result = json.loads(out.read_text())
    assert [run["samples"] for run in result["runs"]] == [40, 80]
    # The planned jobs grow with the samples (one preprocess job per sample at least).
    assert result["runs"][1]["jobs"] - result["runs"][0]["jobs"] >= 40
    assert all(run["seconds"] > 0 for run in result["runs"])
    assert result["growth"]["samples_ratio"] == 2
    assert result["growth"]["time_ratio"] > 0
