"""Phasor segmentation of a dataset: folds, the intensity threshold, the Dice rows."""

from __future__ import annotations

import numpy as np
import pytest

from ramanseg.hsrs.analysis import CURSORS_MODEL, GMM_MODEL, analyse_dataset, make_folds
from ramanseg.hsrs.celegans import celegans_stack
from ramanseg.hsrs.phasor import PhasorSettings
from ramanseg.hsrs.stack import HsrsStack
from tests.hsrs.test_celegans import write_folder


def test_folds_hold_out_each_stack_or_each_half():
    stacks = [HsrsStack(np.ones((5, 4, 6), np.float32)) for _ in range(3)]
    folds = make_folds(stacks)
    assert [f.name for f in folds] == ["field0", "field1", "field2"]
    for index, fold in enumerate(folds):
        assert fold.test[index].all() and not fold.train[index].any()
    left, right = make_folds(stacks[:1])
    assert (left.name, right.name) == ("left", "right")
    assert left.test[0][:, :3].all() and not left.test[0][:, 3:].any()
    np.testing.assert_array_equal(left.train[0], right.test[0])


@pytest.mark.parametrize("threshold", [True, False])
def test_single_stack_dataset_is_scored_on_its_halves(tmp_path, threshold):
    stack = celegans_stack(write_folder(tmp_path / "ce"), PhasorSettings())
    settings = PhasorSettings(background_threshold=threshold)
    analysis = analyse_dataset("celegans", [stack], settings)
    rows = [r for r in analysis.rows if r["model"] == CURSORS_MODEL]
    assert {r["fold"] for r in rows} == {"left", "right"}
    assert {r["model"] for r in analysis.rows} == {CURSORS_MODEL, GMM_MODEL}
    dice = {r["class"]: r["dice"] for r in rows if r["fold"] == "left"}
    if threshold:
        # The slide is found by intensity; the worm's classes by their phasors.
        assert min(dice.values()) > 0.9, dice
    assert analysis.predictions[0][CURSORS_MODEL].min() >= 0


def test_stacks_must_be_labelled_alike():
    labelled = HsrsStack(np.ones((5, 4, 4), np.float32), labels=np.zeros((4, 4), int))
    with pytest.raises(ValueError, match="without labels"):
        analyse_dataset("x", [HsrsStack(np.ones((5, 4, 4), np.float32))], PhasorSettings())
    other = HsrsStack(labelled.cube, labels=labelled.labels, class_names=("b",))
    first = HsrsStack(labelled.cube, labels=labelled.labels, class_names=("a",))
    with pytest.raises(ValueError, match="classes differ"):
        analyse_dataset("x", [first, other], PhasorSettings())


def test_background_threshold_removes_the_noise_phasors_of_the_slide():
    # Cells on a slide that gives no signal: the slide's phasors are noise, spread over the
    # plane, and some fall among the cells' phasors; the intensity threshold removes them.
    rng = np.random.default_rng(0)
    spectrum = np.exp(-(((np.arange(20) - 8) / 3.0) ** 2)) + 0.2
    stacks = []
    for _ in range(2):
        labels = np.zeros((40, 40), dtype=int)
        labels[10:30, 10:30] = 1
        cube = spectrum[:, None, None] * np.where(labels == 1, 20.0, 0.0)
        cube = cube + 0.5 + rng.normal(0, 1.0, (20, 40, 40))
        stacks.append(
            HsrsStack(cube.astype(np.float32), labels=labels, class_names=("background", "cell"))
        )
    dice = {}
    for threshold in (True, False):
        settings = PhasorSettings(background_threshold=threshold, median_filter=0)
        rows = analyse_dataset("x", stacks, settings).rows
        dice[threshold] = np.mean(
            [r["dice"] for r in rows if r["model"] == CURSORS_MODEL and r["class"] == "cell"]
        )
    # Measured: 1 - Dice 0.0006 with the threshold, 0.012 without.
    assert dice[True] > 0.99 and 1 - dice[False] > 5 * (1 - dice[True]), dice
