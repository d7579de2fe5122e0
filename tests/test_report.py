"""The benchmark summary of the report, on fake Snakemake benchmark files."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ramanseg.cli import main
from ramanseg.errors import InputError
from ramanseg.report import benchmark_table, group_summary, markdown_benchmarks
from tests.interpret import register_commands

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


@pytest.fixture()
def benchmarks(tmp_path):
    folder = tmp_path / "benchmarks"
    (folder / "preprocess").mkdir(parents=True)
    (folder / "nnunet").mkdir()
    (folder / "split.tsv").write_text(HEADER + "3.5\t0:00:03\t240.0\t900\t1\t1\t0\t0\t10\t1.5\n")
    (folder / "preprocess" / "S1.tsv").write_text(
        HEADER + "10.0\t0:00:10\t300.0\t1\t1\t1\t0\t0\t50\t8.0\n"
    )
    (folder / "preprocess" / "S2.tsv").write_text(  # two repeats, RSS not measured in one
        HEADER
        + "20.0\t0:00:20\t280.0\t1\t1\t1\t0\t0\t50\t9.0\n"
        + "30.0\t0:00:30\tNA\t1\t1\t1\t0\t0\t50\t11.0\n"
    )
    (folder / "nnunet" / "train_fold_0.tsv").write_text(
        HEADER + "100.0\t0:01:40\t1500.5\t1\t1\t1\t0\t0\t90\t95.0\n"
    )
    return folder


def test_benchmark_table_and_groups(benchmarks):
    table = benchmark_table(benchmarks).set_index("job")
    assert list(table.index) == ["nnunet/train_fold_0", "preprocess/S1", "preprocess/S2", "split"]
    assert table.loc["preprocess/S2", "seconds"] == 25.0  # mean of the repeats
    assert table.loc["preprocess/S2", "cpu_seconds"] == 10.0
    assert table.loc["preprocess/S2", "max_rss_mb"] == 280.0  # NA ignored
    assert table.loc["preprocess/S2", "repeats"] == 2
    assert table.loc["split", "group"] == "split"
    summary = group_summary(benchmark_table(benchmarks))
    assert summary["group"].tolist() == ["nnunet", "preprocess", "split"]  # slowest first
    preprocess = summary.set_index("group").loc["preprocess"]
    assert (preprocess.jobs, preprocess.total_seconds, preprocess.max_seconds) == (2, 35.0, 25.0)
    text = markdown_benchmarks(benchmark_table(benchmarks), summary)
    assert "| preprocess | 2 | 35.0 | 25.0 | 300 |" in text
    assert "| nnunet/train_fold_0 | 100.00 | 95.00 | 1500 | 1 |" in text
    assert "4 jobs, 138.5 s of wall-clock time in all." in text


def test_missing_values_and_bad_files(benchmarks, tmp_path):
    (benchmarks / "odd.tsv").write_text("s\th:m:s\n7\t0:00:07\n")  # no memory columns
    row = benchmark_table(benchmarks).set_index("job").loc["odd"]
    assert row.seconds == 7.0 and math.isnan(row.max_rss_mb) and math.isnan(row.cpu_seconds)
    (benchmarks / "broken.tsv").write_text("not a benchmark\n")
    with pytest.raises(InputError, match=r"broken\.tsv"):
        benchmark_table(benchmarks)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no \.tsv"):
        benchmark_table(tmp_path / "empty")


def test_benchmark_summary_command(benchmarks, tmp_path, monkeypatch):
    register_commands(monkeypatch, "ramanseg.report")
    prefix = tmp_path / "report" / "rule_times"
    argv = ["benchmark-summary", "--benchmarks", str(benchmarks), "--out-prefix", str(prefix)]
    assert main(argv) == 0
    suffixes = (".csv", ".parquet", ".md", ".png", ".pdf")
    first = {s: prefix.with_name(prefix.name + s).read_bytes() for s in suffixes}
    assert len(pd.read_csv(prefix.with_name("rule_times.csv"))) == 4
    assert main(argv) == 0
    assert {s: prefix.with_name(prefix.name + s).read_bytes() for s in suffixes} == first
