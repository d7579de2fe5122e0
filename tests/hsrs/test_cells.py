"""The synthetic HSRS cell phantom: deterministic, and phasor cursors recover its truth."""

from __future__ import annotations

import numpy as np

from ramanseg.hsrs.cells import CLASS_NAMES, LIPID_DROPLET, CellPhantomSettings, make_field
from ramanseg.hsrs.phasor import compute_phasor, dice_per_class, fit_cursors

SETTINGS = CellPhantomSettings(fields=2, size=128, bands=40, seed=7)


def test_fields_are_deterministic_and_hold_every_class():
    first, again = make_field(SETTINGS, 0), make_field(SETTINGS, 0)
    np.testing.assert_array_equal(first.cube, again.cube)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert first.cube.shape == (40, 128, 128) and first.cube.dtype == np.float32
    assert set(np.unique(first.labels)) == set(range(len(CLASS_NAMES)))
    assert first.validate().class_names == CLASS_NAMES
    assert not np.array_equal(make_field(SETTINGS, 1).labels, first.labels)


def test_lipid_droplets_have_the_strongest_ch2_band():
    field = make_field(SETTINGS, 0)
    band = int(np.argmin(abs(field.wavenumbers - 2850)))
    means = [field.cube[band][field.labels == c].mean() for c in range(len(CLASS_NAMES))]
    assert int(np.argmax(means)) == LIPID_DROPLET


def test_phasor_cursors_recover_the_truth_on_a_held_out_field():
    train, test = make_field(SETTINGS, 0), make_field(SETTINGS, 1)
    phasors = [compute_phasor(f.cube, (1,), median_filter=1) for f in (train, test)]
    cursors = fit_cursors(phasors[0].features(), train.labels.ravel(), CLASS_NAMES, (1,))
    predicted = cursors.classify(phasors[1].features())
    dice = dice_per_class(predicted, test.labels, len(CLASS_NAMES))
    assert dice[LIPID_DROPLET] >= 0.8, dict(zip(CLASS_NAMES, dice, strict=True))
    assert np.nanmin(dice) >= 0.7, dict(zip(CLASS_NAMES, dice, strict=True))
