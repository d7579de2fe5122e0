"""The spectra contract: the reader accepts its variants, names every problem, and the
grouped split never puts one group into two splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ramanseg.errors import InputError
from ramanseg.spectra.synthetic import lorentzian_spectra
from ramanseg.spectra.table import (
    encode_labels,
    grouped_split,
    read_spectra_table,
    spectra_frame,
)
from tests.conftest import REPO


def _frame():
    return spectra_frame(
        np.arange(12.0).reshape(4, 3), [1000.0, 1001.5, 1003.0], ["a", "b", "a", "b"], [1, 1, 2, 2]
    )


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz", "t.csv.xz", "t.parquet"])
def test_csv_compressed_csv_and_parquet_read_the_same(tmp_path, name):
    frame = _frame()
    path = tmp_path / name
    frame.to_parquet(path) if name.endswith("parquet") else frame.to_csv(path, index=False)
    table = read_spectra_table(path)
    np.testing.assert_array_equal(table.wavenumbers, [1000.0, 1001.5, 1003.0])
    np.testing.assert_array_equal(table.spectra, np.arange(12.0).reshape(4, 3))
    assert list(table.labels) == ["a", "b", "a", "b"] and list(table.groups) == ["1", "1", "2", "2"]


def test_columns_in_any_order_are_sorted_and_extra_columns_ignored(tmp_path):
    frame = _frame()
    frame = frame[["label", "1003", "group", "1000", "1001.5"]].assign(x_um=1.0)
    frame.to_csv(tmp_path / "t.csv", index=False)
    table = read_spectra_table(tmp_path / "t.csv")
    np.testing.assert_array_equal(table.spectra[:, 0], [0.0, 3.0, 6.0, 9.0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="label"), "no `label` column"),
        (lambda f: f.drop(columns="group"), "no `group` column"),
        (lambda f: f.drop(columns=["1000", "1001.5"]), "1 wavenumber columns"),
        (lambda f: f.assign(**{"1000": ["x", 1, 2, 3]}), "not finite numbers.*row 2.*'1000'"),
        (lambda f: f.assign(label=["a", None, "a", "b"]), "`label` is empty in 1 rows"),
        (lambda f: f.assign(label="a"), "single class"),
        (lambda f: f.rename(columns={"1003": "1000.0"}), "1000 cm-1 names two columns"),
    ],
)
def test_bad_tables_name_the_dataset_the_file_and_the_problem(tmp_path, change, message):
    path = tmp_path / "t.csv"
    change(_frame()).to_csv(path, index=False)
    with pytest.raises(InputError, match=message) as error:
        read_spectra_table(path, "mydata")
    assert "'mydata'" in str(error.value) and str(path) in str(error.value)


def test_a_missing_file_and_a_wrong_format_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_spectra_table(tmp_path / "none.csv")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(InputError, match=r"\.csv.*\.parquet"):
        read_spectra_table(tmp_path / "t.xlsx")


def test_positive_labels_make_a_binary_task_and_unknown_ones_are_errors():
    y, classes = encode_labels(
        np.array(["Tumor", "Lipid", "Tumor+Lipid"]), ["Tumor", "Tumor+Lipid"]
    )
    assert list(y) == [1, 0, 1] and classes == ["rest", "Tumor (+1)"]
    with pytest.raises(InputError, match="Tumour"):
        encode_labels(np.array(["Tumor", "Lipid"]), ["Tumour"])


def test_grouped_split_keeps_each_group_in_one_split():
    frame = lorentzian_spectra(200, n_groups=20, seed=1)
    y, _ = encode_labels(frame["label"].to_numpy())
    groups = frame["group"].to_numpy()
    split = grouped_split(y, groups, seed=0)
    owners = [set(groups[rows]) for rows in split.values()]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    assert sum(len(rows) for rows in split.values()) == 200
    assert all(len(np.unique(y[rows])) == 2 for rows in split.values())


def test_too_few_groups_is_an_input_error():
    with pytest.raises(InputError, match="groups cannot be split"):
        grouped_split(np.array([0, 1, 0, 1]), np.array(["a", "a", "b", "b"]))


@pytest.mark.parametrize("name", ["chondro", "bladder"])
def test_shipped_tables_follow_the_contract(name):
    table = read_spectra_table(REPO / "resources" / "spectra" / f"{name}.csv.xz", name)
    assert table.spectra.shape == {"chondro": (869, 300), "bladder": (44, 395)}[name]
    assert (REPO / "resources" / "spectra" / "README.md").read_text().count("MIT") >= 2
    assert len(pd.unique(table.groups)) >= 35
