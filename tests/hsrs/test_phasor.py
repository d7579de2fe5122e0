"""Spectral phasors: where closed forms put them, phasorpy against NumPy, and cursors."""

from __future__ import annotations

import numpy as np
import pytest
from phasorpy.cursor import mask_from_elliptic_cursor

from ramanseg.hsrs.phasor import (
    PhasorCursors,
    compute_phasor,
    dice_per_class,
    fit_cursors,
    gmm_segment,
    match_clusters,
    phasor_numpy,
)

K = 40  # bands
GRID = np.linspace(2800, 3050, K, endpoint=False)  # spacing 6.25 cm-1; one period L = 250
PERIOD = K * (GRID[1] - GRID[0])


def lorentzian(x, center, hwhm):
    return hwhm**2 / ((x - center) ** 2 + hwhm**2)


def periodic_lorentzian(x, center, hwhm, period):
    """sum_m lorentzian(x - m * period): the Lorentzian made periodic, in closed form."""
    a = 2 * np.pi * hwhm / period
    angle = 2 * np.pi * (x - center) / period
    return (np.pi * hwhm / period) * np.sinh(a) / (np.cosh(a) - np.cos(angle))


@pytest.mark.parametrize("harmonic", [1, 2])
@pytest.mark.parametrize(("center", "hwhm"), [(2850.0, 9.0), (2933.3, 16.0), (3040.0, 40.0)])
def test_periodic_lorentzian_lies_where_the_closed_form_puts_it(center, hwhm, harmonic):
    # Derivation: the periodic Lorentzian's Fourier series is
    #   (pi hwhm / L) sum_n r^|n| exp(i 2 pi n (x - c) / L),  r = exp(-2 pi hwhm / L).
    # Sampled on the K-band grid x_k = x_0 + k L / K, the DFT at harmonic h keeps the terms
    # n = -h + m K (aliasing), so with phi = 2 pi (c - x_0) / L
    #   G + iS = sum_m r^|h - mK| e^{i (h - mK) phi} / sum_m r^|mK| e^{-i mK phi}.
    # The m = 0 term alone is the continuous limit r^h e^{i h phi}. Exact up to rounding.
    spectrum = periodic_lorentzian(GRID, center, hwhm, PERIOD)
    _, g, s = phasor_numpy(spectrum, harmonics=[harmonic])
    r = np.exp(-2 * np.pi * hwhm / PERIOD)
    phi = 2 * np.pi * (center - GRID[0]) / PERIOD
    m = np.arange(-6, 7)
    numerator = np.sum(r ** np.abs(harmonic - m * K) * np.exp(1j * (harmonic - m * K) * phi))
    denominator = np.sum(r ** np.abs(m * K) * np.exp(-1j * m * K * phi))
    expected = numerator / denominator
    assert g[0] == pytest.approx(expected.real, abs=1e-12)
    assert s[0] == pytest.approx(expected.imag, abs=1e-12)
    # The continuous limit (the m = 0 term): modulation r^h, phase h phi; the aliased
    # terms add at most about 2 r^(K - h) / (1 - r^K) (plus rounding).
    aliasing = 2 * r ** (K - harmonic) / (1 - r**K) + 1e-12
    assert np.hypot(g[0], s[0]) == pytest.approx(r**harmonic, abs=aliasing)
    phase = np.angle((g[0] + 1j * s[0]) * np.exp(-1j * harmonic * phi))
    assert abs(phase) <= aliasing / r**harmonic


def test_single_lorentzian_in_the_window_meets_the_continuous_limit():
    # A plain (not periodic) narrow Lorentzian in the middle of a fine grid: the continuous
    # limit exp(-2 pi hwhm / L) exp(i 2 pi (c - x_0) / L) holds up to the band's tails
    # outside the window, a fraction ~ 2 hwhm / (pi L / 2) = 1.5 % of its area here, so
    # the modulation and phase are checked to 0.02.
    grid = np.linspace(2800, 3050, 500, endpoint=False)
    period = 250.0
    center, hwhm = 2925.0, 3.0
    _, g, s = phasor_numpy(lorentzian(grid, center, hwhm))
    modulation, phase = np.hypot(g[0], s[0]), np.arctan2(s[0], g[0]) % (2 * np.pi)
    assert modulation == pytest.approx(np.exp(-2 * np.pi * hwhm / period), abs=0.02)
    assert phase == pytest.approx(2 * np.pi * (center - grid[0]) / period, abs=0.02)


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_mixture_lies_on_the_segment_at_the_intensity_fraction(fraction):
    a = 2.0 * lorentzian(GRID, 2850, 9) + 0.3 * lorentzian(GRID, 2885, 12)
    b = lorentzian(GRID, 2935, 16) + 0.1
    _, ga, sa = phasor_numpy(a)
    _, gb, sb = phasor_numpy(b)
    _, gm, sm = phasor_numpy(fraction * a + (1 - fraction) * b)
    # Intensity-weighted: the share of a in the mixture's total intensity.
    weight = fraction * a.sum() / (fraction * a.sum() + (1 - fraction) * b.sum())
    assert gm[0] == pytest.approx(weight * ga[0] + (1 - weight) * gb[0], abs=1e-12)
    assert sm[0] == pytest.approx(weight * sa[0] + (1 - weight) * sb[0], abs=1e-12)


def test_phasorpy_and_numpy_agree():
    rng = np.random.default_rng(1)
    cube = rng.gamma(2.0, 10.0, (K, 12, 9)).astype(np.float32)
    cube[:, 0, 0] = 0  # no signal: no phasor in either
    phasor = compute_phasor(cube, harmonics=(1, 2))
    mean, g, s = phasor_numpy(cube, harmonics=(1, 2))
    np.testing.assert_allclose(phasor.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(phasor.g, g, atol=1e-10)
    np.testing.assert_allclose(phasor.s, s, atol=1e-10)
    assert np.isnan(phasor.g[:, 0, 0]).all() and np.isnan(g[:, 0, 0]).all()
    assert phasor.features().shape == (12 * 9, 4)


def test_too_few_bands_for_the_harmonic():
    with pytest.raises(ValueError, match="at least 5 bands"):
        phasor_numpy(np.ones((4, 2, 2)), harmonics=[2])


def _two_clusters(rng, n=400):
    a = rng.multivariate_normal([0.2, 0.3], [[3e-3, 1e-3], [1e-3, 2e-3]], n)
    b = rng.multivariate_normal([0.5, 0.5], [[2e-3, -1e-3], [-1e-3, 3e-3]], n)
    return np.concatenate([a, b]), np.repeat([0, 1], n)


def test_elliptic_cursor_region_matches_phasorpy():
    rng = np.random.default_rng(2)
    features, labels = _two_clusters(rng)
    cursors = fit_cursors(features, labels, ("a", "b"), (1,), sigma=2.0)
    points = rng.uniform(0, 0.8, (5000, 2))
    for index in range(2):
        g, s, radius, radius_minor, angle = cursors.ellipse(index)
        expected = mask_from_elliptic_cursor(
            points[:, 0], points[:, 1], g, s, radius=radius, radius_minor=radius_minor, angle=angle
        )
        inside = cursors.inside(points)[index]
        # Points on the boundary itself may fall either way by rounding.
        assert (inside != expected).sum() <= 2


def test_cursors_classify_and_give_probabilities():
    rng = np.random.default_rng(3)
    features, labels = _two_clusters(rng)
    for shape in ("elliptic", "circular"):
        cursors = fit_cursors(features, labels, ("a", "b"), (1,), shape=shape)
        assert (cursors.classify(features) == labels).mean() > 0.95
        probability = cursors.probability(features, positive=1)
        assert ((probability >= 0.5) == labels).mean() > 0.95
        assert probability.min() >= 0 and probability.max() <= 1
    # Outside every cursor: the fallback class; no phasor: the fallback, probability 0.
    cursors = fit_cursors(features, labels, ("a", "b"), (1,), sigma=2.0, fallback=0)
    far = np.array([[0.9, -0.5], [np.nan, np.nan]])
    assert list(cursors.classify(far)) == [0, 0]
    assert list(cursors.probability(far, 1)) == [pytest.approx(1.0, abs=1e-3), 0.0]


def test_cursors_round_trip_through_json():
    rng = np.random.default_rng(4)
    features, labels = _two_clusters(rng)
    cursors = fit_cursors(features, labels, ("a", "b"), (1,), shape="circular", fallback=1)
    again = PhasorCursors.from_dict(cursors.to_dict())
    np.testing.assert_array_equal(again.classify(features), cursors.classify(features))
    with pytest.raises(ValueError, match="kind"):
        PhasorCursors.from_dict({"kind": "other"})


def test_a_class_without_pixels_cannot_have_a_cursor():
    features = np.array([[0.1, 0.2], [0.1, 0.3], [np.nan, np.nan]])
    with pytest.raises(ValueError, match="'b' has 0 training pixels"):
        fit_cursors(features, np.array([0, 0, 1]), ("a", "b"), (1,))


def test_gmm_finds_the_clusters_and_matching_names_them():
    rng = np.random.default_rng(5)
    features, labels = _two_clusters(rng)
    features[0] = np.nan
    clusters, _ = gmm_segment(features, 2, seed=0)
    assert clusters[0] == -1
    named = match_clusters(clusters, labels, 2)
    assert named[0] == -1
    assert dice_per_class(named[1:], labels[1:], 2).min() > 0.9


def test_dice_per_class():
    dice = dice_per_class(np.array([0, 1, 1, 2]), np.array([0, 1, 0, 2]), 4)
    np.testing.assert_allclose(dice[:3], [2 / 3, 2 / 3, 1.0])
    assert np.isnan(dice[3])
