"""Per-sample preprocessing: the formulas, the outputs, and every kind of bad input."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ramanseg import preprocess
from ramanseg.cli import main
from ramanseg.errors import InputError
from ramanseg.preprocess import (
    OUTPUT_FILES,
    PreprocessWarning,
    correct_column_drift,
    exact_percentiles,
    foreground_from_he,
    foreground_from_srs,
    normalize_percentiles,
    preprocess_sample,
)

CHANNELS = [
    {"name": "Raman 2850", "role": "raman", "wavenumber": 2850.0},
    {"name": "Raman 2930", "role": "raman", "wavenumber": 2930.0},
    {"name": "TPEF", "role": "tpef"},
    {"name": "SHG", "role": "shg"},
]
SHAPE = (32, 40)
#: The tissue of the synthetic sample: rows 4..27, columns 6..33.
TISSUE = (slice(4, 28), slice(6, 34))


@pytest.fixture()
def small_config(config) -> dict:
    config["channels"] = [dict(channel) for channel in CHANNELS]
    return config


def _feature(coordinates, name="Tumor") -> dict:
    return {
        "type": "Feature",
        "id": "a4c1e2f0-0000-4000-8000-000000000001",
        "geometry": {"type": "Polygon", "coordinates": [coordinates]},
        "properties": {
            "objectType": "annotation",
            "classification": {"name": name, "color": [200, 0, 0]},
        },
    }


def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def make_sample(tmp_path, *, n_channels=4, he_shape=SHAPE, features=None, stack=None):
    """Write a small sample: uint16 stack with tissue and drift, H&E, one Tumor square."""
    rng = np.random.default_rng(0)
    if stack is None:
        tissue = np.zeros(SHAPE, bool)
        tissue[TISSUE] = True
        drift = np.linspace(0.8, 1.2, SHAPE[1])
        stack = np.empty((n_channels, *SHAPE), np.uint16)
        for c in range(n_channels):
            level = np.where(tissue, 1000 + 100 * c, 100) * drift
            stack[c] = np.rint(level + rng.normal(0, 20, SHAPE)).astype(np.uint16)
    srs = tmp_path / "in" / "srs.tif"
    srs.parent.mkdir(exist_ok=True)
    tifffile.imwrite(srs, stack, photometric="minisblack", metadata={"axes": "CYX"})
    he = tmp_path / "in" / "he.tif"
    rgb = np.full((*he_shape, 3), 238, np.uint8)
    rgb[TISSUE] = [180, 80, 150]
    rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
    tifffile.imwrite(he, rgb, photometric="rgb")
    annotations = tmp_path / "in" / "annotations.geojson"
    if features is None:
        features = [_feature(_square(10, 8, 20, 16))]  # 10 x 8 = 80 pixels
    annotations.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return srs, he, annotations


def assert_no_outputs(outdir):
    assert not outdir.exists() or not any(outdir.iterdir()), list(outdir.iterdir())


# ------------------------------------------------------------------------- normalisation


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
    monkeypatch.setattr(preprocess, "_SELECT_SIGMAS", sigmas)
    monkeypatch.setattr(preprocess, "_CACHE_BLOCK", 7_777)
    rng = np.random.default_rng(5)
    for values in (rng.normal(size=150_001), rng.exponential(size=200_000)):
        values = values.astype(np.float32)
        q = [0.5, 5, 50, 95, 99.5]
        np.testing.assert_array_equal(exact_percentiles(values, q), np.percentile(values, q))


def test_brackets_that_chain_over_all_values_still_give_numpy_percentiles(monkeypatch):
    # With many percentiles and wide brackets, neighbouring brackets merge into one open on
    # both sides: that one is everything.
    monkeypatch.setattr(preprocess, "_SELECT_SIGMAS", 200.0)
    values = np.random.default_rng(6).normal(size=120_000).astype(np.float32)
    q = np.linspace(0, 100, 41)
    np.testing.assert_array_equal(exact_percentiles(values, q), np.percentile(values, q))


# --------------------------------------------------------------------------------- drift


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


# ---------------------------------------------------------------------------- foreground


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
    centres = preprocess._LOG_OD_LUT[rng.integers(0, 256, (n_centres, 3))].astype(np.float64)
    features = preprocess._LOG_OD_LUT[he].astype(np.float64)  # (Y, X, 3)
    distances = ((features[np.newaxis] - centres[:, None, None, :]) ** 2).sum(axis=-1)
    background = int(np.argmin(centres.sum(axis=1)))
    expected = np.argmin(distances, axis=0) != background
    ordered = np.sort(distances, axis=0)
    clear = ordered[1] - ordered[0] > 1e-5
    found = preprocess._tissue_by_nearest_centre(he, centres)
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


# ---------------------------------------------------------------------------- per sample


def test_preprocess_sample_writes_every_output(tmp_path, small_config):
    srs, he, annotations = make_sample(tmp_path)
    outdir = tmp_path / "out" / "S1"
    qc = preprocess_sample("S1", srs, he, annotations, small_config, outdir)
    assert sorted(p.name for p in outdir.iterdir()) == sorted(OUTPUT_FILES)

    with tifffile.TiffFile(outdir / "stack.ome.tif") as tif:
        stack = tif.series[0].asarray()
        channels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]["Channel"]
    assert [c["Name"] for c in channels] == [c["name"] for c in CHANNELS]
    assert stack.dtype == np.float32 and stack.shape == (4, *SHAPE)
    assert stack.min() == 0.0 and stack.max() == 1.0

    classes = tifffile.imread(outdir / "classes.tif")
    mask = tifffile.imread(outdir / "mask.tif")
    foreground = tifffile.imread(outdir / "foreground.tif")
    assert classes.dtype == mask.dtype == foreground.dtype == np.uint8
    assert (classes == 1).sum() == 80 and mask.sum() == 80
    expected_tissue = np.zeros(SHAPE, bool)
    expected_tissue[TISSUE] = True
    np.testing.assert_array_equal(foreground.astype(bool), expected_tissue)

    saved = json.loads((outdir / "qc.json").read_text())
    assert saved == qc
    assert qc["sample_id"] == "S1"
    assert qc["mask_fraction"] == pytest.approx(80 / (32 * 40))
    assert qc["unannotated_fraction"] == pytest.approx(1 - 80 / (32 * 40))
    assert qc["foreground_fraction"] == pytest.approx(24 * 28 / (32 * 40))
    assert qc["empty_mask"] is False and qc["nonfinite_repaired"] == 0
    assert qc["foreground_source"] == "he" and qc["qc_channel"] == "Raman 2930"
    assert qc["features"]["rasterised"] == 1 and qc["features"]["skipped_total"] == 0
    assert qc["warnings"] == []

    # The drift (0.8 .. 1.2 across x) is gone from the tissue of the normalised stack.
    tissue_columns = stack[0][TISSUE].mean(axis=0)
    assert np.ptp(tissue_columns) < 0.02


def test_preprocess_outputs_are_byte_identical_on_rerun(tmp_path, small_config):
    srs, he, annotations = make_sample(tmp_path)
    preprocess_sample("S1", srs, he, annotations, small_config, tmp_path / "a" / "S1")
    preprocess_sample("S1", srs, he, annotations, small_config, tmp_path / "b" / "S1")
    for name in OUTPUT_FILES:
        first = (tmp_path / "a" / "S1" / name).read_bytes()
        assert first == (tmp_path / "b" / "S1" / name).read_bytes(), name


def test_sample_without_he_uses_the_srs_foreground(tmp_path, small_config):
    srs, _, annotations = make_sample(tmp_path)
    qc = preprocess_sample("S1", srs, None, annotations, small_config, tmp_path / "out")
    assert qc["foreground_source"] == "srs"
    assert qc["foreground_fraction"] == pytest.approx(24 * 28 / (32 * 40))


def test_empty_mask_is_allowed_but_reported(tmp_path, small_config, caplog):
    srs, he, annotations = make_sample(
        tmp_path, features=[_feature(_square(10, 8, 20, 16), "Stroma")]
    )
    outdir = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="ramanseg.preprocess"):
        qc = preprocess_sample("S8", srs, he, annotations, small_config, outdir)
    assert qc["empty_mask"] is True and qc["mask_fraction"] == 0.0
    assert json.loads((outdir / "qc.json").read_text())["empty_mask"] is True
    assert any("mask is empty" in w for w in qc["warnings"])
    assert any("S8" in r.getMessage() and "mask is empty" in r.getMessage() for r in caplog.records)
    assert not tifffile.imread(outdir / "mask.tif").any()


def test_nonfinite_repair_is_reported(tmp_path, small_config):
    stack = np.full((4, *SHAPE), 500.0, np.float32)
    stack[:, TISSUE[0], TISSUE[1]] = 1500.0
    stack[1, 0, 0] = np.nan
    stack[2, 5, 5] = np.inf
    srs, he, annotations = make_sample(tmp_path, stack=stack)
    small_config["preprocess"]["nonfinite"] = "repair"
    qc = preprocess_sample("S1", srs, he, annotations, small_config, tmp_path / "out")
    assert qc["nonfinite_repaired"] == 2
    assert any("2 NaN or infinite values replaced" in w for w in qc["warnings"])


def test_clipped_and_skipped_features_are_counted(tmp_path, small_config):
    features = [
        _feature(_square(36, 28, 44, 36)),  # partly outside the 40 x 32 image
        {**_feature(_square(0, 0, 2, 2)), "properties": {"objectType": "annotation"}},
    ]
    srs, he, annotations = make_sample(tmp_path, features=features)
    small_config["annotations"]["unclassified"] = "ignore"  # the default stops (an error)
    qc = preprocess_sample("S1", srs, he, annotations, small_config, tmp_path / "out")
    assert qc["features"]["clipped_to_image"] == 1
    assert qc["features"]["skipped_unclassified"] == 1
    assert qc["mask_fraction"] == pytest.approx(4 * 4 / (32 * 40))
    assert any("clipped" in w for w in qc["warnings"])


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("wrong_channel_count", "5 channels .* lists 4 channels"),
        ("nan_reject", "2 NaN or infinite values"),
        ("he_size", "H&E image is 30 x 40 pixels .* SRS stack is 32 x 40"),
        ("bad_json", "not valid JSON: .* line 1, column"),
        ("outside", "entirely outside the image"),
        ("unknown_class", "unknown class 'Lymphocyte'"),
        ("missing_srs", "SRS file does not exist"),
        ("missing_he", "H&E file does not exist"),
        ("missing_annotations", "annotation file does not exist"),
    ],
)
def test_bad_input_fails_naming_sample_and_file_and_writes_nothing(
    tmp_path, small_config, case, match
):
    if case == "wrong_channel_count":
        srs, he, annotations = make_sample(tmp_path, n_channels=5)
        bad_file = srs
    elif case == "nan_reject":
        stack = np.full((4, *SHAPE), 100.0, np.float32)
        stack[0, 1, 1] = stack[3, 2, 2] = np.nan
        srs, he, annotations = make_sample(tmp_path, stack=stack)
        bad_file = srs
    elif case == "he_size":
        srs, he, annotations = make_sample(tmp_path, he_shape=(30, 40))
        bad_file = he
    elif case == "bad_json":
        srs, he, annotations = make_sample(tmp_path)
        annotations.write_text('{"type": "FeatureCollection", "features": [}')
        bad_file = annotations
    elif case == "outside":
        srs, he, annotations = make_sample(tmp_path, features=[_feature(_square(50, 0, 60, 9))])
        bad_file = annotations
    elif case == "unknown_class":
        srs, he, annotations = make_sample(
            tmp_path, features=[_feature(_square(1, 1, 5, 5), "Lymphocyte")]
        )
        bad_file = annotations
    else:
        srs, he, annotations = make_sample(tmp_path)
        bad_file = {"missing_srs": srs, "missing_he": he, "missing_annotations": annotations}[case]
        bad_file.unlink()
    outdir = tmp_path / "out" / "S3"
    with pytest.raises(InputError, match=match) as caught:
        preprocess_sample("S3", srs, he, annotations, small_config, outdir)
    assert caught.value.sample == "S3"
    assert caught.value.path == bad_file
    assert "'S3'" in str(caught.value) and str(bad_file) in str(caught.value)
    assert caught.value.fix
    assert_no_outputs(outdir)


def test_a_failure_while_writing_removes_what_was_written(tmp_path, small_config, monkeypatch):
    import ramanseg.fileio

    srs, he, annotations = make_sample(tmp_path)

    def failing_write(path):
        raise OSError("disk full")

    # The byte output (qc.json) fails, after the TIFFs have been written.
    monkeypatch.setattr(ramanseg.fileio, "atomic_path", failing_write)
    outdir = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        preprocess_sample("S1", srs, he, annotations, small_config, outdir)
    assert_no_outputs(outdir)


# ------------------------------------------------------------------------------------ CLI


def _settings(config) -> str:
    keys = ("channels", "annotations", "preprocess", "seed")
    return json.dumps({key: config[key] for key in keys})


def test_cli_preprocess(tmp_path, small_config, capsys):
    srs, _, annotations = make_sample(tmp_path)
    outdir = tmp_path / "out" / "S1"
    args = ["preprocess", "--sample", "S1", "--srs", str(srs), "--he", ""]
    args += ["--annotations", str(annotations), "--outdir", str(outdir)]
    assert main([*args, "--settings", _settings(small_config)]) == 0
    assert json.loads((outdir / "qc.json").read_text())["foreground_source"] == "srs"
    small_config["channels"] = small_config["channels"][:3]
    assert (
        main([*args, "--outdir", str(tmp_path / "bad"), "--settings", _settings(small_config)]) == 2
    )
    error = capsys.readouterr().err
    assert "ramanseg preprocess: error: sample 'S1'" in error and "4 channels" in error
    assert_no_outputs(tmp_path / "bad")


def test_cli_bench_preprocess(tmp_path, small_config):
    out = tmp_path / "bench" / "preprocess.json"
    # Two repeats: both orders (baseline first, then preprocessing first).
    args = ["bench-preprocess", "--size", "48", "--channels", "5", "--repeats", "2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreprocessWarning)
        assert main([*args, "--out", str(out), "--settings", _settings(small_config)]) == 0
    report = json.loads(out.read_text())
    assert report["size"] == 48 and report["channels"] == 5 and report["repeats"] == 2
    assert len(report["baseline_runs"]) == len(report["preprocess_runs"]) == 2
    assert len(report["qc_figure_runs"]) == 2 and report["qc_figure_seconds"] > 0
    assert report["ratio"] == pytest.approx(
        report["preprocess_seconds"] / report["baseline_seconds"]
    )
    assert report["ratio_of_minima"] == pytest.approx(
        min(report["preprocess_runs"]) / min(report["baseline_runs"])
    )
    assert report["ratio_with_qc_figure"] == pytest.approx(
        (report["preprocess_seconds"] + report["qc_figure_seconds"]) / report["baseline_seconds"]
    )
    assert sorted(p.name for p in out.parent.iterdir()) == ["preprocess.json"]
