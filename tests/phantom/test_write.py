"""Writing the phantom: the input contract, determinism, atomicity, the command line."""

from __future__ import annotations

import copy
import importlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from shapely.geometry import shape

from ramanseg import phantom
from ramanseg.config import (
    channel_names,
    class_names,
)
from tests.phantom.conftest import SHEET_COLUMNS, class_name_of, features_of, file_hashes, typed

# ------------------------------------------------------------------------- contract


def test_sample_sheet_and_files_follow_the_input_contract(dataset, tiny):
    sheet = pd.read_csv(dataset / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(sheet.columns) == SHEET_COLUMNS
    assert sheet[["sample_id", "patient_id"]].equals(phantom.phantom_design(typed(tiny)))
    for column in ("srs", "he", "annotations"):
        assert all(not Path(p).is_absolute() and (dataset / p).is_file() for p in sheet[column])
    assert (dataset / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    names = channel_names(tiny)
    classes = set(class_names(tiny))
    for row in sheet.itertuples():
        with tifffile.TiffFile(dataset / row.srs) as tif:
            stack = tif.asarray()
            ome = tif.ome_metadata
        assert stack.shape == (len(names), 48, 64) and stack.dtype == np.uint16
        assert re.findall(r'<Channel [^>]*Name="([^"]*)"', ome) == names
        he = tifffile.imread(dataset / row.he)
        assert he.shape == (48, 64, 3) and he.dtype == np.uint8

        document = json.loads((dataset / row.annotations).read_text())
        for feature in features_of(document):
            assert feature["type"] == "Feature"
            assert class_name_of(feature) in classes
            geometry = shape(feature["geometry"])
            assert geometry.geom_type in ("Polygon", "MultiPolygon")
            assert geometry.is_valid and not geometry.is_empty
            rings = [geometry] if geometry.geom_type == "Polygon" else list(geometry.geoms)
            for polygon in rings:
                for ring in [polygon.exterior, *polygon.interiors]:
                    assert ring.coords[0] == ring.coords[-1]  # closed
            minx, miny, maxx, maxy = geometry.bounds
            assert 0 <= minx and 0 <= miny and maxx <= 64 and maxy <= 48


# ------------------------------------------------------------------------- determinism


def test_two_runs_are_byte_identical_and_the_seed_matters(dataset, tiny, tmp_path):
    again = tmp_path / "again"
    phantom.write_phantom(typed(tiny), again, threads=1)  # other thread count, same bytes
    assert file_hashes(again) == file_hashes(dataset)

    other = copy.deepcopy(tiny)
    other["phantom"]["seed"] = 4
    changed = tmp_path / "changed"
    phantom.write_phantom(typed(other), changed)
    # The design changes with the seed too, so compare the image contents as a whole.
    a, b = file_hashes(dataset), file_hashes(changed)
    images = ("srs/", "he/")
    assert not {v for k, v in a.items() if k.startswith(images)} & {
        v for k, v in b.items() if k.startswith(images)
    }


def test_a_failure_leaves_the_previous_dataset_untouched(tiny, tmp_path, monkeypatch):
    outdir = tmp_path / "data"
    outdir.mkdir()
    (outdir / "keep.txt").write_text("previous")
    original = phantom.write.generate_sample

    def failing(config, index):
        if index == 2:
            raise RuntimeError("disk full")
        return original(config, index)

    monkeypatch.setattr(phantom.write, "generate_sample", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        phantom.write_phantom(typed(tiny), outdir)
    assert [p.name for p in tmp_path.iterdir()] == ["data"]
    assert [p.name for p in outdir.iterdir()] == ["keep.txt"]


# ------------------------------------------------------------------------- command line


def test_cli_writes_the_dataset(tiny, tmp_path):
    from ramanseg import cli

    for module in cli.COMMAND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            pytest.skip(f"{module} is not written yet: {error}")
    outdir = tmp_path / "cli"
    status = cli.main(["phantom", "--outdir", str(outdir), "--settings", json.dumps(tiny)])
    assert status == 0
    assert (outdir / "samples.tsv").is_file()


@pytest.mark.parametrize("where", ["outdir", "parent"])
def test_outdir_naming_an_existing_file_exits_2_naming_it(tiny, tmp_path, capsys, where):
    from ramanseg import cli

    existing = tmp_path / "data"
    existing.write_text("not a folder")
    outdir = existing if where == "outdir" else existing / "phantom"
    status = cli.main(["phantom", "--outdir", str(outdir), "--settings", json.dumps(tiny)])
    error = capsys.readouterr().err
    assert status == 2
    assert str(outdir) in error and "existing file, not a folder" in error and "Fix:" in error
    assert "Traceback" not in error
    assert existing.read_text() == "not a folder"
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # nothing half-written beside it


def test_phantom_command_options_have_help():
    import argparse

    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers(dest="command")
    phantom.add_commands(subparsers)
    command = subparsers.choices["phantom"]
    for action in command._actions:
        if action.dest != "help":
            assert action.help, action.dest
    args = parser.parse_args(["phantom", "--outdir", "x", "--threads", "3"])
    assert (args.outdir, args.threads, args.func) == ("x", 3, phantom.cli._run)
