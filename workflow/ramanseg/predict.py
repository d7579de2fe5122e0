"""Segmenting new slides with a model package (``snakemake predict``).

The slides come in a sample sheet of the input contract whose ``annotations`` and ``he``
may be empty. :mod:`ramanseg.package` extracts and checks the package; each slide is then
preprocessed with the package's settings (``ramanseg preprocess --settings
@results/predict/package/settings.json``) and the commands here do the rest::

    results/predict/preprocessed/<sample>/      the preprocessed slide
    results/predict/<sample>/<model>.mask.ome.tif, <model>.probability.ome.tif
    results/predict/<sample>/<model>.geojson    QuPath annotations of the predicted tumour
    results/predict/<sample>/overlay.png        the models' outlines over a Raman band
    results/predict/summary.{csv,parquet,md}    tumour area and fraction of tissue per
                                                slide and model; Dice where annotated

``predict-slides`` runs one model of the package over every slide (the model is loaded
once), ``predict-export`` writes one slide's GeoJSON files and overlay, ``predict-summary``
the table.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ramanseg.catalog import model_label
from ramanseg.errors import InputError

log = logging.getLogger(__name__)

#: Folders of ``results/predict`` that are not a slide's (slide ids may not take them).
RESERVED_NAMES = ("package", "preprocessed", "summary", "nnunet")
SUMMARY_COLUMNS = (
    "sample_id",
    "model",
    "label",
    "tissue_px",
    "tumour_px",
    "tumour_fraction_of_tissue",
    "pixel_size_um",
    "tumour_area_um2",
    "dice",
)


def read_slide_sheet(path: str | Path):
    """The slides to segment: a sample sheet whose ``annotations`` and ``he`` may be empty.

    Raises:
        InputError: as :func:`ramanseg.samplesheet.read_samplesheet`, or a slide id that is
            one of :data:`RESERVED_NAMES`.
    """
    from ramanseg.samplesheet import read_samplesheet

    table = read_samplesheet(path, require_annotations=False)
    reserved = sorted(set(table["sample_id"]) & set(RESERVED_NAMES))
    if reserved:
        raise InputError(
            f"the slide id(s) {', '.join(reserved)} name folders of results/predict",
            path=path,
            fix=f"rename them (ids other than {', '.join(RESERVED_NAMES)})",
        )
    return table


def tumour_summary(
    sample_id: str,
    model: str,
    mask: np.ndarray,
    tissue: np.ndarray,
    *,
    pixel_size_um: float | None = None,
    reference: np.ndarray | None = None,
) -> dict[str, Any]:
    """One row of the summary: a model's predicted tumour on one slide.

    Args:
        sample_id: the slide.
        model: the model.
        mask: the predicted tumour mask (Y, X).
        tissue: the slide's tissue foreground (Y, X).
        pixel_size_um: the pixel size, if known (gives the area in µm²).
        reference: the annotated tumour mask, if the slide has annotations (gives Dice,
            over the tissue pixels as in the evaluation).

    Returns:
        A dict with the keys of :data:`SUMMARY_COLUMNS` (``nan`` where unknown).
    """
    from ramanseg.metrics import dice_score

    mask, tissue = mask.astype(bool), tissue.astype(bool)
    tumour = int(np.count_nonzero(mask))
    tissue_px = int(np.count_nonzero(tissue))
    return {
        "sample_id": sample_id,
        "model": model,
        "label": model_label(model),
        "tissue_px": tissue_px,
        "tumour_px": tumour,
        "tumour_fraction_of_tissue": (
            np.count_nonzero(mask & tissue) / tissue_px if tissue_px else math.nan
        ),
        "pixel_size_um": pixel_size_um or math.nan,
        "tumour_area_um2": tumour * pixel_size_um**2 if pixel_size_um else math.nan,
        "dice": math.nan if reference is None else dice_score(mask[tissue], reference[tissue]),
    }


def summary_markdown(table) -> str:
    """The summary as a Markdown table (area in µm² and Dice only where known)."""
    lines = [
        "| slide | model | tumour (px) | tumour (µm²) | tumour / tissue | Dice |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in table.itertuples():
        area = "" if math.isnan(row.tumour_area_um2) else f"{row.tumour_area_um2:.0f}"
        fraction = (
            ""
            if math.isnan(row.tumour_fraction_of_tissue)
            else (f"{100 * row.tumour_fraction_of_tissue:.1f} %")
        )
        dice = "" if math.isnan(row.dice) else f"{row.dice:.3f}"
        lines.append(
            f"| {row.sample_id} | {row.label} | {row.tumour_px} | {area} | {fraction} | {dice} |"
        )
    notes = (
        "\nTumour / tissue: the predicted tumour's share of the slide's tissue pixels. "
        "Dice (over the tissue pixels) only for slides with annotations; the area in µm² "
        "only where the SRS file records its pixel size (OME-TIFF PhysicalSizeX).\n"
    )
    return "\n".join(lines) + "\n" + notes


def _device(config: Mapping[str, Any]):
    from ramanseg.runtime import resolve_device

    return resolve_device(config.get("device", "auto"))


def _slide_dir(root: Path, sample_id: str) -> Path:
    return root / sample_id


def predict_slides(
    package_dir: str | Path,
    model: str,
    stacks: Mapping[str, str | Path],
    root: str | Path,
    *,
    config: Mapping[str, Any],
    pixel_sizes: Mapping[str, float | None] | None = None,
    threads: int = 1,
) -> float:
    """Predict slides with one model of an extracted package; write its OME-TIFF pair per
    slide into ``root/<sample>/``.

    Args:
        package_dir: the extracted package (``results/predict/package``).
        model: the package's model to run.
        stacks: sample id -> the slide's preprocessed ``stack.ome.tif``.
        root: ``results/predict``.
        config: the run's ``device`` and ``nnunet`` (nnU-Net's prediction settings).
        pixel_sizes: sample id -> pixel size in µm, recorded in the OME metadata.
        threads: CPU threads.

    Returns:
        The seconds spent predicting (loading excluded).

    Raises:
        InputError: a model the package lacks, or a slide whose stack has other channels
            than the package's.
    """
    import time

    import torch

    from ramanseg.package import read_package_folder
    from ramanseg.predictions import write_slide_prediction
    from ramanseg.preprocessed import read_stack

    torch.set_num_threads(threads)
    package = read_package_folder(package_dir)
    if model not in package.models:
        raise InputError(
            f"the package holds no model {model!r} (it holds {', '.join(package.models)})",
            path=package_dir,
            fix="choose models the package holds (predict.models)",
        )
    entry = package.models[model]
    device = _device(config)
    probability_of = _probability_function(entry, device, root, threads, config)
    seconds = 0.0
    for sample_id, path in stacks.items():
        stack, names = read_stack(path, sample_id)
        if names and list(names) != package.channels.names:
            raise InputError(
                f"the slide's channels {list(names)} are not the package's "
                f"{package.channels.names}",
                sample=sample_id,
                path=path,
                fix="preprocess the slide with the package's settings (snakemake predict)",
            )
        start = time.perf_counter()
        probability = probability_of(stack)
        seconds += time.perf_counter() - start
        write_slide_prediction(
            _slide_dir(Path(root), sample_id),
            model,
            probability,
            pixel_size_um=(pixel_sizes or {}).get(sample_id),
        )
        log.info("%s: predicted slide %s", model, sample_id)
    return seconds


def _probability_function(entry, device, root: str | Path, threads: int, config: Mapping[str, Any]):
    """``stack (C, Y, X) -> foreground probability (Y, X)`` of a packaged model."""
    if entry.kind == "nnunet":
        from ramanseg.nnunet.environment import configure_nnunet

        # nnU-Net finds our trainer class (named in the checkpoints) through its
        # environment; its data folders are not used for prediction.
        configure_nnunet(Path(root) / "nnunet", processes=threads)
        from ramanseg.nnunet.run import ensemble_folds, load_ensemble, predict_probability
        from ramanseg.nnunet.settings import NnunetSettings

        # New slides get the fast preset (nnunet.fast_prediction), chosen by benchmark.
        fast = NnunetSettings.from_config(config).fast_prediction
        folds = ensemble_folds(entry.folder, entry.folds, fast)
        log.info("nnunet: folds %s of %s (nnunet.fast_prediction)", folds, list(entry.folds))
        predictor = load_ensemble(entry.folder, folds, device, fast)
        return lambda stack: predict_probability(predictor, stack)

    from ramanseg.models.inference import model_predictor, sliding_window_probability
    from ramanseg.models.registry import load_trained_model

    network, metadata = load_trained_model(entry.folder, device)
    predictor = model_predictor(network, device)

    def probability(stack: np.ndarray) -> np.ndarray:
        result = sliding_window_probability(predictor, stack, metadata["patch_size"], device=device)
        return np.clip(result, 0.0, 1.0)

    return probability


def export_slide(
    sample_id: str,
    stack_path: str | Path,
    slide_dir: str | Path,
    models: Sequence[str],
    *,
    display_index: int,
    min_area_px: int,
) -> list[Path]:
    """Write one slide's QuPath GeoJSON per model and the overlay of every model's outline.

    Args:
        sample_id: the slide.
        stack_path: its preprocessed stack (the overlay shows one Raman band of it).
        slide_dir: ``results/predict/<sample>``, holding the models' masks.
        models: the models whose masks to export.
        display_index: the channel the overlay shows.
        min_area_px: tumour regions smaller than this (in pixels) are left out.

    Returns:
        The files written.
    """
    from ramanseg.overlay import write_overlay_png
    from ramanseg.predictions import read_slide_mask
    from ramanseg.preprocessed import read_stack
    from ramanseg.qupath import write_qupath_geojson

    slide_dir = Path(slide_dir)
    masks = {model: read_slide_mask(slide_dir, model, sample_id) for model in models}
    written = []
    for model, mask in masks.items():
        path = slide_dir / f"{model}.geojson"
        write_qupath_geojson(
            path, mask, min_area_px=min_area_px, object_id_seed=f"{sample_id}/{model}"
        )
        written.append(path)
    display = read_stack(stack_path, sample_id)[0][display_index]
    overlay = slide_dir / "overlay.png"
    write_overlay_png(
        overlay,
        display,
        {model_label(m): mask for m, mask in masks.items()},
        title=f"{sample_id}: predicted tumour",
    )
    return [*written, overlay]


def summarise(
    sheet: str | Path, root: str | Path, models: Sequence[str], out_prefix: str | Path
) -> list[Path]:
    """Write the summary table (:data:`SUMMARY_COLUMNS`) over every slide and model.

    Args:
        sheet: the slides' sample sheet (for the SRS files' pixel sizes and which slides
            have annotations).
        root: ``results/predict``.
        models: the models predicted.
        out_prefix: ``results/predict/summary``: writes ``.csv``, ``.parquet``, ``.md``.
    """
    import pandas as pd

    from ramanseg.figures import table_bytes
    from ramanseg.fileio import prefixed, write_files
    from ramanseg.io import srs_pixel_size_um
    from ramanseg.predictions import read_slide_mask
    from ramanseg.preprocessed import files_of, read_foreground, read_mask

    root = Path(root)
    slides = read_slide_sheet(sheet)
    rows = []
    for sample_id, row in slides.iterrows():
        files = files_of(root / "preprocessed", sample_id)
        tissue = read_foreground(files.path("foreground"), sample_id)
        reference = read_mask(files.path("mask"), sample_id) if row["annotations"] else None
        pixel_size = srs_pixel_size_um(row["srs"], sample_id)
        for model in models:
            mask = read_slide_mask(_slide_dir(root, sample_id), model, sample_id)
            rows.append(
                tumour_summary(
                    sample_id, model, mask, tissue, pixel_size_um=pixel_size, reference=reference
                )
            )
    table = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    return write_files(prefixed(out_prefix, table_bytes(table, summary_markdown(table))))


def _pixel_sizes(sheet: str | Path, samples: Sequence[str]) -> dict[str, float | None]:
    from ramanseg.io import srs_pixel_size_um

    slides = read_slide_sheet(sheet)
    return {s: srs_pixel_size_um(slides.loc[s, "srs"], s) for s in samples if s in slides.index}


def _predict_command(args: argparse.Namespace) -> int:
    from ramanseg.cli import settings_from_args
    from ramanseg.preprocessed import sample_id_of

    config = settings_from_args(args)
    stacks = {sample_id_of(path): Path(path) for path in args.stacks}
    seconds = predict_slides(
        args.package_dir,
        args.model,
        stacks,
        args.root,
        config=config,
        pixel_sizes=_pixel_sizes(args.sheet, list(stacks)),
        threads=args.threads,
    )
    print(f"{args.model}: {len(stacks)} slide(s) predicted in {seconds:.1f} s")
    return 0


def _export_command(args: argparse.Namespace) -> int:
    from ramanseg.package import read_package_folder

    package = read_package_folder(args.package_dir)
    export_slide(
        args.sample,
        args.stack,
        args.slide_dir,
        args.models,
        display_index=package.channels.display_index(),
        min_area_px=args.min_area,
    )
    return 0


def _summary_command(args: argparse.Namespace) -> int:
    summarise(args.sheet, args.root, args.models, args.out_prefix)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``predict-slides``, ``predict-export`` and ``predict-summary``."""
    from ramanseg.cli import add_settings_arguments

    parser = subparsers.add_parser(
        "predict-slides", help="predict new slides with one model of an extracted package"
    )
    parser.add_argument("--package-dir", required=True, type=Path, help="extracted package")
    parser.add_argument("--model", required=True, help="the package's model to run")
    parser.add_argument("--stacks", required=True, nargs="+", help="preprocessed stacks")
    parser.add_argument("--sheet", required=True, type=Path, help="the slides' sample sheet")
    parser.add_argument("--root", required=True, type=Path, help="results/predict")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    add_settings_arguments(parser)
    parser.set_defaults(func=_predict_command)

    parser = subparsers.add_parser(
        "predict-export", help="one slide's QuPath GeoJSON per model and the overlay PNG"
    )
    parser.add_argument("--package-dir", required=True, type=Path, help="extracted package")
    parser.add_argument("--sample", required=True, help="the slide")
    parser.add_argument("--stack", required=True, type=Path, help="its preprocessed stack")
    parser.add_argument("--slide-dir", required=True, type=Path, help="results/predict/<sample>")
    parser.add_argument("--models", required=True, nargs="+", help="the models to export")
    parser.add_argument(
        "--min-area", type=int, default=0, help="drop tumour regions under this many pixels"
    )
    parser.set_defaults(func=_export_command)

    parser = subparsers.add_parser(
        "predict-summary", help="tumour area and fraction of tissue per slide and model"
    )
    parser.add_argument("--sheet", required=True, type=Path, help="the slides' sample sheet")
    parser.add_argument("--root", required=True, type=Path, help="results/predict")
    parser.add_argument("--models", required=True, nargs="+", help="the models predicted")
    parser.add_argument("--out-prefix", required=True, type=Path, help="results/predict/summary")
    parser.set_defaults(func=_summary_command)
