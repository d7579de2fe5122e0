"""The sample sheet: reading, validation against ``samples.schema.yaml``, path resolution.

A sample sheet is a TSV with the columns ``sample_id``, ``patient_id``, ``srs``, ``he``
and ``annotations``; file paths are relative to the sheet; ``he`` may be empty.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jsonschema
import pandas as pd

from ramanseg.config import load_schema
from ramanseg.errors import InputError

COLUMNS = ("sample_id", "patient_id", "srs", "he", "annotations")
FILE_COLUMNS = ("srs", "he", "annotations")
SAMPLESHEET_KEY_HELP = (
    "set the config key `samplesheet` to your sheet (e.g. "
    "`snakemake --config samplesheet=path/to/samples.tsv`), or leave it empty to use the "
    "built-in synthetic dataset"
)


def read_samplesheet(path: str | Path, *, check_files: bool = True) -> pd.DataFrame:
    """Read and validate a sample sheet.

    Args:
        path: the TSV file.
        check_files: also check that every referenced file exists.

    Returns:
        One row per sample, indexed by ``sample_id``, with the file columns resolved to
        paths relative to the current directory if the sheet's were relative (``he`` is
        ``""`` where the sheet leaves it empty).

    Raises:
        InputError: the sheet is missing, misses a column, has a malformed or duplicate
            id, or names a file that does not exist; the message names the row and field.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("the sample sheet does not exist.", path=path, fix=SAMPLESHEET_KEY_HELP)
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(
            f"the sample sheet is not a readable TSV ({error}).",
            path=path,
            fix="write it tab-separated with a header row",
        ) from error
    table.columns = [column.strip() for column in table.columns]
    missing = [column for column in COLUMNS if column not in table.columns]
    if missing:
        raise InputError(
            f"the sample sheet lacks the column(s) {', '.join(missing)} "
            f"(it has {', '.join(table.columns) or 'none'}).",
            path=path,
            fix=f"use the header: {chr(9).join(COLUMNS)}",
        )
    if table.empty:
        raise InputError(
            "the sample sheet has no samples.", path=path, fix="add one row per sample"
        )
    table = table.apply(lambda column: column.str.strip())

    validator = jsonschema.Draft202012Validator(load_schema("samples"))
    for row_number, record in enumerate(table.to_dict("records"), start=2):
        for error in validator.iter_errors(record):
            field = ".".join(str(p) for p in error.absolute_path) or "row"
            raise InputError(
                f"line {row_number}, field {field!r}: {error.message}.",
                sample=record.get("sample_id") or None,
                path=path,
                fix="ids may contain only letters, digits, '_' and '-'"
                if field in ("sample_id", "patient_id")
                else "fill in the field",
            )

    duplicated = table["sample_id"][table["sample_id"].duplicated(keep=False)]
    if not duplicated.empty:
        lines = {sid: [i + 2 for i in duplicated.index[duplicated == sid]] for sid in duplicated}
        described = "; ".join(
            f"{sid!r} on lines {', '.join(map(str, n))}" for sid, n in lines.items()
        )
        raise InputError(
            f"field 'sample_id': duplicate sample ids: {described}.",
            sample=next(iter(lines)),
            path=path,
            fix="give every sample a unique sample_id",
        )

    base = path.parent
    for column in FILE_COLUMNS:
        table[column] = [
            "" if value == "" else str(base / value) if not Path(value).is_absolute() else value
            for value in table[column]
        ]
    if check_files:
        for record in table.to_dict("records"):
            for column in FILE_COLUMNS:
                if record[column] and not Path(record[column]).is_file():
                    raise InputError(
                        f"the {column} file named in the sample sheet does not exist "
                        f"(from sheet {str(path)!r}).",
                        sample=record["sample_id"],
                        path=record[column],
                        fix="correct the path (relative to the sheet) or add the file",
                    )
    return table.set_index("sample_id", drop=False)


def _check_command(args: argparse.Namespace) -> int:
    table = read_samplesheet(args.sheet)
    patients = table["patient_id"].nunique()
    without_he = int((table["he"] == "").sum())
    print(f"{args.sheet}: {len(table)} samples from {patients} patients; {without_he} without H&E")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-samplesheet",
        help="validate a sample sheet and the files it names",
        description="Validate a sample sheet (columns, ids, duplicates, files) and summarise it.",
    )
    parser.add_argument("sheet", help="the sample sheet (TSV)")
    parser.set_defaults(func=_check_command)
