"""The preprocessed-sample owner: file pairing, and every reader's checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from ramanseg.errors import InputError
from ramanseg.io import write_mask, write_ome_tiff
from ramanseg.preprocessed import (
    PreprocessedFiles,
    files_by_sample,
    files_of,
    read_class_map,
    read_mask,
    read_qc,
    read_stack,
    read_stack_channel,
    sample_id_of,
)

NAMES = ["Raman 2850", "Raman 2930", "TPEF"]


@pytest.fixture()
def sample(tmp_path) -> PreprocessedFiles:
    """One preprocessed sample, S1, written as the preprocessing writes it."""
    files = PreprocessedFiles.in_folder(tmp_path / "preprocessed" / "S1")
    files.stack.parent.mkdir(parents=True)
    stack = np.random.default_rng(0).random((3, 8, 10), dtype=np.float32)
    write_ome_tiff(files.stack, stack, NAMES)
    write_mask(files.mask, (stack[0] > 0.5).astype(np.uint8))
    write_mask(files.foreground, np.ones((8, 10), np.uint8))
    write_mask(files.classes, np.full((8, 10), 2, np.uint8))
    files.qc.write_text(json.dumps({"class_fractions": {"Tumor": 0.1, "Stroma": 0.9}}))
    return files


def test_reads_what_the_preprocessing_writes(sample):
    stack, names = read_stack(sample.stack, "S1", channel_names=NAMES)
    assert stack.shape == (3, 8, 10) and stack.dtype == np.float32 and names == tuple(NAMES)
    np.testing.assert_array_equal(read_stack_channel(sample.stack, "S1", 1, 3), stack[1])
    assert read_mask(sample.mask, "S1", (8, 10)).dtype == np.uint8
    assert read_class_map(sample.classes, "S1", ["Tumor", "Stroma"], (8, 10)).max() == 2
    assert read_qc(sample.qc, "S1")["class_fractions"]["Tumor"] == 0.1


def test_files_are_paired_by_their_folder(sample, tmp_path):
    other = PreprocessedFiles.in_folder(tmp_path / "preprocessed" / "S2")
    files = files_by_sample(stacks=[sample.stack, other.stack], masks=[sample.mask])
    assert list(files) == ["S1", "S2"]
    assert files["S1"].mask == sample.mask and files["S2"].mask is None
    assert sample_id_of(other.stack) == "S2"
    # A command may read only the files it was given.
    with pytest.raises(InputError, match=r"mask\.tif of this sample was not given") as caught:
        files["S2"].path("mask", "--masks")
    assert caught.value.sample == "S2" and "--masks" in str(caught.value)
    with pytest.raises(InputError, match="no preprocessed files were given for sample 'S3'"):
        files_of(files, "S3")
    with pytest.raises(InputError, match=r"expected a mask\.tif file among the masks"):
        files_by_sample(masks=[sample.stack])
    with pytest.raises(InputError, match="two stacks files for one sample"):
        files_by_sample(stacks=[sample.stack, sample.stack])


@pytest.mark.parametrize(
    ("damage", "reader", "match"),
    [
        ("missing", "stack", "preprocessed stack does not exist"),
        ("garbage", "stack", "cannot be read as TIFF"),
        ("channels", "stack", "has 2 channels, but the configuration lists 3"),
        ("names", "stack", "channels are"),
        ("nan", "stack", "NaN or infinite"),
        ("shape", "mask", r"shape \(4, 10\); expected 8 x 10"),
        ("values", "mask", "must hold labels 0 to 1"),
        ("values", "classes", "must hold labels 0 to 2"),
        ("garbage", "qc", "not valid JSON"),
    ],
)
def test_bad_files_are_errors_naming_sample_file_and_fix(sample, damage, reader, match):
    path = getattr(sample, reader)
    if damage == "missing":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"not what it should be")
    elif damage == "channels":
        write_ome_tiff(path, np.zeros((2, 8, 10), np.float32), NAMES[:2])
    elif damage == "names":
        write_ome_tiff(path, np.zeros((3, 8, 10), np.float32), ["a", "b", "c"])
    elif damage == "nan":
        write_ome_tiff(path, np.full((3, 8, 10), np.nan, np.float32), NAMES)
    elif damage == "shape":
        write_mask(path, np.zeros((4, 10), np.uint8))
    else:
        tifffile.imwrite(path, np.full((8, 10), 7, np.uint8))
    read = {
        "stack": lambda: read_stack(path, "S1", channel_names=NAMES),
        "mask": lambda: read_mask(path, "S1", (8, 10)),
        "classes": lambda: read_class_map(path, "S1", ["Tumor", "Stroma"], (8, 10)),
        "qc": lambda: read_qc(path, "S1"),
    }[reader]
    with pytest.raises(InputError, match=match) as caught:
        read()
    assert caught.value.sample == "S1" and caught.value.path == path and caught.value.fix


def test_a_class_order_other_than_the_preprocessings_is_warned_about(sample, caplog):
    read_class_map(sample.classes, "S1", ["Stroma", "Tumor"], (8, 10))
    assert "may mean other classes" in caplog.text
