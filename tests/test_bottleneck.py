"""The bottleneck experiment: hand-computed Dice, resampling maps, the table and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage.transform import resize

from ramanseg.bottleneck import (
    area_downsample_matrix,
    bilinear_upsample_matrix,
    bottleneck_mask,
    bottleneck_shape,
    bottleneck_table,
    dice,
)
from ramanseg.cli import main


def corner_square() -> np.ndarray:
    """An 8 x 8 mask with a 3 x 3 foreground square in the top-left corner."""
    mask = np.zeros((8, 8), np.uint8)
    mask[:3, :3] = 1
    return mask


def test_dice_of_a_known_shape_by_hand():
    # Size 4 at reference 8: the 8 x 8 mask goes to 4 x 4. The mask is the outer product
    # of the 1-D indicator [1, 1, 1, 0, 0, 0, 0, 0] with itself, and both resamplings are
    # separable, so work in 1-D:
    #   area average over pairs:            a = [1, 0.5, 0, 0]
    #   bilinear back to 8, u = o / 2 - 0.25 (clamped at 0):
    #     o=0: u=0 -> 1;  o=1: u=.25 -> .75*1 + .25*.5 = .875;  o=2: u=.75 -> .625;
    #     o=3: u=1.25 -> .75*.5 = .375;  o=4: u=1.75 -> .25*.5 = .125;  o>=5: 0
    #   p = [1, .875, .625, .375, .125, 0, 0, 0]; the 2-D map is p[y] p[x] > 0.5:
    #     y=0: x in {0, 1, 2} (3);  y=1: p[x] > .571 -> {0, 1, 2} (3);
    #     y=2: p[x] > .8 -> {0, 1} (2);  y=3: none.
    # 8 pixels, all inside the 3 x 3 square: Dice = 2 * 8 / (9 + 8) = 16 / 17.
    mask = corner_square()
    seen = bottleneck_mask(mask, 4, 8)
    expected = np.zeros((8, 8), bool)
    expected[:2, :3] = True
    expected[2, :2] = True
    np.testing.assert_array_equal(seen, expected)
    assert dice(seen, mask) == 16 / 17


def test_reference_size_is_the_identity():
    mask = np.random.default_rng(0).random((13, 17)) > 0.5
    np.testing.assert_array_equal(bottleneck_mask(mask, 64, 64), mask)


def test_dice_conventions():
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    assert dice(empty, empty) == 1.0  # two empty masks agree
    assert dice(empty, full) == 0.0
    assert dice(full, full) == 1.0


def test_area_downsampling_is_an_exact_average():
    # 10 -> 3: each output covers 10/3 input pixels; weights are overlaps / (10/3).
    matrix = area_downsample_matrix(10, 3).toarray()
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    np.testing.assert_allclose(matrix[0, :4], [0.3, 0.3, 0.3, 0.1])
    np.testing.assert_allclose(matrix[1, 3:7], [0.2, 0.3, 0.3, 0.2])
    values = np.random.default_rng(1).random(10)
    # The mean is preserved: each output pixel stands for 10/3 input pixels.
    assert (matrix @ values).sum() * 10 / 3 == pytest.approx(values.sum())


def test_bilinear_matches_skimage():
    # An independent implementation of half-pixel-centred bilinear resizing.
    low = np.random.default_rng(2).random((5, 7))
    up_y = bilinear_upsample_matrix(5, 13)
    up_x = bilinear_upsample_matrix(7, 11)
    ours = (up_x @ (up_y @ low).T).T
    theirs = resize(low, (13, 11), order=1, mode="edge", anti_aliasing=False)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_bottleneck_shape_rounds_half_up():
    assert bottleneck_shape((2048, 2048), 32, 64) == (1024, 1024)
    assert bottleneck_shape((100, 30), 4, 64) == (6, 2)  # 6.25 -> 6, 1.875 -> 2
    assert bottleneck_shape((10, 10), 1, 64) == (1, 1)  # never below 1
    assert bottleneck_shape((24, 40), 4, 64) == (2, 3)  # 1.5 -> 2, 2.5 -> 3


def test_table_has_the_baseline_and_summarises_masks():
    masks = [corner_square(), np.zeros((8, 8), np.uint8)]  # Dice 16/17 and 1 at size 4
    summary, per_mask = bottleneck_table(masks, [4], reference_size=8)
    assert list(summary.columns) == [
        "feature_map_size",
        "scale",
        "mean_dice",
        "std_dice",
        "n_samples",
    ]
    assert summary["feature_map_size"].tolist() == [8, 4]
    assert summary["scale"].tolist() == [1.0, 0.5]
    assert summary.loc[0, "mean_dice"] == 1.0 and summary.loc[0, "std_dice"] == 0.0
    assert summary.loc[1, "mean_dice"] == pytest.approx((16 / 17 + 1) / 2)
    assert summary.loc[1, "std_dice"] == pytest.approx((1 - 16 / 17) / 2)  # ddof = 0
    assert summary["n_samples"].tolist() == [2, 2]
    assert per_mask[4].tolist() == pytest.approx([16 / 17, 1.0])


def test_table_rejects_bad_settings():
    with pytest.raises(ValueError, match="at least one mask"):
        bottleneck_table([], [4], 8)
    with pytest.raises(ValueError, match=">= 1"):
        bottleneck_table([corner_square()], [0], 8)


def test_cli_writes_table_markdown_and_figures(tmp_path):
    paths = []
    for sample, mask in [("S1", corner_square()), ("S2", np.ones((8, 8), np.uint8))]:
        path = tmp_path / "preprocessed" / sample / "mask.tif"
        path.parent.mkdir(parents=True)
        tifffile.imwrite(path, mask)
        paths.append(str(path))
    prefix = tmp_path / "bottleneck" / "bottleneck"
    settings = json.dumps({"bottleneck": {"reference_size": 8, "sizes": [4, 2]}})
    args = ["bottleneck", "--masks", *paths, "--out-prefix", str(prefix), "--settings", settings]
    assert main(args) == 0
    names = sorted(p.name for p in prefix.parent.iterdir())
    assert names == [f"bottleneck.{ext}" for ext in ("csv", "md", "parquet", "pdf", "png")]
    table = pd.read_parquet(prefix.with_suffix(".parquet"))
    assert table["feature_map_size"].tolist() == [8, 4, 2]
    assert table.loc[1, "mean_dice"] == pytest.approx((16 / 17 + 1) / 2)
    csv = pd.read_csv(prefix.with_suffix(".csv"))
    assert csv["mean_dice"].tolist() == pytest.approx(table["mean_dice"].tolist(), abs=1e-6)
    markdown = prefix.with_suffix(".md").read_text()
    assert "| 8 (baseline) | 1 | 1.0000 | 0.0000 | 2 |" in markdown
    assert f"| 4 | 0.5 | {(16 / 17 + 1) / 2:.4f} |" in markdown
    first = {ext: prefix.with_suffix(ext).read_bytes() for ext in (".png", ".pdf", ".csv")}
    assert main(args) == 0
    for ext, data in first.items():
        assert prefix.with_suffix(ext).read_bytes() == data, ext


def test_cli_missing_mask(tmp_path, capsys):
    settings = json.dumps({"bottleneck": {"reference_size": 8, "sizes": [4]}})
    prefix = tmp_path / "out" / "bottleneck"
    missing = tmp_path / "preprocessed" / "S9" / "mask.tif"
    args = ["bottleneck", "--masks", str(missing), "--out-prefix", str(prefix)]
    assert main([*args, "--settings", settings]) == 2
    error = capsys.readouterr().err
    assert "sample 'S9'" in error and "mask file does not exist" in error
    assert not prefix.parent.exists()
