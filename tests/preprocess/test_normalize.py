"""Percentile normalisation: numpy's percentiles bit for bit, the formula, bad ranges."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ramanseg.preprocess import PreprocessWarning, normalize
from ramanseg.preprocess.normalize import exact_percentiles, normalize_percentiles


def test_normalisation_equals_the_formula():
    values = np.arange(100, dtype=np.float32).reshape(10, 10)
    stack = np.stack([values, values])
    out = normalize_percentiles(stack, ["raman", "tpef"], {"raman": [5, 95], "tpef": [1, 99]})
    # np.percentile (linear) of 0..99: p-th percentile = 99 p / 100.
    # Raman 5-95: lo = 4.95, hi = 94.05; TPEF 1-99: lo = 0.99, hi = 98.01.
    expected_raman = np.clip((values - 4.95) / (94.05 - 4.95), 0, 1)
    expected_tpef = np.clip((values - 0.99) / (98.01 - 0.99), 0, 1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], expected_raman, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out[1], expected_tpef, rtol=1e-6, atol=1e-7)
    assert out[0].flat[4] == 0.0 and out[0].flat[5] > 0.0  # 4 < 4.95 < 5
    assert out[0].flat[94] < 1.0 and out[0].flat[95] == 1.0  # 94 < 94.05 < 95
    assert out[0].flat[50] == pytest.approx((50 - 4.95) / 89.1, rel=1e-6)


def test_constant_channel_becomes_zeros_with_a_warning():
    stack = np.stack([np.full((4, 4), 7.0), np.arange(16.0).reshape(4, 4)])
    with pytest.warns(PreprocessWarning, match="channel 'flat' has an empty percentile range"):
        out = normalize_percentiles(
            stack, ["raman", "raman"], {"raman": [5, 95]}, names=["flat", "ramp"]
        )
    assert not out[0].any()
    assert out[1].max() == 1.0


def test_unknown_role_and_bad_range_are_rejected():
    stack = np.zeros((1, 2, 2))
    with pytest.raises(ValueError, match=r"no `preprocess\.percentiles` entry for channel role"):
        normalize_percentiles(stack, ["shg"], {"raman": [5, 95]})
    with pytest.raises(ValueError, match="0 <= low < high <= 100"):
        normalize_percentiles(stack, ["raman"], {"raman": [95, 5]})


@settings(max_examples=60, deadline=None)
@given(
    values=arrays(
        np.float32,
        st.integers(1, 300),
        elements=st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_infinity=False),
    ),
    percentiles=st.lists(st.floats(0, 100), min_size=1, max_size=4),
)
def test_exact_percentiles_match_numpy_bit_for_bit(values, percentiles):
    np.testing.assert_array_equal(
        exact_percentiles(values, percentiles), np.percentile(values, percentiles)
    )


@pytest.mark.parametrize("levels", [None, 7])
def test_exact_percentiles_fast_path_matches_numpy(levels):
    # Above 100 000 values the sampled-bracket path runs; with 7 levels, heavy ties.
    rng = np.random.default_rng(3)
    values = rng.normal(size=300_001).astype(np.float32)
    if levels:
        values = np.floor(values * levels / 2).astype(np.float32)
    q = [0, 1, 5, 37.5, 50, 95, 99, 100]
    np.testing.assert_array_equal(exact_percentiles(values, q), np.percentile(values, q))
    # Both tails of one channel, as the preprocessing asks for them.
    np.testing.assert_array_equal(
        exact_percentiles(values, [5, 95]), np.percentile(values, [5, 95])
    )


@pytest.mark.parametrize("sigmas", [0.0, -3.0])
def test_exact_percentiles_stay_exact_when_the_sample_misleads(monkeypatch, sigmas):
    # Brackets of zero (or negative) width around the sampled ranks miss most wanted ranks,
    # whichever side they fall on: the fallback must still give numpy's numbers. Small
    # blocks that do not divide the size check the block boundaries too.
    monkeypatch.setattr(normalize, "_SELECT_SIGMAS", sigmas)
    monkeypatch.setattr(normalize, "CACHE_BLOCK", 7_777)
    rng = np.random.default_rng(5)
    for values in (rng.normal(size=150_001), rng.exponential(size=200_000)):
        values = values.astype(np.float32)
        q = [0.5, 5, 50, 95, 99.5]
        np.testing.assert_array_equal(exact_percentiles(values, q), np.percentile(values, q))


def test_brackets_that_chain_over_all_values_still_give_numpy_percentiles(monkeypatch):
    # With many percentiles and wide brackets, neighbouring brackets merge into one open on
    # both sides: that one is everything.
    monkeypatch.setattr(normalize, "_SELECT_SIGMAS", 200.0)
    values = np.random.default_rng(6).normal(size=120_000).astype(np.float32)
    q = np.linspace(0, 100, 41)
    np.testing.assert_array_equal(exact_percentiles(values, q), np.percentile(values, q))
