"""The HSRS commands end to end on a small phantom, and their bad inputs (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ramanseg.cli import main
from ramanseg.hsrs.dice import COLUMNS, combine_dice_tables
from ramanseg.hsrs.stack import HsrsStack, read_hsrs_stack, write_hsrs_stack
from tests.hsrs.test_celegans import write_folder

SMALL = {"cells": {"fields": 2, "size": 64, "bands": 24, "cells_per_field": 3, "seed": 1}}


def settings(**hsrs) -> str:
    return json.dumps({"hsrs": {**SMALL, **hsrs}})


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("hsrs") / "cells"
    assert main(["hsrs-cells", "--outdir", str(outdir), "--settings", settings()]) == 0
    return sorted(outdir.glob("*.npz"))


def test_cells_writes_one_stack_per_field(cells):
    assert [p.name for p in cells] == ["field0.npz", "field1.npz"]
    stack = read_hsrs_stack(cells[0])
    assert stack.cube.shape == (24, 64, 64) and stack.labels is not None


def test_phasor_then_dice(cells, tmp_path):
    outdir = tmp_path / "phasor" / "cells"
    argv = ["hsrs-phasor", "--dataset", "cells", "--stacks", *map(str, cells)]
    assert main([*argv, "--outdir", str(outdir), "--settings", settings()]) == 0
    names = {p.name for p in outdir.iterdir()}
    assert names == {
        "dice.csv",
        "cursors.json",
        "phasor_plot.png",
        "phasor_plot.pdf",
        "segmentation.png",
        "segmentation.pdf",
    }
    table = pd.read_csv(outdir / "dice.csv")
    assert tuple(table.columns) == COLUMNS
    assert set(table["model"]) == {"phasor_cursors", "phasor_gmm"}
    assert set(table["fold"]) == {"field0", "field1"}
    lipid = table[(table["model"] == "phasor_cursors") & (table["class"] == "lipid_droplet")]
    # Droplets of 1-2 px on these 64 px fields: a smoke check (test_cells checks >= 0.8).
    assert lipid["dice"].mean() >= 0.6
    prefix = tmp_path / "dice"
    assert (
        main(["hsrs-dice", "--tables", str(outdir / "dice.csv"), "--out-prefix", str(prefix)]) == 0
    )
    markdown = (tmp_path / "dice.md").read_text()
    assert "## cells" in markdown and "phasor_cursors" in markdown and "lipid_droplet" in markdown
    assert (tmp_path / "dice.parquet").is_file()


def test_phasor_of_a_single_stack_uses_its_halves(tmp_path):
    stack = write_folder(tmp_path / "ce")
    out = tmp_path / "celegans.npz"
    argv = ["hsrs-celegans", "--out", str(out), "--settings", settings(celegans_dir=str(stack))]
    assert main(argv) == 0
    outdir = tmp_path / "phasor"
    argv = ["hsrs-phasor", "--dataset", "celegans", "--stacks", str(out), "--outdir", str(outdir)]
    assert main([*argv, "--settings", settings()]) == 0
    assert set(pd.read_csv(outdir / "dice.csv")["fold"]) == {"left", "right"}


def test_celegans_not_configured_exits_2(tmp_path, capsys):
    argv = ["hsrs-celegans", "--out", str(tmp_path / "x.npz"), "--settings", settings()]
    assert main(argv) == 2
    assert "hsrs.celegans_dir" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_phasor_of_an_unlabelled_stack_exits_2(tmp_path, capsys):
    path = write_hsrs_stack(tmp_path / "u.npz", HsrsStack(np.ones((8, 6, 6), np.float32)))
    argv = ["hsrs-phasor", "--dataset", "x", "--stacks", str(path), "--outdir", str(tmp_path / "o")]
    assert main([*argv, "--settings", settings()]) == 2
    error = capsys.readouterr().err
    assert "u.npz" in error and "no labels" in error
    assert not (tmp_path / "o").exists()


def test_phasor_of_a_damaged_stack_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"garbage")
    argv = ["hsrs-phasor", "--dataset", "x", "--stacks", str(path), "--outdir", str(tmp_path / "o")]
    assert main([*argv, "--settings", settings()]) == 2
    assert "bad.npz" in capsys.readouterr().err


def test_dice_tables_are_checked(tmp_path, capsys, caplog):
    good = tmp_path / "good.csv"
    good.write_text("dataset,model,fold,class,dice\ncells,m,0,nucleus,0.5\ncells,m,1,nucleus,\n")
    frame, markdown = combine_dice_tables([good])
    assert len(frame) == 2 and "50.0" in markdown
    # Each method reports its own number of folds (fields and blocks differ).
    other = tmp_path / "other.csv"
    other.write_text(
        "dataset,model,fold,class,dice\n"
        + "".join(f"cells,n,b{k},nucleus,0.{k + 1}\n" for k in range(3))
    )
    _, markdown = combine_dice_tables([good, other])
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in markdown.splitlines()
        if line.startswith("| m ") or line.startswith("| n ")
    }
    assert rows == {"m": "2", "n": "3"}
    assert "missed entirely" not in markdown
    # A class missed on a fold is said under the table and in the log.
    missed = tmp_path / "missed.csv"
    missed.write_text("dataset,model,fold,class,dice\ncells,m,0,nucleus,0\ncells,m,1,nucleus,0.9\n")
    _, markdown = combine_dice_tables([missed])
    assert "**A class missed entirely (Dice 0) on a fold**" in markdown
    assert "m missed nucleus on 0." in markdown
    assert main(["hsrs-dice", "--tables", str(missed), "--out-prefix", str(tmp_path / "m")]) == 0
    assert "DEGENERATE SEGMENTATION: cells: m missed nucleus on 0" in caplog.text
    bad = tmp_path / "bad.csv"
    bad.write_text("dataset,model,class,dice\ncells,m,nucleus,0.5\n")
    assert main(["hsrs-dice", "--tables", str(bad), "--out-prefix", str(tmp_path / "d")]) == 2
    assert "expected ['dataset', 'model', 'fold', 'class', 'dice']" in capsys.readouterr().err
    bad.write_text("dataset,model,fold,class,dice\ncells,m,0,nucleus,1.5\n")
    assert main(["hsrs-dice", "--tables", str(bad), "--out-prefix", str(tmp_path / "d")]) == 2
    assert "outside [0, 1]" in capsys.readouterr().err
    assert not list(tmp_path.glob("d.*"))
