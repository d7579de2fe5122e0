"""One sample's preprocessing: the outputs, the QC report, and every kind of bad input."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tifffile

from ramanseg import phantom
from ramanseg.cli import main
from ramanseg.errors import InputError
from ramanseg.preprocess import OUTPUT_FILES, preprocess_sample
from tests.preprocess import (
    CHANNELS,
    SHAPE,
    TISSUE,
    assert_no_outputs,
    feature,
    make_sample,
    settings_json,
    square,
    typed_settings,
)


def test_preprocess_sample_writes_every_output(tmp_path, small_config):
    srs, he, annotations = make_sample(tmp_path)
    outdir = tmp_path / "out" / "S1"
    qc = preprocess_sample("S1", srs, he, annotations, outdir, **typed_settings(small_config))
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
    preprocess_sample(
        "S1", srs, he, annotations, tmp_path / "a" / "S1", **typed_settings(small_config)
    )
    preprocess_sample(
        "S1", srs, he, annotations, tmp_path / "b" / "S1", **typed_settings(small_config)
    )
    for name in OUTPUT_FILES:
        first = (tmp_path / "a" / "S1" / name).read_bytes()
        assert first == (tmp_path / "b" / "S1" / name).read_bytes(), name


def test_sample_without_he_uses_the_srs_foreground(tmp_path, small_config):
    srs, _, annotations = make_sample(tmp_path)
    qc = preprocess_sample(
        "S1", srs, None, annotations, tmp_path / "out", **typed_settings(small_config)
    )
    assert qc["foreground_source"] == "srs"
    assert qc["foreground_fraction"] == pytest.approx(24 * 28 / (32 * 40))


def test_a_slide_without_annotations_is_preprocessed_for_prediction(tmp_path, small_config):
    # `snakemake predict`: new slides come without annotations; nothing is rasterised and
    # the empty mask is no warning, while the stack and tissue are as with annotations.
    srs, he, annotations = make_sample(tmp_path)
    with_annotations = preprocess_sample(
        "S1", srs, he, annotations, tmp_path / "a", **typed_settings(small_config)
    )
    qc = preprocess_sample("S1", srs, he, None, tmp_path / "b", **typed_settings(small_config))
    assert qc["inputs"]["annotations"] is None and qc["mask_fraction"] == 0.0
    assert not any("mask is empty" in w for w in qc["warnings"])
    assert qc["foreground_fraction"] == with_annotations["foreground_fraction"]
    for name in ("stack.ome.tif", "foreground.tif"):
        np.testing.assert_array_equal(
            tifffile.imread(tmp_path / "a" / name), tifffile.imread(tmp_path / "b" / name)
        )
    assert not tifffile.imread(tmp_path / "b" / "classes.tif").any()


def test_empty_mask_is_allowed_but_reported(tmp_path, small_config, caplog):
    srs, he, annotations = make_sample(
        tmp_path, features=[feature(square(10, 8, 20, 16), "Stroma")]
    )
    outdir = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="ramanseg.preprocess"):
        qc = preprocess_sample("S8", srs, he, annotations, outdir, **typed_settings(small_config))
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
    qc = preprocess_sample(
        "S1", srs, he, annotations, tmp_path / "out", **typed_settings(small_config)
    )
    assert qc["nonfinite_repaired"] == 2
    assert any("2 NaN or infinite values replaced" in w for w in qc["warnings"])


def test_clipped_and_skipped_features_are_counted(tmp_path, small_config):
    features = [
        feature(square(36, 28, 44, 36)),  # partly outside the 40 x 32 image
        {**feature(square(0, 0, 2, 2)), "properties": {"objectType": "annotation"}},
    ]
    srs, he, annotations = make_sample(tmp_path, features=features)
    small_config["annotations"]["unclassified"] = "ignore"  # the default stops (an error)
    qc = preprocess_sample(
        "S1", srs, he, annotations, tmp_path / "out", **typed_settings(small_config)
    )
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
        srs, he, annotations = make_sample(tmp_path, features=[feature(square(50, 0, 60, 9))])
        bad_file = annotations
    elif case == "unknown_class":
        srs, he, annotations = make_sample(
            tmp_path, features=[feature(square(1, 1, 5, 5), "Lymphocyte")]
        )
        bad_file = annotations
    else:
        srs, he, annotations = make_sample(tmp_path)
        bad_file = {"missing_srs": srs, "missing_he": he, "missing_annotations": annotations}[case]
        bad_file.unlink()
    outdir = tmp_path / "out" / "S3"
    with pytest.raises(InputError, match=match) as caught:
        preprocess_sample("S3", srs, he, annotations, outdir, **typed_settings(small_config))
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
        preprocess_sample("S1", srs, he, annotations, outdir, **typed_settings(small_config))
    assert_no_outputs(outdir)


# ------------------------------------------------------------------------------------ CLI


def test_cli_preprocess(tmp_path, small_config, capsys):
    srs, _, annotations = make_sample(tmp_path)
    outdir = tmp_path / "out" / "S1"
    args = ["preprocess", "--sample", "S1", "--srs", str(srs), "--he", ""]
    args += ["--annotations", str(annotations), "--outdir", str(outdir)]
    assert main([*args, "--settings", settings_json(small_config)]) == 0
    assert json.loads((outdir / "qc.json").read_text())["foreground_source"] == "srs"
    small_config["channels"] = small_config["channels"][:3]
    bad = ["--outdir", str(tmp_path / "bad"), "--settings", settings_json(small_config)]
    assert main([*args, *bad]) == 2
    error = capsys.readouterr().err
    assert "ramanseg preprocess: error: sample 'S1'" in error and "4 channels" in error
    assert_no_outputs(tmp_path / "bad")


def test_outdir_naming_an_existing_file_fails_before_any_work(tmp_path, small_config):
    srs, he, annotations = make_sample(tmp_path)
    taken = tmp_path / "out"
    taken.write_text("not a folder")
    for outdir in (taken, taken / "S1"):
        with pytest.raises(InputError, match="existing file") as caught:
            preprocess_sample("S1", srs, he, annotations, outdir, **typed_settings(small_config))
        assert caught.value.sample == "S1" and caught.value.path == taken
        assert "--outdir" in caught.value.fix
    assert taken.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_cli_outdir_naming_an_existing_file_exits_2(tmp_path, small_config, capsys):
    srs, he, annotations = make_sample(tmp_path)
    taken = tmp_path / "out.txt"
    taken.write_text("")
    args = ["preprocess", "--sample", "S1", "--srs", str(srs), "--he", str(he)]
    args += ["--annotations", str(annotations), "--outdir", str(taken)]
    assert main([*args, "--settings", settings_json(small_config)]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert f"ramanseg preprocess: error: sample 'S1', file '{taken}'" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out.txt"]


def test_cli_percentiles_low_above_high_exit_2(tmp_path, small_config, capsys):
    srs, he, annotations = make_sample(tmp_path)
    small_config["preprocess"]["percentiles"]["raman"] = [95, 5]
    outdir = tmp_path / "out"
    args = ["preprocess", "--sample", "S1", "--srs", str(srs), "--he", str(he)]
    args += ["--annotations", str(annotations), "--outdir", str(outdir)]
    assert main([*args, "--settings", settings_json(small_config)]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert "preprocess.percentiles.raman: low 95 must be below high 5" in error
    assert_no_outputs(outdir)


# ---------------------------------------------------------------- tissue without an H&E


def test_implausible_foreground_is_logged_and_flagged(tmp_path, small_config, caplog):
    # The tissue is 52.5 % of the image; a plausible range above it flags the sample.
    srs, he, annotations = make_sample(tmp_path)
    small_config["preprocess"]["foreground_fraction"] = [0.6, 0.98]
    outdir = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="ramanseg.preprocess"):
        qc = preprocess_sample("S5", srs, he, annotations, outdir, **typed_settings(small_config))
    assert qc["implausible_foreground"] is True
    assert json.loads((outdir / "qc.json").read_text())["implausible_foreground"] is True
    assert any("IMPLAUSIBLE TISSUE DETECTION: 52.5 %" in w for w in qc["warnings"])
    assert any(
        r.levelno == logging.WARNING and "S5" in r.getMessage() and "IMPLAUSIBLE" in r.getMessage()
        for r in caplog.records
    )


def _phantom_sample_without_he(tmp_path, config, index, n_saturated):
    """A phantom sample's stack (with ``n_saturated`` saturated pixels planted in every
    Raman band) and annotations; no H&E. Returns the paths and the true tissue."""
    settings = phantom.PhantomSettings.from_config(config)
    sample = phantom.generate_sample(settings, index)
    rng = np.random.default_rng(index)
    raman = settings.channels.raman_indices
    hot = rng.choice(sample.tissue.size, n_saturated, replace=False)
    stack = sample.srs.reshape(len(sample.srs), -1)
    stack[np.ix_(raman, hot)] = np.iinfo(np.uint16).max
    folder = tmp_path / sample.sample_id
    folder.mkdir()
    srs, annotations = folder / "srs.tif", folder / "annotations.geojson"
    tifffile.imwrite(srs, sample.srs, photometric="minisblack", metadata={"axes": "CYX"})
    annotations.write_text(json.dumps(sample.annotations))
    return sample.sample_id, srs, annotations, sample.tissue > 0


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_tissue_without_he_agrees_with_the_phantoms_truth(tmp_path, config, index):
    # 80 saturated pixels in a 128 x 128 stack once gave 0.5 % tissue instead of 77 %,
    # and the drift correction was skipped on every channel.
    sample_id, srs, annotations, truth = _phantom_sample_without_he(tmp_path, config, index, 80)
    outdir = tmp_path / "out"
    qc = preprocess_sample(sample_id, srs, None, annotations, outdir, **typed_settings(config))
    found = tifffile.imread(outdir / "foreground.tif").astype(bool)
    dice = 2 * np.count_nonzero(found & truth) / (found.sum() + truth.sum())
    assert dice >= 0.9
    assert qc["foreground_source"] == "srs" and qc["implausible_foreground"] is False
    assert qc["drift_correction"]["measured_column_fraction"] > 0.9
    assert not [w for w in qc["warnings"] if "drift correction" in w]
