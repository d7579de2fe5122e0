"""Inference throughput of our trained models next to nnU-Net's: ``ramanseg bench-inference``.

Each trained model (``<models-dir>/<model>/model.pt`` + ``model.json``) predicts one synthetic
square image of the configuration's channel count by overlapping sliding windows of its
training patch size, as ``predict-model`` does
(:func:`ramanseg.models.inference.measure_throughput`: one untimed run, then the median of
``repeats`` timed runs). nnU-Net's numbers come from the
JSON that ``ramanseg bench-nnunet`` wrote on the same machine (its ensemble predicting an image
of the same size). The result, per model: megapixels per second, seconds per megapixel and
the ratio of its throughput to nnU-Net's (above 1: faster than nnU-Net).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ramanseg.config import ConfigError
from ramanseg.errors import InputError
from ramanseg.fileio import write_json

logger = logging.getLogger(__name__)

__all__ = ["NNUNET_KEYS", "add_commands", "bench_inference", "format_table", "read_nnunet_timing"]

#: The keys read from ``bench-nnunet``'s JSON.
NNUNET_KEYS = ("seconds_per_megapixel", "megapixels_per_second")


def read_nnunet_timing(path: str | Path) -> dict[str, Any]:
    """nnU-Net's inference speed as ``ramanseg bench-nnunet`` wrote it.

    Args:
        path: the JSON file.

    Returns:
        The file's content; :data:`NNUNET_KEYS` are positive finite numbers.

    Raises:
        InputError: a missing file, invalid JSON, or a missing or non-positive number.
    """
    path = Path(path)
    fix = f"run `ramanseg bench-nnunet --out {path}` after training nnU-Net"
    if not path.is_file():
        raise InputError("the nnU-Net timing file does not exist", path=path, fix=fix)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(
            f"the nnU-Net timing is not valid JSON ({error})", path=path, fix=fix
        ) from error
    if not isinstance(data, dict):
        raise InputError("the nnU-Net timing is not a JSON object", path=path, fix=fix)
    for key in NNUNET_KEYS:
        value = data.get(key)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise InputError(
                f"the nnU-Net timing has no positive number {key!r} (got {value!r})",
                path=path,
                fix=fix,
            )
    return data


def bench_inference(
    models_dir: str | Path,
    models: Sequence[str],
    config: Mapping[str, Any],
    *,
    size: int = 512,
    repeats: int = 3,
    nnunet_json: str | Path | None = None,
) -> dict[str, Any]:
    """Time sliding-window prediction of every model and compare with nnU-Net.

    Args:
        models_dir: the folder holding one training folder per model (``results/models``).
        models: the model names (folder names, as trained by ``train-model``).
        config: the configuration (``channels``, ``device``, ``models.training.batch_size``
            and ``mixed_precision``, ``seed``).
        size: side of the square synthetic image.
        repeats: timed runs per model (the median counts).
        nnunet_json: ``bench-nnunet``'s output, or None for no comparison.

    Returns:
        ``{"image_size", "repeats", "device", "threads", "models": {name: {...}}, "nnunet"}``;
        each model has ``megapixels_per_second``, ``seconds_per_megapixel``,
        ``seconds`` (median per image), ``patch_size``, ``parameters`` and, with nnU-Net,
        ``throughput_ratio_to_nnunet`` (its megapixels per second over nnU-Net's).

    Raises:
        ValueError: no models, a repeated model, or a size or repeat count below 1.
        InputError: a model that is not trained (naming the rule that trains it), a model
            whose channel count differs from the configuration's, or a bad nnU-Net file.
    """
    import torch

    from ramanseg.cli import configured_device

    if not models:
        raise ValueError("bench-inference needs at least one model")
    if len(set(models)) != len(models):
        raise ValueError(f"models are repeated: {list(models)}")
    if size < 1 or repeats < 1:
        raise ValueError(f"size and repeats must be at least 1, got {size} and {repeats}")
    models_dir = Path(models_dir)
    # Everything is checked before the first (slow) measurement.
    nnunet = read_nnunet_timing(nnunet_json) if nnunet_json is not None else None
    _check_trained(models_dir, models)
    device = configured_device(config)
    result: dict[str, Any] = {
        "image_size": size,
        "repeats": repeats,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "models": {},
        "nnunet": None,
    }
    for name in models:
        row = _time_model(models_dir / name, config, device, size=size, repeats=repeats)
        if nnunet is not None:
            row["throughput_ratio_to_nnunet"] = (
                row["megapixels_per_second"] / nnunet["megapixels_per_second"]
            )
        result["models"][name] = row
        logger.info("%s: %.3f megapixels per second", name, row["megapixels_per_second"])
    if nnunet is not None:
        result["nnunet"] = {
            "megapixels_per_second": float(nnunet["megapixels_per_second"]),
            "seconds_per_megapixel": float(nnunet["seconds_per_megapixel"]),
            "image_size": nnunet.get("image_size"),
            "device": nnunet.get("device"),
            "source": str(nnunet_json),
        }
        if nnunet.get("image_size") not in (None, size):
            logger.warning(
                "nnU-Net was timed on %s px images, our models on %d px",
                nnunet.get("image_size"),
                size,
            )
    return result


def _check_trained(models_dir: Path, models: Sequence[str]) -> None:
    """Raise an InputError naming the rule that trains a model whose files are missing."""
    from ramanseg.catalog import MODELS_BY_NAME
    from ramanseg.models.folder import METADATA_NAME, WEIGHTS_NAME, read_metadata

    for name in models:
        folder = models_dir / name
        info = MODELS_BY_NAME.get(name)
        rule = info.trained_by if info and info.trained_by else "train_model"
        fix = (
            f"train it first (rule {rule}: `snakemake {folder / WEIGHTS_NAME}`, or "
            f"`ramanseg train-model --model {name} --outdir {folder} ...`)"
        )
        for file_name in (METADATA_NAME, WEIGHTS_NAME):
            if not (folder / file_name).is_file():
                raise InputError(
                    f"model {name!r} is not trained: {file_name} is missing",
                    path=folder / file_name,
                    fix=fix,
                )
        read_metadata(folder, fix=fix)


def _time_model(
    folder: Path, config: Mapping[str, Any], device: Any, *, size: int, repeats: int
) -> dict[str, Any]:
    """Load the trained model in ``folder`` and time its sliding-window prediction.

    Args:
        folder: the model's training folder (its name is the model's).
        config: the configuration (``channels``, ``models.training``, ``seed``).
        device: the torch device.
        size: side of the square synthetic image.
        repeats: timed runs (the median counts).

    Returns:
        The model's row of :func:`bench_inference`'s result, without the nnU-Net ratio.

    Raises:
        InputError: the model's channel count differs from the configuration's.
    """
    from ramanseg.models.folder import METADATA_NAME
    from ramanseg.models.inference import measure_throughput
    from ramanseg.models.training import load_trained_model

    name = folder.name
    channels = config.get("channels") or []
    training = config.get("models", {}).get("training", {})
    model, metadata = load_trained_model(folder, device)
    in_channels = int(metadata["in_channels"])
    if channels and in_channels != len(channels):
        raise InputError(
            f"model {name!r} takes {in_channels} channels, the configuration has {len(channels)}",
            path=folder / METADATA_NAME,
            fix=f"retrain {name} with this configuration (rule train_model)",
        )
    timing = measure_throughput(
        model,
        in_channels,
        int(metadata["patch_size"]),
        device,
        height=size,
        width=size,
        batch_size=int(training.get("batch_size", 4)),
        mixed_precision=bool(training.get("mixed_precision", False)),
        repeats=repeats,
        seed=int(config.get("seed", 0)),
    )
    return {
        "megapixels_per_second": timing["megapixels_per_second"],
        "seconds_per_megapixel": timing["seconds"] / timing["megapixels"],
        "seconds": timing["seconds"],
        "patch_size": int(metadata["patch_size"]),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def format_table(result: Mapping[str, Any]) -> str:
    """The result as a plain-text table, one row per model, nnU-Net last."""
    rows = [
        (name, row["megapixels_per_second"], row["seconds_per_megapixel"],
         row.get("throughput_ratio_to_nnunet"))
        for name, row in result["models"].items()
    ]  # fmt: skip
    if result.get("nnunet"):
        nnunet = result["nnunet"]
        rows.append(
            ("nnunet", nnunet["megapixels_per_second"], nnunet["seconds_per_megapixel"], 1.0)
        )
    header = f"{'model':<18} {'MP/s':>10} {'s/MP':>10} {'x nnU-Net':>10}"
    lines = [header, "-" * len(header)]
    for name, mps, spm, ratio in rows:
        shown = "" if ratio is None else f"{ratio:.3f}"
        lines.append(f"{name:<18} {mps:>10.4f} {spm:>10.4f} {shown:>10}")
    return "\n".join(lines)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench-inference`` to the ``ramanseg`` command line."""
    from ramanseg.cli import add_settings_arguments, add_torch_threads_argument

    parser = subparsers.add_parser(
        "bench-inference",
        help="inference throughput of the trained models, next to nnU-Net's",
        description="Time sliding-window prediction of a synthetic square image by each "
        "trained model and write megapixels per second, seconds per megapixel and the "
        "throughput ratio to nnU-Net (from bench-nnunet's JSON) to one JSON file.",
    )
    parser.add_argument(
        "--models-dir", required=True, metavar="DIR", help="folder of training folders"
    )
    parser.add_argument(
        "--models", nargs="+", required=True, metavar="NAME", help="models (folder names)"
    )
    parser.add_argument(
        "--nnunet-json", metavar="JSON", help="bench-nnunet's output (omit: no comparison)"
    )
    parser.add_argument("--size", type=int, default=512, help="image side (default: 512)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (default: 3)")
    parser.add_argument("--out", required=True, metavar="JSON", help="the result file")
    add_torch_threads_argument(parser)
    add_settings_arguments(parser)
    parser.set_defaults(func=run_bench_inference)


def run_bench_inference(args: argparse.Namespace) -> int:
    """``ramanseg bench-inference``."""
    from ramanseg.cli import set_torch_threads, settings_from_args

    config = settings_from_args(args)
    for option, value in (("--size", args.size), ("--repeats", args.repeats)):
        if value < 1:
            raise ConfigError(f"{option} must be at least 1, got {value}")
    set_torch_threads(args.threads)
    try:
        result = bench_inference(
            args.models_dir,
            args.models,
            config,
            size=args.size,
            repeats=args.repeats,
            nnunet_json=args.nnunet_json,
        )
    except ValueError as error:
        if isinstance(error, InputError | ConfigError):
            raise
        raise ConfigError(str(error)) from error
    write_json(args.out, result)
    print(format_table(result))
    return 0
