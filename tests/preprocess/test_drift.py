"""Column-wise drift correction."""

from __future__ import annotations

import numpy as np
import pytest

from ramanseg.preprocess import PreprocessWarning
from ramanseg.preprocess.drift import correct_column_drift


def test_drift_correction_removes_a_column_ramp():
    rng = np.random.default_rng(1)
    height, width = 128, 64
    # Flat along x (structure along y only, plus a little noise), two channels.
    rows = np.arange(height)[:, np.newaxis]
    truth = np.stack([100.0 + 10 * np.sin(rows / 5.0), 50.0 + 5 * np.cos(rows / 7.0)])
    truth = truth + rng.normal(0, 1, (2, height, width))
    ramp = np.linspace(0.5, 1.5, width)  # smooth multiplicative drift along x
    drifted = (truth * ramp).astype(np.float32)
    foreground = np.zeros((height, width), bool)
    foreground[20:110] = True
    corrected, profile = correct_column_drift(drifted, foreground)
    for c in range(2):
        column_means = corrected[c][foreground].reshape(90, width).mean(axis=0)
        assert np.ptp(column_means) / column_means.mean() < 0.01
        ratio = corrected[c].mean(axis=0) / truth[c].mean(axis=0)
        assert np.ptp(ratio) / ratio.mean() < 0.01  # the drift itself is gone
    np.testing.assert_allclose(profile.gain[0] * ramp, profile.gain[0, 0] * ramp[0], rtol=0.02)
    assert profile.measured_columns.all()


def test_drift_correction_interpolates_columns_without_foreground():
    height, width = 40, 30
    ramp = np.linspace(1.0, 2.0, width)
    stack = np.broadcast_to(10.0 * ramp, (1, height, width)).astype(np.float32)
    foreground = np.zeros((height, width), bool)
    foreground[:, 5:10] = True
    foreground[:, 20:25] = True
    corrected, profile = correct_column_drift(stack, foreground, min_column_pixels=10)
    measured = profile.measured_columns[0]
    assert measured[5:10].all() and measured[20:25].all() and measured.sum() == 10
    # Measured columns: exact; between them m~ is linear in x like the ramp, so exact too.
    np.testing.assert_allclose(corrected[0, :, 5:25], corrected[0, 0, 5], rtol=1e-5)
    # Beyond the first / last measured column m~ is held constant.
    np.testing.assert_allclose(profile.column_means[0, :5], profile.column_means[0, 5])
    np.testing.assert_allclose(profile.column_means[0, 25:], profile.column_means[0, 24])
    assert np.isfinite(corrected).all()


def test_columns_with_too_few_foreground_pixels_are_interpolated():
    stack = np.ones((1, 20, 3), np.float32)
    stack[0, :, 1] = 5.0
    foreground = np.ones((20, 3), bool)
    foreground[3:, 1] = False  # column 1 has 3 foreground pixels only
    _, profile = correct_column_drift(stack, foreground, min_column_pixels=10)
    assert profile.measured_columns[0].tolist() == [True, False, True]
    assert profile.column_means[0, 1] == 1.0


def test_no_foreground_leaves_the_stack_unchanged_with_a_warning():
    stack = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    with pytest.warns(PreprocessWarning, match="no foreground pixels"):
        corrected, profile = correct_column_drift(stack, np.zeros((8, 8), bool))
    np.testing.assert_array_equal(corrected, stack)
    assert (profile.gain == 1).all()
