"""Tissue detection: k-means on the H&E image, or on the SRS stack without one."""

from __future__ import annotations

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
