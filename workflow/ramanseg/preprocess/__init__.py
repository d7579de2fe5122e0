"""Per-sample preprocessing (paper section 3.1).

For one sample: read the SRS stack, the H&E image and the QuPath annotations; rasterise
the annotations into a class map and the binary tumour mask; find the tissue
(foreground) by k-means on the H&E image (without one, on the clipped log of the total
Raman intensity), and flag a tissue fraction outside ``preprocess.foreground_fraction``;
correct the column-wise intensity drift with the mean spectral profile of the foreground;
normalise each channel between its percentiles. Outputs, in ``results/preprocessed/<sample>/``:

* ``stack.ome.tif``: the normalised float32 stack (C, Y, X) with channel names;
* ``classes.tif``: the class map (0 = not annotated, 1 + index in ``annotations.classes``);
* ``mask.tif``: the binary mask (1 = foreground class, the paper's Tumor and Necrosis);
* ``foreground.tif``: the tissue mask (1 = tissue);
* ``qc.json``: counts and warnings for the sample.

The QC figure (the paper's Figure 1) is drawn from these files by :mod:`ramanseg.qc`.

**Order of the steps.** The paper lists normalisation before drift correction; we
correct the drift first, on the raw intensities. The drift (laser power and detection
gain wandering during the scan) multiplies the raw signal, so a multiplicative
column-wise correction is exact there; after percentile normalisation the values are
shifted, scaled and clipped to [0, 1], so the drift is no longer a pure factor and a
correction would push values out of [0, 1] again. Correcting first also keeps the
percentiles from being widened by the drift, and the stack written is exactly in [0, 1]
as the paper describes.

Modules: :mod:`~ramanseg.preprocess.normalize` (percentiles and scaling),
:mod:`~ramanseg.preprocess.foreground` (tissue detection),
:mod:`~ramanseg.preprocess.drift` (drift correction), :mod:`~ramanseg.preprocess.sample`
(one sample, from its files to its outputs) and :mod:`~ramanseg.preprocess.cli` (the
``ramanseg preprocess`` command).
"""

from ramanseg.fileio import check_output_folder
from ramanseg.preprocess.common import PreprocessWarning
from ramanseg.preprocess.drift import MIN_COLUMN_PIXELS, DriftProfile, correct_column_drift
from ramanseg.preprocess.foreground import (
    KMEANS_N_INIT,
    KMEANS_SAMPLE_SIZE,
    OD_FLOOR,
    check_foreground_fraction,
    foreground_from_he,
    foreground_from_srs,
    srs_tissue_feature,
)
from ramanseg.preprocess.normalize import (
    exact_percentiles,
    normalize_percentiles,
    percentile_ranges,
    scale_to_ranges,
)
from ramanseg.preprocess.sample import preprocess_sample
from ramanseg.preprocessed import OUTPUT_FILES, write_preprocessed_sample

__all__ = [
    "KMEANS_N_INIT",
    "KMEANS_SAMPLE_SIZE",
    "MIN_COLUMN_PIXELS",
    "OD_FLOOR",
    "OUTPUT_FILES",
    "DriftProfile",
    "PreprocessWarning",
    "check_foreground_fraction",
    "check_output_folder",
    "correct_column_drift",
    "exact_percentiles",
    "foreground_from_he",
    "foreground_from_srs",
    "normalize_percentiles",
    "percentile_ranges",
    "preprocess_sample",
    "scale_to_ranges",
    "srs_tissue_feature",
    "write_preprocessed_sample",
]
