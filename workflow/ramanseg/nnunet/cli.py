"""``ramanseg nnunet-*`` commands: export, plan, train one fold, predict.

The benchmark ``bench-nnunet`` lives in :mod:`ramanseg.benchmarks.nnunet`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ramanseg.fileio import write_json
from ramanseg.nnunet.settings import NnunetSettings
from ramanseg.preprocessed import files_by_sample, files_of
from ramanseg.split import read_split


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    from ramanseg.cli import add_settings_arguments

    parser.add_argument(
        "--nnunet-dir",
        required=True,
        type=Path,
        help="folder holding nnU-Net's raw, preprocessed and trained folders",
    )
    parser.add_argument("--threads", type=int, default=1, help="processes nnU-Net may use")
    add_settings_arguments(parser)
    # Only training and prediction take --trained-dir (add_trained_argument).
    parser.set_defaults(trained_dir=None)


def add_trained_argument(parser: argparse.ArgumentParser) -> None:
    """``--trained-dir``: the results folder of a run with another seed."""
    parser.add_argument(
        "--trained-dir",
        type=Path,
        help="nnU-Net's results folder (default: the trained folder of --nnunet-dir); "
        "a run with another seed trains into its own from the same preprocessed data",
    )


def configure_command(args: argparse.Namespace) -> tuple[dict, NnunetSettings]:
    """The command's configuration and its typed nnU-Net settings, with nnU-Net's
    environment configured for them."""
    from ramanseg.cli import settings_from_args
    from ramanseg.nnunet.environment import configure_nnunet

    config = settings_from_args(args)
    nnunet = NnunetSettings.from_config(config)
    configure_nnunet(
        args.nnunet_dir,
        trained=args.trained_dir,
        processes=args.threads,
        deterministic=nnunet.deterministic,
        epochs=nnunet.epochs,
        iterations_per_epoch=nnunet.iterations_per_epoch,
        batch_size=nnunet.batch_size,
    )
    return config, nnunet


def _export(args: argparse.Namespace) -> int:
    from ramanseg.nnunet.dataset import export_raw_dataset
    from ramanseg.nnunet.environment import nnunet_folders

    config, nnunet = configure_command(args)
    split = read_split(args.split)
    raw_root = nnunet_folders(args.nnunet_dir)["nnUNet_raw"]
    files = files_by_sample(stacks=args.stacks, masks=args.masks)
    export_raw_dataset(files, split, config, raw_root, nnunet.dataset_id)
    return 0


def _plan(args: argparse.Namespace) -> int:
    from ramanseg.nnunet.run import plan_and_preprocess

    _, nnunet = configure_command(args)
    plan_and_preprocess(
        nnunet.dataset_id,
        nnunet.planner,
        nnunet.configuration,
        nnunet.fingerprint_voxels,
        args.threads,
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from ramanseg.nnunet.run import train_fold, validation_dice
    from ramanseg.runtime import resolve_device

    _, nnunet = configure_command(args)
    fold_dir = train_fold(
        nnunet.dataset_id,
        nnunet.configuration,
        args.fold,
        nnunet.trainer,
        nnunet.planner,
        resolve_device(nnunet.device),
        seed=nnunet.seed,
        deterministic=nnunet.deterministic,
        keep_best_checkpoint=nnunet.keep_best_checkpoint,
    )
    print(f"fold {args.fold}: validation Dice {validation_dice(fold_dir):.4f}")
    return 0


def trained_model_dir(nnunet: NnunetSettings) -> Path:
    """The trained model's folder in the configured nnU-Net results folder."""
    from nnunetv2.paths import nnUNet_results

    return Path(nnunet.trained_model_dir(nnUNet_results.require()))


def _predict(args: argparse.Namespace) -> int:
    from ramanseg.nnunet.run import ensemble_folds, predict_ensemble
    from ramanseg.runtime import resolve_device

    _, nnunet = configure_command(args)
    prediction = nnunet.fast_prediction if args.fast else nnunet.prediction
    split = read_split(args.split)
    model_dir = trained_model_dir(nnunet)
    folds = ensemble_folds(model_dir, range(len(split["folds"])), prediction)
    files = files_by_sample(stacks=args.stacks)
    stacks = {sample: files_of(files, sample).path("stack", "--stacks") for sample in split["test"]}
    timing = predict_ensemble(
        model_dir,
        folds,
        stacks,
        args.outdir,
        resolve_device(nnunet.device),
        prediction,
    )
    write_json(args.timing, timing)
    return 0


def _files_argument(parser: argparse.ArgumentParser, option: str, what: str) -> None:
    parser.add_argument(
        option, required=True, nargs="+", metavar="FILE", help=f"the preprocessed {what}"
    )


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "nnunet-export",
        help="write the preprocessed samples as an nnU-Net raw dataset with our folds",
    )
    add_common_arguments(parser)
    _files_argument(parser, "--stacks", "stack.ome.tif of every sample")
    _files_argument(parser, "--masks", "mask.tif of the training and validation samples")
    parser.add_argument("--split", required=True, type=Path, help="the split JSON")
    parser.set_defaults(func=_export)

    parser = subparsers.add_parser(
        "nnunet-plan",
        help="fingerprint (bounded memory), plan with a ResEnc planner, preprocess",
    )
    add_common_arguments(parser)
    parser.set_defaults(func=_plan)

    parser = subparsers.add_parser(
        "nnunet-train", help="train one fold; resumes from its last checkpoint"
    )
    add_common_arguments(parser)
    add_trained_argument(parser)
    parser.add_argument("--fold", required=True, type=int, help="fold index")
    parser.set_defaults(func=_train)

    parser = subparsers.add_parser(
        "nnunet-predict",
        help="predict the test samples with the fold ensemble (settings: nnunet.prediction)",
    )
    add_common_arguments(parser)
    add_trained_argument(parser)
    _files_argument(parser, "--stacks", "stack.ome.tif of the test samples")
    parser.add_argument("--split", required=True, type=Path, help="the split JSON")
    parser.add_argument("--outdir", required=True, type=Path, help="results/predictions/nnunet")
    parser.add_argument("--timing", required=True, type=Path, help="JSON file for the timing")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="predict with the fast preset nnunet.fast_prediction instead of "
        "nnunet.prediction (nnU-Net's default predictor)",
    )
    parser.set_defaults(func=_predict)
