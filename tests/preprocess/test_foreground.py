"""Tissue detection: k-means on the H&E image, or on the SRS stack without one."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ramanseg.preprocess import PreprocessWarning, foreground
from ramanseg.preprocess.foreground import foreground_from_he, foreground_from_srs


def _he_with_tissue(seed=0):
    rng = np.random.default_rng(seed)
    he = np.full((60, 80, 3), 240.0)
    tissue = np.zeros((60, 80), bool)
    tissue[10:50, 20:70] = True
    he[tissue] = [170, 80, 160]
    he[15:25, 30:40] = [90, 50, 140]  # nuclei-rich: darker, still tissue
    return np.clip(he + rng.normal(0, 6, he.shape), 0, 255).astype(np.uint8), tissue


@pytest.mark.parametrize("n_clusters", [2, 3])
def test_foreground_from_he_finds_the_tissue(n_clusters):
    he, tissue = _he_with_tissue()
    found = foreground_from_he(he, n_clusters, seed=0, sample_size=1000)
    assert (found == tissue).mean() > 0.99
    np.testing.assert_array_equal(found, foreground_from_he(he, n_clusters, 0, sample_size=1000))


@pytest.mark.parametrize("n_centres", [2, 3, 4])
def test_nearest_centre_tables_agree_with_distances_on_the_features(n_centres):
    # The table lookups (and, for two centres, the difference of two distances) must give
    # the nearest centre of a direct float64 computation, except where two distances tie
    # to rounding. 200 rows of 300 pixels do not fill whole blocks.
    rng = np.random.default_rng(n_centres)
    he = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    centres = foreground._LOG_OD_LUT[rng.integers(0, 256, (n_centres, 3))].astype(np.float64)
    features = foreground._LOG_OD_LUT[he].astype(np.float64)  # (Y, X, 3)
    distances = ((features[np.newaxis] - centres[:, None, None, :]) ** 2).sum(axis=-1)
    background = int(np.argmin(centres.sum(axis=1)))
    expected = np.argmin(distances, axis=0) != background
    ordered = np.sort(distances, axis=0)
    clear = ordered[1] - ordered[0] > 1e-5
    found = foreground._tissue_by_nearest_centre(he, centres)
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(found[clear], expected[clear])


def test_nuclei_rich_tissue_is_not_split_from_its_stroma():
    # 45 % glass, 25 % eosin stroma, 30 % dense nuclei. In linear optical density two
    # clusters separate the nuclei from glass + stroma (75 % agreement); on the log scale
    # glass is the odd one out.
    rng = np.random.default_rng(0)
    he = np.full((60, 100, 3), 240.0)
    he[:, 45:70] = [200, 120, 180]
    he[:, 70:] = [70, 40, 120]
    he = np.clip(he + rng.normal(0, 6, he.shape), 0, 255).astype(np.uint8)
    tissue = np.zeros((60, 100), bool)
    tissue[:, 45:] = True
    np.testing.assert_array_equal(foreground_from_he(he, 2, seed=0), tissue)


def test_foreground_from_uniform_he_is_everything_with_a_warning():
    with pytest.warns(PreprocessWarning, match="fewer than 2 distinct colours"):
        found = foreground_from_he(np.full((5, 5, 3), 200, np.uint8))
    assert found.all()


def test_foreground_from_srs_finds_the_tissue():
    rng = np.random.default_rng(0)
    tissue = np.zeros((40, 50), bool)
    tissue[5:30, 10:45] = True
    stack = np.stack([np.where(tissue, 900.0, 60.0) + rng.normal(0, 30, tissue.shape)] * 3)
    found = foreground_from_srs(stack, ["raman", "raman", "shg"], 2, seed=0)
    assert (found == tissue).mean() > 0.99


def _stack_with_saturated_pixels(n_saturated, seed=0):
    """Two Raman bands and SHG over a rectangle of tissue, with saturated pixels planted."""
    rng = np.random.default_rng(seed)
    tissue = np.zeros((64, 64), bool)
    tissue[8:56, 4:44] = True
    stack = np.stack([np.where(tissue, 900.0, 60.0) + rng.normal(0, 30, tissue.shape)] * 3)
    hot = rng.choice(tissue.size, n_saturated, replace=False)
    stack[:2].reshape(2, -1)[:, hot] = 65535.0
    return stack, tissue


@pytest.mark.parametrize("n_saturated", [20, 120])
def test_saturated_pixels_do_not_become_the_tissue(n_saturated):
    # 0.5 % and 3 % of the pixels. On the linear total two clusters split the saturated
    # pixels from everything else; a floor that follows the clip lifted the glass to the
    # tissue's level once the clip was saturated too.
    stack, tissue = _stack_with_saturated_pixels(n_saturated)
    found = foreground_from_srs(stack, ["raman", "raman", "shg"], 2, seed=0)
    assert (found == tissue).mean() > 0.98


def test_srs_feature_is_the_clipped_log_total():
    stack, _ = _stack_with_saturated_pixels(80)
    total = stack[:2].sum(axis=0)
    median, high = np.percentile(total, [50, foreground.SRS_CLIP_PERCENTILE])
    floor = max(foreground.SRS_FLOOR_OF_MEDIAN * median, foreground.SRS_FLOOR_OF_CLIP * high)
    expected = np.log(np.clip(total, floor, high))
    feature = foreground.srs_tissue_feature(stack, ["raman", "raman", "shg"])
    np.testing.assert_allclose(feature, expected, rtol=1e-12)


def test_srs_without_positive_signal_is_everything_with_a_warning():
    with pytest.warns(PreprocessWarning, match="fewer than 2 distinct positive levels"):
        found = foreground_from_srs(-np.ones((2, 6, 6)), ["raman", "raman"])
    assert found.all()


@pytest.mark.parametrize(
    ("tissue_pixels", "implausible"), [(4, True), (5, False), (98, False), (99, True)]
)
def test_implausible_foreground_fraction_is_a_warning(tissue_pixels, implausible):
    mask = np.zeros((10, 10), bool)
    mask.flat[:tissue_pixels] = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = foreground.check_foreground_fraction(mask, [0.05, 0.98], "srs")
    assert result is implausible
    messages = [str(w.message) for w in caught if w.category is PreprocessWarning]
    if implausible:
        assert len(messages) == 1
        assert f"{tissue_pixels:.1f} % of the image is tissue" in messages[0]
        assert "outside the plausible 5-98 %" in messages[0] and "H&E" in messages[0]
    else:
        assert messages == []
