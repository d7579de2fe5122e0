"""How planning time grows with the number of samples: ``ramanseg bench-dag``.

For each requested sample count the command writes a synthetic sample sheet (empty
placeholder files: a dry run checks that the files exist but never reads them), then
times ``snakemake -n --config samplesheet=<sheet>`` on the workflow, all in one run so
that the times are comparable. The JSON written records, per sample count, the seconds
and the number of planned jobs, and for the largest against the smallest count the
growth of the time, the growth of the sample count and the exponent of the power law
through them (1: planning time linear in the samples, 2: quadratic; startup makes it
smaller), and the seconds each added sample costs.

    ramanseg bench-dag --samples 100 1000 --out results/benchmarks/dag.json
"""

from __future__ import annotations

import argparse
import math
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ramanseg.errors import InputError
from ramanseg.fileio import write_json

#: The repository root: this file is workflow/ramanseg/benchmarks/dag.py.
REPO = Path(__file__).resolve().parents[3]
SAMPLES_PER_PATIENT = 3


def write_samplesheet(directory: Path, samples: int) -> Path:
    """A sample sheet of ``samples`` samples with empty placeholder files; its path."""
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    rows = ["sample_id\tpatient_id\tsrs\the\tannotations"]
    for index in range(samples):
        sample = f"S{index:05d}"
        patient = f"P{index // SAMPLES_PER_PATIENT:05d}"
        files = [f"data/{sample}.ome.tif", f"data/{sample}_he.tif", f"data/{sample}.geojson"]
        for name in files:
            (directory / name).touch()
        rows.append("\t".join([sample, patient, *files]))
    sheet = directory / "samples.tsv"
    sheet.write_text("\n".join(rows) + "\n")
    return sheet


def planned_jobs(output: str) -> int | None:
    """The total job count from a dry run's job stats table."""
    match = re.search(r"^total\s+(\d+)\s*$", output, flags=re.MULTILINE)
    return int(match.group(1)) if match else None


def time_dry_run(
    snakefile: Path, configfiles: list[Path], sheet: Path, workdir: Path
) -> tuple[float, int | None]:
    """Seconds of one ``snakemake -n`` of the workflow on ``sheet``, and its job count."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "snakemake", "-n",
        "--snakefile", str(snakefile),
        "--directory", str(workdir),
        "--configfile", *map(str, configfiles),
        "--config", f"samplesheet={sheet}",
        "--cores", "1",
        "--quiet", "rules",
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise InputError(
            f"the dry run on {sheet} failed (exit code {result.returncode}):\n"
            + "\n".join((result.stdout + result.stderr).splitlines()[-30:]),
            fix="run the command above by hand to see the whole message",
        )
    return seconds, planned_jobs(result.stdout + result.stderr)


def bench_dag(
    samples: list[int],
    snakefile: Path = REPO / "Snakefile",
    configfiles: list[Path] | None = None,
) -> dict:
    """Time a dry run for each sample count; the results as a JSON-ready dict."""
    if not samples or any(n < 1 for n in samples):
        raise InputError("--samples needs one or more positive sample counts.")
    configfiles = configfiles or [REPO / "config" / "config.yaml"]
    runs = []
    with tempfile.TemporaryDirectory(prefix="ramanseg-bench-dag-") as tmp:
        for n in samples:
            sheet = write_samplesheet(Path(tmp) / f"samples-{n}", n)
            seconds, jobs = time_dry_run(snakefile, configfiles, sheet, Path(tmp) / f"run-{n}")
            runs.append({"samples": n, "jobs": jobs, "seconds": round(seconds, 3)})
    result = {
        "command": "snakemake -n --config samplesheet=<synthetic sheet>",
        "snakefile": str(snakefile),
        "configfiles": [str(path) for path in configfiles],
        "python": platform.python_version(),
        "machine": platform.machine(),
        "runs": runs,
    }
    smallest = min(runs, key=lambda run: run["samples"])
    largest = max(runs, key=lambda run: run["samples"])
    if largest["samples"] > smallest["samples"]:
        time_ratio = largest["seconds"] / smallest["seconds"]
        samples_ratio = largest["samples"] / smallest["samples"]
        result["growth"] = {
            "from_samples": smallest["samples"],
            "to_samples": largest["samples"],
            "samples_ratio": samples_ratio,
            "time_ratio": round(time_ratio, 3),
            "exponent": round(math.log(time_ratio) / math.log(samples_ratio), 3),
            # Startup (imports, parsing) is paid once; this is the cost of each sample.
            "seconds_per_added_sample": round(
                (largest["seconds"] - smallest["seconds"])
                / (largest["samples"] - smallest["samples"]),
                5,
            ),
        }
    return result


def _run(args: argparse.Namespace) -> int:
    result = bench_dag(
        args.samples,
        snakefile=Path(args.snakefile).resolve(),
        configfiles=[Path(path).resolve() for path in args.configfile],
    )
    out = write_json(args.out, result)
    for run in result["runs"]:
        print(f"{run['samples']:>7} samples  {run['jobs']} jobs  {run['seconds']:.2f} s")
    if "growth" in result:
        growth = result["growth"]
        print(
            f"time x{growth['time_ratio']} for samples x{growth['samples_ratio']:g} "
            f"(exponent {growth['exponent']})"
        )
    print(f"written {out}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench-dag`` subcommand."""
    parser = subparsers.add_parser(
        "bench-dag",
        help="time the workflow's dry run for growing synthetic sample sheets",
        description=(
            "Write synthetic sample sheets (empty placeholder files) of the given sizes and "
            "time `snakemake -n --config samplesheet=<sheet>` for each in one run; write "
            "the times, job counts and the growth ratio as JSON."
        ),
    )
    parser.add_argument(
        "--samples",
        type=int,
        nargs="+",
        default=[100, 1000],
        metavar="N",
        help="sample counts to plan (default: 100 1000)",
    )
    parser.add_argument(
        "--out",
        default="results/benchmarks/dag.json",
        help="the JSON file to write (default: results/benchmarks/dag.json)",
    )
    parser.add_argument(
        "--snakefile",
        default=str(REPO / "Snakefile"),
        help="the workflow (default: this checkout's Snakefile)",
    )
    parser.add_argument(
        "--configfile",
        nargs="+",
        default=[str(REPO / "config" / "config.yaml")],
        metavar="YAML",
        help="configuration file(s) for the dry runs (default: config/config.yaml)",
    )
    parser.set_defaults(func=_run)
