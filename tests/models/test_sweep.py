"""The prototype-count sweep summary: table, Markdown and plot from runs' model.json files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest

from ramanseg.errors import InputError
from ramanseg.models import sweep


def fake_run(root: Path, name: str, count: int, dice: float | None, **extra) -> Path:
    """A training folder whose model.json is what the harness writes for RamanSeg."""
    folder = root / name
    folder.mkdir(parents=True)
    metadata = {
        "model": "ramanseg",
        "architecture": {"in_channels": 24, "prototypes_per_class": count, "prototype_size": 1},
        "hyperparameters": {"prototypes_per_class": count, "projection": True},
        "selection": "last",
        "selected_epoch": 5,
        "epochs": 5,
        "val_dice": dice,
        **extra,
    }
    (folder / "model.json").write_text(json.dumps(metadata))
    return folder


@pytest.fixture()
def runs(tmp_path) -> list[Path]:
    # Given out of order: the table is sorted by the count.
    return [
        fake_run(tmp_path, "p30", 30, 0.8125),
        fake_run(tmp_path, "p5", 5, 0.5),
        fake_run(tmp_path, "p15", 15, 0.75),
    ]


def test_sweep_summary_writes_exact_table_and_deterministic_plot(runs, tmp_path):
    prefix = tmp_path / "out" / "prototype_sweep"
    table = sweep.run_sweep_summary(runs, prefix)
    assert table["prototypes_per_class"].tolist() == [5, 15, 30]
    assert table["val_dice"].tolist() == [0.5, 0.75, 0.8125]
    assert table["run"].tolist() == [str(runs[1]), str(runs[2]), str(runs[0])]
    assert list(table.columns) == list(sweep.COLUMNS)
    assert table["projection"].tolist() == [True, True, True]
    csv = pd.read_csv(prefix.with_suffix(".csv"))
    assert csv["prototypes_per_class"].tolist() == [5, 15, 30]
    assert csv["val_dice"].tolist() == [0.5, 0.75, 0.8125]
    pd.testing.assert_frame_equal(pd.read_parquet(prefix.with_suffix(".parquet")), table)
    markdown = prefix.with_suffix(".md").read_text()
    assert "Prototypes per class" in markdown.splitlines()[0]
    assert "0.8125" in markdown and "0.5000" in markdown
    png = prefix.with_suffix(".png").read_bytes()
    pdf = prefix.with_suffix(".pdf").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and pdf[:5] == b"%PDF-"
    # Byte-identical when run again (no time stamps, no software version).
    again = tmp_path / "again" / "prototype_sweep"
    sweep.run_sweep_summary(list(reversed(runs)), again)
    assert again.with_suffix(".png").read_bytes() == png
    assert again.with_suffix(".pdf").read_bytes() == pdf
    assert b"matplotlib" not in png


def test_repeated_counts_are_kept_and_averaged_in_the_plot(tmp_path):
    runs = [fake_run(tmp_path, "a", 5, 0.5), fake_run(tmp_path, "b", 5, 0.7)]
    table = sweep.sweep_table(runs)
    assert table["val_dice"].tolist() == [0.5, 0.7]
    png = sweep.sweep_figure_bytes(table)[".png"]
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_line(runs, tmp_path):
    parser = argparse.ArgumentParser()
    sweep.add_commands(parser.add_subparsers())
    prefix = tmp_path / "cli" / "prototype_sweep"
    args = parser.parse_args(
        ["sweep-summary", "--runs", *map(str, runs), "--out-prefix", str(prefix)]
    )
    assert args.func(args) == 0
    for suffix in (".csv", ".parquet", ".md", ".png", ".pdf"):
        assert prefix.with_name(prefix.name + suffix).is_file()


def test_bad_runs_fail_naming_the_file(tmp_path):
    with pytest.raises(InputError, match=r"missing.*model\.json.*train-model --model ramanseg"):
        sweep.read_sweep_run(tmp_path / "missing")
    unet = fake_run(tmp_path, "unet", 1, 0.5)
    metadata = json.loads((unet / "model.json").read_text())
    metadata["architecture"] = {"in_channels": 24, "levels": 4}
    (unet / "model.json").write_text(json.dumps(metadata))
    with pytest.raises(InputError, match="not a RamanSeg model"):
        sweep.read_sweep_run(unet)
    no_val = fake_run(tmp_path, "noval", 5, None)
    with pytest.raises(InputError, match="no validation Dice"):
        sweep.read_sweep_run(no_val)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        sweep.read_sweep_run(tmp_path / "broken")
    with pytest.raises(ValueError, match="at least one run"):
        sweep.sweep_table([])
    # Nothing is written when one run is bad.
    prefix = tmp_path / "out" / "prototype_sweep"
    with pytest.raises(InputError):
        sweep.run_sweep_summary([fake_run(tmp_path, "ok", 5, 0.5), no_val], prefix)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
