"""Commands of the models stage: ``train-model``, ``predict-model`` and ``fit-baseline``.

``--model`` names an entry of :data:`ramanseg.models.training.MODEL_REGISTRY`, whose
builders read ``config["models"][<model>]``. Settings come from ``--config`` or
``--settings`` (a rule passes ``seed``, ``deterministic``, ``device`` and ``models`` with
``training`` and the model's own section).
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

from ramanseg.cli import (
    add_settings_arguments,
    add_split_data_arguments,
    add_torch_threads_argument,
    configured_device,
    set_torch_threads,
    settings_from_args,
)
from ramanseg.config import ConfigError, require
from ramanseg.errors import InputError
from ramanseg.fileio import write_json

if TYPE_CHECKING:
    from ramanseg.models.data import Sample
    from ramanseg.models.training import ModelEntry

logger = logging.getLogger(__name__)

SUBSETS = ("train", "val", "test")
#: ``ramanseg.models.inference.BLEND_MODES``, repeated so that building the parser (which
#: the command line does for every command) does not import torch; a test keeps them equal.
BLEND_MODES = ("gaussian", "linear", "constant")


def _entry(name: str) -> ModelEntry:
    from ramanseg.models.training import get_model_entry

    try:
        return get_model_entry(name)
    except ValueError as error:
        raise ConfigError(f"--model: {error}") from error


def _split(args: argparse.Namespace) -> dict[str, Any]:
    from ramanseg.split import read_split

    return read_split(args.split)


def _samples(
    args: argparse.Namespace, sample_ids: list[str], what: str, *, labels: bool = True
) -> list[Sample]:
    """The preprocessed samples ``sample_ids`` from the files the command was given."""
    from ramanseg.models.data import load_samples
    from ramanseg.preprocessed import files_by_sample

    if not sample_ids:
        raise InputError(
            f"the split has no {what} samples", path=args.split, fix="check the split settings"
        )
    files = files_by_sample(
        stacks=args.stacks,
        masks=getattr(args, "masks", None),
        foregrounds=getattr(args, "foregrounds", None),
    )
    return load_samples(files, sample_ids, labels=labels)


def _check_channels(samples: list[Sample], in_channels: int, names: list[str], what: str) -> None:
    for sample in samples:
        if sample.image.shape[0] != in_channels:
            raise InputError(
                f"the stack has {sample.image.shape[0]} channels, the {what} was trained on "
                f"{in_channels}",
                sample=sample.sample_id,
                fix="predict samples preprocessed with the training channel configuration",
            )
        if names and sample.channel_names and list(sample.channel_names) != names:
            raise InputError(
                f"the stack's channels {list(sample.channel_names)} differ from the {what}'s "
                f"training channels {names}",
                sample=sample.sample_id,
                fix="predict samples preprocessed with the training channel configuration",
            )


def run_train_model(args: argparse.Namespace) -> int:
    """``ramanseg train-model``: train a registered model on the training split."""
    from ramanseg.models.training import TrainingSettings, configure_reproducibility, train

    config = settings_from_args(args)
    set_torch_threads(args.threads)
    entry = _entry(args.model)
    settings = TrainingSettings.from_config(config)
    device = configured_device(config)
    split = _split(args)
    train_samples = _samples(args, split["train"], "training")
    val_samples = _samples(args, split["val"], "validation") if split["val"] else []
    architecture = entry.architecture(config, args.model, train_samples[0].image.shape[0])
    # Seed before building: the initial weights come from the seeded generator.
    configure_reproducibility(settings.seed, settings.deterministic, device)
    model = entry.build(**architecture)
    strategy = entry.strategy(config, args.model, model)
    result = train(
        model,
        strategy,
        train_samples,
        val_samples,
        settings,
        args.outdir,
        model_name=args.model,
        architecture=architecture,
        hyperparameters=require(config, f"models.{args.model}"),
        progress=False if args.no_progress else None,
        restart=args.restart,
        keep_checkpoint=args.keep_checkpoint,
    )
    logger.info(
        "%s: kept epoch %d (validation Dice %.4f); wrote %s",
        args.model,
        result.selected_epoch,
        result.val_dice,
        result.weights,
    )
    return 0


def run_predict_model(args: argparse.Namespace) -> int:
    """``ramanseg predict-model``: sliding-window prediction of a split's samples."""
    from ramanseg.models.inference import predict_samples
    from ramanseg.models.training import load_trained_model

    config = settings_from_args(args)
    set_torch_threads(args.threads)
    _entry(args.model)
    if not 0.0 <= args.overlap < 1.0:
        raise ConfigError(f"--overlap must lie in [0, 1), got {args.overlap}")
    for option, value in (("--patch-size", args.patch_size), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{option} must be positive, got {value}")
    device = configured_device(config)
    model, metadata = load_trained_model(args.weights, device)
    if metadata["model"] != args.model:
        raise InputError(
            f"the weights are of model {metadata['model']!r}, not {args.model!r}",
            path=args.weights,
            fix="pass the matching --model and --weights",
        )
    samples = _samples(args, _split(args)[args.subset], args.subset, labels=False)
    _check_channels(samples, metadata["in_channels"], metadata.get("channel_names", []), "model")
    training = config.get("models", {}).get("training", {})
    run = predict_samples(
        model,
        samples,
        args.outdir,
        args.patch_size or metadata["patch_size"],
        device,
        overlap=args.overlap,
        blend=args.blend,
        batch_size=args.batch_size or training.get("batch_size", 4),
        mixed_precision=training.get("mixed_precision", True),
    )
    if args.timing:
        write_json(args.timing, {"model": args.model, **run.timing()})
    logger.info(
        "%s: wrote %d predictions to %s (%.2f megapixels in %.2f s)",
        args.model,
        len(run.masks),
        args.outdir,
        run.megapixels,
        run.seconds,
    )
    return 0


def run_fit_baseline(args: argparse.Namespace) -> int:
    """``ramanseg fit-baseline``: fit the per-pixel logistic regression and predict."""
    from ramanseg.models.baseline import fit_pixel_baseline, predict_baseline, save_baseline

    config = settings_from_args(args)
    if args.max_pixels < 1:
        raise ConfigError(f"--max-pixels must be positive, got {args.max_pixels}")
    split = _split(args)
    train_samples = _samples(args, split["train"], "training")
    try:
        model = fit_pixel_baseline(
            train_samples, max_pixels=args.max_pixels, seed=config.get("seed", 0)
        )
    except ValueError as error:
        raise InputError(str(error), path=args.split, fix="check the training masks") from error
    samples = _samples(args, split[args.subset], args.subset, labels=False)
    _check_channels(samples, model.in_channels, list(model.channel_names), "baseline")
    save_baseline(model, args.model_out)
    written = predict_baseline(model, samples, args.outdir)
    logger.info(
        "baseline: wrote %s and %d predictions to %s", args.model_out, len(written), args.outdir
    )
    return 0


def _add_data_arguments(parser: argparse.ArgumentParser, *, labels: bool = True) -> None:
    """``--stacks`` (and with ``labels`` ``--masks``, ``--foregrounds``), ``--split``,
    ``--threads``."""
    add_split_data_arguments(parser, labels=labels)
    add_torch_threads_argument(parser)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train-model``, ``predict-model`` and ``fit-baseline``."""

    models_help = "the model: a name in ramanseg.models.training.MODEL_REGISTRY (unet, unetr, ...)"

    parser = subparsers.add_parser(
        "train-model",
        help="train a PyTorch model (U-Net, UNETR, ...) with checkpoints and resume",
        description="Train on the split's training samples, validate on its validation "
        "samples after each epoch, checkpoint every epoch and resume from the last "
        "checkpoint. Writes model.pt, model.json and training_log.csv to --outdir.",
    )
    parser.add_argument("--model", required=True, help=models_help)
    _add_data_arguments(parser)
    parser.add_argument("--outdir", required=True, metavar="DIR", help="results/models/<model>")
    parser.add_argument(
        "--restart", action="store_true", help="ignore an existing checkpoint and start afresh"
    )
    parser.add_argument(
        "--keep-checkpoint",
        action="store_true",
        help="keep checkpoint_last.pt (with optimiser state) after training",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_settings_arguments(parser)
    parser.set_defaults(func=run_train_model)

    parser = subparsers.add_parser(
        "predict-model",
        help="predict whole images with a trained model (sliding windows)",
        description="Predict the samples of one split subset with overlapping sliding "
        "windows and write <sample>.mask.tif and <sample>.probability.tif to --outdir.",
    )
    parser.add_argument("--model", required=True, help=models_help)
    parser.add_argument(
        "--weights", required=True, metavar="DIR", help="train-model's --outdir (model.pt/json)"
    )
    _add_data_arguments(parser, labels=False)
    parser.add_argument(
        "--outdir", required=True, metavar="DIR", help="results/predictions/<model>"
    )
    parser.add_argument("--subset", choices=SUBSETS, default="test", help="default: test")
    parser.add_argument(
        "--overlap", type=float, default=0.5, help="window overlap in [0, 1) (default: 0.5)"
    )
    parser.add_argument("--blend", choices=BLEND_MODES, default="gaussian")
    parser.add_argument(
        "--timing", metavar="JSON", help="also write the prediction time (megapixels per second)"
    )
    parser.add_argument(
        "--patch-size", type=int, help="window side (default: the training patch size)"
    )
    parser.add_argument(
        "--batch-size", type=int, help="windows per pass (default: models.training.batch_size)"
    )
    add_settings_arguments(parser)
    parser.set_defaults(func=run_predict_model)

    parser = subparsers.add_parser(
        "fit-baseline",
        help="fit the per-pixel logistic-regression baseline and predict",
        description="Fit logistic regression on the channel vectors of a seeded subsample "
        "of training pixels (balanced class weights), write it as JSON and predict a "
        "split subset in the shared prediction format.",
    )
    _add_data_arguments(parser)
    parser.add_argument(
        "--model-out", required=True, metavar="JSON", help="results/models/<name>/model.json"
    )
    parser.add_argument("--outdir", required=True, metavar="DIR", help="results/predictions/<name>")
    parser.add_argument("--subset", choices=SUBSETS, default="test", help="default: test")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=200_000,
        help="training pixels subsampled for the fit (default: 200000)",
    )
    add_settings_arguments(parser)
    parser.set_defaults(func=run_fit_baseline)
