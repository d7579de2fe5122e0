# Helpers shared by the rules: configuration and sample-sheet validation, the sample
# table, per-rule resources and the way rules call the ramanseg package.

import json
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

from ramanseg.catalog import EVALUATED_MODELS, TORCH_MODELS
from ramanseg.config import ConfigError, check_config_semantics
from ramanseg.errors import InputError
from ramanseg.nnunet.settings import NnunetSettings
from ramanseg.phantom import phantom_samplesheet
from ramanseg.predictions import MASK_SUFFIX, PROBABILITY_SUFFIX
from ramanseg.samplesheet import read_samplesheet
from ramanseg.split import make_split


def stop(message):
    """End the workflow before any job with a message for the user and exit code 2 (bad
    input), without a Python traceback."""
    print(f"ramanseg: error: {message}", file=sys.stderr)
    raise SystemExit(2)


validate(config, schema="../schemas/config.schema.yaml")
# What the schema cannot express (a [low, high] pair in the wrong order, ...), checked once
# here as in every command.
try:
    check_config_semantics(config)
except ConfigError as error:
    stop(str(error))

RESULTS = Path("results")
#: The paper's own numbers, shipped with the workflow (not in the working directory).
PAPER_RESULTS = Path(workflow.basedir) / "resources" / "paper_results.csv"
#: The report captions, shipped with the workflow.
REPORT_TEMPLATES = Path(workflow.basedir) / "workflow" / "report"
LOGS = RESULTS / "logs"
BENCHMARKS = RESULTS / "benchmarks"
PREPROCESSED = RESULTS / "preprocessed"
PREDICTIONS = RESULTS / "predictions"
MODELS = RESULTS / "models"
INTERPRET = RESULTS / "interpret"
NNUNET_FIGURES = ["gradcam_folds", "gradcam_mean", "integrated_gradients", "feature_ablation"]
PROTOTYPE_FIGURES = ["class_proportions", "kmeans_inertia"]
SWEEP_COUNTS = config["models"]["prototype_sweep"]["prototypes_per_class"]
SPLIT_JSON = RESULTS / "split" / "split.json"
NNUNET = RESULTS / "nnunet"
NNUNET_SETTINGS = NnunetSettings.from_config(config)
NNUNET_PLANS = NNUNET_SETTINGS.plans
NNUNET_RAW = NNUNET / "raw" / NNUNET_SETTINGS.dataset
NNUNET_PREPROCESSED = NNUNET / "preprocessed" / NNUNET_SETTINGS.dataset
NNUNET_MODEL = Path(NNUNET_SETTINGS.trained_model_dir(NNUNET / "trained"))

USE_PHANTOM = not config["samplesheet"]
if USE_PHANTOM:
    PHANTOM_DIR = Path(config["phantom"]["outdir"])
    SAMPLESHEET = PHANTOM_DIR / "samples.tsv"
    # The synthetic samples are known from the configuration before they are generated.
    try:
        SAMPLES = phantom_samplesheet(config, PHANTOM_DIR)
    except ConfigError as error:
        stop(str(error))
else:
    SAMPLESHEET = Path(config["samplesheet"])
    try:
        SAMPLES = read_samplesheet(SAMPLESHEET)
    except InputError as error:
        stop(f"config key `samplesheet`: {error}")

SAMPLE_IDS = list(SAMPLES["sample_id"])

# The split is a pure function of the sample sheet and the config, so the whole DAG
# (test-set predictions included) is known when the workflow starts; the split rule
# writes the same split to results/split/split.json.
SPLIT = make_split(SAMPLES[["sample_id", "patient_id"]], config)
TEST_SAMPLES = list(SPLIT["test"])
FOLDS = list(range(len(SPLIT["folds"])))


wildcard_constraints:
    sample="[A-Za-z0-9_][A-Za-z0-9_-]*",


# The package is put on the path of every job, so that `--sdm conda` environments, which
# hold the dependencies but not ramanseg itself, run the checkout's code.
_PACKAGE_PATH = shlex.quote(str(Path(workflow.basedir) / "workflow"))


# shell.prefix is formatted like a shell command, so its literal braces are doubled.
_EXPORTS = [f"export PYTHONPATH={_PACKAGE_PATH}${{{{PYTHONPATH:+:$PYTHONPATH}}}};"]
if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    # Without conda, jobs use the interpreter (and environment) Snakemake runs in.
    _EXPORTS.append(f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH;")
shell.prefix(" ".join(_EXPORTS) + " ")


def settings(*keys):
    """The configuration subset a rule's command needs, as JSON (rerun when it changes)."""
    # Key order is kept: the order of annotations.classes defines the class-map values.
    return json.dumps({key: config[key] for key in keys})


def nnunet_settings(*prediction_sections):
    """The nnU-Net rules' settings (`nnunet`, `channels`, `seed`, `deterministic`,
    `device`) with only the predictor sections a rule reads (`prediction`,
    `fast_prediction`), so that changing the predictor's settings retrains nothing."""
    nnunet = {
        key: value
        for key, value in config["nnunet"].items()
        if key not in ("prediction", "fast_prediction") or key in prediction_sections
    }
    rest = json.loads(settings("channels", "seed", "deterministic", "device"))
    return json.dumps({"nnunet": nnunet, **rest})


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
    return {"srs": row["srs"], "annotations": row["annotations"], **sample_he(wildcards)}


def sample_he(wildcards):
    """The H&E image of one sample, if the sheet names one."""
    he = SAMPLES.loc[wildcards.sample, "he"]
    return {"he": he} if he else {}


def check_resource_rules():
    """Stop on a `resources.rules` entry that names no rule (a misspelt name would silently
    give that rule the default resources). Called once every rule file is included."""
    # `phantom` exists only without a sample sheet; its resources may stay configured.
    rules = {rule.name for rule in workflow.rules} | {"phantom"}
    unknown = sorted(set(config["resources"].get("rules", {})) - rules)
    if unknown:
        stop(
            f"config key `resources.rules`: no rule is named {', '.join(unknown)}; "
            f"the rules are: {', '.join(sorted(rules))}"
        )


def he_argument(wildcards, input):
    """`--he PATH` for a sample whose sheet row names an H&E image, nothing otherwise (an
    empty `--he` value would not parse)."""
    he = input.get("he")
    return f"--he {shlex.quote(str(he))}" if he else ""


def preprocessed(name, samples=None):
    """Paths of one preprocessed output for the given (default: all) samples."""
    return expand(PREPROCESSED / "{sample}" / name, sample=samples or SAMPLE_IDS)


def predictions(model, kind):
    """The prediction files (kind: mask or probability) of a model for the test samples."""
    suffix = {"mask": MASK_SUFFIX, "probability": PROBABILITY_SUFFIX}[kind]
    return [PREDICTIONS / model / f"{sample}{suffix}" for sample in TEST_SAMPLES]


def model_settings(model, **overrides):
    """Settings of train-model / predict-model for one of our PyTorch models; `overrides`
    replace keys of the model's section (the prototype sweep's count)."""
    return json.dumps(
        {
            "seed": config["seed"],
            "deterministic": config["deterministic"],
            "device": config["device"],
            "channels": config["channels"],
            "models": {
                "training": config["models"]["training"],
                model: {**config["models"][model], **overrides},
            },
        }
    )


def sweep_run(count):
    """The model folder of one prototype count; the configured count is RamanSeg's own run."""
    if int(count) == config["models"]["ramanseg"]["prototypes_per_class"]:
        return MODELS / "ramanseg"
    return MODELS / "sweep" / f"p{count}"


#: The training runs of `train_model`: each PyTorch model of the results table, and the
#: prototype sweep's RamanSeg runs (`sweep/p<count>`).
TRAINING_RUN = "|".join([*TORCH_MODELS, r"sweep/p\d+"])


def run_model(run):
    """The model a training run trains (`sweep/p<count>` trains RamanSeg)."""
    return "ramanseg" if run.startswith("sweep/p") else run


def run_settings(run):
    """Settings of one training run: the model's own, with the sweep's prototype count."""
    if run.startswith("sweep/p"):
        count = int(run.removeprefix("sweep/p"))
        return model_settings("ramanseg", prototypes_per_class=count)
    return model_settings(run)


# The prototype figures' report captions start with what this run measured (distinct
# prototypes, purity, a collapse): interpret_prototypes writes them from the templates.
PROTOTYPE_CAPTIONED = [*PROTOTYPE_FIGURES, "prototype_summary", "prototype_gallery"]
PROTOTYPE_CAPTIONS = INTERPRET / "ramanseg" / "captions"


def prototype_caption(name):
    """The run's caption of a prototype figure (absolute: report() resolves a relative
    caption against the rule file's folder)."""
    return str((PROTOTYPE_CAPTIONS / f"{name}.rst").absolute())


def training_inputs():
    """The files a model's training reads: the training and validation samples' stacks,
    masks and foregrounds, and the split."""
    samples = list(SPLIT["train"]) + list(SPLIT["val"])
    return {
        "stacks": preprocessed("stack.ome.tif", samples),
        "masks": preprocessed("mask.tif", samples),
        "foregrounds": preprocessed("foreground.tif", samples),
        "split": SPLIT_JSON,
    }


def paper_outputs():
    """Every table and figure of the paper that the workflow regenerates."""
    outputs = [
        *preprocessed("qc.png"),
        *expand(RESULTS / "bottleneck" / "bottleneck.{ext}", ext=["csv", "parquet", "md", "png"]),
        *expand(RESULTS / "evaluation" / "results.{ext}", ext=["csv", "parquet", "md"]),
        RESULTS / "evaluation" / "results_dice.png",
        *expand(
            RESULTS / "evaluation" / "results_{name}",
            name=["comparisons.csv", "paired.png", "forest.png"],
        ),
        *expand(RESULTS / "sweep" / "prototype_sweep.{ext}", ext=["csv", "parquet", "md", "png"]),
        *expand(INTERPRET / "nnunet" / "{name}.png", name=NNUNET_FIGURES),
    ]
    if "ramanseg" in TORCH_MODELS:
        outputs += expand(INTERPRET / "ramanseg" / "{name}.png", name=PROTOTYPE_FIGURES)
    return outputs


def all_outputs():
    """Every final output: the paper's tables and figures, the data and the run's times."""
    outputs = [
        *paper_outputs(),
        *preprocessed("stack.ome.tif"),
        SPLIT_JSON,
        RESULTS / "report" / "rule_times.csv",
    ]
    if USE_PHANTOM:
        outputs.append(PHANTOM_DIR / "preview.png")
    return outputs
