"""nnU-Net's prediction speed: ``ramanseg bench-nnunet`` and ``bench-nnunet-prediction``.

``bench-nnunet``: the ensemble's inference time per megapixel.

The trained folds of the configured nnU-Net model (``nnunet.dataset_id``, ``trainer``,
``planner``, ``configuration`` under ``--nnunet-dir``) are loaded as one ensemble, which
predicts a synthetic square image of the configuration's channel count with nnU-Net's own
sliding windows, Gaussian blending and mirroring, as ``nnunet-predict`` does: one untimed
run, then the median of ``repeats`` timed runs. ``bench-inference`` reads the JSON written
here to compare our models' throughput with nnU-Net's.

    ramanseg bench-nnunet --nnunet-dir results/nnunet --out results/benchmarks/nnunet_inference.json

``bench-nnunet-prediction``: the predictor's settings, speed against Dice, in one run:
nnU-Net's default predictor (``nnunet.prediction``), the fast preset
(``nnunet.fast_prediction``) and :data:`CANDIDATES` (no mirroring, tile steps 0.75 and 1,
the best 1 to 4 folds) predict the demo's test slides; each setting's seconds per
megapixel and test Dice (through :mod:`ramanseg.evaluate`), with ratios against the
default, go to a JSON file and a Markdown table beside it. ``--mosaic`` predicts the slides
as one larger image, where the tile step changes the number of tiles as on a whole slide.

    ramanseg bench-nnunet-prediction --nnunet-dir results/nnunet \\
        --preprocessed results/preprocessed --split results/split/split.json \\
        --out results/benchmarks/nnunet_prediction.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ramanseg.errors import InputError
from ramanseg.fileio import write_json
from ramanseg.nnunet.settings import PredictionSettings

#: The image properties nnU-Net's predictor needs for a 2-D image of 1 x 1 pixel spacing.
PROPERTIES_2D = {"spacing": [999.0, 1.0, 1.0]}
#: The fast preset's aim (issue 18): this much faster than nnU-Net's default predictor ...
AIM_SPEEDUP = 4.0
#: ... at no more than this many Dice points (percent) lost on the demo's test slides.
AIM_DICE_POINTS_LOST = 0.5


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


# --- bench-nnunet-prediction: the predictor's settings, speed against Dice -------------


@dataclass(frozen=True)
class Candidate:
    """One predictor setting the benchmark measures.

    Attributes:
        name: its row label (``default``, ``fast preset``, or what it changes).
        settings: the predictor's settings.
        folds: the folds it ensembles.
    """

    name: str
    settings: PredictionSettings
    folds: tuple[int, ...]


#: The settings compared beside the configured two: (mirroring, tile step, folds: ``None``
#: for all, ``k`` for the ``k`` best by validation Dice). Each changes one or two of
#: nnU-Net's defaults: a 2-D tile takes 4 forward passes with mirroring and 1 without; a
#: tile step of 1 takes fewer tiles than 0.5 (on an image of 2 patches, 4 instead of 9;
#: any step below 1 takes 9 there); each fold is one more pass over every tile.
CANDIDATES = (
    (True, 0.5, 1),
    (True, 1.0, None),
    (False, 0.5, None),
    (False, 0.75, None),
    (False, 1.0, None),
    (False, 0.5, 4),
    (False, 0.5, 3),
    (False, 0.5, 2),
    (False, 0.5, 1),
    (False, 1.0, 2),
    (False, 1.0, 1),
)


def candidate_settings(
    default: PredictionSettings,
    fast: PredictionSettings,
    trained: Sequence[int],
    validation_dice: Mapping[int, float],
) -> list[Candidate]:
    """The settings compared: the configured default first (the baseline of every ratio),
    the configured fast preset, then :data:`CANDIDATES` (those asking for more folds than
    are trained left out). A setting listed twice is measured once, under its first name.

    Args:
        default: ``nnunet.prediction``.
        fast: ``nnunet.fast_prediction``.
        trained: the model's trained folds.
        validation_dice: each trained fold's validation Dice (to choose the best folds).

    Raises:
        ConfigError: a configured setting lists a fold the model does not have.
    """
    trained = sorted(trained)
    candidates = [
        Candidate("default", default, tuple(default.select_folds(trained, validation_dice))),
        Candidate("fast preset", fast, tuple(fast.select_folds(trained, validation_dice))),
    ]
    for mirroring, step, count in CANDIDATES:
        if count is not None and count > len(trained):
            continue
        settings = replace(default, mirroring=mirroring, tile_step_size=step, folds=count)
        folds = tuple(settings.select_folds(trained, validation_dice))
        candidates.append(Candidate(describe(settings, len(trained)), settings, folds))
    unique: dict[tuple, Candidate] = {}
    for candidate in candidates:
        settings = candidate.settings
        identity = (settings.mirroring, settings.tile_step_size, candidate.folds)
        unique.setdefault(identity, candidate)
    return list(unique.values())


def describe(settings: PredictionSettings, trained: int) -> str:
    """A row label: ``no mirroring, step 1, best 2 folds``.

    Args:
        settings: the predictor's settings.
        trained: the number of trained folds (what ``folds: all`` means).
    """
    mirroring = "mirroring" if settings.mirroring else "no mirroring"
    if settings.folds is None:
        folds = f"all {trained} folds"
    elif isinstance(settings.folds, int):
        folds = f"best {settings.folds} fold{'s' * (settings.folds != 1)}"
    else:
        folds = f"folds {','.join(map(str, settings.folds))}"
    return f"{mirroring}, step {settings.tile_step_size:g}, {folds}"


def _count_forward_passes(network: Any) -> tuple[list[int], Any]:
    """A counter of ``network``'s forward calls (a forward hook) and the hook's handle."""
    calls = [0]

    def count(*_):
        calls[0] += 1

    return calls, network.register_forward_hook(count)


def arrange(
    stacks: Mapping[str, Any], columns: int = 0
) -> list[tuple[Any, dict[str, tuple[slice, slice]]]]:
    """The images to predict and where each slide lies in them.

    Args:
        stacks: sample id -> (C, Y, X) stack.
        columns: 0: each slide is its own image; ``n``: one mosaic of the slides in rows
            of ``n`` cells, each cell the size of the largest slide, zero-padded (a larger
            image, as a whole slide is, on which the tile step changes the tile count).

    Returns:
        ``(image, {sample: (rows, columns)})`` per image.
    """
    import numpy as np

    if columns < 0:
        raise ValueError(f"columns must be 0 or more, got {columns}")
    if columns == 0:
        return [(stack, {sample: (slice(None), slice(None))}) for sample, stack in stacks.items()]
    first = next(iter(stacks.values()))
    height = max(stack.shape[1] for stack in stacks.values())
    width = max(stack.shape[2] for stack in stacks.values())
    rows = -(-len(stacks) // columns)
    image = np.zeros((first.shape[0], rows * height, columns * width), first.dtype)
    placements = {}
    for index, (sample, stack) in enumerate(stacks.items()):
        top, left = (index // columns) * height, (index % columns) * width
        place = (slice(top, top + stack.shape[1]), slice(left, left + stack.shape[2]))
        image[(slice(None), *place)] = stack
        placements[sample] = place
    return [(image, placements)]


def bench_prediction(
    model_dir: str | Path,
    candidates: Sequence[Candidate],
    stacks: Mapping[str, Any],
    truths: Mapping[str, tuple[Any, Any]],
    device: Any,
    *,
    repeats: int = 3,
    mosaic_columns: int = 0,
) -> dict[str, Any]:
    """Time each candidate predicting the test slides and score its masks' Dice.

    Each round runs every candidate over all images in turn (after one untimed warm-up),
    so a change in the machine's load affects all alike. Per candidate: the median and
    minimum wall time of the rounds, the median CPU time of this process (on a machine
    shared with other work, wall time includes waiting for a core, CPU time hardly), and
    their ratios against the first candidate; the network's forward passes (counted by a
    hook); each slide's Dice (the mask thresholded at 0.5, as the shared prediction format
    derives it, over the evaluated region).

    Args:
        model_dir: nnU-Net's trained model folder.
        candidates: the settings; the first is the baseline of the ratios.
        stacks: sample id -> preprocessed (C, Y, X) float32 stack.
        truths: sample id -> (ground-truth mask, evaluated region), as
            :func:`ramanseg.evaluate.read_ground_truth` gives them.
        device: the torch device.
        repeats: timed rounds.
        mosaic_columns: 0: predict each slide alone; ``n``: predict one mosaic of the
            slides, ``n`` per row (:func:`arrange`), and cut each slide's prediction out.

    Returns:
        ``samples``, ``images`` (their shapes), ``megapixels`` (predicted, padding
        included), ``repeats``, ``device``, ``aim`` and ``rows``, one per candidate.
    """
    import numpy as np

    from ramanseg.evaluate import confusion, metrics
    from ramanseg.nnunet.run import load_ensemble, predict_probability

    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    images = arrange(stacks, mosaic_columns)
    predictors = [load_ensemble(model_dir, c.folds, device, c.settings) for c in candidates]
    predict_probability(predictors[0], images[0][0])  # warm-up: first-call allocations
    wall: list[list[float]] = [[] for _ in candidates]
    cpu: list[list[float]] = [[] for _ in candidates]
    dice: list[dict[str, float]] = []
    passes: list[int] = []
    for round_index in range(repeats):
        for index, predictor in enumerate(predictors):
            calls, hook = _count_forward_passes(predictor.network)
            start, start_cpu = time.perf_counter(), time.process_time()
            probabilities = [predict_probability(predictor, image) for image, _ in images]
            wall[index].append(time.perf_counter() - start)
            cpu[index].append(time.process_time() - start_cpu)
            hook.remove()
            if round_index > 0:
                continue
            passes.append(calls[0])
            scores = {}
            for probability, (_, placements) in zip(probabilities, images, strict=True):
                for sample, place in placements.items():
                    counts = confusion(probability[place] >= 0.5, *truths[sample])
                    scores[sample] = 100 * metrics(counts)["dice"]
            dice.append({sample: scores[sample] for sample in stacks})
    megapixels = sum(image.shape[1] * image.shape[2] for image, _ in images) / 1e6
    medians = [statistics.median(t) for t in wall]
    minima = [min(t) for t in wall]
    cpu_medians = [statistics.median(t) for t in cpu]
    mean_dice = [float(np.mean(list(d.values()))) for d in dice]
    rows = []
    for index, candidate in enumerate(candidates):
        speedup_cpu = cpu_medians[0] / cpu_medians[index]
        loss = mean_dice[0] - mean_dice[index]
        rows.append(
            {
                "name": candidate.name,
                "mirroring": candidate.settings.mirroring,
                "tile_step_size": candidate.settings.tile_step_size,
                "folds": list(candidate.folds),
                "forward_passes": passes[index],
                "seconds_median": medians[index],
                "seconds_min": minima[index],
                "cpu_seconds_median": cpu_medians[index],
                "seconds_per_megapixel": medians[index] / megapixels,
                "cpu_seconds_per_megapixel": cpu_medians[index] / megapixels,
                "speedup": medians[0] / medians[index],
                "speedup_min": minima[0] / minima[index],
                "speedup_cpu": speedup_cpu,
                "dice_per_sample": dice[index],
                "dice": mean_dice[index],
                "dice_points_lost": loss,
                "meets_aim": speedup_cpu >= AIM_SPEEDUP and loss <= AIM_DICE_POINTS_LOST,
            }
        )
    return {
        "samples": list(stacks),
        "images": [list(image.shape) for image, _ in images],
        "megapixels": megapixels,
        "repeats": repeats,
        "device": str(device),
        "aim": {"speedup_cpu": AIM_SPEEDUP, "dice_points_lost": AIM_DICE_POINTS_LOST},
        "rows": rows,
    }


def prediction_markdown(result: Mapping[str, Any]) -> str:
    """The benchmark's table as Markdown, with the command line that measured it.

    Args:
        result: :func:`bench_prediction`'s result, with ``command`` and ``threads`` added.
    """
    shapes = {tuple(shape[1:]) for shape in result["images"]}
    images = (
        f"{len(result['samples'])} test slides"
        if len(result["images"]) == len(result["samples"])
        else f"the {len(result['samples'])} test slides as one mosaic"
    )
    sizes = ", ".join(f"{y} x {x}" for y, x in sorted(shapes))
    lines = [
        "# nnU-Net prediction settings: speed against Dice",
        "",
        f"`{result['command']}`",
        "",
        f"{images} ({sizes} px; {result['megapixels']:.4g} megapixels), device "
        f"{result['device']}, {result['threads']} thread(s). Times: the median of "
        f"{result['repeats']} rounds, all settings in turn in each; the speed-up by CPU "
        "time (by the median and the fastest wall time in brackets). Passes: the network's "
        "forward passes per round. Dice in percent over the evaluated pixels, mean over the "
        f"slides. Aim: at least {AIM_SPEEDUP:g}x faster (CPU time) at no more than "
        f"{AIM_DICE_POINTS_LOST:g} Dice points lost.",
        "",
        "| setting | mirroring | tile step | folds | passes | CPU s / megapixel "
        "| speed-up | Dice % | Dice points lost | aim met |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['name']} | {'yes' if row['mirroring'] else 'no'} "
            f"| {row['tile_step_size']:g} | {','.join(map(str, row['folds']))} "
            f"| {row['forward_passes']} | {row['cpu_seconds_per_megapixel']:.1f} "
            f"| {row['speedup_cpu']:.2f}x ({row['speedup']:.2f}x, {row['speedup_min']:.2f}x) "
            f"| {row['dice']:.2f} | {row['dice_points_lost']:+.2f} "
            f"| {'yes' if row['meets_aim'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def _count(minimum: int):
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _run_prediction(args: argparse.Namespace) -> int:
    import shlex

    import torch

    from ramanseg.evaluate import evaluation_settings, read_ground_truth
    from ramanseg.fileio import json_bytes, write_files
    from ramanseg.nnunet.cli import configure_command, trained_model_dir
    from ramanseg.nnunet.run import fold_validation_dice
    from ramanseg.preprocessed import files_of, read_stack
    from ramanseg.runtime import resolve_device
    from ramanseg.split import read_split

    config, nnunet = configure_command(args)
    torch.set_num_threads(args.threads)
    device = resolve_device(nnunet.device)
    model_dir = trained_model_dir(nnunet)
    trained = trained_folds(model_dir)
    dice = fold_validation_dice(model_dir, trained)
    candidates = candidate_settings(nnunet.prediction, nnunet.fast_prediction, trained, dice)
    samples = read_split(args.split)["test"]
    pixels = evaluation_settings(config).pixels
    stacks, truths = {}, {}
    for sample in samples:
        files = files_of(args.preprocessed, sample)
        stacks[sample], _ = read_stack(
            files.path("stack"), sample, n_channels=len(config["channels"])
        )
        truths[sample] = read_ground_truth(args.preprocessed, sample, pixels)
    result = bench_prediction(
        model_dir,
        candidates,
        stacks,
        truths,
        device,
        repeats=args.repeats,
        mosaic_columns=args.mosaic,
    )
    result["threads"] = args.threads
    result["fold_validation_dice"] = {str(fold): value for fold, value in dice.items()}
    result["evaluated_pixels"] = pixels
    command = shlex.join(
        ["ramanseg", "bench-nnunet-prediction", "--nnunet-dir", str(args.nnunet_dir)]
        + ["--preprocessed", str(args.preprocessed), "--split", str(args.split)]
        + ["--threads", str(args.threads), "--repeats", str(args.repeats)]
        + (["--mosaic", str(args.mosaic)] if args.mosaic else [])
        + ["--out", str(args.out)]
        + (["--settings", args.settings] if args.settings else ["--config", *args.config])
    )
    result["command"] = command
    markdown = prediction_markdown(result)
    write_files({args.out: json_bytes(result), args.out.with_suffix(".md"): markdown.encode()})
    print(markdown)
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

    parser = subparsers.add_parser(
        "bench-nnunet-prediction",
        help="seconds per megapixel and test Dice of nnU-Net's default predictor and of "
        "faster settings (no mirroring, larger tile steps, fewer folds), in one run",
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--preprocessed",
        type=Path,
        required=True,
        help="folder of the preprocessed samples (results/preprocessed)",
    )
    parser.add_argument("--split", type=Path, required=True, help="the split JSON (its test set)")
    parser.add_argument(
        "--repeats", type=_count(1), default=3, help="timed rounds (the median counts)"
    )
    parser.add_argument(
        "--mosaic",
        type=_count(0),
        default=0,
        metavar="COLUMNS",
        help="predict the test slides as one mosaic, COLUMNS slides per row (a larger image, "
        "on which the tile step matters as on a whole slide); 0: each slide alone",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="JSON file for the numbers (a .md table beside)"
    )
    parser.set_defaults(func=_run_prediction)
