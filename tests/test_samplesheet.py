"""Reading and validating the sample sheet."""

from __future__ import annotations

from pathlib import Path

import pytest

from ramanseg.cli import main
from ramanseg.errors import InputError
from ramanseg.samplesheet import read_samplesheet

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


def test_check_command_reports_and_fails_cleanly(tmp_path, capsys):
    sheet = _write_sheet(
        tmp_path, ["A1\tP1\ta.tif\t\ta.geojson", "A2\tP1\tb.tif\tb.png\tb.geojson"]
    )
    assert main(["check-samplesheet", str(sheet)]) == 0
    assert "2 samples from 1 patients; 1 without H&E" in capsys.readouterr().out
    (tmp_path / "b.png").unlink()
    assert main(["check-samplesheet", str(sheet)]) == 2
    assert "sample 'A2'" in capsys.readouterr().err
