"""The pixel the nnU-Net attributions explain: :func:`select_target` (paper section 4.1.1).

The paper explains one pixel in a false-positive region of one test image; ``auto`` picks
the false-positive pixel deepest inside the largest false-positive area.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """The pixel explained, and why it was chosen.

    Attributes:
        sample: the test sample.
        y, x: the pixel, image coordinates (row, column).
        rule: ``configured``, ``deepest false positive`` or ``most probable negative``.
        false_positive_area: false-positive pixels of the sample (inside the tissue).
        depth: Euclidean distance (pixels) from the pixel to the nearest pixel outside its
            false-positive region (0 unless the rule is ``deepest false positive``).
        probability: the ensemble prediction's tumour probability at the pixel (from the
            prediction file).
    """

    sample: str
    y: int
    x: int
    rule: str
    false_positive_area: int
    depth: float
    probability: float

    def describe(self) -> str:
        """A short label for figure titles."""
        return f"{self.sample}, pixel (y={self.y}, x={self.x}), {self.rule}"


def deepest_pixel(region: np.ndarray) -> tuple[int, int, float]:
    """The pixel of ``region`` farthest from any pixel outside it (the image border counts as
    outside), by the Euclidean distance transform; ties go to the first in row-major order.

    Args:
        region: 2-D bool mask with at least one pixel.

    Returns:
        ``(y, x, distance)``.

    Raises:
        ValueError: an empty or non-2-D region.
    """
    region = np.asarray(region, dtype=bool)
    if region.ndim != 2 or not region.any():
        raise ValueError("the region must be a non-empty 2-D mask")
    distance = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(y), int(x), float(distance[y, x])


def select_target(
    samples: Sequence[str],
    predicted: Mapping[str, np.ndarray],
    probability: Mapping[str, np.ndarray],
    truth: Mapping[str, np.ndarray],
    tissue: Mapping[str, np.ndarray],
    *,
    sample: str = "auto",
    pixel: tuple[int, int] | None = None,
    eligible: Mapping[str, bool] | None = None,
) -> Target:
    """Choose the pixel to explain, deterministically.

    False positives are pixels predicted tumour whose ground truth is not tumour, inside the
    tissue (``tissue``: the evaluation's ``tissue`` pixels, so that glass is never chosen).

    * ``sample = "auto"``: among the ``eligible`` samples (those with pixels of the ablation
      class; all if ``eligible`` is ``None``) the one with the largest false-positive area,
      the first in ``samples`` order on a tie;
    * ``pixel = None``: the false-positive pixel deepest inside that sample's false-positive
      region (:func:`deepest_pixel`);
    * no false positive in any candidate sample (a perfect or an all-background model): the
      non-tumour tissue pixel with the highest predicted tumour probability (the first sample,
      then row-major order, on ties), rule ``most probable negative``.

    Args:
        samples: the test samples, in order.
        predicted: predicted masks by sample (nonzero = tumour).
        probability: predicted tumour probabilities by sample.
        truth: ground-truth masks by sample.
        tissue: the pixels false positives are counted in, by sample.
        sample: ``auto`` or a sample id from ``samples``.
        pixel: ``(y, x)`` or ``None`` for automatic.
        eligible: which samples ``auto`` may choose.

    Returns:
        The target.

    Raises:
        ValueError: an unknown sample, a pixel outside the image, or no eligible sample.
    """
    if not samples:
        raise ValueError("no test samples to choose a target pixel from")
    if sample != "auto" and sample not in samples:
        raise ValueError(f"interpret.sample {sample!r} is not a test sample; test: {list(samples)}")
    if pixel is not None and sample == "auto":
        raise ValueError("a configured target pixel needs a configured sample")
    false_positive = {
        s: (np.asarray(predicted[s]) != 0) & (np.asarray(truth[s]) == 0) & (tissue[s] != 0)
        for s in samples
    }
    areas = {s: int(false_positive[s].sum()) for s in samples}
    if sample == "auto":
        candidates = [s for s in samples if eligible is None or eligible.get(s, False)]
        if not candidates:
            raise ValueError(f"no test sample is eligible (samples: {list(samples)})")
        chosen = max(candidates, key=lambda s: (areas[s], -candidates.index(s)))
        if areas[chosen] == 0:
            return _most_probable_negative(candidates, probability, truth, tissue, areas)
    else:
        chosen = sample
    shape = np.asarray(truth[chosen]).shape
    if pixel is not None:
        y, x = pixel
        if not (0 <= y < shape[0] and 0 <= x < shape[1]):
            raise ValueError(f"interpret.target_pixel {list(pixel)} is outside the image {shape}")
        return Target(
            chosen, y, x, "configured", areas[chosen], 0.0, float(probability[chosen][y, x])
        )
    if areas[chosen] == 0:
        return _most_probable_negative([chosen], probability, truth, tissue, areas)
    y, x, depth = deepest_pixel(false_positive[chosen])
    return Target(
        chosen,
        y,
        x,
        "deepest false positive",
        areas[chosen],
        depth,
        float(probability[chosen][y, x]),
    )


def _most_probable_negative(
    samples: Sequence[str],
    probability: Mapping[str, np.ndarray],
    truth: Mapping[str, np.ndarray],
    tissue: Mapping[str, np.ndarray],
    areas: Mapping[str, int],
) -> Target:
    best: tuple[float, str, int, int] | None = None
    for s in samples:
        negative = (np.asarray(truth[s]) == 0) & (tissue[s] != 0)
        if not negative.any():
            continue
        values = np.where(negative, np.asarray(probability[s], dtype=np.float64), -np.inf)
        y, x = np.unravel_index(int(np.argmax(values)), values.shape)
        if best is None or values[y, x] > best[0]:
            best = (float(values[y, x]), s, int(y), int(x))
    if best is None:
        raise ValueError(f"no non-tumour tissue pixel in samples {list(samples)}")
    value, s, y, x = best
    log.warning("no false positive in %s; explaining the most probable negative pixel", samples)
    return Target(s, y, x, "most probable negative", areas[s], 0.0, value)
