"""The HSRS stack file: round trip, and every way a file can be bad."""

from __future__ import annotations

import io

import numpy as np
import pytest

from ramanseg.errors import InputError
from ramanseg.hsrs.stack import (
    HsrsStack,
    check_labelled_stacks,
    read_hsrs_stack,
    read_labelled_stacks,
    write_hsrs_stack,
)


def small_stack(**overrides) -> HsrsStack:
    rng = np.random.default_rng(0)
    fields = {
        "cube": rng.random((5, 4, 6)).astype(np.float32),
        "wavenumbers": np.linspace(2800, 3000, 5),
        "labels": rng.integers(0, 3, (4, 6)),
        "class_names": ("background", "cytoplasm", "nucleus"),
        "source": "test",
    }
    return HsrsStack(**{**fields, **overrides})


def test_round_trip(tmp_path):
    stack = small_stack()
    path = write_hsrs_stack(tmp_path / "s.npz", stack)
    read = read_hsrs_stack(path)
    np.testing.assert_array_equal(read.cube, stack.cube)
    np.testing.assert_array_equal(read.wavenumbers, stack.wavenumbers)
    np.testing.assert_array_equal(read.labels, stack.labels)
    assert read.class_names == stack.class_names
    assert read.source == "test"
    assert read.cube.dtype == np.float32 and read.labels.dtype == np.int16
    assert read.n_bands == 5 and read.shape == (4, 6)


def test_the_same_stack_gives_the_same_bytes(tmp_path):
    first = write_hsrs_stack(tmp_path / "a.npz", small_stack()).read_bytes()
    assert write_hsrs_stack(tmp_path / "b.npz", small_stack()).read_bytes() == first


def test_round_trip_without_labels_or_wavenumbers(tmp_path):
    stack = small_stack(labels=None, wavenumbers=None, class_names=())
    read = read_hsrs_stack(write_hsrs_stack(tmp_path / "s.npz", stack))
    assert read.labels is None and read.wavenumbers is None and read.class_names == ()


def test_missing_file_names_file_and_fix(tmp_path):
    with pytest.raises(InputError, match="does not exist") as info:
        read_hsrs_stack(tmp_path / "absent.npz", fix="run the hsrs_cells rule")
    assert "absent.npz" in str(info.value) and "hsrs_cells" in str(info.value)


def test_not_a_zip(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_text("not a zip")
    with pytest.raises(InputError, match="cannot be read"):
        read_hsrs_stack(path)


def test_npz_of_another_format(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, cube=np.zeros((2, 2, 2)))
    with pytest.raises(InputError, match="format marker"):
        read_hsrs_stack(path)


def _write_raw(path, stack: HsrsStack, **replace):
    """Write the arrays of a valid stack with some replaced, bypassing validation."""
    arrays = {
        "format": np.array("ramanseg-hsrs-stack"),
        "version": np.array(1),
        "cube": stack.cube,
        "wavenumbers": stack.wavenumbers,
        "labels": stack.labels,
        "class_names": np.array(stack.class_names),
        "source": np.array(stack.source),
    }
    arrays.update(replace)
    buffer = io.BytesIO()
    np.savez(buffer, **{k: v for k, v in arrays.items() if v is not None})
    path.write_bytes(buffer.getvalue())
    return path


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        ({"cube": np.zeros((4, 6), np.float32)}, "must be 3-D"),
        ({"cube": np.full((5, 4, 6), np.nan, np.float32)}, "non-finite"),
        ({"wavenumbers": np.linspace(2800, 3000, 4)}, "wavenumbers have shape"),
        ({"wavenumbers": np.array([2800, 2850, 2840, 2900, 3000.0])}, "strictly"),
        ({"labels": np.zeros((3, 6), np.int16)}, "labels have shape"),
        ({"labels": np.full((4, 6), 3)}, "3 classes"),
        ({"labels": np.zeros((4, 6), np.float32)}, "must be integers"),
        ({"version": np.array(99)}, "version 99"),
        ({"class_names": np.array(["a", "a", "b"])}, "repeat"),
    ],
)
def test_invalid_arrays_are_input_errors(tmp_path, replace, message):
    path = _write_raw(tmp_path / "bad.npz", small_stack(), **replace)
    with pytest.raises(InputError, match=message) as info:
        read_hsrs_stack(path, fix="regenerate it")
    assert "bad.npz" in str(info.value) and "regenerate it" in str(info.value)


def test_pickled_arrays_are_refused(tmp_path):
    path = _write_raw(
        tmp_path / "bad.npz", small_stack(), source=np.array([{"a": 1}], dtype=object)
    )
    with pytest.raises(InputError, match="cannot be read"):
        read_hsrs_stack(path)


def test_write_refuses_an_invalid_stack_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="non-finite"):
        write_hsrs_stack(tmp_path / "s.npz", small_stack(cube=np.full((5, 4, 6), np.inf)))
    assert list(tmp_path.iterdir()) == []


def test_labelled_stacks_are_read_in_order_and_an_unlabelled_one_is_named(tmp_path):
    first = write_hsrs_stack(tmp_path / "a.npz", small_stack())
    second = write_hsrs_stack(tmp_path / "b.npz", small_stack(source="second"))
    stacks = read_labelled_stacks([second, first], "hsrs-x", "to score against")
    assert [stack.source for stack in stacks] == ["second", "test"]
    unlabelled = write_hsrs_stack(tmp_path / "c.npz", small_stack(labels=None, class_names=()))
    with pytest.raises(InputError) as caught:
        read_labelled_stacks([first, unlabelled], "hsrs-x", "to score against")
    message = str(caught.value)
    assert "c.npz" in message and "the stack has no labels to score against" in message
    assert "give hsrs-x labelled stacks" in message
    with pytest.raises(InputError, match="rerun the rule that writes"):
        read_labelled_stacks([tmp_path / "missing.npz"], "hsrs-x", "to score against")


def test_a_dataset_is_labelled_alike_and_the_models_need_its_band_counts_alike():
    five = small_stack()
    four = small_stack(cube=five.cube[:4], wavenumbers=five.wavenumbers[:4])
    assert check_labelled_stacks("x", [five, four], same_bands=False) == five.class_names
    with pytest.raises(ValueError, match="band counts differ: 5 and 4 bands"):
        check_labelled_stacks("x", [five, four])
    other = small_stack(class_names=("a", "b", "c"))
    for same_bands in (True, False):
        with pytest.raises(ValueError, match="classes differ"):
            check_labelled_stacks("x", [five, other], same_bands=same_bands)
    with pytest.raises(ValueError, match="without labels"):
        check_labelled_stacks("x", [five, small_stack(labels=None, class_names=())])
    with pytest.raises(ValueError, match="has no stacks"):
        check_labelled_stacks("x", [])
