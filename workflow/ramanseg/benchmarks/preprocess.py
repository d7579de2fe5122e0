"""``ramanseg bench-preprocess``: preprocessing time against reading and writing the stack."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ramanseg.fileio import write_json
from ramanseg.io import read_srs, write_ome_tiff
from ramanseg.preprocess import preprocess_sample
from ramanseg.preprocessed import STACK_NAME, PreprocessedFiles
from ramanseg.qc import draw_qc_figure
from ramanseg.settings import AnnotationSettings, Channel, ChannelLayout, PreprocessSettings

log = logging.getLogger(__name__)


def _synthetic_bench_inputs(
    folder: Path, size: int, n_channels: int, seed: int
) -> tuple[Path, Path, Path, ChannelLayout]:
    """A uint16 stack with tissue and a column drift, its H&E and one annotated square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    tissue = ((yy - 0.5) ** 2 + (xx - 0.5) ** 2) < 0.16
    drift = (1.0 + 0.3 * np.sin(2 * np.pi * xx[0])).astype(np.float32)
    stack = np.empty((n_channels, size, size), dtype=np.uint16)
    for c in range(n_channels):
        level = np.where(tissue, 2000.0 + 40.0 * c, 200.0).astype(np.float32)
        noisy = level * drift + rng.normal(0.0, 50.0, (size, size)).astype(np.float32)
        stack[c] = np.clip(noisy, 0, 65535).astype(np.uint16)
    he = np.where(tissue[..., None], np.array([170, 90, 160]), np.array([240, 238, 242]))
    he = np.clip(he + rng.normal(0, 6, he.shape), 0, 255).astype(np.uint8)

    srs_path, he_path, geojson_path = folder / "srs.tif", folder / "he.tif", folder / "a.geojson"
    tifffile.imwrite(srs_path, stack, photometric="minisblack", metadata={"axes": "CYX"})
    tifffile.imwrite(he_path, he, photometric="rgb")
    lo, hi = 0.35 * size, 0.65 * size
    square = [[lo, lo], [hi, lo], [hi, hi], [lo, hi], [lo, lo]]
    geojson_path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {"type": "Polygon", "coordinates": [square]},
                        "properties": {
                            "objectType": "annotation",
                            "classification": {"name": "Tumor"},
                        },
                    }
                ],
            }
        )
    )
    n_raman = n_channels - 3 if n_channels >= 4 else n_channels
    channels = [
        Channel(f"Raman {2802 + 14 * i}", "raman", 2802.0 + 14.6 * i) for i in range(n_raman)
    ]
    channels += [
        Channel(name, role)
        for name, role in [("Transmission", "transmission"), ("TPEF", "tpef"), ("SHG", "shg")]
    ][: n_channels - n_raman]
    return srs_path, he_path, geojson_path, ChannelLayout(tuple(channels))


def benchmark_preprocess(
    annotations: AnnotationSettings,
    settings: PreprocessSettings,
    *,
    size: int = 2048,
    n_channels: int = 24,
    repeats: int = 3,
    threads: int = 1,
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Time :func:`preprocess_sample` against just reading and writing the same stack.

    One synthetic sample (uint16 ``n_channels x size x size`` with tissue and a column
    drift, its H&E and one annotated square) is written once. Then the baseline
    (``read_srs`` + ``write_ome_tiff`` of the float32 stack: the I/O every preprocessing
    run must do) and the full preprocessing are timed ``repeats`` times each in this
    process, in alternating order (AB BA AB ...), after one untimed warm-up run of each
    (imports, caches, first touch of memory); each run's output is deleted right after
    it. The medians of wall-clock and of CPU time and their ratios are reported, and the
    ratio of the fastest runs of each. The QC figure, drawn from the preprocessed files
    by its own workflow step, is timed after each preprocessing run and reported beside
    it (``qc_figure_seconds``, and ``ratio_with_qc_figure`` for both steps together).

    Args:
        annotations: the annotation settings (the synthetic square is a ``Tumor``).
        settings: the preprocessing settings (the seed also draws the synthetic stack);
            the channels are a synthetic layout of ``n_channels`` channels.
        size: image side in pixels.
        n_channels: channels of the synthetic stack.
        repeats: timed runs of each.
        threads: passed to :func:`preprocess_sample`.
        workdir: folder for the temporary files (default: the system's).

    Returns:
        The timings, the ratio and the settings.

    Raises:
        ValueError: for ``repeats < 1``, ``size < 16`` or ``n_channels < 1``.
    """
    if repeats < 1 or size < 16 or n_channels < 1:
        raise ValueError(
            f"need repeats >= 1, size >= 16 and channels >= 1; got {repeats}, {size}, {n_channels}"
        )
    with tempfile.TemporaryDirectory(prefix="ramanseg-bench-", dir=workdir) as name:
        folder = Path(name)
        srs_path, he_path, geojson_path, channels = _synthetic_bench_inputs(
            folder, size, n_channels, settings.seed
        )

        def run_baseline(outdir: Path) -> None:
            srs = read_srs(srs_path, channels, "bench", nonfinite=settings.nonfinite)
            write_ome_tiff(outdir / STACK_NAME, srs.data, channels.names)

        def run_preprocess(outdir: Path) -> None:
            preprocess_sample(
                "bench", srs_path, he_path, geojson_path, outdir,
                channels=channels, annotations=annotations, settings=settings, threads=threads,
            )  # fmt: skip

        runs = {"baseline": run_baseline, "preprocess": run_preprocess}
        wall: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        qc_times: list[float] = []
        # Run 0 is a warm-up (imports, font cache, first touch of memory) and not timed.
        # The order alternates and every output is deleted at once, so that neither side
        # always writes into the memory the other has just freed: on a virtual machine a
        # write into pages freed seconds ago can take several times longer.
        for repeat in range(repeats + 1):
            order = list(runs) if repeat % 2 == 0 else list(reversed(runs))
            for name in order:
                outdir = folder / f"{name}{repeat}"
                start, start_cpu = time.perf_counter(), time.process_time()
                runs[name](outdir)
                elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
                if name == "preprocess":
                    start_qc = time.perf_counter()
                    draw_qc_figure(
                        "bench", PreprocessedFiles.in_folder(outdir), he_path, outdir / "qc.png",
                        channels=channels, annotations=annotations,
                    )  # fmt: skip
                    if repeat:
                        qc_times.append(time.perf_counter() - start_qc)
                shutil.rmtree(outdir)
                if repeat:
                    wall[name].append(elapsed)
                    cpu[name].append(elapsed_cpu)
    baseline_times, preprocess_times = wall["baseline"], wall["preprocess"]
    baseline_cpu, preprocess_cpu = cpu["baseline"], cpu["preprocess"]
    baseline = float(np.median(baseline_times))
    preprocess = float(np.median(preprocess_times))
    qc_figure = float(np.median(qc_times))
    return {
        "size": size,
        "channels": n_channels,
        "repeats": repeats,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "baseline": "read_srs + write_ome_tiff of the float32 stack",
        "baseline_seconds": baseline,
        "preprocess_seconds": preprocess,
        "ratio": preprocess / baseline,
        # Noise on a shared or virtual machine only ever adds time, so the fastest runs
        # are the steadiest estimate of each side's own cost.
        "ratio_of_minima": min(preprocess_times) / min(baseline_times),
        "qc_figure_seconds": qc_figure,
        "ratio_with_qc_figure": (preprocess + qc_figure) / baseline,
        # CPU time of this process (user + system): less disturbed by other processes.
        "baseline_cpu_seconds": float(np.median(baseline_cpu)),
        "preprocess_cpu_seconds": float(np.median(preprocess_cpu)),
        "cpu_ratio": float(np.median(preprocess_cpu) / np.median(baseline_cpu)),
        "baseline_runs": baseline_times,
        "preprocess_runs": preprocess_times,
        "qc_figure_runs": qc_times,
    }


def add_commands(subparsers: Any) -> None:
    """Add ``bench-preprocess`` to the ``ramanseg`` command line.

    Args:
        subparsers: the ``ramanseg`` parser's subparsers.
    """
    from ramanseg.cli import add_settings_arguments, settings_from_args

    bench = subparsers.add_parser(
        "bench-preprocess",
        help="time preprocessing of a synthetic stack against reading and writing it",
    )
    bench.add_argument("--size", type=int, default=2048, help="image side (default 2048)")
    bench.add_argument("--channels", type=int, default=24, help="channels (default 24)")
    bench.add_argument("--repeats", type=int, default=3, help="timed runs (default 3)")
    bench.add_argument("--threads", type=int, default=1, help="threads (default 1)")
    bench.add_argument("--out", required=True, help="JSON report")
    add_settings_arguments(bench)

    def run_bench(args: Any) -> int:
        config = settings_from_args(args)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        report = benchmark_preprocess(
            AnnotationSettings.from_config(config), PreprocessSettings.from_config(config),
            size=args.size, n_channels=args.channels, repeats=args.repeats,
            threads=args.threads, workdir=out.parent,
        )  # fmt: skip
        write_json(out, report)
        log.info(
            "preprocess %.2f s, read + write %.2f s: ratio %.2f (QC figure %.2f s more)",
            report["preprocess_seconds"],
            report["baseline_seconds"],
            report["ratio"],
            report["qc_figure_seconds"],
        )
        return 0

    bench.set_defaults(func=run_bench)
