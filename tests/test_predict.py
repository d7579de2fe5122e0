"""Segmenting new slides (ramanseg.predict): the slide sheet, the OME-TIFF predictions with
their pixel size, and the summary's numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile

from ramanseg.errors import InputError
from ramanseg.io import srs_pixel_size_um
from ramanseg.predict import read_slide_sheet, tumour_summary
from ramanseg.predictions import read_slide_mask, write_slide_prediction
from ramanseg.samplesheet import read_samplesheet


def test_a_slide_sheet_may_leave_annotations_empty_but_a_training_sheet_may_not(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"")
    sheet = tmp_path / "slides.tsv"
    sheet.write_text("sample_id\tpatient_id\tsrs\the\tannotations\ns1\tp1\ta.tif\t\t\n")
    assert read_slide_sheet(sheet).loc["s1", "annotations"] == ""
    with pytest.raises(InputError, match="annotations"):
        read_samplesheet(sheet)
    sheet.write_text("sample_id\tpatient_id\tsrs\the\tannotations\npackage\tp1\ta.tif\t\t\n")
    with pytest.raises(InputError, match="name folders of results/predict"):
        read_slide_sheet(sheet)


def test_predictions_are_ome_tiff_with_the_pixel_size(tmp_path):
    probability = np.zeros((8, 10), dtype=np.float32)
    probability[2:5, 3:7] = 0.9
    mask_path, probability_path = write_slide_prediction(
        tmp_path, "unet", probability, pixel_size_um=0.5
    )
    assert mask_path.name == "unet.mask.ome.tif"
    np.testing.assert_array_equal(read_slide_mask(tmp_path, "unet", "s1"), probability > 0.5)
    np.testing.assert_array_equal(tifffile.imread(probability_path), probability)
    # The predictions carry the slide's pixel size, read back by the SRS reader's helper.
    assert srs_pixel_size_um(mask_path, "s1") == pytest.approx(0.5)


def test_the_pixel_size_of_a_plain_tiff_is_unknown(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((3, 4, 4), dtype=np.uint16))
    assert srs_pixel_size_um(path, "s1") is None


def test_the_summary_counts_tumour_in_pixels_area_and_tissue():
    mask = np.zeros((10, 10), dtype=bool)
    mask[0:4, 0:5] = True  # 20 px, 10 of them on tissue
    tissue = np.zeros((10, 10), dtype=bool)
    tissue[2:10, :] = True  # 80 px
    row = tumour_summary("s1", "unet", mask, tissue, pixel_size_um=0.5, reference=mask)
    assert (row["tumour_px"], row["tissue_px"]) == (20, 80)
    assert row["tumour_fraction_of_tissue"] == pytest.approx(10 / 80)
    assert row["tumour_area_um2"] == pytest.approx(20 * 0.25)
    assert row["dice"] == 1.0 and row["label"] == "U-Net"
    unknown = tumour_summary("s1", "unet", mask, tissue)
    assert math.isnan(unknown["tumour_area_um2"]) and math.isnan(unknown["dice"])
