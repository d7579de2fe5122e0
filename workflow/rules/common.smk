# Helpers shared by the rules: configuration and sample-sheet validation, the sample
# table, per-rule resources and the way rules call the ramanseg package.

import json
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

from ramanseg.errors import InputError
from ramanseg.phantom import phantom_samplesheet
from ramanseg.samplesheet import read_samplesheet


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = Path("results")
LOGS = RESULTS / "logs"
BENCHMARKS = RESULTS / "benchmarks"
PREPROCESSED = RESULTS / "preprocessed"

USE_PHANTOM = not config["samplesheet"]
if USE_PHANTOM:
    PHANTOM_DIR = Path(config["phantom"]["outdir"])
    SAMPLESHEET = PHANTOM_DIR / "samples.tsv"
    # The synthetic samples are known from the configuration before they are generated.
    SAMPLES = phantom_samplesheet(config, PHANTOM_DIR)
else:
    SAMPLESHEET = Path(config["samplesheet"])
    try:
        SAMPLES = read_samplesheet(SAMPLESHEET)
    except InputError as error:
        raise ValueError(f"config key `samplesheet`: {error}") from None

SAMPLE_IDS = list(SAMPLES["sample_id"])


wildcard_constraints:
    sample="[A-Za-z0-9_-]+",


# The package is put on the path of every job, so that `--sdm conda` environments, which
# hold the dependencies but not ramanseg itself, run the checkout's code.
_PACKAGE_PATH = shlex.quote(str(Path(workflow.basedir) / "workflow"))


def _python():
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        return "python"
    return shlex.quote(sys.executable)


RAMANSEG = f"PYTHONPATH={_PACKAGE_PATH}${{PYTHONPATH:+:$PYTHONPATH}} {_python()} -m ramanseg"


def settings(*keys):
    """The configuration subset a rule's command needs, as JSON (rerun when it changes)."""
    return json.dumps({key: config[key] for key in keys}, sort_keys=True)


def rule_resources(rule_name):
    """Threads, mem_mb, runtime and gpu of a rule: its entry in `resources.rules` over
    `resources.default`."""
    spec = dict(config["resources"]["default"])
    spec.update(config["resources"].get("rules", {}).get(rule_name, {}))
    spec.setdefault("threads", 1)
    spec.setdefault("gpu", 0)
    return spec


def sample_files(wildcards):
    """The input files of one sample (H&E only where the sheet names one)."""
    row = SAMPLES.loc[wildcards.sample]
    files = {"srs": row["srs"], "annotations": row["annotations"]}
    if row["he"]:
        files["he"] = row["he"]
    return files


def preprocessed(name, samples=None):
    """Paths of one preprocessed output for the given (default: all) samples."""
    return expand(PREPROCESSED / "{sample}" / name, sample=samples or SAMPLE_IDS)


def all_outputs():
    """Every final output of the stages that exist."""
    outputs = [
        *preprocessed("stack.ome.tif"),
        *preprocessed("qc.png"),
        RESULTS / "split" / "split.json",
        *expand(RESULTS / "bottleneck" / "bottleneck.{ext}", ext=["csv", "parquet", "md", "png"]),
    ]
    if USE_PHANTOM:
        outputs.append(PHANTOM_DIR / "preview.png")
    return outputs
