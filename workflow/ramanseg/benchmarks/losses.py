"""``ramanseg bench-losses``: the cost of the activation overlap loss against ProtoSeg's KLD loss.

The paper (section 3.2.2) motivates its activation overlap loss as cheaper to compute than
ProtoSeg's pairwise KL divergences. This benchmark times forward + backward of both losses on
the same synthetic inputs, in one run:

* ``overlap``: :func:`~ramanseg.models.prototypes.activation_overlap_loss` on similarity maps;
* ``kld``: :func:`~ramanseg.models.prototypes.kld_diversity_loss`, our batched version;
* ``kld_loop`` (with ``--loop``; it takes tens of seconds at 60 prototypes per class on a
  CPU): the same loss computed pair by pair with one ``kl_div`` call per direction, the way
  ProtoSeg's training step evaluates it; this is the formulation the paper compares against.

Inputs: ``batch`` images, a ``size x size`` latent map, two classes with ``P_c`` prototypes
each, distances uniform in [0, 10), similarities their log similarities, and a blocky random
ground truth with both classes. Times are the median over ``repeats`` rounds after ``warmup``
untimed ones; each round runs both batched losses in turn, so a change in the machine's load
affects both alike (the loop version runs ``loop_repeats`` times afterwards, no warm-up).
The minimum over the repeats is reported too, with its ratio: on a machine shared with other
work the median includes waiting for the CPU, the minimum much less so.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ramanseg.fileio import write_json

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def _kld_pairwise_loop(
    distances: torch.Tensor, target: torch.Tensor, prototype_class: torch.Tensor
) -> torch.Tensor:
    """ProtoSeg-style evaluation of :func:`kld_diversity_loss`: Python loops over images,
    classes and prototype pairs, one masked log-softmax per prototype and one ``kl_div`` per
    direction of each pair. Same value as the batched version (see the tests)."""
    import torch
    import torch.nn.functional as F

    batch = distances.shape[0]
    flat = distances.reshape(batch, distances.shape[1], -1)
    labels = target.reshape(batch, -1)
    terms = []
    for b in range(batch):
        for cls in torch.unique(labels[b]).tolist():
            members = torch.nonzero(prototype_class == cls).flatten().tolist()
            mask = labels[b] == cls
            if len(members) < 2 or int(mask.sum()) < 2:
                continue
            log_v = [torch.masked_select(flat[b, j], mask).log_softmax(dim=0) for j in members]
            for i in range(len(members)):
                for j in range(i + 1, len(members)):
                    kl_ji = F.kl_div(log_v[i], log_v[j], log_target=True, reduction="sum")
                    kl_ij = F.kl_div(log_v[j], log_v[i], log_target=True, reduction="sum")
                    terms.append(0.5 * (kl_ij + kl_ji))
    if not terms:
        return distances.sum() * 0.0
    return torch.exp(-torch.stack(terms)).mean()


def _inputs(
    prototypes_per_class: int, size: int, batch: int, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    import torch
    import torch.nn.functional as F

    from ramanseg.models.prototypes import log_similarity

    generator = torch.Generator().manual_seed(seed)
    num = 2 * prototypes_per_class
    distances = 10.0 * torch.rand(batch, num, size, size, generator=generator)
    similarities = log_similarity(distances)
    # Blocky ground truth (8 x 8 cells) with both classes in every image.
    cells = torch.rand(batch, 1, 8, 8, generator=generator) > 0.5
    cells[:, :, 0, 0], cells[:, :, -1, -1] = False, True
    target = F.interpolate(cells.float(), size=(size, size), mode="nearest")[:, 0].long()
    prototype_class = torch.arange(2).repeat_interleave(prototypes_per_class)
    return (
        distances.to(device).requires_grad_(),
        similarities.to(device).requires_grad_(),
        target.to(device),
        prototype_class.to(device),
    )


def _time_interleaved(
    steps: Mapping[str, tuple[Callable[[], torch.Tensor], torch.Tensor]],
    repeats: int,
    warmup: int,
    device: torch.device,
) -> dict[str, list[float]]:
    """Seconds of forward + backward of each step, per timed round.

    Each round runs every step once, in turn, so a change in the machine's load during the
    benchmark affects all steps alike and their ratio stays meaningful.
    """
    import torch

    def once(step: Callable[[], torch.Tensor], leaf: torch.Tensor) -> float:
        leaf.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(warmup + repeats):
        for name, (step, leaf) in steps.items():
            seconds = once(step, leaf)
            if round_index >= warmup:
                times[name].append(seconds)
    return times


def run_benchmark(
    prototype_counts: Sequence[int] = (15, 60),
    size: int = 64,
    batch: int = 8,
    repeats: int = 20,
    warmup: int = 3,
    loop_repeats: int = 1,
    include_loop: bool = False,
    device: str = "auto",
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Time the diversity losses; see the module docstring.

    Args:
        prototype_counts: prototypes per class to test.
        size: latent map side.
        batch: images per batch.
        repeats: timed runs of the batched losses (median reported).
        warmup: untimed runs before them.
        loop_repeats: timed runs of the loop version.
        include_loop: also time the loop version.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seed of the synthetic inputs.
        threads: CPU threads for torch (``torch.set_num_threads``), or None to keep the
            current setting. On a CPU shared with other work, one thread gives steadier
            numbers: a multi-threaded kernel waits for its slowest thread.

    Returns:
        a JSON-serialisable dict: settings, environment and one result row per count with
        median / min times in milliseconds and the KLD / overlap ratios.

    Raises:
        ValueError: on a non-positive size, batch, count or repeat number.
    """
    import torch

    from ramanseg.models.prototypes import activation_overlap_loss, kld_diversity_loss
    from ramanseg.runtime import resolve_device

    if not prototype_counts or min(prototype_counts) < 1:
        raise ValueError(f"prototype counts must be >= 1, got {list(prototype_counts)}")
    for name, value in (("size", size), ("batch", batch), ("repeats", repeats)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if warmup < 0 or (include_loop and loop_repeats < 1):
        raise ValueError(f"need warmup >= 0 and loop_repeats >= 1, got {warmup}, {loop_repeats}")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    torch_device = resolve_device(device)
    rows = []
    for count in prototype_counts:
        distances, similarities, target, prototype_class = _inputs(
            count, size, batch, seed, torch_device
        )
        steps = {
            "overlap": (
                lambda s=similarities, c=prototype_class: activation_overlap_loss(s, c),
                similarities,
            ),
            "kld": (
                lambda d=distances, t=target, c=prototype_class: kld_diversity_loss(d, t, c),
                distances,
            ),
        }
        times = _time_interleaved(steps, repeats, warmup, torch_device)
        if include_loop:
            loop_step = {
                "kld_loop": (
                    lambda d=distances, t=target, c=prototype_class: _kld_pairwise_loop(d, t, c),
                    distances,
                )
            }
            times |= _time_interleaved(loop_step, loop_repeats, 0, torch_device)
        row: dict[str, Any] = {"prototypes_per_class": count}
        for name, values in times.items():
            row[f"{name}_ms"] = 1e3 * statistics.median(values)
            row[f"{name}_min_ms"] = 1e3 * min(values)
        row["ratio_kld_over_overlap"] = row["kld_ms"] / row["overlap_ms"]
        row["ratio_kld_over_overlap_min"] = row["kld_min_ms"] / row["overlap_min_ms"]
        if include_loop:
            row["ratio_kld_loop_over_overlap"] = row["kld_loop_ms"] / row["overlap_ms"]
        rows.append(row)
        log.info("benchmarked %d prototypes per class", count)
    return {
        "description": "forward + backward time of the diversity losses (ms; median and "
        "minimum over repeats)",
        "latent_size": [size, size],
        "batch": batch,
        "classes": 2,
        "repeats": repeats,
        "warmup": warmup,
        "loop_repeats": loop_repeats if include_loop else 0,
        "seed": seed,
        "device": str(torch_device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": rows,
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a small fixed-width table."""
    loop = any("kld_loop_ms" in row for row in report["results"])
    header = f"{'P/class':>7}  {'overlap ms':>10}  {'kld ms':>9}  {'kld/overlap':>11}  {'(min)':>7}"
    if loop:
        header += f"  {'kld loop ms':>11}  {'loop/overlap':>12}"
    lines = [header, "-" * len(header)]
    for row in report["results"]:
        line = (
            f"{row['prototypes_per_class']:>7}  {row['overlap_ms']:>10.2f}  {row['kld_ms']:>9.2f}"
            f"  {row['ratio_kld_over_overlap']:>10.1f}x  {row['ratio_kld_over_overlap_min']:>6.1f}x"
        )
        if loop:
            line += f"  {row['kld_loop_ms']:>11.1f}  {row['ratio_kld_loop_over_overlap']:>11.0f}x"
        lines.append(line)
    return "\n".join(lines)


def _command(args: argparse.Namespace) -> int:
    report = run_benchmark(
        prototype_counts=args.prototypes,
        size=args.size,
        batch=args.batch,
        repeats=args.repeats,
        warmup=args.warmup,
        loop_repeats=args.loop_repeats,
        include_loop=args.loop,
        device=args.device,
        seed=args.seed,
        threads=args.threads,
    )
    write_json(args.out, report)
    print(f"device {report['device']}, {report['threads']} threads, batch {report['batch']}, ")
    print(f"latent {args.size} x {args.size}, median of {report['repeats']} runs\n")
    print(format_table(report))
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench-losses",
        help="time the activation overlap loss against ProtoSeg's KLD diversity loss",
        description="Time forward + backward of the activation overlap loss and the KLD "
        "diversity loss (batched, and ProtoSeg's pair-by-pair loop) and write a JSON report.",
    )
    parser.add_argument("--out", type=Path, required=True, help="the JSON report to write")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    parser.add_argument(
        "--prototypes",
        type=int,
        nargs="+",
        default=[15, 60],
        metavar="P",
        help="prototypes per class (default: 15 60)",
    )
    parser.add_argument("--size", type=int, default=64, help="latent map side (default 64)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    parser.add_argument(
        "--loop-repeats", type=int, default=1, help="timed runs of the loop version (default 1)"
    )
    parser.add_argument(
        "--loop",
        action="store_true",
        help="also time ProtoSeg's pair-by-pair KLD loop (slow: tens of seconds on a CPU)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's)"
    )
    parser.set_defaults(func=_command)
