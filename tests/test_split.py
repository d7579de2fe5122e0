"""Patient-grouped split and folds: no leakage, exact when possible, deterministic."""

from __future__ import annotations

import itertools
import json

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ramanseg.cli import main
from ramanseg.samplesheet import read_samplesheet
from ramanseg.split import (
    SPLITS,
    cross_validation_folds,
    fold_split,
    make_split,
    read_split,
    split_by_patient,
)

#: The paper's 32 samples of 10 patients.
PAPER_PATIENT_SIZES = [5, 4, 4, 3, 3, 3, 3, 3, 2, 2]


def sample_table(patient_sizes) -> pd.DataFrame:
    rows = [
        (f"P{p:02d}S{s}", f"P{p:02d}") for p, size in enumerate(patient_sizes) for s in range(size)
    ]
    return pd.DataFrame(rows, columns=["sample_id", "patient_id"])


def patient_of(table: pd.DataFrame) -> dict[str, str]:
    return dict(zip(table["sample_id"], table["patient_id"], strict=True))


def deviation(counts, targets) -> tuple[int, int]:
    gaps = [abs(c - t) for c, t in zip(counts, targets, strict=True)]
    return sum(gaps), max(gaps)


def best_deviation_by_brute_force(sizes, targets) -> tuple[int, int]:
    """Try every assignment of patients to train / val / test / unused."""
    allow_unused = sum(targets) < sum(sizes)
    options = range(4) if allow_unused else range(3)
    best = None
    for assignment in itertools.product(options, repeat=len(sizes)):
        counts = [0, 0, 0]
        for size, where in zip(sizes, assignment, strict=True):
            if where < 3:
                counts[where] += size
        if any((t > 0) != (c > 0) for c, t in zip(counts, targets, strict=True)):
            continue
        value = deviation(counts, targets)
        best = value if best is None or value < best else best
    return best


def test_paper_split_is_exact():
    table = sample_table(PAPER_PATIENT_SIZES)
    result = split_by_patient(table, 19, 8, 5, seed=0)
    assert [len(result[name]) for name in SPLITS] == [19, 8, 5]
    assert result["unused"] == [] and result["requested"] == {"train": 19, "val": 8, "test": 5}
    owner = patient_of(table)
    for name in SPLITS:
        assert sorted({owner[s] for s in result[name]}) == result["patients"][name]


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=7),
    fractions=st.tuples(*[st.floats(0, 1)] * 3),
    seed=st.integers(0, 2**31),
)
def test_split_keeps_patients_together_and_is_optimal(sizes, fractions, seed):
    total = sum(sizes)
    targets = [round(f * total) for f in fractions]
    while sum(targets) > total:
        targets[targets.index(max(targets))] -= 1
    if sum(t > 0 for t in targets) > len(sizes):
        targets = [targets[0] or 1, 0, 0]
    table = sample_table(sizes)
    result = split_by_patient(table, *targets, seed=seed)
    owner = patient_of(table)

    groups = [set(result["patients"][name]) for name in (*SPLITS, "unused")]
    for a, b in itertools.combinations(groups, 2):
        assert not a & b  # no patient in two splits
    placed = [s for name in (*SPLITS, "unused") for s in result[name]]
    assert sorted(placed) == sorted(table["sample_id"])  # every sample exactly once
    for name in (*SPLITS, "unused"):
        assert {owner[s] for s in result[name]} == set(result["patients"][name])
    counts = [len(result[name]) for name in SPLITS]
    for count, target in zip(counts, targets, strict=True):
        assert (count > 0) == (target > 0)
    if sum(targets) == total:
        assert result["unused"] == []
    # Optimal: no assignment of whole patients gets closer; exact whenever possible.
    assert deviation(counts, targets) == best_deviation_by_brute_force(sizes, targets)
    assert split_by_patient(table, *targets, seed=seed) == result  # deterministic


def test_seed_breaks_ties_between_equally_good_splits():
    table = sample_table([2] * 8)  # many exact solutions for 8 / 4 / 4
    results = {json.dumps(split_by_patient(table, 8, 4, 4, seed)) for seed in range(10)}
    assert len(results) > 1
    for result in map(json.loads, results):
        assert [len(result[name]) for name in SPLITS] == [8, 4, 4]


def test_inexact_request_gets_the_closest_split():
    # Three patients of 4 samples cannot give 6 / 3 / 3. Every requested split must be
    # non-empty, so each gets one patient: 4 / 4 / 4, total deviation 2 + 1 + 1 = 4.
    result = split_by_patient(sample_table([4, 4, 4]), 6, 3, 3, seed=0)
    assert [len(result[name]) for name in SPLITS] == [4, 4, 4]


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=2, max_size=15),
    n_folds=st.integers(2, 6),
    seed=st.integers(0, 2**31),
)
def test_folds_never_share_a_patient(sizes, n_folds, seed):
    table = sample_table(sizes)
    ids = list(table["sample_id"])
    if len(sizes) < n_folds:
        with pytest.raises(ValueError, match=r"split\.folds"):
            cross_validation_folds(table, ids, n_folds, seed)
        return
    folds = cross_validation_folds(table, ids, n_folds, seed)
    owner = patient_of(table)
    assert len(folds) == n_folds
    val_patients = [{owner[s] for s in fold["val"]} for fold in folds]
    for a, b in itertools.combinations(val_patients, 2):
        assert not a & b  # a patient validates in one fold only
    assert sorted(s for fold in folds for s in fold["val"]) == sorted(ids)
    for fold in folds:
        assert fold["val"]  # every fold has a patient
        assert not {owner[s] for s in fold["train"]} & {owner[s] for s in fold["val"]}
        assert sorted(fold["train"] + fold["val"]) == sorted(ids)
    # Greedy balancing: fold sizes differ by at most the largest patient.
    fold_sizes = [len(fold["val"]) for fold in folds]
    assert max(fold_sizes) - min(fold_sizes) <= max(sizes)
    assert cross_validation_folds(table, ids, n_folds, seed) == folds


def test_paper_folds_over_train_and_val():
    table = sample_table(PAPER_PATIENT_SIZES)
    settings_ = {"split": {"train": 19, "val": 8, "test": 5, "folds": 5, "seed": 0}}
    result = make_split(table, settings_)
    folds = result["folds"]
    assert len(folds) == 5
    assert sorted(s for f in folds for s in f["val"]) == sorted(result["train"] + result["val"])
    assert not set(result["test"]) & {s for f in folds for s in f["train"] + f["val"]}
    # Train + val: patients of 4, 4, 3, 3, 3, 3, 3, 2, 2 samples (the 5-sample patient is
    # the test split). Largest first into the smallest fold: 4 | 4 | 3 | 3 | 3, then
    # 3 -> 6, 3 -> 6, 2 -> 5, 2 -> 6: sizes 6, 4, 6, 6, 5. (5, 5, 5, 6, 6 would need three
    # 3 + 2 folds, but there are only two patients of 2.)
    assert sorted(len(f["val"]) for f in folds) == [4, 5, 6, 6, 6]


@pytest.mark.parametrize(
    ("targets", "match"),
    [
        ((20, 8, 5), r"`split\.train` \+ `split\.val` \+ `split\.test` = 33 exceeds the 32"),
        ((-1, 8, 5), r"`split\.train` must not be negative"),
    ],
)
def test_impossible_requests_name_the_config_keys(targets, match):
    with pytest.raises(ValueError, match=match):
        split_by_patient(sample_table(PAPER_PATIENT_SIZES), *targets, seed=0)


def test_too_few_patients_for_the_splits():
    with pytest.raises(ValueError, match=r"3 non-empty splits .* need at least 3 patients"):
        split_by_patient(sample_table([10, 10]), 10, 5, 5, seed=0)


def test_duplicate_sample_ids_are_rejected():
    table = pd.DataFrame({"sample_id": ["a", "a"], "patient_id": ["p", "q"]})
    with pytest.raises(ValueError, match="duplicate sample ids: a"):
        split_by_patient(table, 1, 0, 1, seed=0)


def _write_sheet(path, patient_sizes):
    table = sample_table(patient_sizes)
    table["srs"] = table["sample_id"] + ".tif"
    table["he"] = ""
    table["annotations"] = table["sample_id"] + ".geojson"
    table.to_csv(path, sep="\t", index=False)


def test_cli_split_writes_nnunet_shaped_json(tmp_path):
    sheet = tmp_path / "samples.tsv"
    _write_sheet(sheet, PAPER_PATIENT_SIZES)
    out = tmp_path / "split" / "split.json"
    settings_ = json.dumps({"split": {"train": 19, "val": 8, "test": 5, "folds": 5, "seed": 3}})
    assert main(["split", "--samples", str(sheet), "--out", str(out), "--settings", settings_]) == 0
    result = json.loads(out.read_text())
    assert result["seed"] == 3
    assert [len(result[name]) for name in SPLITS] == [19, 8, 5]
    assert set(result["patients"]) == {"train", "val", "test", "unused"}
    assert all(set(fold) == {"train", "val"} for fold in result["folds"])
    assert len(result["folds"]) == 5
    first = out.read_bytes()
    assert main(["split", "--samples", str(sheet), "--out", str(out), "--settings", settings_]) == 0
    assert out.read_bytes() == first


def test_cli_split_reports_impossible_request(tmp_path, capsys):
    sheet = tmp_path / "samples.tsv"
    _write_sheet(sheet, [3, 3])
    out = tmp_path / "split.json"
    settings_ = json.dumps({"split": {"train": 3, "val": 1, "test": 2, "folds": 2, "seed": 0}})
    assert main(["split", "--samples", str(sheet), "--out", str(out), "--settings", settings_]) == 2
    assert "need at least 3 patients" in capsys.readouterr().err
    assert not out.exists()


def test_cli_split_sheet_without_patient_column(tmp_path, capsys):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("sample_id\tsrs\nA\ta.tif\n")
    settings_ = json.dumps({"split": {"train": 1, "val": 0, "test": 1}})
    out = tmp_path / "split.json"
    assert main(["split", "--samples", str(sheet), "--out", str(out), "--settings", settings_]) == 2
    assert "lacks the column(s) patient_id" in capsys.readouterr().err


def test_cli_split_reads_the_sheet_as_the_workflow_does(tmp_path):
    # Issue 13, defect 1: `ramanseg split` kept '#' comment rows and unstripped ids that
    # the workflow's reader skips and strips, so split.json differed from the planned DAG.
    sheet = tmp_path / "samples.tsv"
    _write_sheet(sheet, PAPER_PATIENT_SIZES)
    text = sheet.read_text().replace("P00S0\t", " P00S0 \t", 1)
    sheet.write_text(text + "#P09S9\tP01\tP09S9.tif\t\tP09S9.geojson\n")
    out = tmp_path / "split.json"
    settings_ = json.dumps({"split": {"train": 19, "val": 8, "test": 5, "folds": 5, "seed": 0}})
    assert main(["split", "--samples", str(sheet), "--out", str(out), "--settings", settings_]) == 0
    result = json.loads(out.read_text())
    planned = make_split(
        read_samplesheet(sheet, check_files=False), {"split": json.loads(settings_)["split"]}
    )
    assert result == planned
    ids = sorted(result["train"] + result["val"] + result["test"])
    assert ids == sorted(sample_table(PAPER_PATIENT_SIZES)["sample_id"])


def test_fold_splits_hold_out_every_training_sample_once():
    # Cross-validated evaluation: each fold's samples are its test set, the next fold's
    # pick the epoch, so every train + val sample is predicted by a model that never saw it.
    table = sample_table(PAPER_PATIENT_SIZES)
    split = make_split(table, {"split": {"train": 19, "val": 8, "test": 5, "folds": 5, "seed": 0}})
    owner = patient_of(table)
    held_out = []
    for fold in range(5):
        result = fold_split(split, fold)
        assert result["test"] == split["folds"][fold]["val"]
        assert result["val"] == split["folds"][(fold + 1) % 5]["val"]
        assert result["unused"] == split["test"] and result["folds"] == []
        subsets = [{owner[s] for s in result[name]} for name in SPLITS]
        assert all(not a & b for a, b in itertools.combinations(subsets, 2))
        assert sorted(result["train"] + result["val"] + result["test"]) == sorted(
            split["train"] + split["val"]
        )
        held_out += result["test"]
    assert sorted(held_out) == sorted(split["train"] + split["val"])


def test_fold_split_of_two_folds_has_no_validation_set():
    table = sample_table([3, 3, 2])
    split = make_split(table, {"split": {"train": 5, "val": 1, "test": 2, "folds": 2, "seed": 0}})
    result = fold_split(split, 1)
    assert result["val"] == [] and result["train"] == split["folds"][0]["val"]


@pytest.mark.parametrize(
    ("folds", "fold", "match"),
    [
        ([], 0, "at least 2 folds"),
        ([{"train": ["b"], "val": ["a"]}, {"train": ["a"], "val": ["b"]}], 2, "not one of"),
        ([{"train": [], "val": ["a"]}, {"train": [], "val": ["a"]}], 0, "twice: a"),
    ],
)
def test_fold_split_rejects_bad_folds(folds, fold, match):
    split = {"train": ["a", "b"], "val": [], "test": [], "folds": folds}
    with pytest.raises(ValueError, match=match):
        fold_split(split, fold)


def test_cli_fold_split(tmp_path, capsys):
    sheet = tmp_path / "samples.tsv"
    _write_sheet(sheet, PAPER_PATIENT_SIZES)
    split_path = tmp_path / "split.json"
    settings_ = json.dumps({"split": {"train": 19, "val": 8, "test": 5, "folds": 5, "seed": 0}})
    assert (
        main(["split", "--samples", str(sheet), "--out", str(split_path), "--settings", settings_])
        == 0
    )
    out = tmp_path / "cv" / "fold3.json"
    assert main(["fold-split", "--split", str(split_path), "--fold", "3", "--out", str(out)]) == 0
    assert read_split(out) == fold_split(read_split(split_path), 3)
    # A fold that does not exist: exit 2, a message naming the split file, nothing written.
    bad = tmp_path / "cv" / "fold9.json"
    assert main(["fold-split", "--split", str(split_path), "--fold", "9", "--out", str(bad)]) == 2
    error = capsys.readouterr().err
    assert "fold 9 is not one of the split's folds 0..4" in error and "split.json" in error
    assert not bad.exists()
