"""Writing the dataset: the sample sheet, each sample's files, and the preview."""

from __future__ import annotations

import concurrent.futures
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile

from ramanseg import __version__
from ramanseg.errors import InputError
from ramanseg.fileio import atomic_path
from ramanseg.phantom.design import (
    PhantomSettings,
    SampleVariant,
    phantom_design,
    sample_variants,
)
from ramanseg.phantom.export import _feature_id
from ramanseg.phantom.sample import PhantomSample, generate_sample
from ramanseg.phantom.tissue import CLASS_COLORS

logger = logging.getLogger(__name__)


def _ome_uuid(seed: int, sample_index: int) -> str:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 4, sample_index]))
    return f"urn:uuid:{_feature_id(rng)}"


def phantom_file_names(
    sample_id: str, variant: SampleVariant | None = None
) -> tuple[str, str, str]:
    """The (srs, he, annotations) paths of a synthetic sample, relative to the sheet.

    Args:
        sample_id: the sample.
        variant: its variant (default: none): the SRS stack of the ``plain_tiff`` and
            ``channels_last`` variants is a ``.tif``, not an ``.ome.tif``; a sample
            without H&E has an empty ``he`` path.
    """
    variant = variant or SampleVariant()
    srs_suffix = ".ome.tif" if variant.srs_format == "ome" else ".tif"
    return (
        f"srs/{sample_id}{srs_suffix}",
        f"he/{sample_id}.tif" if variant.he else "",
        f"annotations/{sample_id}.geojson",
    )


def phantom_samplesheet(config: Mapping[str, Any], outdir: str | Path) -> pd.DataFrame:
    """The sample sheet the phantom will write into ``outdir``, without writing anything.

    Lets the workflow know every sample and file before the data exist. It takes the
    workflow's validated configuration, as the Snakefile holds it, and builds the
    phantom's settings from it (:meth:`PhantomSettings.from_config`).

    Args:
        config: the validated workflow configuration (``phantom``, ``channels``,
            ``annotations``).
        outdir: the dataset folder.

    Returns:
        The columns of a sample sheet read by :func:`ramanseg.samplesheet.read_samplesheet`
        (paths joined to ``outdir``; an empty ``he`` where a sample has no H&E), indexed
        by ``sample_id``.

    Raises:
        ConfigError: see :meth:`PhantomSettings.from_config`.
    """
    settings = PhantomSettings.from_config(config)
    outdir = Path(outdir)
    table = phantom_design(settings)
    names = [
        phantom_file_names(sample_id, variant)
        for sample_id, variant in zip(table["sample_id"], sample_variants(settings), strict=True)
    ]
    for index, column in enumerate(("srs", "he", "annotations")):
        table[column] = [str(outdir / files[index]) if files[index] else "" for files in names]
    return table.set_index("sample_id", drop=False)


def _write_srs(settings: PhantomSettings, sample: PhantomSample, index: int, path: Path) -> None:
    """Write the SRS stack in the sample's format: OME-TIFF, or one of the variants."""
    software = f"ramanseg {__version__} phantom"
    if sample.variant.srs_format == "plain_tiff":
        # One page per channel and no description: tifffile reads the axes as IYX.
        tifffile.imwrite(
            path,
            sample.srs,
            photometric="minisblack",
            compression="zlib",
            software=software,
            metadata=None,
        )
    elif sample.variant.srs_format == "channels_last":
        # One page of C samples per pixel; tifffile's description names the axes YXC.
        tifffile.imwrite(
            path,
            np.ascontiguousarray(sample.srs.transpose(1, 2, 0)),
            photometric="minisblack",
            planarconfig="contig",
            compression="zlib",
            software=software,
            metadata={"axes": "YXC"},
        )
    else:
        tifffile.imwrite(
            path,
            sample.srs,
            ome=True,
            photometric="minisblack",
            compression="zlib",
            software=software,
            metadata={
                "axes": "CYX",
                "Name": sample.sample_id,
                "Channel": {"Name": settings.channels.names},
                # Fixed UUID and creator: tifffile would otherwise write a fresh uuid1.
                "UUID": _ome_uuid(settings.seed, index),
                "Creator": software,
            },
        )


def _write_sample(
    settings: PhantomSettings, sample_index: int, root: Path
) -> tuple[dict[str, str], PhantomSample]:
    """Generate one sample and write its files under ``root``."""
    sample = generate_sample(settings, sample_index)
    srs_rel, he_rel, annotations_rel = phantom_file_names(sample.sample_id, sample.variant)
    _write_srs(settings, sample, sample_index, root / srs_rel)
    if he_rel:
        tifffile.imwrite(
            root / he_rel,
            sample.he,
            photometric="rgb",
            compression="zlib",
            software=f"ramanseg {__version__} phantom",
            metadata=None,
        )
    with open(root / annotations_rel, "w") as handle:
        json.dump(sample.annotations, handle, indent=2)
        handle.write("\n")
    row = {
        "sample_id": sample.sample_id,
        "patient_id": sample.patient_id,
        "srs": srs_rel,
        "he": he_rel,
        "annotations": annotations_rel,
    }
    return row, sample


def write_preview(settings: PhantomSettings, sample: PhantomSample, path: str | Path) -> None:
    """Save a three-panel PNG of one sample: the display channel, H&E, annotations.

    Args:
        settings: the phantom's settings (channels and classes).
        sample: the sample to show.
        path: the PNG to write (no timestamp or software tag, so byte-reproducible).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = settings.channels.names
    band = settings.channels.display_index()
    image = sample.srs[band].astype(np.float32)
    low, high = np.percentile(image, [1, 99])

    classes = settings.annotations.class_names
    overlay = np.zeros((*sample.class_map.shape, 4), np.float32)
    handles = []
    for value, name in enumerate(classes, start=1):
        present = sample.class_map == value
        if not present.any():
            continue
        rgb = np.asarray(CLASS_COLORS.get(name, (128, 128, 128))) / 255.0
        overlay[present] = (*rgb, 0.45)
        handles.append(Patch(facecolor=to_rgba(rgb, 0.6), edgecolor=rgb, label=name))

    figure = Figure(figsize=(12, 4.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)
    shown = axes[0].imshow(image, cmap="magma", vmin=low, vmax=high, interpolation="nearest")
    axes[0].set_title(f"SRS: {names[band]}")
    figure.colorbar(shown, ax=axes[0], fraction=0.046, pad=0.04, label="counts")
    axes[1].imshow(sample.he, interpolation="nearest")
    # The variant without H&E writes none: say so rather than show a file that is not there.
    axes[1].set_title("H&E" if sample.variant.he else "H&E (not in the dataset)")
    axes[2].imshow(sample.he, interpolation="nearest")
    axes[2].imshow(overlay, interpolation="nearest")
    for value in range(1, len(classes) + 1):
        if (sample.class_map == value).any():
            axes[2].contour(sample.class_map == value, levels=[0.5], colors="k", linewidths=0.6)
    axes[2].set_title(f"Annotations ({sample.export_style})")
    axes[2].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    for axis in axes:
        axis.set_xlabel("x (px)")
        axis.set_ylabel("y (px)")
    figure.suptitle(f"Synthetic SRS sample {sample.sample_id} (patient {sample.patient_id})")
    figure.tight_layout()
    figure.savefig(path, format="png", metadata={"Software": None})


def write_phantom(settings: PhantomSettings, outdir: str | Path, threads: int = 1) -> Path:
    """Write the whole synthetic dataset into ``outdir`` (replacing it), atomically.

    Everything is written into a temporary folder beside ``outdir`` that is renamed into
    place at the end, so a failure leaves no partial dataset behind.

    Args:
        settings: the phantom's settings (:meth:`PhantomSettings.from_config`).
        outdir: the dataset folder to create.
        threads: samples generated in parallel; the output does not depend on it.

    Returns:
        The path of the sample sheet, ``outdir/samples.tsv``.

    Raises:
        InputError: ``outdir`` or a folder above it is an existing file.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    design = phantom_design(settings)
    outdir = Path(outdir)
    for folder in (outdir, *outdir.parents):
        if folder.exists() and not folder.is_dir():
            raise InputError(
                "the phantom's output folder cannot be written: "
                + ("it" if folder == outdir else f"its parent {str(folder)!r}")
                + " is an existing file, not a folder",
                path=outdir,
                fix="give --outdir (phantom.outdir) a folder path, or move the file away",
            )
    with atomic_path(outdir) as root:
        for folder in ("srs", "he", "annotations"):
            (root / folder).mkdir(parents=True)
        with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(lambda i: _write_sample(settings, i, root), range(len(design))))
        rows = [row for row, _ in results]
        sheet = pd.DataFrame(rows, columns=["sample_id", "patient_id", "srs", "he", "annotations"])
        sheet.to_csv(root / "samples.tsv", sep="\t", index=False, lineterminator="\n")
        write_preview(settings, results[0][1], root / "preview.png")
        logger.info(
            "phantom: %d samples of %d patients, %dx%d px, %d channels -> %s",
            len(design),
            settings.patients,
            settings.height,
            settings.width,
            len(settings.channels),
            outdir,
        )
    return outdir / "samples.tsv"
