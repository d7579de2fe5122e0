"""nnU-Net ensemble inference time per megapixel: ``ramanseg bench-nnunet``.

The trained folds of the configured nnU-Net model (``nnunet.dataset_id``, ``trainer``,
``planner``, ``configuration`` under ``--nnunet-dir``) are loaded as one ensemble, which
predicts a synthetic square image of the configuration's channel count with nnU-Net's own
sliding windows, Gaussian blending and mirroring, as ``nnunet-predict`` does: one untimed
run, then the median of ``repeats`` timed runs. ``bench-inference`` reads the JSON written
here to compare our models' throughput with nnU-Net's.

    ramanseg bench-nnunet --nnunet-dir results/nnunet --out results/benchmarks/nnunet_inference.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ramanseg.errors import InputError
from ramanseg.fileio import write_json

#: The image properties nnU-Net's predictor needs for a 2-D image of 1 x 1 pixel spacing.
PROPERTIES_2D = {"spacing": [999.0, 1.0, 1.0]}


def trained_folds(model_dir: str | Path) -> list[int]:
    """The fold numbers of ``model_dir/fold_<k>``, sorted.

    Args:
        model_dir: nnU-Net's trained model folder.

    Returns:
        The folds.

    Raises:
        InputError: no trained fold.
    """
    model_dir = Path(model_dir)
    folds = sorted(int(p.name.split("_")[1]) for p in model_dir.glob("fold_*"))
    if not folds:
        raise InputError(
            "no trained nnU-Net folds in this folder",
            path=model_dir,
            fix="train the folds first (rule nnunet_train), or pass the --nnunet-dir they "
            "were trained in",
        )
    return folds


def bench_nnunet(
    model_dir: str | Path,
    folds: Sequence[int],
    channels: int,
    device: Any,
    *,
    size: int = 512,
    repeats: int = 3,
) -> dict[str, Any]:
    """Time the ensemble of ``folds`` predicting a random ``size x size`` image.

    Args:
        model_dir: nnU-Net's trained model folder.
        folds: the folds of the ensemble.
        channels: the image's channel count (the configuration's).
        device: the torch device.
        size: side of the square image.
        repeats: timed runs (the median counts).

    Returns:
        ``model``, ``folds``, ``device``, ``image_size``, ``repeats``, ``seconds_median``,
        ``seconds_per_megapixel`` and ``megapixels_per_second``.
    """
    import numpy as np

    from ramanseg.nnunet.run import load_ensemble

    predictor = load_ensemble(model_dir, folds, device)
    image = np.random.default_rng(0).random((channels, 1, size, size), dtype=np.float32)
    predictor.predict_single_npy_array(image, PROPERTIES_2D, None, None, True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict_single_npy_array(image, PROPERTIES_2D, None, None, True)
        times.append(time.perf_counter() - start)
    megapixels = size * size / 1e6
    return {
        "model": "nnunet",
        "folds": list(folds),
        "device": str(device),
        "image_size": size,
        "repeats": repeats,
        "seconds_median": statistics.median(times),
        "seconds_per_megapixel": statistics.median(times) / megapixels,
        "megapixels_per_second": megapixels / statistics.median(times),
    }


def _run(args: argparse.Namespace) -> int:
    # The nnunet commands' own argument handling: one place for nnU-Net's folders.
    from ramanseg.nnunet.cli import configure_command, trained_model_dir
    from ramanseg.runtime import resolve_device

    config, nnunet = configure_command(args)
    device = resolve_device(nnunet.device)
    model_dir = trained_model_dir(nnunet)
    result = bench_nnunet(
        model_dir,
        trained_folds(model_dir),
        len(config["channels"]),
        device,
        size=args.size,
        repeats=args.repeats,
    )
    write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench-nnunet`` to the ``ramanseg`` command line."""
    from ramanseg.nnunet.cli import add_common_arguments

    parser = subparsers.add_parser(
        "bench-nnunet",
        help="ensemble inference time per megapixel on this machine, written to a file",
    )
    add_common_arguments(parser)
    parser.add_argument("--size", type=int, default=512, help="side of the square test image")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the numbers")
    parser.set_defaults(func=_run)
