"""The C. elegans reader and its phasor gold-standard labels.

The real stack (GPL-3.0) is never copied into the project: most tests build a small
stand-in folder of the same layout; one reads the real stack where ../shared has it.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from ramanseg.errors import InputError
from ramanseg.hsrs.celegans import (
    CLASS_NAMES,
    REFERENCE_NAMES,
    celegans_stack,
    label_celegans,
    read_celegans,
)
from ramanseg.hsrs.phasor import PhasorSettings
from tests.conftest import REPO

FRAMES = 30
DARK = 30.0
REAL = REPO.parent / "shared" / "data" / "real" / "celegans-srs"


def references() -> np.ndarray:
    """Four distinct spectra over the frames, on the dark level."""
    frames = np.arange(FRAMES)
    centres, widths = (6, 11, 16, 24), (3, 4, 5, 8)
    peaks = [np.exp(-(((frames - c) / w) ** 2)) for c, w in zip(centres, widths, strict=True)]
    return DARK + 60 * np.array(peaks)


def write_folder(folder, cube=None, spectra=None):
    """A stand-in for the C. elegans folder: each quarter of the worm (the middle columns)
    is one reference spectrum, the slide outside is the dark level; uint8 with noise."""
    folder.mkdir(parents=True, exist_ok=True)
    spectra = references() if spectra is None else spectra
    if cube is None:
        rng = np.random.default_rng(0)
        truth = np.zeros((40, 40), dtype=int)
        truth[:, 10:30] = 1 + np.repeat(np.arange(4), 10)[:, None]
        ref = np.concatenate([np.full((1, FRAMES), DARK), references()])
        cube = ref[truth] + rng.normal(0, 1.0, (40, 40, FRAMES))
        cube = np.clip(np.round(cube), 0, 255).astype(np.uint8)
    np.save(folder / "celegans_srs_cube.npy", cube)
    scipy.io.savemat(folder / "celegans_spec_init.mat", {"celegans_spec_init": spectra})
    return folder


def test_labels_are_the_nearest_reference_phasor_and_background(tmp_path):
    folder = write_folder(tmp_path / "ce")
    stack = celegans_stack(folder, PhasorSettings(median_filter=1))
    assert stack.class_names == CLASS_NAMES == ("background", *REFERENCE_NAMES)
    assert stack.cube.shape == (FRAMES, 40, 40) and stack.wavenumbers is None
    expected = np.zeros((40, 40), dtype=int)
    expected[:, 10:30] = 1 + np.repeat(np.arange(4), 10)[:, None]
    assert (stack.labels == expected).mean() > 0.97
    assert "GPL-3.0" in stack.source


def test_dark_level_is_the_references_floor(tmp_path):
    cube, spectra = read_celegans(write_folder(tmp_path / "ce"))
    _, cursors, dark = label_celegans(cube, spectra, PhasorSettings())
    assert dark == pytest.approx(DARK)
    assert cursors.class_names == REFERENCE_NAMES


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(InputError, match="folder does not exist") as info:
        read_celegans(tmp_path / "absent")
    assert "hsrs.celegans_dir" in str(info.value)
    folder = write_folder(tmp_path / "ce")
    (folder / "celegans_spec_init.mat").unlink()
    with pytest.raises(InputError, match="file is missing") as info:
        read_celegans(folder)
    assert "celegans_spec_init.mat" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cube": np.zeros((40, 40), np.uint8)}, "expected a \\(Y, X, frames\\)"),
        ({"spectra": references()[:3]}, "of shape \\(4, 30\\)"),
        ({"spectra": references()[:, :20]}, "of shape \\(4, 30\\)"),
    ],
)
def test_wrong_shapes_name_the_file(tmp_path, kwargs, message):
    folder = write_folder(tmp_path / "ce", **kwargs)
    with pytest.raises(InputError, match=message):
        read_celegans(folder)


def test_unreadable_cube(tmp_path):
    folder = write_folder(tmp_path / "ce")
    (folder / "celegans_srs_cube.npy").write_text("not numpy")
    with pytest.raises(InputError, match=r"cannot be read as a \.npy") as info:
        read_celegans(folder)
    assert "celegans_srs_cube.npy" in str(info.value)


@pytest.mark.skipif(not REAL.is_dir(), reason="the real C. elegans stack is in ../shared only")
def test_the_real_stack_is_labelled_into_every_class():
    stack = celegans_stack(REAL, PhasorSettings())
    assert stack.cube.shape == (100, 200, 200)
    fractions = np.bincount(stack.labels.ravel(), minlength=len(CLASS_NAMES)) / stack.labels.size
    assert (fractions > 0.005).all(), dict(zip(CLASS_NAMES, fractions, strict=True))
    # The slide around the worm: about 40 % of the field is background.
    assert 0.3 < fractions[0] < 0.6
