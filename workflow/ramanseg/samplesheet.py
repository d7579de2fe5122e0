"""The sample sheet: reading, validation against ``samples.schema.yaml``, path resolution.

A sample sheet is a TSV with the columns ``sample_id``, ``patient_id``, ``srs``, ``he``
and ``annotations``; file paths are relative to the sheet; ``he`` may be empty.
:func:`read_samplesheet` is the only reader of the sheet: the workflow, ``ramanseg
split`` and ``ramanseg check-samplesheet`` all go through it.

Accepted variants: a UTF-8 byte-order mark, CRLF line ends, whitespace around fields,
blank lines, trailing empty fields (a trailing tab), and comment lines, which are the
lines whose FIRST character is ``#`` (a ``#`` anywhere else, in a path say, is data).
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Mapping
from pathlib import Path

import jsonschema
import pandas as pd

from ramanseg.config import load_schema
from ramanseg.errors import InputError, InputErrors
from ramanseg.settings import AnnotationSettings, ChannelLayout

COLUMNS = ("sample_id", "patient_id", "srs", "he", "annotations")
FILE_COLUMNS = ("srs", "he", "annotations")
SAMPLESHEET_KEY_HELP = (
    "set the config key `samplesheet` to your sheet (e.g. "
    "`snakemake --config samplesheet=path/to/samples.tsv`), or leave it empty to use the "
    "built-in synthetic dataset"
)
ID_RULE = (
    "ids must start with a letter, digit or '_' and contain only letters, digits, '_' "
    "and '-' (a leading '-' would be read as an option on the jobs' command lines)"
)


def _split_fields(line: str) -> list[str]:
    """The tab-separated fields of one line, stripped (double quotes as in a CSV)."""
    return [field.strip() for field in next(csv.reader([line], delimiter="\t"))]


def _read_lines(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header's column names and the data rows as ``(line number, fields)``.

    Raises:
        InputError: the sheet is not UTF-8, has no header, has a row with more non-empty
            fields than the header has columns, or has no data row.
    """
    try:
        # utf-8-sig: a byte-order mark (spreadsheets on Windows write one) is not data.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(
            f"the sample sheet is not UTF-8 text ({error}).",
            path=path,
            fix="save it as UTF-8 tab-separated text",
        ) from error
    numbered = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.startswith("#")  # only a leading '#' makes a comment
    ]
    if not numbered:
        raise InputError(
            "the sample sheet is empty (no header row)"
            + (" or holds only comments." if text.strip() else "."),
            path=path,
            fix=f"write a header row ({chr(9).join(COLUMNS)}, tab-separated), then one row "
            "per sample",
        )
    header = _split_fields(numbered[0][1])
    while header and header[-1] == "":  # a trailing tab on the header line
        header.pop()
    rows = []
    for number, line in numbered[1:]:
        fields = _split_fields(line)
        extra = [value for value in fields[len(header) :] if value]
        if extra:
            raise InputError(
                f"line {number} has {len(fields)} tab-separated fields but the header has "
                f"{len(header)} columns; the extra values are {', '.join(map(repr, extra))}.",
                sample=fields[0] or None,
                path=path,
                fix="remove the extra fields of that line (a path must not contain a tab), "
                "or add their column to the header",
            )
        fields = fields[: len(header)]
        rows.append((number, fields + [""] * (len(header) - len(fields))))
    return header, rows


def _row_problems(
    path: Path, lines: list[int], records: list[dict[str, str]], require_annotations: bool = True
) -> list[InputError]:
    """Schema and duplicate-id problems of every row (an empty ``annotations`` field is one
    only with ``require_annotations``)."""
    validator = jsonschema.Draft202012Validator(load_schema("samples"))
    problems = []
    for line, record in zip(lines, records, strict=True):
        for error in validator.iter_errors(record):
            field = ".".join(str(p) for p in error.absolute_path) or "row"
            if field == "annotations" and not require_annotations and record[field] == "":
                continue
            problems.append(
                InputError(
                    f"line {line}, field {field!r}: {error.message}.",
                    sample=record.get("sample_id") or None,
                    path=path,
                    fix=ID_RULE if field in ("sample_id", "patient_id") else "fill in the field",
                )
            )
    seen: dict[str, list[int]] = {}
    for line, record in zip(lines, records, strict=True):
        seen.setdefault(record["sample_id"], []).append(line)
    duplicates = {sid: numbers for sid, numbers in seen.items() if len(numbers) > 1}
    if duplicates:
        described = "; ".join(
            f"{sid!r} on lines {', '.join(map(str, numbers))}"
            for sid, numbers in duplicates.items()
        )
        problems.append(
            InputError(
                f"field 'sample_id': duplicate sample ids: {described}.",
                sample=next(iter(duplicates)),
                path=path,
                fix="give every sample a unique sample_id",
            )
        )
    return problems


def missing_files(table: pd.DataFrame, sheet: str | Path) -> list[InputError]:
    """One problem per file named in the sheet that does not exist.

    Args:
        table: the sheet as :func:`read_samplesheet` returns it (resolved paths).
        sheet: the sheet's path, for messages.
    """
    problems = []
    for record in table.to_dict("records"):
        for column in FILE_COLUMNS:
            if record[column] and not Path(record[column]).is_file():
                problems.append(
                    InputError(
                        f"the {column} file named in the sample sheet does not exist "
                        f"(from sheet {str(sheet)!r}).",
                        sample=record["sample_id"],
                        path=record[column],
                        fix="correct the path (relative to the sheet) or add the file",
                    )
                )
    return problems


def read_samplesheet(
    path: str | Path, *, check_files: bool = True, require_annotations: bool = True
) -> pd.DataFrame:
    """Read and validate a sample sheet: the only reader of the sheet.

    See the module docstring for the accepted variants.

    Args:
        path: the TSV file.
        check_files: also check that every referenced file exists.
        require_annotations: an empty ``annotations`` field is an error (training); without,
            it is allowed and stays ``""`` (slides to segment, ``snakemake predict``).

    Returns:
        One row per sample, indexed by ``sample_id``, with the file columns resolved to
        paths relative to the current directory if the sheet's were relative (``he`` is
        ``""`` where the sheet leaves it empty). Extra columns are kept.

    Raises:
        InputError: the sheet is missing, empty, not UTF-8, misses a column, has a row
            with too many fields, a malformed or duplicate id or an empty required
            field, or (``check_files``) names a file that does not exist. The message
            names the line, the sample and the field; several problems of the rows are
            raised together as :class:`~ramanseg.errors.InputErrors`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("the sample sheet does not exist.", path=path, fix=SAMPLESHEET_KEY_HELP)
    header, rows = _read_lines(path)
    missing = [column for column in COLUMNS if column not in header]
    if missing:
        raise InputError(
            f"the sample sheet lacks the column(s) {', '.join(missing)} "
            f"(it has {', '.join(header) or 'none'}).",
            path=path,
            fix=f"use the header: {chr(9).join(COLUMNS)}",
        )
    repeated = sorted({column for column in header if header.count(column) > 1})
    if repeated:
        raise InputError(
            f"the sample sheet's header repeats the column(s) {', '.join(repeated)}.",
            path=path,
            fix="name every column once",
        )
    if not rows:
        raise InputError(
            "the sample sheet has no samples.", path=path, fix="add one row per sample"
        )
    lines = [number for number, _ in rows]
    records = [dict(zip(header, fields, strict=True)) for _, fields in rows]
    problems = _row_problems(path, lines, records, require_annotations)
    if problems:
        raise InputErrors(problems)

    table = pd.DataFrame.from_records(records, columns=header)
    base = path.parent
    for column in FILE_COLUMNS:
        table[column] = [
            "" if value == "" else str(base / value) if not Path(value).is_absolute() else value
            for value in table[column]
        ]
    if check_files and (problems := missing_files(table, path)):
        raise InputErrors(problems)
    return table.set_index("sample_id", drop=False)


def check_sample_files(
    record: Mapping[str, str], channels: ChannelLayout, annotations: AnnotationSettings
) -> list[InputError]:
    """Every problem of one sample's files, found from their headers (no pixels read).

    The checks are the readers' own (:func:`ramanseg.io.srs_header`,
    :func:`ramanseg.io.he_header`, :func:`ramanseg.annotations.check_annotation_file`):
    existence, TIFF structure, the SRS stack's rank, axes, type and channel count, the
    H&E's RGB shape on the SRS grid, the GeoJSON's structure, its classes against
    ``annotations.classes`` / ``ignore`` / ``unclassified`` and its extent.

    Args:
        record: one row of :func:`read_samplesheet` (resolved paths).
        channels: the channel layout (``channels``).
        annotations: the annotation settings (``annotations``).

    Returns:
        The problems found (empty if none).
    """
    # Imported here: the workflow imports this module for the sheet alone.
    from ramanseg.annotations import check_annotation_file
    from ramanseg.io import he_header, srs_header

    sample_id = record["sample_id"]
    problems: list[InputError] = []
    shape = None
    try:
        shape = srs_header(record["srs"], channels, sample_id)[1:]
    except InputError as error:
        problems.append(error)
    if record["he"]:
        try:
            he_header(record["he"], sample_id, shape)
        except InputError as error:
            problems.append(error)
    problems += check_annotation_file(record["annotations"], annotations, sample_id, shape)
    return problems


def check_samplesheet(
    path: str | Path, channels: ChannelLayout, annotations: AnnotationSettings
) -> pd.DataFrame:
    """Check a sample sheet and the header of every file it names; report all problems.

    Args:
        path: the sample sheet.
        channels: the channel layout (``channels``).
        annotations: the annotation settings (``annotations``).

    Returns:
        The sheet as :func:`read_samplesheet` returns it.

    Raises:
        InputError: the sheet's own problem(s), or every problem of every sample's files
            together (:class:`~ramanseg.errors.InputErrors`, one line each).
    """
    table = read_samplesheet(path, check_files=False)
    problems = [
        problem
        for record in table.to_dict("records")
        for problem in check_sample_files(record, channels, annotations)
    ]
    if problems:
        raise InputErrors(problems)
    return table


def _check_command(args: argparse.Namespace) -> int:
    from ramanseg.cli import settings_from_args

    config = settings_from_args(args)
    table = check_samplesheet(
        args.sheet, ChannelLayout.from_config(config), AnnotationSettings.from_config(config)
    )
    patients = table["patient_id"].nunique()
    without_he = int((table["he"] == "").sum())
    print(
        f"{args.sheet}: {len(table)} samples from {patients} patients; {without_he} without "
        "H&E; every file's header matches the configuration"
    )
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from ramanseg.cli import add_settings_arguments

    parser = subparsers.add_parser(
        "check-samplesheet",
        help="validate a sample sheet and the headers of the files it names",
        description="Validate a sample sheet (columns, ids, duplicates) and open the header "
        "of every file it names, without reading pixels: the SRS stack's shape, type, axes "
        "and channel count; the H&E's RGB shape on the SRS grid; the GeoJSON's structure and "
        "class names against `annotations` in the configuration. Reports every problem, one "
        "line each, and exits with 2 if there is any.",
    )
    parser.add_argument("sheet", help="the sample sheet (TSV)")
    add_settings_arguments(parser)
    parser.set_defaults(func=_check_command)
