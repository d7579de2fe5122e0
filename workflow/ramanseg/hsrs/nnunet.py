"""nnU-Net v2 on the HSRS datasets: bands as channels, one case per spatial block, our folds.

The HSRS stage's third trained model (``nnunet`` in the Dice table) is nnU-Net itself,
run through our nnU-Net machinery (:mod:`ramanseg.nnunet`: the demo planner, the short
trainer, :func:`~ramanseg.nnunet.run.plan_and_preprocess`,
:func:`~ramanseg.nnunet.run.train_fold`) on a raw dataset written here, so that its rows
are comparable with the hybrid U-Net's (:mod:`ramanseg.hsrs.training`):

* one nnU-Net case per spatial block of :func:`~ramanseg.hsrs.training.make_blocks`, and
  ``splits_final.json`` holding the blocks' folds of
  :func:`~ramanseg.hsrs.training.assign_folds` (same ``hsrs.models`` block size, folds,
  seed): a fold's training cases are whole blocks of other folds, so none holds a
  held-out pixel;
* bands as channels: the cube as the other models see it
  (:func:`~ramanseg.hsrs.training.prepare_cube`: bands averaged down to
  ``hsrs.models.max_bands``, scaled by the stack's 99th percentile), one float32 TIFF per
  band. The channels are named ``noNorm`` (nnU-Net's key for no normalisation): nnU-Net's
  default z-scores every channel of every case on its own, which on 32 px blocks would
  rescale each block's spectrum by its own contents;
* the classes as labels, plus nnU-Net's ``ignore`` label on the pixels of a block within
  ``hsrs.models.buffer`` of a block of another fold. A dataset has one label file per
  case for all folds, so a block carries the union of the buffers it lies in as a
  training block (:func:`~ramanseg.hsrs.training.training_labels`, per fold): no label
  right next to a held-out pixel is learnt in any fold;
* a dataset id per HSRS dataset (``hsrs.nnunet.dataset_ids``) and nnU-Net's folder
  layout under ``results/hsrs/nnunet/<dataset>/``.

Each fold's model then predicts its held-out blocks, each block on its own as the
hybrid U-Net does, with nnU-Net's predictor (the mirroring and tile step of
``nnunet.fast_prediction``; the fold's model alone, no ensemble); the blocks are stitched
into out-of-fold label maps and scored per fold with the table's Dice rows.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ramanseg.config import ConfigError, require
from ramanseg.errors import InputError
from ramanseg.hsrs.stack import check_labelled_stacks, read_labelled_stacks

logger = logging.getLogger(__name__)

#: The model's name in the HSRS Dice table and its folder under results/hsrs/models/.
NNUNET = "nnunet"
#: nnU-Net's channel name for "no normalisation" (the cube is already scaled per stack).
NO_NORMALIZATION = "noNorm"
FILE_ENDING = ".tif"
#: What the stacks' labels are for (the message of a stack without them).
LABELS_PURPOSE = "to train on and score against"


def hsrs_nnunet_config(config: Mapping[str, Any], dataset: str) -> dict:
    """The configuration nnU-Net's commands run with on one HSRS dataset.

    The ``nnunet`` section with the dataset's id (``hsrs.nnunet.dataset_ids``) and, where
    set, ``hsrs.nnunet``'s epochs and iterations per epoch; everything else as given.
    Applying it twice gives the same configuration.

    Args:
        config: a validated configuration (``nnunet``, ``hsrs.nnunet``).
        dataset: the HSRS dataset (``cells``, ``celegans``).

    Raises:
        ConfigError: a missing key or a dataset without an id.
    """
    section = require(config, "hsrs.nnunet")
    ids = section["dataset_ids"]
    if dataset not in ids:
        raise ConfigError(
            f"config key `hsrs.nnunet.dataset_ids` has no id for the HSRS dataset {dataset!r}; "
            f"add one (1-999), e.g. {dataset}: 513"
        )
    nnunet = copy.deepcopy(dict(require(config, "nnunet")))
    nnunet["dataset_id"] = int(ids[dataset])
    for key in ("epochs", "iterations_per_epoch"):
        if section.get(key) is not None:
            nnunet[key] = int(section[key])
    return {**config, "nnunet": nnunet}


def case_name(index: int) -> str:
    """nnU-Net's case identifier of block ``index``."""
    return f"block_{index:03d}"


def block_case_labels(
    stacks: Sequence, blocks: Sequence, fold_of: np.ndarray, buffer: int
) -> list[np.ndarray]:
    """Each block's label image for nnU-Net: the truth, and IGNORE (-1) on the pixels
    that lie within ``buffer`` of a held-out block in some fold the block trains in.

    Args:
        stacks: the labelled stacks.
        blocks: the blocks.
        fold_of: the fold of each block.
        buffer: the buffer (px).

    Returns:
        int64 (block Y, block X) per block, in block order.
    """
    from ramanseg.hsrs.training import IGNORE, training_labels

    cases = [stacks[b.stack].labels[b.slices].astype(np.int64) for b in blocks]
    for fold in np.unique(fold_of):
        labels = training_labels(stacks, blocks, fold_of == fold, buffer)
        for index, block in enumerate(blocks):
            if fold_of[index] != fold:
                cases[index][labels[block.stack][block.slices] == IGNORE] = IGNORE
    return cases


def export_hsrs_dataset(
    dataset: str, stacks: Sequence, settings, raw_root: str | Path, dataset_id: int
) -> Path:
    """Write one HSRS dataset as an nnU-Net raw dataset, one case per block, our folds.

    Layout (``Dataset<id>_RamanSeg`` below ``raw_root``)::

        dataset.json        channels (one per band, noNorm), labels (+ ignore)
        imagesTr/block_NNN_BBBB.tif   float32, one per band
        labelsTr/block_NNN.tif        uint8 class labels, the ignore label on the buffer
        splits_final.json   fold k: train = blocks of the other folds, val = fold k's
        blocks.json         each case's stack, pixel range and fold

    Args:
        dataset: the HSRS dataset's name.
        stacks: the labelled stacks.
        settings: :class:`~ramanseg.hsrs.models.HsrsModelSettings` (blocks, folds, buffer,
            bands, seed).
        raw_root: nnU-Net's raw folder.
        dataset_id: nnU-Net's dataset id.

    Returns:
        The dataset folder, written whole or not at all.

    Raises:
        ValueError: unlabelled stacks, stacks whose classes or bands differ, fewer blocks
            than folds, or more than 254 classes.
    """
    import tifffile

    from ramanseg.fileio import atomic_path
    from ramanseg.hsrs.training import block_folds
    from ramanseg.nnunet.dataset import dataset_name

    class_names = check_labelled_stacks(dataset, stacks)
    ignore = len(class_names)
    if ignore > 254:
        raise ValueError(f"dataset {dataset!r} has {ignore} classes; uint8 labels hold 254")
    cubes, blocks, fold_of = block_folds(stacks, settings)
    labels = block_case_labels(stacks, blocks, fold_of, settings.buffer)
    bands = cubes[0].shape[0]
    target = Path(raw_root) / dataset_name(dataset_id)
    with atomic_path(target) as tmp:
        for sub in ("imagesTr", "labelsTr"):
            (tmp / sub).mkdir(parents=True)
        for index, block in enumerate(blocks):
            case = case_name(index)
            for band, image in enumerate(cubes[block.stack][(slice(None), *block.slices)]):
                tifffile.imwrite(tmp / "imagesTr" / f"{case}_{band:04d}{FILE_ENDING}", image)
            case_labels = np.where(labels[index] < 0, ignore, labels[index]).astype(np.uint8)
            tifffile.imwrite(tmp / "labelsTr" / f"{case}{FILE_ENDING}", case_labels)
        # nnU-Net requires label 0 to be called background and the ignore label on top.
        label_names = {"background": 0, **{n: i for i, n in enumerate(class_names) if i}}
        dataset_json = {
            "name": f"hsrs_{dataset}",
            "description": f"HSRS dataset {dataset!r} by ramanseg: one case per spatial block",
            "channel_names": {str(band): NO_NORMALIZATION for band in range(bands)},
            "labels": {**label_names, "ignore": ignore},
            "numTraining": len(blocks),
            "file_ending": FILE_ENDING,
            "overwrite_image_reader_writer": "NaturalImage2DIO",
        }
        splits = [
            {
                "train": [case_name(i) for i in range(len(blocks)) if fold_of[i] != fold],
                "val": [case_name(i) for i in range(len(blocks)) if fold_of[i] == fold],
            }
            for fold in range(settings.folds)
        ]
        cases = [
            {
                "case": case_name(index),
                "stack": block.stack,
                "source": stacks[block.stack].source,
                "y": [block.y0, block.y1],
                "x": [block.x0, block.x1],
                "fold": int(fold_of[index]),
            }
            for index, block in enumerate(blocks)
        ]
        (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
        (tmp / "splits_final.json").write_text(json.dumps(splits, indent=2))
        (tmp / "blocks.json").write_text(
            json.dumps({"dataset": dataset, "class_names": list(class_names), "cases": cases})
        )
    return target


def predict_held_out(dataset: str, stacks: Sequence, settings, nnunet, model_dir: str | Path):
    """Predict every fold's held-out blocks with that fold's nnU-Net model; score them.

    Args:
        dataset: the HSRS dataset's name.
        stacks: the labelled stacks the dataset was exported from.
        settings: :class:`~ramanseg.hsrs.models.HsrsModelSettings`.
        nnunet: :class:`~ramanseg.nnunet.settings.NnunetSettings` (the predictor's
            mirroring and tile step from its ``fast_prediction``, the device).
        model_dir: the trained model folder (``fold_<k>`` for every fold).

    Returns:
        A :class:`~ramanseg.hsrs.training.CrossValidationResult` (no training log).
    """
    from ramanseg.hsrs.training import (
        IGNORE,
        CrossValidationResult,
        block_folds,
        held_out_dice_rows,
    )
    from ramanseg.nnunet.run import load_ensemble
    from ramanseg.runtime import resolve_device

    class_names = check_labelled_stacks(dataset, stacks)
    device = resolve_device(nnunet.device)
    cubes, blocks, fold_of = block_folds(stacks, settings)
    predictions = [np.full(stack.shape, IGNORE, dtype=np.int16) for stack in stacks]
    rows = []
    for fold in range(settings.folds):
        predictor = load_ensemble(model_dir, [fold], device, nnunet.fast_prediction)
        truth, predicted = [], []
        for block, block_fold in zip(blocks, fold_of, strict=True):
            if block_fold != fold:
                continue
            image = cubes[block.stack][(slice(None), *block.slices)]
            # nnU-Net's 2-D layout: (channels, 1, Y, X), the spacing NaturalImage2DIO reads.
            segmentation = predictor.predict_single_npy_array(
                image[:, None], {"spacing": [999.0, 1.0, 1.0]}, None, None, False
            )
            labels = np.asarray(segmentation)[0].astype(np.int16)
            predictions[block.stack][block.slices] = labels
            truth.append(stacks[block.stack].labels[block.slices].ravel())
            predicted.append(labels.ravel())
        rows += held_out_dice_rows(dataset, NNUNET, fold, class_names, truth, predicted)
    return CrossValidationResult(predictions, fold_of, blocks, rows, [])


def _settings(args: argparse.Namespace):
    from ramanseg.cli import settings_from_args
    from ramanseg.hsrs.models import HsrsModelSettings
    from ramanseg.nnunet.environment import configure_nnunet
    from ramanseg.nnunet.settings import NnunetSettings

    config = hsrs_nnunet_config(settings_from_args(args), args.dataset)
    nnunet = NnunetSettings.from_config(config)
    configure_nnunet(args.nnunet_dir, processes=args.threads, deterministic=nnunet.deterministic)
    return HsrsModelSettings.from_config(config), nnunet


def run_export(args: argparse.Namespace) -> int:
    """``ramanseg hsrs-nnunet-export``: one HSRS dataset as an nnU-Net raw dataset."""
    from ramanseg.nnunet.environment import nnunet_folders

    settings, nnunet = _settings(args)
    stacks = read_labelled_stacks(args.stacks, "hsrs-nnunet-export", LABELS_PURPOSE)
    try:
        export_hsrs_dataset(
            args.dataset,
            stacks,
            settings,
            nnunet_folders(args.nnunet_dir)["nnUNet_raw"],
            nnunet.dataset_id,
        )
    except ValueError as error:
        raise InputError(str(error), path=args.stacks[0], fix="check the dataset") from error
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """``ramanseg hsrs-nnunet-predict``: out-of-fold predictions and Dice rows."""
    from ramanseg.fileio import check_output_folder, write_files
    from ramanseg.hsrs.training import out_of_fold_files
    from ramanseg.nnunet.environment import nnunet_folders
    from ramanseg.nnunet.run import trained_model_dir

    settings, nnunet = _settings(args)
    check_output_folder(args.outdir)
    stacks = read_labelled_stacks(args.stacks, "hsrs-nnunet-predict", LABELS_PURPOSE)
    model_dir = trained_model_dir(
        nnunet.dataset_id, nnunet.trainer, nnunet.planner, nnunet.configuration
    )
    fix = "run hsrs-nnunet-export, nnunet-plan and nnunet-train (every fold) first"
    missing = [f for f in range(settings.folds) if not (model_dir / f"fold_{f}").is_dir()]
    if missing:
        raise InputError(f"nnU-Net has no trained fold {missing}", path=model_dir, fix=fix)
    exported = nnunet_folders(args.nnunet_dir)["nnUNet_raw"] / nnunet.dataset / "blocks.json"
    if not exported.is_file():
        raise InputError("the exported dataset has no blocks.json", path=exported, fix=fix)
    exported_blocks = [
        (case["stack"], *case["y"], *case["x"], case["fold"])
        for case in json.loads(exported.read_text())["cases"]
    ]
    result = predict_held_out(args.dataset, stacks, settings, nnunet, model_dir)
    blocks = [
        (b.stack, b.y0, b.y1, b.x0, b.x1, int(f))
        for b, f in zip(result.blocks, result.fold_of_block, strict=True)
    ]
    if exported_blocks != blocks:
        raise InputError(
            "nnU-Net was trained on other blocks or folds than hsrs.models and the stacks give now",
            path=exported,
            fix="rerun hsrs-nnunet-export, nnunet-plan and nnunet-train",
        )
    prediction = nnunet.fast_prediction
    details = {
        "nnunet_dataset": nnunet.dataset,
        "predictor": {
            "mirroring": prediction.mirroring,
            "tile_step_size": prediction.tile_step_size,
            "folds": "each fold predicts its own held-out blocks",
        },
    }
    write_files(
        out_of_fold_files(args.outdir, args.dataset, NNUNET, args.stacks, stacks, result, details)
    )
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``hsrs-nnunet-export`` and ``hsrs-nnunet-predict``."""
    from ramanseg.nnunet.cli import add_common_arguments

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dataset", required=True, help="the HSRS dataset (cells, celegans)")
        parser.add_argument("--stacks", required=True, nargs="+", metavar="NPZ")
        # --nnunet-dir (results/hsrs/nnunet/<dataset>), --threads and the settings.
        add_common_arguments(parser)

    parser = subparsers.add_parser(
        "hsrs-nnunet-export",
        help="write an HSRS dataset as an nnU-Net raw dataset: a case per block, our folds",
        description="Cut the labelled HSRS stacks into the spatial blocks of hsrs.models, "
        "write each as an nnU-Net case (bands as channels, the buffer as the ignore label) "
        "and the blocks' folds as splits_final.json; then run nnunet-plan.",
    )
    common(parser)
    parser.set_defaults(func=run_export)

    parser = subparsers.add_parser(
        "hsrs-nnunet-predict",
        help="predict each fold's held-out blocks with its nnU-Net model; Dice per class",
        description="After nnunet-train for every fold: predict the held-out blocks, stitch "
        "them, and write dice.csv, folds.json and segmentation.{png,pdf} to --outdir.",
    )
    common(parser)
    parser.add_argument(
        "--outdir", required=True, metavar="DIR", help="results/hsrs/models/<dataset>/nnunet"
    )
    parser.set_defaults(func=run_predict)
