"""The shared prediction format, written by every model so evaluation treats all alike: the
one owner of the prediction files.

For model ``M`` and test sample ``S`` the files are::

    results/predictions/M/S.mask.tif         uint8 (Y, X), 1 = foreground (tumour)
    results/predictions/M/S.probability.tif  float32 (Y, X), foreground probability in [0, 1]

The mask is the probability thresholded at 0.5 unless a model's own rule differs (an
nnU-Net ensemble's argmax over averaged class probabilities is the same thing for two
classes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile

from ramanseg.errors import InputError
from ramanseg.fileio import atomic_path
from ramanseg.io import open_tiff

MASK_SUFFIX = ".mask.tif"
PROBABILITY_SUFFIX = ".probability.tif"


def prediction_paths(directory: str | Path, sample_id: str) -> tuple[Path, Path]:
    """The (mask, probability) paths of one sample's prediction in ``directory``."""
    directory = Path(directory)
    return directory / f"{sample_id}{MASK_SUFFIX}", directory / f"{sample_id}{PROBABILITY_SUFFIX}"


def write_prediction(
    directory: str | Path, sample_id: str, probability: np.ndarray, threshold: float = 0.5
) -> tuple[Path, Path]:
    """Write one sample's foreground probability and the mask derived from it.

    Args:
        directory: ``results/predictions/<model>``.
        sample_id: the sample.
        probability: foreground probability, shape (Y, X), values in [0, 1].
        threshold: probability at or above which a pixel is foreground.

    Returns:
        The (mask, probability) paths written.

    Raises:
        ValueError: if ``probability`` is not 2-D, not finite, or outside [0, 1].
    """
    probability = np.asarray(probability, dtype=np.float32)
    if probability.ndim != 2:
        raise ValueError(f"probability must be 2-D (Y, X), got shape {probability.shape}")
    if not np.isfinite(probability).all():
        raise ValueError(f"probability of sample {sample_id!r} has non-finite values")
    if probability.min() < 0 or probability.max() > 1:
        raise ValueError(f"probability of sample {sample_id!r} is outside [0, 1]")
    mask_path, probability_path = prediction_paths(directory, sample_id)
    mask = (probability >= threshold).astype(np.uint8)
    with atomic_path(probability_path) as tmp:
        tifffile.imwrite(tmp, probability, compression="zlib")
    with atomic_path(mask_path) as tmp:
        tifffile.imwrite(tmp, mask, compression="zlib")
    return mask_path, probability_path


def parse_prediction_path(path: str | Path) -> tuple[str, str, str]:
    """The (model, sample, kind) of a prediction file ``<dir>/<model>/<sample><suffix>``.

    Raises:
        InputError: the name ends in neither suffix.
    """
    path = Path(path)
    for kind, suffix in (("mask", MASK_SUFFIX), ("probability", PROBABILITY_SUFFIX)):
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.parent.name, path.name[: -len(suffix)], kind
    raise InputError(
        f"{path.name!r} is not a prediction file (<sample>{MASK_SUFFIX} or "
        f"<sample>{PROBABILITY_SUFFIX})",
        path=path,
        fix="pass the files in results/predictions/<model>/",
    )


def masks_by_model(paths: Sequence[str | Path]) -> dict[str, dict[str, Path]]:
    """Group predicted-mask files by model and sample: ``{model: {sample: path}}``.

    Raises:
        InputError: a file that is not a mask prediction.
    """
    grouped: dict[str, dict[str, Path]] = {}
    for path in map(Path, paths):
        model, sample, kind = parse_prediction_path(path)
        if kind != "mask":
            raise InputError(
                f"expected a predicted mask (<sample>{MASK_SUFFIX}), got {path.name!r}",
                path=path,
                fix="pass the models' mask files",
            )
        grouped.setdefault(model, {})[sample] = path
    return grouped


def _read_2d(path: Path, sample_id: str, what: str, fix: str) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"the {what} does not exist", sample=sample_id, path=path, fix=fix)
    with open_tiff(path, sample_id, what, fix) as tif:
        array = np.squeeze(tif.asarray())
    if array.ndim != 2:
        raise InputError(
            f"the {what} has shape {array.shape}; expected a 2-D image",
            sample=sample_id, path=path, fix=fix,
        )  # fmt: skip
    return array


def read_predicted_mask(path: str | Path, sample_id: str, fix: str) -> np.ndarray:
    """A predicted mask (bool (Y, X)), checked: it exists, is a 2-D image of 0 and 1.

    Args:
        path: the ``<sample>.mask.tif``.
        sample_id: the sample, for messages.
        fix: what to do about a bad file (which rule to rerun).

    Raises:
        InputError: a missing, unreadable or not 2-D file, or values other than 0 and 1.
    """
    path = Path(path)
    mask = _read_2d(path, sample_id, "predicted mask", fix)
    if mask.dtype.kind not in "biu" or (mask.size and (mask.min() < 0 or mask.max() > 1)):
        raise InputError(
            "the predicted mask must hold 0 and 1 only", sample=sample_id, path=path, fix=fix
        )
    return mask != 0


def predictions_by_sample(paths: Sequence[str | Path]) -> dict[str, dict[str, Path]]:
    """Group one model's prediction files by sample: ``{sample: {"mask": path,
    "probability": path}}`` (the kinds among ``paths``).

    Raises:
        InputError: a file that is not a prediction, or files of more than one model.
    """
    grouped: dict[str, dict[str, Path]] = {}
    models = set()
    for path in map(Path, paths):
        model, sample, kind = parse_prediction_path(path)
        models.add(model)
        grouped.setdefault(sample, {})[kind] = path
    if len(models) > 1:
        raise InputError(
            f"expected the predictions of one model, got files of {sorted(models)}",
            fix="pass one model's files (results/predictions/<model>/)",
        )
    return grouped


def read_prediction(directory: str | Path, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one sample's (mask, probability) as written by :func:`write_prediction`.

    Raises:
        InputError: a missing or damaged file, masks that are not 0 / 1, probabilities
            outside [0, 1], or the two of different shapes.
    """
    return read_prediction_files(*prediction_paths(directory, sample_id), sample_id)


def read_prediction_files(
    mask_path: str | Path, probability_path: str | Path, sample_id: str
) -> tuple[np.ndarray, np.ndarray]:
    """Read one sample's (mask, probability) from their two files, checked as
    :func:`read_prediction`."""
    mask_path, probability_path = Path(mask_path), Path(probability_path)
    fix = f"rerun the prediction that writes {mask_path.parent}"
    mask = read_predicted_mask(mask_path, sample_id, fix).astype(np.uint8)
    probability = _read_2d(probability_path, sample_id, "predicted probability", fix)
    probability = probability.astype(np.float32, copy=False)
    if probability.shape != mask.shape or not (
        np.isfinite(probability).all() and probability.min() >= 0 and probability.max() <= 1
    ):
        raise InputError(
            "the predicted probability is not a map of values in [0, 1] of the mask's shape",
            sample=sample_id, path=probability_path, fix=fix,
        )  # fmt: skip
    return mask, probability


# New slides segmented by `snakemake predict`: one folder per slide, one file pair per
# model, OME-TIFF so that QuPath and Fiji read the pixel size with the pixels.
#: ``results/predict/<sample>/<model>.mask.ome.tif`` and ``...probability.ome.tif``.
SLIDE_MASK_SUFFIX = ".mask.ome.tif"
SLIDE_PROBABILITY_SUFFIX = ".probability.ome.tif"


def slide_prediction_paths(directory: str | Path, model: str) -> tuple[Path, Path]:
    """The (mask, probability) paths of one model's prediction of a new slide.

    Args:
        directory: the slide's folder, ``results/predict/<sample>``.
        model: the model.
    """
    directory = Path(directory)
    return (
        directory / f"{model}{SLIDE_MASK_SUFFIX}",
        directory / f"{model}{SLIDE_PROBABILITY_SUFFIX}",
    )


def write_slide_prediction(
    directory: str | Path,
    model: str,
    probability: np.ndarray,
    *,
    pixel_size_um: float | None = None,
    threshold: float = 0.5,
) -> tuple[Path, Path]:
    """Write one model's foreground probability of a new slide and its mask, as OME-TIFF.

    Args:
        directory: the slide's folder, ``results/predict/<sample>``.
        model: the model.
        probability: foreground probability, float (Y, X) in [0, 1].
        pixel_size_um: the slide's pixel size in µm, recorded in the OME metadata if known.
        threshold: probability at or above which a pixel is foreground.

    Returns:
        The (mask, probability) paths written.

    Raises:
        ValueError: as :func:`write_prediction`.
    """
    probability = np.asarray(probability, dtype=np.float32)
    if probability.ndim != 2 or not np.isfinite(probability).all():
        raise ValueError(f"probability must be finite and 2-D, got shape {probability.shape}")
    if probability.min() < 0 or probability.max() > 1:
        raise ValueError(f"the {model} probability is outside [0, 1]")
    metadata: dict[str, object] = {"axes": "YX"}
    if pixel_size_um:
        metadata |= {
            "PhysicalSizeX": pixel_size_um,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": pixel_size_um,
            "PhysicalSizeYUnit": "µm",
        }
    mask_path, probability_path = slide_prediction_paths(directory, model)
    mask = (probability >= threshold).astype(np.uint8)
    for path, array in ((probability_path, probability), (mask_path, mask)):
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, array, ome=True, metadata=metadata, compression="zlib")
    return mask_path, probability_path


def read_slide_mask(directory: str | Path, model: str, sample_id: str) -> np.ndarray:
    """One model's predicted mask of a new slide (bool (Y, X)), checked as
    :func:`read_predicted_mask`."""
    path = slide_prediction_paths(directory, model)[0]
    return read_predicted_mask(path, sample_id, f"rerun snakemake predict for {model}")
