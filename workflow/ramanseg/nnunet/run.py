"""Planning, fold training and ensemble prediction through nnU-Net v2's Python API.

Call :func:`ramanseg.nnunet.environment.configure_nnunet` first; the ``nnunetv2``
imports here are inside the functions for that reason.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ramanseg.errors import InputError
from ramanseg.fileio import atomic_path
from ramanseg.nnunet.dataset import dataset_name
from ramanseg.nnunet.planners import planner_class, plans_identifier
from ramanseg.nnunet.settings import PredictionSettings, model_folder_name
from ramanseg.predictions import write_prediction
from ramanseg.preprocessed import read_stack
from ramanseg.runtime import configure_reproducibility

log = logging.getLogger(__name__)

#: nnU-Net's default predictor: mirroring, half-patch tile steps, every fold.
NNUNET_DEFAULT_PREDICTION = PredictionSettings()


def preprocessed_dataset_dir(dataset_id: int) -> Path:
    from nnunetv2.paths import nnUNet_preprocessed

    return Path(nnUNet_preprocessed.require()) / dataset_name(dataset_id)


def trained_model_dir(dataset_id: int, trainer: str, planner: str, configuration: str) -> Path:
    """nnU-Net's results folder of one trainer / plans / configuration."""
    from nnunetv2.paths import nnUNet_results

    return (
        Path(nnUNet_results.require())
        / dataset_name(dataset_id)
        / model_folder_name(trainer, planner, configuration)
    )


def plan_and_preprocess(
    dataset_id: int,
    planner: str,
    configuration: str,
    fingerprint_voxels: int,
    processes: int,
) -> Path:
    """Fingerprint, plan and preprocess the raw dataset; install our folds.

    The fingerprint is extracted first with a bounded number of foreground voxels per
    case (nnU-Net samples 1e8 per channel by default, which exhausts 24 GB for 24
    channels); planning and preprocessing then reuse it.

    Args:
        dataset_id: nnU-Net's dataset id (the raw dataset must exist).
        planner: a Residual-Encoder planner class name (``nnUNetPlannerResEncM`` ...,
            or our ``nnUNetPlannerResEncDemo``).
        configuration: the configuration to preprocess (``2d``).
        fingerprint_voxels: foreground voxels sampled for the intensity statistics.
        processes: processes for fingerprinting and preprocessing.

    Returns:
        The preprocessed dataset folder, holding the plans and ``splits_final.json``.
    """
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
        DatasetFingerprintExtractor,
    )
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        plan_experiment_dataset,
        preprocess,
    )
    from nnunetv2.paths import nnUNet_raw

    identifier = plans_identifier(planner)
    # The planner sizes torch's thread pool by the augmentation process count, which must
    # be positive here even where training augments in the main process (0).
    os.environ["nnUNet_n_proc_DA"] = str(max(int(os.environ.get("nnUNet_n_proc_DA", "1")), 1))
    raw_dir = Path(nnUNet_raw.require()) / dataset_name(dataset_id)
    extractor = DatasetFingerprintExtractor(dataset_id, processes, verbose=False)
    extractor.num_foreground_voxels_for_intensitystats = fingerprint_voxels
    extractor.run(overwrite_existing=True)
    _, written = plan_experiment_dataset(dataset_id, planner_class(planner))
    if written != identifier:
        raise RuntimeError(f"planner {planner} wrote plans {written!r}, expected {identifier!r}")
    preprocess([dataset_id], identifier, [configuration], [processes], show_progress_bar=False)
    target = preprocessed_dataset_dir(dataset_id)
    # nnU-Net uses splits_final.json when present: our patient-grouped folds.
    shutil.copyfile(raw_dir / "splits_final.json", target / "splits_final.json")
    return target


def slim_checkpoints(fold_dir: str | Path, keep_best: bool = False) -> None:
    """Drop what prediction does not need: the optimiser state and ``checkpoint_best``.

    A full checkpoint of the paper's network is about 850 MB, most of it optimiser state.
    A slimmed ``checkpoint_final.pth`` still loads in ``nnUNetPredictor``; it cannot
    continue a training, which :func:`train_fold` never asks of a finished fold.
    """
    fold_dir = Path(fold_dir)
    final = fold_dir / "checkpoint_final.pth"
    checkpoint = torch.load(final, map_location="cpu", weights_only=False)
    checkpoint.pop("optimizer_state", None)
    checkpoint.pop("grad_scaler_state", None)
    with atomic_path(final) as tmp:
        torch.save(checkpoint, tmp)
    best = fold_dir / "checkpoint_best.pth"
    if best.exists() and not keep_best:
        best.unlink()


def train_fold(
    dataset_id: int,
    configuration: str,
    fold: int,
    trainer: str,
    planner: str,
    device: torch.device,
    seed: int,
    deterministic: bool,
    keep_best_checkpoint: bool = False,
) -> Path:
    """Train one fold, resuming from ``checkpoint_latest.pth`` when a run was cut off.

    Args:
        dataset_id: nnU-Net's dataset id (planned and preprocessed).
        configuration: the nnU-Net configuration (``2d``).
        fold: the fold index in ``splits_final.json``.
        trainer: the trainer class name (nnU-Net's own, or ours via ``nnUNet_extTrainer``).
        planner: the planner whose plans to train with.
        device: the torch device.
        seed: seeds Python, NumPy and torch before the trainer is built.
        deterministic: deterministic algorithms (with augmentation in the main process,
            set by ``configure_nnunet``).
        keep_best_checkpoint: keep ``checkpoint_best.pth`` after training.

    Returns:
        The fold's output folder.
    """
    from nnunetv2.run.run_training import run_training

    if deterministic:
        # Augmentation in the main process, whose random numbers we seed below.
        os.environ["nnUNet_n_proc_DA"] = "0"

    fold_dir = trained_model_dir(dataset_id, trainer, planner, configuration) / f"fold_{fold}"
    resume = (fold_dir / "checkpoint_latest.pth").is_file()
    if not resume and fold_dir.exists():
        # A finished (slimmed) or foreign fold folder: train afresh rather than mix runs.
        shutil.rmtree(fold_dir)
    log.info("fold %d: %s", fold, "resuming from checkpoint_latest.pth" if resume else "new run")
    configure_reproducibility(seed + fold, deterministic, device)
    if device.type == "cpu":
        torch.set_num_threads(max(torch.get_num_threads(), 1))
    run_training(
        str(dataset_id),
        configuration,
        fold,
        trainer_class_name=trainer,
        plans_identifier=plans_identifier(planner),
        continue_training=resume,
        device=device,
    )
    slim_checkpoints(fold_dir, keep_best_checkpoint)
    return fold_dir


def validation_dice(fold_dir: str | Path) -> float:
    """The fold's foreground Dice on its validation cases, from nnU-Net's summary."""
    summary = json.loads((Path(fold_dir) / "validation" / "summary.json").read_text())
    return float(summary["foreground_mean"]["Dice"])


def fold_validation_dice(model_dir: str | Path, folds: Sequence[int]) -> dict[int, float]:
    """Each fold's foreground Dice on its validation cases (nnU-Net's summaries).

    Args:
        model_dir: the trained model folder (holding ``fold_<k>``).
        folds: the folds.

    Raises:
        InputError: a fold without ``validation/summary.json``.
    """
    dice = {}
    for fold in folds:
        fold_dir = Path(model_dir) / f"fold_{fold}"
        summary = fold_dir / "validation" / "summary.json"
        if not summary.is_file():
            raise InputError(
                f"fold {fold} has no validation summary, by which the best folds are chosen",
                path=summary,
                fix="train the fold to its end (nnU-Net validates it then), or list the "
                "folds to ensemble in nnunet.prediction.folds / nnunet.fast_prediction.folds",
            )
        dice[fold] = validation_dice(fold_dir)
    return dice


def ensemble_folds(
    model_dir: str | Path, trained: Sequence[int], prediction: PredictionSettings
) -> list[int]:
    """The folds ``prediction`` ensembles out of the ``trained`` ones (see
    :meth:`PredictionSettings.select_folds`; the best ``k`` by validation Dice where its
    ``folds`` is a number).

    Args:
        model_dir: the trained model folder.
        trained: the trained folds.
        prediction: the predictor's settings.

    Raises:
        ConfigError: folds the model does not have.
        InputError: a fold without its validation summary, where the best are chosen.
    """
    dice = fold_validation_dice(model_dir, trained) if prediction.needs_validation_dice else None
    return prediction.select_folds(trained, dice)


def load_ensemble(
    model_dir: str | Path,
    folds: Sequence[int],
    device: torch.device,
    prediction: PredictionSettings = NNUNET_DEFAULT_PREDICTION,
):
    """An ``nnUNetPredictor`` holding every fold's weights (``predictor.list_of_parameters``).

    Sliding windows with Gaussian weighting; the tile step and mirroring as ``prediction``
    says (by default nnU-Net's: half-patch steps, mirroring as trained).

    Args:
        model_dir: the trained model folder (holding ``fold_<k>``).
        folds: the folds to load (``prediction.folds`` is not consulted here: the caller
            chose them with :func:`ensemble_folds`).
        device: the torch device.
        prediction: the predictor's settings.
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(
        tile_step_size=prediction.tile_step_size,
        use_gaussian=True,
        use_mirroring=prediction.mirroring,
        perform_everything_on_device=prediction.perform_everything_on_device
        and device.type == "cuda",
        device=device,
        verbose=False,
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(
        str(model_dir), use_folds=tuple(folds), checkpoint_name="checkpoint_final.pth"
    )
    return predictor


def predict_probability(predictor, stack: np.ndarray) -> np.ndarray:
    """The ensemble's foreground probability of one preprocessed stack.

    Args:
        predictor: from :func:`load_ensemble`.
        stack: (C, Y, X) float32.

    Returns:
        (Y, X) float32 in [0, 1].
    """
    # nnU-Net's 2-D layout: (channels, 1, Y, X) with a dummy first spatial axis.
    _, probabilities = predictor.predict_single_npy_array(
        stack[:, None], {"spacing": [999.0, 1.0, 1.0]}, None, None, True
    )
    return np.clip(probabilities[1][0], 0.0, 1.0).astype(np.float32)


def predict_ensemble(
    model_dir: str | Path,
    folds: Sequence[int],
    stacks: Mapping[str, str | Path],
    outdir: str | Path,
    device: torch.device,
    prediction: PredictionSettings = NNUNET_DEFAULT_PREDICTION,
) -> dict:
    """Predict samples with the ensemble of ``folds``, in the shared prediction format.

    Args:
        model_dir: the trained model folder (holding ``fold_<k>``).
        folds: the folds to ensemble.
        stacks: sample id -> preprocessed ``stack.ome.tif``.
        outdir: ``results/predictions/nnunet``.
        device: the torch device.
        prediction: the predictor's settings (mirroring, tile step).

    Returns:
        Timing: total seconds of prediction, megapixels, seconds per megapixel, and the
        settings it ran with.
    """
    predictor = load_ensemble(model_dir, folds, device, prediction)
    seconds = 0.0
    pixels = 0
    for sample, path in stacks.items():
        stack, _ = read_stack(path, sample)
        start = time.perf_counter()
        probability = predict_probability(predictor, stack)
        seconds += time.perf_counter() - start
        pixels += stack.shape[1] * stack.shape[2]
        write_prediction(outdir, sample, probability)
    megapixels = pixels / 1e6
    return {
        "seconds": seconds,
        "megapixels": megapixels,
        "seconds_per_megapixel": seconds / megapixels if megapixels else float("nan"),
        "folds": list(folds),
        "samples": len(stacks),
        "device": str(device),
        "mirroring": prediction.mirroring,
        "tile_step_size": prediction.tile_step_size,
    }
