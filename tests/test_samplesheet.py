"""Reading and validating the sample sheet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from ramanseg.cli import main
from ramanseg.errors import InputError, InputErrors
from ramanseg.samplesheet import read_samplesheet
from tests.conftest import DEMO_CONFIG
from tests.sample_files import geojson, valid_dataset

HEADER = "sample_id\tpatient_id\tsrs\the\tannotations\n"


def _write_sheet(directory: Path, rows: list[str], touch: bool = True) -> Path:
    sheet = directory / "samples.tsv"
    sheet.write_text(HEADER + "".join(row + "\n" for row in rows))
    if touch:
        for row in rows:
            for value in row.split("\t")[2:]:
                if value:
                    (directory / value).parent.mkdir(parents=True, exist_ok=True)
                    (directory / value).touch()
    return sheet


def test_paths_resolve_relative_to_the_sheet(tmp_path):
    sheet = _write_sheet(
        tmp_path,
        [
            "A1\tP1\tsrs/A1.ome.tif\the/A1.tif\tann/A1.geojson",
            "B-2\tP2\tsrs/B2.tif\t\tann/B2.geojson",
        ],
    )
    table = read_samplesheet(sheet)
    assert list(table.index) == ["A1", "B-2"]
    assert table.loc["A1", "srs"] == str(tmp_path / "srs/A1.ome.tif")
    assert table.loc["B-2", "he"] == ""
    assert table.loc["B-2", "patient_id"] == "P2"


def test_duplicate_ids_are_rejected_naming_the_field_and_lines(tmp_path):
    sheet = _write_sheet(
        tmp_path,
        ["A1\tP1\ta.tif\t\ta.geojson", "A2\tP1\tb.tif\t\tb.geojson", "A1\tP2\tc.tif\t\tc.geojson"],
    )
    with pytest.raises(
        InputError, match=r"field 'sample_id': duplicate sample ids: 'A1' on lines 2, 4"
    ):
        read_samplesheet(sheet)


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("bad id\tP1\ta.tif\t\ta.geojson", "sample_id"),
        ("A1\tP/1\ta.tif\t\ta.geojson", "patient_id"),
        ("A1\tP1\t\t\ta.geojson", "srs"),
    ],
)
def test_malformed_fields_are_rejected_naming_the_field(tmp_path, row, field):
    sheet = _write_sheet(tmp_path, [row], touch=False)
    with pytest.raises(InputError, match=rf"line 2, field '{field}'") as info:
        read_samplesheet(sheet)
    assert str(sheet) in str(info.value)


def test_missing_column_is_named(tmp_path):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("sample_id\tpatient\tsrs\the\tannotations\nA1\tP1\ta\t\tb\n")
    with pytest.raises(InputError, match=r"lacks the column.*patient_id"):
        read_samplesheet(sheet)


def test_missing_file_names_sample_and_file(tmp_path):
    sheet = _write_sheet(tmp_path, ["A1\tP1\tsrs/A1.tif\t\tann/A1.geojson"])
    (tmp_path / "srs/A1.tif").unlink()
    with pytest.raises(InputError, match=r"sample 'A1', file '.*srs/A1.tif'.*srs file"):
        read_samplesheet(sheet)


def test_missing_sheet_names_the_config_key(tmp_path):
    with pytest.raises(InputError, match="config key `samplesheet`"):
        read_samplesheet(tmp_path / "nope.tsv")


def test_every_row_problem_is_reported_at_once(tmp_path):
    sheet = _write_sheet(
        tmp_path, ["bad id\tP1\ta.tif\t\ta.geojson", "A2\tP1\t\t\tb.geojson"], touch=False
    )
    with pytest.raises(InputErrors) as caught:
        read_samplesheet(sheet)
    assert str(caught.value).startswith("2 problems:\n")
    assert [e.problem.split(":")[0] for e in caught.value.errors] == [
        "line 2, field 'sample_id'",
        "line 3, field 'srs'",
    ]


# Legitimate variants just work.


def test_bom_crlf_blank_lines_whitespace_and_comments_are_accepted(tmp_path):
    for name in ("a.tif", "a.geojson", "b.tif", "b.geojson"):
        (tmp_path / name).touch()
    text = (
        "\ufeffsample_id\t patient_id \tsrs\the\tannotations\r\n"
        "# a comment line\r\n"
        "\r\n"
        "  A1 \tP1\t a.tif \t\ta.geojson\r\n"
        "A2\tP1\tb.tif\t\tb.geojson\t\r\n"  # a trailing tab
    )
    sheet = tmp_path / "samples.tsv"
    sheet.write_bytes(text.encode())
    table = read_samplesheet(sheet)
    assert list(table.index) == ["A1", "A2"]
    assert table.loc["A1", "srs"] == str(tmp_path / "a.tif")
    assert table.loc["A2", "annotations"] == str(tmp_path / "b.geojson")


def test_hash_inside_a_path_is_data_not_a_comment(tmp_path):
    # Issue 13, defect 8: pandas' comment="#" cut the row at the '#' and blamed `srs`.
    sheet = _write_sheet(tmp_path, ["A1\tP1\tscan#3/a.tif\t\tann#3.geojson"])
    table = read_samplesheet(sheet)
    assert table.loc["A1", "srs"] == str(tmp_path / "scan#3/a.tif")
    assert table.loc["A1", "annotations"] == str(tmp_path / "ann#3.geojson")


def test_trailing_tab_does_not_shift_the_columns(tmp_path):
    # Issue 13, defect 11: one more field than the header made pandas take the first
    # column as the index, and the error named the wrong sample and field.
    sheet = _write_sheet(tmp_path, ["A1\tP1\ta.tif\t\ta.geojson\t", "A2\tP2\tb.tif\t\tb.geojson\t"])
    table = read_samplesheet(sheet)
    assert list(table["patient_id"]) == ["P1", "P2"]
    assert table.loc["A2", "srs"] == str(tmp_path / "b.tif")


def test_extra_non_empty_field_names_the_line(tmp_path):
    sheet = _write_sheet(
        tmp_path, ["A1\tP1\ta.tif\t\ta.geojson", "A2\tP1\tb.tif\t\tb.geojson\tnotes"]
    )
    with pytest.raises(InputError, match=r"line 3 has 6 tab-separated fields.*'notes'") as caught:
        read_samplesheet(sheet)
    assert caught.value.sample == "A2" and str(sheet) in str(caught.value)


@pytest.mark.parametrize("sample_id", ["-A1", "--help"])
def test_id_starting_with_a_dash_is_rejected(tmp_path, sample_id):
    # Issue 13, defect 7: the id goes on the jobs' command lines, where it reads as an option.
    sheet = _write_sheet(tmp_path, [f"{sample_id}\tP1\ta.tif\t\ta.geojson"])
    with pytest.raises(InputError, match=r"line 2, field 'sample_id'") as caught:
        read_samplesheet(sheet)
    assert "must start with a letter, digit or '_'" in caught.value.fix
    assert (
        read_samplesheet(_write_sheet(tmp_path, ["_A-1\tP1\ta.tif\t\ta.geojson"])).index[0]
        == "_A-1"
    )


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", r"the sample sheet is empty \(no header row\)\."),
        (b"# only a comment\n\n", "the sample sheet is empty .*only comments"),
        (b"sample_id\tpatient_id\tsrs\the\tannotations\n", "has no samples"),
        (b"\xff\xfe\x00s", "not UTF-8"),
    ],
)
def test_empty_or_unreadable_sheet_is_an_input_error(tmp_path, content, match):
    sheet = tmp_path / "samples.tsv"
    sheet.write_bytes(content)
    with pytest.raises(InputError, match=match) as caught:
        read_samplesheet(sheet)
    assert str(sheet) in str(caught.value) and caught.value.fix


# check-samplesheet opens every file's header and reports every problem (defect 10).


def check(sheet: Path, *extra: str) -> int:
    return main(["check-samplesheet", str(sheet), "--config", str(DEMO_CONFIG), *extra])


def test_check_command_accepts_valid_files(tmp_path, capsys):
    sheet = valid_dataset(tmp_path)
    assert check(sheet) == 0
    assert "2 samples from 2 patients; 1 without H&E" in capsys.readouterr().out


def test_check_command_reports_every_problem_of_every_file(tmp_path, capsys):
    sheet = valid_dataset(tmp_path, n_samples=3)
    # The case: a 23-channel stack, a grayscale H&E and a non-JSON GeoJSON.
    tifffile.imwrite(tmp_path / "S1.ome.tif", np.zeros((23, 16, 20), np.uint16), ome=True)
    tifffile.imwrite(tmp_path / "S1_he.tif", np.zeros((16, 20), np.uint8))
    (tmp_path / "S1.geojson").write_text("<xml/>")
    # An H&E off the SRS grid, an unknown class, an unclassified polygon, a missing file.
    tifffile.imwrite(tmp_path / "S2_he.tif", np.zeros((16, 21, 3), np.uint8), photometric="rgb")
    (tmp_path / "S2.geojson").write_text(json.dumps(geojson("Lymphocyte")))
    unclassified = geojson()
    unclassified["features"][0]["properties"] = {"objectType": "annotation"}
    (tmp_path / "S3.geojson").write_text(json.dumps(unclassified))
    (tmp_path / "S3.ome.tif").unlink()
    assert check(sheet) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "7 problems:" in err
    lines = [line.strip() for line in err.splitlines()[1:]]
    expected = [
        ("S1", "S1.ome.tif", "has 23 channels"),
        ("S1", "S1_he.tif", "expected an RGB image"),
        ("S1", "S1.geojson", "not valid JSON"),
        ("S2", "S2_he.tif", "is 16 x 21 pixels"),
        ("S2", "S2.geojson", "unknown class 'Lymphocyte'"),
        ("S3", "S3.ome.tif", "SRS file does not exist"),
        ("S3", "S3.geojson", "have no class"),
    ]
    assert len(lines) == len(expected)
    for line, (sample, name, what) in zip(lines, expected, strict=True):
        assert line.startswith(f"sample {sample!r}, file '{tmp_path / name}'"), line
        assert what in line and "Fix: " in line, line


def test_check_command_follows_the_configured_annotation_policy(tmp_path):
    sheet = valid_dataset(tmp_path, n_samples=1)
    (tmp_path / "S1.geojson").write_text(json.dumps(geojson("Lymphocyte")))
    assert check(sheet) == 2
    config = tmp_path / "ignore.yaml"
    config.write_text("annotations:\n  ignore: [Lymphocyte]\n")
    assert check(sheet, str(config)) == 0  # `--config A B` layers B over A
