"""The results folder (config key ``results_dir``): where every output of the workflow goes.

Training (logs, benchmarks, split, nnU-Net, models, predictions, evaluation, interpret,
report, package) and ``snakemake predict`` (its ``predict/`` folder) write below it; the
synthetic dataset goes to ``phantom.outdir`` instead. A run with other data or settings
(``config/hard.yaml``: ``results_hard``) thus keeps the demo's results.

The folder is a path inside the working directory (``results``, ``results_hard``,
``runs/hard``) or an absolute path (a scratch file system on a cluster, where the checkout
sits in a small home folder; Snakemake writes absolute output paths as it writes relative
ones). A relative path leading out of the working directory (``../results``) is refused:
it names a different folder whenever the workflow runs from another directory
(``snakemake --directory``); such a folder is given as an absolute path. The folder may
not hold, or lie in, the working directory itself, the workflow's shipped ``resources/``
or the synthetic dataset's folder: outputs would mix with inputs, and deleting the
results to start afresh would delete those too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ramanseg.config import ConfigError

#: The schema's default: the demo's folder, and that of every run before the key existed.
DEFAULT_RESULTS_DIR = "results"

_KEY = "config key `results_dir`"
_EXAMPLE = "e.g. results_hard"


def _overlap(folder: Path, other: Path) -> bool:
    """Whether one of two absolute, resolved folders is the other or lies inside it."""
    return folder == other or folder.is_relative_to(other) or other.is_relative_to(folder)


def results_dir(config: Mapping[str, Any], workdir: Path, shipped_resources: Path) -> Path:
    """The results folder of a validated configuration, checked against the folders it
    must not overlap.

    Args:
        config: a configuration that passed the schema: its ``results_dir`` and
            ``phantom.outdir``.
        workdir: the working directory the workflow runs in; relative paths are below it.
        shipped_resources: the workflow's ``resources/`` folder (the paper's numbers, the
            spectra tables).

    Returns:
        ``results_dir`` as a path, normalised (``results/`` and ``./results`` are
        ``results``) but not made absolute, so that the default gives the same output
        paths, and shell commands, as before the key existed.

    Raises:
        ConfigError: naming the key, the value, what is wrong and the fix.
    """
    value = config["results_dir"]
    if value.startswith("~"):
        raise ConfigError(
            f"{_KEY}: {value!r} starts with `~`, which only a shell expands (here it would "
            "be a folder named `~`); write the home folder out as an absolute path"
        )
    folder = Path(value)
    if not folder.is_absolute() and ".." in folder.parts:
        raise ConfigError(
            f"{_KEY}: {value!r} leads out of the working directory ({workdir}), so it would "
            "name another folder whenever the workflow runs from another directory; give a "
            f"folder inside it ({_EXAMPLE}) or an absolute path"
        )
    workdir = workdir.resolve()
    resolved = (workdir / folder).resolve()
    if workdir.is_relative_to(resolved):
        raise ConfigError(
            f"{_KEY}: {value!r} is the working directory ({workdir}) or a folder above it; "
            "the outputs would mix with the workflow's own files. Give the results a folder "
            f"of their own ({_EXAMPLE})"
        )
    if resolved.exists() and not resolved.is_dir():
        raise ConfigError(
            f"{_KEY}: {value!r} is a file, not a folder; name a folder ({_EXAMPLE}) or move "
            "the file away"
        )
    inputs = {
        f"the workflow's shipped resources ({shipped_resources})": shipped_resources,
        f"the synthetic dataset's folder, `phantom.outdir` ({config['phantom']['outdir']})": (
            workdir / config["phantom"]["outdir"]
        ),
    }
    for name, inputs_folder in inputs.items():
        if _overlap(resolved, inputs_folder.resolve()):
            raise ConfigError(
                f"{_KEY}: {value!r} overlaps {name}: the outputs would mix with the inputs, "
                f"and deleting the results would delete those too. Name another folder "
                f"({_EXAMPLE})"
            )
    return folder
