"""One sample's preprocessing, from its input files to its outputs (paper section 3.1).

:func:`preprocess_sample` reads the sample, computes every result and the QC report, and
hands them to :func:`write_preprocessed_sample`, the one place that writes the
preprocessed files.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ramanseg.annotations import (
    AnnotationFile,
    check_extent,
    rasterize_annotations,
    read_qupath_geojson,
)
from ramanseg.fileio import check_output_folder
from ramanseg.io import (
    read_he,
    read_srs,
)
from ramanseg.preprocess.common import PreprocessWarning
from ramanseg.preprocess.drift import correct_column_drift
from ramanseg.preprocess.foreground import (
    check_foreground_fraction,
    foreground_from_he,
    foreground_from_srs,
)
from ramanseg.preprocess.normalize import percentile_ranges, scale_to_ranges
from ramanseg.preprocessed import write_preprocessed_sample
from ramanseg.settings import AnnotationSettings, ChannelLayout, PreprocessSettings

log = logging.getLogger(__name__)

#: The files written for each sample, in the order they are written.


def _annotation_file_counts(
    parsed: AnnotationFile, annotations: AnnotationSettings, clipped: int
) -> dict[str, int]:
    counts = parsed.counts()
    ignored = sum(a.class_name in annotations.ignore for a in parsed.annotations)
    counts["skipped_ignored_class"] = ignored
    counts["rasterised"] = counts["classified"] - ignored
    counts["clipped_to_image"] = clipped
    counts["skipped_total"] = parsed.skipped + ignored
    return counts


def preprocess_sample(
    sample_id: str,
    srs_path: str | Path,
    he_path: str | Path | None,
    annotations_path: str | Path | None,
    outdir: str | Path,
    *,
    channels: ChannelLayout,
    annotations: AnnotationSettings,
    settings: PreprocessSettings,
    threads: int = 1,
) -> dict[str, Any]:
    """Preprocess one sample and write its outputs (see :mod:`ramanseg.preprocess`).

    All results are computed before anything is written, then
    :func:`write_preprocessed_sample` writes them; after an error ``outdir`` holds none
    of this call's outputs.

    Args:
        sample_id: the sample id.
        srs_path: the SRS stack.
        he_path: the H&E image, or None / "" for a sample without one (the foreground
            then comes from :func:`foreground_from_srs`).
        annotations_path: the QuPath GeoJSON export, or None / "" for a slide without
            annotations (a new slide to segment): the class map and mask are then empty.
        outdir: the output folder, ``results/preprocessed/<sample_id>``.
        channels: the channel layout (``channels``).
        annotations: the annotation settings (``annotations``).
        settings: the preprocessing settings (``preprocess``, ``seed``).
        threads: channels processed in parallel.

    Returns:
        The QC report written to ``qc.json``.

    Raises:
        InputError: for any problem with the sample's files (see :func:`read_srs`,
            :func:`read_he`, :func:`read_qupath_geojson`, :func:`rasterize_annotations`),
            or an ``outdir`` that is an existing file.
    """
    started = time.perf_counter()
    outdir = Path(outdir)
    check_output_folder(outdir, sample_id)  # before the work, not after it
    names = channels.names
    roles = channels.roles
    n_clusters = settings.foreground_clusters
    seed = settings.seed
    classes = annotations.labels

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PreprocessWarning)
        srs = read_srs(srs_path, channels, sample_id, nonfinite=settings.nonfinite)
        shape = srs.data.shape[1:]
        he = read_he(he_path, sample_id, shape) if he_path else None
        if annotations_path:
            parsed = read_qupath_geojson(annotations_path, sample_id)
            class_map, mask = rasterize_annotations(
                parsed, shape, annotations, sample_id, annotations_path
            )
        else:  # a slide to segment: nothing annotated
            parsed = AnnotationFile()
            class_map = np.zeros(shape, dtype=np.uint8)
            mask = np.zeros(shape, dtype=np.uint8)
        clipped = check_extent(
            [a for a in parsed.annotations if a.class_name in classes],
            shape,
            sample_id,
            annotations_path,
        )
        if clipped:
            warnings.warn(
                f"{clipped} annotation feature(s) reach beyond the image and are clipped",
                PreprocessWarning,
                stacklevel=1,
            )
        if he is not None:
            foreground = foreground_from_he(he, n_clusters, seed, threads=threads)
        else:
            foreground = foreground_from_srs(srs.data, roles, n_clusters, seed, threads=threads)
        foreground_source = "he" if he is not None else "srs"
        implausible_foreground = check_foreground_fraction(
            foreground, settings.foreground_fraction, foreground_source
        )
        if settings.drift_correction:
            # In place: the raw stack is not needed again, and this saves a copy of it.
            stack, profile = correct_column_drift(
                srs.data, foreground, names=names, threads=threads, out=srs.data
            )
        else:
            stack, profile = srs.data, None
        ranges = percentile_ranges(stack, roles, settings.percentiles, threads=threads)
        normalised = scale_to_ranges(stack, ranges, names=names, threads=threads, out=stack)
        empty_mask = not mask.any()
        if empty_mask and annotations_path:
            foreground_names = annotations.foreground_classes
            warnings.warn(
                f"the mask is empty: no pixel of a foreground class "
                f"({', '.join(foreground_names)}) is annotated",
                PreprocessWarning,
                stacklevel=1,
            )
        if srs.nonfinite_repaired:
            warnings.warn(
                f"{srs.nonfinite_repaired} NaN or infinite values replaced by their channel median",
                PreprocessWarning,
                stacklevel=1,
            )
    messages = [str(w.message) for w in caught if issubclass(w.category, PreprocessWarning)]
    for other in caught:  # recording caught every warning: pass the others on unchanged
        if not issubclass(other.category, PreprocessWarning):
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    for message in messages:
        log.warning("sample %s: %s", sample_id, message)

    n_pixels = class_map.size
    # A count per label: several times faster than np.bincount, which widens every uint8.
    class_counts = [np.count_nonzero(class_map == label) for label in range(len(classes) + 1)]
    qc: dict[str, Any] = {
        "sample_id": sample_id,
        "inputs": {
            "srs": str(srs_path),
            "he": str(he_path) if he_path else None,
            "annotations": str(annotations_path) if annotations_path else None,
        },
        "shape": list(srs.data.shape),
        "source_dtype": srs.source_dtype,
        "foreground_source": foreground_source,
        "foreground_fraction": np.count_nonzero(foreground) / n_pixels,
        "mask_fraction": np.count_nonzero(mask) / n_pixels,
        "unannotated_fraction": float(class_counts[0] / n_pixels),
        "class_fractions": {
            name: float(class_counts[i + 1] / n_pixels) for i, name in enumerate(classes)
        },
        "empty_mask": bool(empty_mask),
        "implausible_foreground": bool(implausible_foreground),
        "nonfinite_repaired": int(srs.nonfinite_repaired),
        "features": _annotation_file_counts(parsed, annotations, clipped),
        "drift_correction": None
        if profile is None
        else {
            "gain_min": float(profile.gain.min()),
            "gain_max": float(profile.gain.max()),
            "measured_column_fraction": float(profile.measured_columns.mean()),
        },
        "percentile_ranges": {
            name: [float(ranges[c, 0]), float(ranges[c, 1])] for c, name in enumerate(names)
        },
        "qc_channel": names[channels.display_index()],
        "warnings": messages,
    }

    write_preprocessed_sample(outdir, normalised, names, class_map, mask, foreground, qc)
    log.info(
        "sample %s: preprocessed in %.1f s (tissue %.1f %%, mask %.1f %%)",
        sample_id,
        time.perf_counter() - started,
        100 * qc["foreground_fraction"],
        100 * qc["mask_fraction"],
    )
    return qc
