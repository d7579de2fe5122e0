"""The target pixel of the nnU-Net attributions: deepest false positive, configured, fallback."""

from __future__ import annotations

import numpy as np
import pytest

from ramanseg.interpret.nnunet_target import deepest_pixel, select_target


def test_deepest_pixel_counts_the_image_border_as_outside():
    region = np.zeros((9, 9), bool)
    region[2:7, 2:7] = True  # 5 x 5: the centre (4, 4) is 3 px from the outside
    assert deepest_pixel(region) == (4, 4, 3.0)
    region[2:7, 1:8] = True  # 5 x 7: columns 3, 4, 5 tie at 3 px; the first one wins
    assert deepest_pixel(region) == (4, 3, 3.0)
    edge = np.zeros((5, 5), bool)
    edge[:, :3] = True  # touches three borders, which count as outside: rows 1-3 of
    # column 1 are 2 px from the outside (the first of them wins)
    assert deepest_pixel(edge) == (1, 1, 2.0)
    with pytest.raises(ValueError, match="non-empty"):
        deepest_pixel(np.zeros((3, 3), bool))


def _two_samples():
    truth = {"A": np.zeros((10, 10), bool), "B": np.zeros((10, 10), bool)}
    truth["A"][:2, :2] = True
    predicted = {"A": np.zeros((10, 10), np.uint8), "B": np.zeros((10, 10), np.uint8)}
    predicted["A"][5:8, 5:8] = 1  # a 3 x 3 false positive: 9 px, centre (6, 6)
    predicted["B"][1:6, 2:7] = 1  # a 5 x 5 false positive: 25 px, centre (3, 4)
    predicted["B"][9, 9] = 1  # on glass: outside the tissue, not counted
    tissue = {s: np.ones((10, 10), bool) for s in truth}
    tissue["B"][9, 9] = False
    probability = {s: predicted[s].astype(np.float32) * 0.9 for s in truth}
    return truth, predicted, tissue, probability


def test_auto_target_is_the_deepest_pixel_of_the_largest_false_positive_area():
    truth, predicted, tissue, probability = _two_samples()
    target = select_target(["A", "B"], predicted, probability, truth, tissue)
    assert (target.sample, target.y, target.x) == ("B", 3, 4)
    assert target.rule == "deepest false positive"
    assert target.false_positive_area == 25
    assert target.depth == 3.0
    assert target.probability == pytest.approx(0.9)
    # Only A has the ablation class: A is chosen.
    only_a = select_target(
        ["A", "B"], predicted, probability, truth, tissue, eligible={"A": True, "B": False}
    )
    assert (only_a.sample, only_a.y, only_a.x) == ("A", 6, 6)
    configured = select_target(
        ["A", "B"], predicted, probability, truth, tissue, sample="A", pixel=(1, 8)
    )
    assert (configured.sample, configured.y, configured.x, configured.rule) == (
        "A",
        1,
        8,
        "configured",
    )
    with pytest.raises(ValueError, match="outside the image"):
        select_target(["A"], predicted, probability, truth, tissue, sample="A", pixel=(10, 0))
    with pytest.raises(ValueError, match="not a test sample"):
        select_target(["A"], predicted, probability, truth, tissue, sample="C")


def test_without_false_positives_the_most_probable_negative_is_explained():
    truth, _, tissue, _ = _two_samples()
    predicted = {s: np.zeros((10, 10), np.uint8) for s in truth}
    probability = {s: np.zeros((10, 10), np.float32) for s in truth}
    probability["A"][0, 0] = 0.95  # a true tumour pixel: not a negative
    probability["A"][7, 3] = 0.4
    probability["B"][2, 2] = 0.3
    target = select_target(["A", "B"], predicted, probability, truth, tissue)
    assert (target.sample, target.y, target.x) == ("A", 7, 3)
    assert target.rule == "most probable negative"
