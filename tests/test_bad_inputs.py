"""Bad input through the real command line: exit code 2, the file named, no traceback,
nothing written (issue 13). Each case starts from a valid sample and breaks one file."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.conftest import DEMO_CONFIG, REPO
from tests.sample_files import CHANNELS, HEIGHT, WIDTH, geojson, valid_dataset


def _sheet_rows(sheet: Path, *rows: str) -> None:
    header = sheet.read_text().splitlines()[0]
    sheet.write_text("\n".join([header, *rows]) + "\n")


def _feature_properties(properties: object) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        document = geojson()
        document["features"][0]["properties"] = properties
        path.write_text(json.dumps(document))

    return write


def _nan_coordinates(path: Path) -> None:
    path.write_text(json.dumps(geojson()).replace("[10, 2]", "[NaN, 2]"))


def _channels_last_without_metadata(path: Path) -> None:
    stack = np.zeros((HEIGHT, WIDTH, CHANNELS), np.uint16)
    tifffile.imwrite(path, stack, photometric="minisblack", metadata=None)


#: case -> (the file it breaks, how, the command: "check", "split" or "preprocess").
CASES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "sheet: zero bytes": ("samples.tsv", lambda p: p.write_bytes(b""), "check"),
    "sheet: zero bytes, split": ("samples.tsv", lambda p: p.write_bytes(b""), "split"),
    "sheet: id starting with '-'": (
        "samples.tsv",
        lambda p: _sheet_rows(p, "-S1\tP1\tS1.ome.tif\tS1_he.tif\tS1.geojson"),
        "check",
    ),
    "sheet: extra field": (
        "samples.tsv",
        lambda p: _sheet_rows(p, "S1\tP1\tS1.ome.tif\tS1_he.tif\tS1.geojson\tnote"),
        "check",
    ),
    "geojson: not JSON": ("S1.geojson", lambda p: p.write_text("<xml/>"), "preprocess"),
    "geojson: properties a string": ("S1.geojson", _feature_properties("Tumor"), "preprocess"),
    "geojson: classification a number": (
        "S1.geojson",
        _feature_properties({"classification": 5}),
        "preprocess",
    ),
    "geojson: unclassified polygon": ("S1.geojson", _feature_properties(None), "preprocess"),
    "geojson: NaN coordinates": ("S1.geojson", _nan_coordinates, "preprocess"),
    "geojson: unknown class, check": (
        "S1.geojson",
        lambda p: p.write_text(json.dumps(geojson("Lymphocyte"))),
        "check",
    ),
    "srs: 23 channels": (
        "S1.ome.tif",
        lambda p: tifffile.imwrite(p, np.zeros((23, HEIGHT, WIDTH), np.uint16)),
        "preprocess",
    ),
    "srs: channels last without metadata": (
        "S1.ome.tif",
        _channels_last_without_metadata,
        "check",
    ),
    "he: grayscale": (
        "S1_he.tif",
        lambda p: tifffile.imwrite(p, np.zeros((HEIGHT, WIDTH), np.uint8)),
        "preprocess",
    ),
    "config: YAML syntax error": (
        "bad.yaml",
        lambda p: p.write_text("preprocess:\n  nonfinite: reject\n   seed: 1\n"),
        "preprocess",
    ),
}


def _command(kind: str, tmp_path: Path, sheet: Path, config: list[str]) -> list[str]:
    if kind == "check":
        return ["check-samplesheet", str(sheet), "--config", *config]
    if kind == "split":
        return ["split", "--samples", str(sheet), "--out", str(tmp_path / "out" / "split.json")]
    return [
        "preprocess",
        "--sample",
        "S1",
        "--srs",
        str(tmp_path / "S1.ome.tif"),
        "--he",
        str(tmp_path / "S1_he.tif"),
        "--annotations",
        str(tmp_path / "S1.geojson"),
        "--outdir",
        str(tmp_path / "out" / "S1"),
        "--config",
        *config,
    ]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_naming_the_file_without_traceback_or_output(tmp_path, case):
    name, damage, kind = CASES[case]
    sheet = valid_dataset(tmp_path, n_samples=1, last_without_he=False)
    config = [str(DEMO_CONFIG)]
    if name.endswith(".yaml"):
        config.append(str(tmp_path / name))
    damage(tmp_path / name)
    before = {path for path in tmp_path.rglob("*") if path.is_file()}
    args = _command(kind, tmp_path, sheet, config)
    if kind == "split":
        args += ["--config", *config]
    result = subprocess.run(
        [sys.executable, "-m", "ramanseg", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert str(tmp_path / name) in result.stderr, result.stderr
    assert {path for path in tmp_path.rglob("*") if path.is_file()} == before
