"""Our preprocessed samples as an nnU-Net v2 raw dataset, and our folds as its split.

Layout written (``DatasetXXX_RamanSeg`` below ``nnUNet_raw``)::

    dataset.json
    imagesTr/<sample>_0000.tif ... <sample>_00CC.tif   one float32 TIFF per channel
    labelsTr/<sample>.tif                              uint8, 1 = tumour
    imagesTs/<sample>_0000.tif ...                     the test samples
    splits_final.json                                  our patient-grouped folds

nnU-Net copies ``dataset.json`` into every trained model folder; :func:`read_dataset_channels`
reads either copy back.

Training cases are the split's train and validation samples (nnU-Net's cross-validation
runs over them); ``splits_final.json`` is copied into the preprocessed dataset folder
before training so that nnU-Net's folds are ours and never mix patients.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tifffile

from ramanseg.config import channel_names
from ramanseg.errors import InputError
from ramanseg.fileio import atomic_path
from ramanseg.preprocessed import PreprocessedSource, files_of, read_mask, read_stack

DATASET_SUFFIX = "RamanSeg"
FILE_ENDING = ".tif"
DATASET_JSON = "dataset.json"


def dataset_name(dataset_id: int) -> str:
    """nnU-Net's folder name for our dataset, e.g. ``Dataset501_RamanSeg``.

    Raises:
        ValueError: if the id is outside nnU-Net's 1-999.
    """
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"nnunet.dataset_id must be in 1..999, got {dataset_id}")
    return f"Dataset{dataset_id:03d}_{DATASET_SUFFIX}"


def nnunet_splits(split: Mapping) -> list[dict[str, list[str]]]:
    """Our cross-validation folds in the shape of nnU-Net's ``splits_final.json``."""
    return [{"train": list(fold["train"]), "val": list(fold["val"])} for fold in split["folds"]]


def _write_channels(stack: np.ndarray, folder: Path, case: str) -> None:
    for index, channel in enumerate(stack):
        tifffile.imwrite(folder / f"{case}_{index:04d}{FILE_ENDING}", channel.astype(np.float32))


def export_raw_dataset(
    preprocessed: PreprocessedSource,
    split: Mapping,
    config: Mapping,
    raw_root: str | Path,
    dataset_id: int,
) -> Path:
    """Write the nnU-Net raw dataset for a split.

    Args:
        preprocessed: every sample's preprocessed files (the stack, and the mask for the
            training and validation samples) by sample id, or ``results/preprocessed``.
        split: the split (``train``, ``val``, ``test``, ``folds``) as written by
            ``ramanseg split``.
        config: the configuration (its ``channels`` name nnU-Net's input channels).
        raw_root: nnU-Net's raw folder (``nnUNet_raw``).
        dataset_id: nnU-Net's dataset id.

    Returns:
        The dataset folder. It is written to a temporary folder and moved into place
        whole, so an interrupted export leaves nothing behind.

    Raises:
        ValueError: if a fold names a sample outside train + validation.
        InputError: a missing or damaged preprocessed file, or a stack whose channels
            differ from the configuration.
    """
    names = channel_names(config)
    training = list(split["train"]) + list(split["val"])
    for number, fold in enumerate(split["folds"]):
        outside = sorted((set(fold["train"]) | set(fold["val"])) - set(training))
        if outside:
            raise ValueError(f"fold {number} names samples outside train + val: {outside}")
    target = Path(raw_root) / dataset_name(dataset_id)
    with atomic_path(target) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir(parents=True)
        for sample in training + list(split["test"]):
            files = files_of(preprocessed, sample)
            stack, _ = read_stack(files.path("stack", "--stacks"), sample, channel_names=names)
            images = "imagesTs" if sample in split["test"] else "imagesTr"
            _write_channels(stack, tmp / images, sample)
            if images == "imagesTr":
                mask = read_mask(files.path("mask", "--masks"), sample, stack.shape[1:])
                tifffile.imwrite(tmp / "labelsTr" / f"{sample}{FILE_ENDING}", mask)
        dataset_json = {
            "name": DATASET_SUFFIX,
            "description": "SRS stacks preprocessed by ramanseg; tumour (Tumor + Necrosis) vs rest",
            "channel_names": {str(i): name for i, name in enumerate(names)},
            "labels": {"background": 0, "tumour": 1},
            "numTraining": len(training),
            "file_ending": FILE_ENDING,
            # 2-D multi-channel TIFFs, one per channel: nnU-Net's natural-image reader.
            "overwrite_image_reader_writer": "NaturalImage2DIO",
        }
        (tmp / DATASET_JSON).write_text(json.dumps(dataset_json, indent=2))
        (tmp / "splits_final.json").write_text(json.dumps(nnunet_splits(split), indent=2))
    return target


def read_dataset_channels(folder: str | Path, *, fix: str) -> list[str]:
    """The input channels an nnU-Net dataset or trained model was made for.

    Read from its ``dataset.json`` with nnU-Net's own loader (batchgenerators' ``load_json``,
    as nnU-Net's predictor reads it); ``channel_names`` maps each channel's index, as a
    string, to its name.

    Args:
        folder: an nnU-Net raw dataset folder or trained model folder, or its
            ``dataset.json``.
        fix: what to tell the user about a missing or bad file.

    Returns:
        The channel names in nnU-Net's channel order.

    Raises:
        InputError: a missing or unreadable file, or one without a ``channel_names`` object
            whose keys are ``"0"`` to ``"n-1"``.
    """
    from batchgenerators.utilities.file_and_folder_operations import load_json

    path = Path(folder)
    if path.name != DATASET_JSON:
        path = path / DATASET_JSON
    try:
        dataset = load_json(str(path))
    except FileNotFoundError:
        raise InputError(f"nnU-Net's {DATASET_JSON} does not exist", path=path, fix=fix) from None
    except (OSError, ValueError) as error:  # ValueError: not UTF-8, or not JSON
        raise InputError(f"{DATASET_JSON} cannot be read ({error})", path=path, fix=fix) from None
    names = dataset.get("channel_names") if isinstance(dataset, dict) else None
    if not isinstance(names, dict) or sorted(names) != sorted(map(str, range(len(names)))):
        raise InputError(
            f'{DATASET_JSON} has no channel_names object {{"0": name, "1": name, ...}}',
            path=path,
            fix=fix,
        )
    return [str(names[str(index)]) for index in range(len(names))]
