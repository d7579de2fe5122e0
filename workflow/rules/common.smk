# Helpers shared by the rules: configuration and sample-sheet validation, the sample
# table, per-rule resources and the way rules call the ramanseg package.

import json
import re
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import update_config, validate

from ramanseg.catalog import EVALUATED_MODELS, TORCH_MODELS
from ramanseg.config import ConfigError, check_config_semantics, coerce_command_line_values
from ramanseg.errors import InputError
from ramanseg.nnunet.settings import NnunetSettings
from ramanseg.phantom import phantom_samplesheet
from ramanseg.predictions import MASK_SUFFIX, PROBABILITY_SUFFIX
from ramanseg.repeats import CV_MODELS, SEED_MODELS, RepeatSettings
from ramanseg.results_dir import results_dir
from ramanseg.samplesheet import read_samplesheet
from ramanseg.split import fold_split, make_split


def stop(message):
    """End the workflow before any job with a message for the user and exit code 2 (bad
    input), without a Python traceback."""
    print(f"ramanseg: error: {message}", file=sys.stderr)
    raise SystemExit(2)


# `--config seeds=[0,1,2]` reaches us with string items (so does a mapping's value, and
# `true`): read back where the schema wants a number or a boolean.
update_config(config, coerce_command_line_values(workflow.config_settings.config))
validate(config, schema="../schemas/config.schema.yaml")
# What the schema cannot express (a [low, high] pair in the wrong order, ...), checked once
# here as in every command.
try:
    check_config_semantics(config)
except ConfigError as error:
    stop(str(error))

#: Every output's folder (config key `results_dir`; ramanseg.results_dir): `results` in
#: the demo, so that its paths and commands are those of every run before the key existed.
try:
    RESULTS = results_dir(config, Path.cwd(), Path(workflow.basedir) / "resources")
except ConfigError as error:
    stop(str(error))

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
#: The trained models `snakemake package` bundles.
PACKAGE_MODELS = config["package"]["models"]
PACKAGE_TORCH_MODELS = [model for model in PACKAGE_MODELS if model != "nnunet"]
SPLIT_JSON = RESULTS / "split" / "split.json"
NNUNET = RESULTS / "nnunet"
NNUNET_SETTINGS = NnunetSettings.from_config(config)
NNUNET_PLANS = NNUNET_SETTINGS.plans
NNUNET_RAW = NNUNET / "raw" / NNUNET_SETTINGS.dataset
NNUNET_PREPROCESSED = NNUNET / "preprocessed" / NNUNET_SETTINGS.dataset

#: `snakemake predict --config predict_samplesheet=SHEET model_package=ZIP`: prediction only,
#: planned from the package and the slides (workflow/rules/predict.smk); the training data
#: (sample sheet or synthetic dataset) is neither read nor needed.
PREDICTING = bool(config["model_package"])

if not PREDICTING:
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

    # Repeated trainings (ramanseg.repeats): one run per cross-validation fold
    # (`cross_validation`) and one per extra seed (`seeds`). Like the split, each
    # fold's split is known when the workflow starts.
    try:
        REPEATS = RepeatSettings.from_config(config)
    except ConfigError as error:
        stop(str(error))
    FOLD_SPLITS = {fold: fold_split(SPLIT, fold) for fold in REPEATS.folds}
    #: The fold that holds out each training + validation sample (cross-validation on).
    HELD_OUT_FOLD = {
        sample: fold for fold, split in FOLD_SPLITS.items() for sample in split["test"]
    }


wildcard_constraints:
    sample="[A-Za-z0-9_][A-Za-z0-9_-]*",
    # The folder prefix of a run with another training seed (ramanseg.repeats): empty for
    # the main run, `seed<k>/` for seed k (nnU-Net's and the per-pixel baselines' rules).
    seed_dir=r"(?:seed\d+/)?",


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


def nnunet_settings(*prediction_sections, seed_dir=""):
    """The nnU-Net rules' settings (`nnunet`, `channels`, `seed`, `deterministic`,
    `device`) with only the predictor sections a rule reads (`prediction`,
    `fast_prediction`), so that changing the predictor's settings retrains nothing; the
    seed is that of the run `seed_dir` (`seed<k>/`; empty: the global seed)."""
    nnunet = {
        key: value
        for key, value in config["nnunet"].items()
        if key not in ("prediction", "fast_prediction") or key in prediction_sections
    }
    rest = json.loads(settings("channels", "seed", "deterministic", "device"))
    return with_seed(json.dumps({"nnunet": nnunet, **rest}), seed_of(seed_dir))


def seed_of(seed_dir):
    """The training seed of a run's folder prefix `seed_dir`: k for `seed<k>/`, the global
    seed for the main run (empty)."""
    return int(re.fullmatch(r"seed(\d+)/", seed_dir)[1]) if seed_dir else config["seed"]


def with_seed(settings_json, seed):
    """Settings JSON with its top-level `seed` replaced."""
    return json.dumps({**json.loads(settings_json), "seed": seed})


def seeded_settings(*keys):
    """A rule's `settings` param: `settings(*keys)` with the seed of its `{seed_dir}`."""
    return lambda wildcards: with_seed(settings(*keys), seed_of(wildcards.seed_dir))


def nnunet_trained(seed_dir=""):
    """nnU-Net's results folder of the run `seed_dir` (empty: the main run)."""
    return NNUNET / f"{seed_dir}trained"


def nnunet_model_dir(seed_dir=""):
    """nnU-Net's trained model folder (plans, folds) of the run `seed_dir`."""
    return Path(NNUNET_SETTINGS.trained_model_dir(nnunet_trained(seed_dir)))


#: The main run's trained nnU-Net (the one interpreted, packaged and cross-validated).
NNUNET_MODEL = nnunet_model_dir()


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


#: The runs `predict_model` predicts the test samples of: each PyTorch model of the
#: results table, also trained with another seed (`seed<k>/<model>`, ramanseg.repeats).
PREDICTED_RUN = rf"(?:seed\d+/)?(?:{'|'.join(TORCH_MODELS)})"
#: The training runs of `train_model`: those, each model on a cross-validation fold
#: (`cv/fold<k>/<model>`), and the prototype sweep's RamanSeg runs (`sweep/p<count>`).
TRAINING_RUN = rf"(?:(?:seed\d+|cv/fold\d+)/)?(?:{'|'.join(TORCH_MODELS)})|sweep/p\d+"


def parse_run(run):
    """(fold, seed, model) of a run name: `<model>`, `seed<k>/<model>`, `cv/fold<k>/<model>`
    or the sweep's `sweep/p<count>` (model `ramanseg`); fold and seed None where absent."""
    parts = str(run).split("/")
    model = "ramanseg" if parts[0] == "sweep" else parts[-1]
    fold = int(parts[1].removeprefix("fold")) if parts[0] == "cv" else None
    seed = int(parts[0].removeprefix("seed")) if parts[0].startswith("seed") else None
    return fold, seed, model


def run_model(run):
    """The model a training run trains (`sweep/p<count>` trains RamanSeg)."""
    return parse_run(run)[2]


def run_settings(run):
    """Settings of one training run: the model's own, with the sweep's prototype count or
    the run's seed (`seed<k>/<model>`)."""
    if run.startswith("sweep/p"):
        count = int(run.removeprefix("sweep/p"))
        return model_settings("ramanseg", prototypes_per_class=count)
    _, seed, model = parse_run(run)
    settings_json = model_settings(model)
    return settings_json if seed is None else with_seed(settings_json, seed)


# The prototype figures' report captions start with what this run measured (distinct
# prototypes, purity, a collapse): interpret_prototypes writes them from the templates.
PROTOTYPE_CAPTIONED = [*PROTOTYPE_FIGURES, "prototype_summary", "prototype_gallery"]
PROTOTYPE_CAPTIONS = INTERPRET / "ramanseg" / "captions"


def prototype_caption(name):
    """The run's caption of a prototype figure (absolute: report() resolves a relative
    caption against the rule file's folder)."""
    return str((PROTOTYPE_CAPTIONS / f"{name}.rst").absolute())


def training_inputs(run=None):
    """The files a model's training reads: the training and validation samples' stacks,
    masks and foregrounds, and the split (a fold's own for a `cv/fold<k>/` run)."""
    split, split_json = run_split(run)
    samples = list(split["train"]) + list(split["val"])
    return {
        "stacks": preprocessed("stack.ome.tif", samples),
        "masks": preprocessed("mask.tif", samples),
        "foregrounds": preprocessed("foreground.tif", samples),
        "split": split_json,
    }


def package_inputs(wildcards):
    """The trained files the package bundles: our models' folders, nnU-Net's folds."""
    inputs = {
        "weights": [MODELS / model / "model.pt" for model in PACKAGE_TORCH_MODELS],
        "metadata": [MODELS / model / "model.json" for model in PACKAGE_TORCH_MODELS],
    }
    if "ramanseg" in PACKAGE_TORCH_MODELS:
        inputs["prototype_patches"] = MODELS / "ramanseg" / "prototype_patches.npz"
    if "nnunet" in PACKAGE_MODELS:
        inputs["folds"] = expand(
            NNUNET_MODEL / "fold_{fold}" / "validation" / "summary.json", fold=FOLDS
        )
    return inputs


def fold_split_json(fold):
    """The split file of one cross-validation fold (`ramanseg fold-split`)."""
    return RESULTS / "split" / "cv" / f"fold{fold}.json"


def run_split(run):
    """(split, split file) a run trains and predicts with: a fold's own for `cv/fold<k>/`."""
    fold = parse_run(run)[0] if run is not None else None
    if fold is None:
        return SPLIT, SPLIT_JSON
    return FOLD_SPLITS[fold], fold_split_json(fold)


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
    return outputs + repeat_outputs()


def held_out_predictions(model, kind="mask"):
    """A model's predictions of every training + validation sample, each by its fold."""
    suffix = {"mask": MASK_SUFFIX, "probability": PROBABILITY_SUFFIX}[kind]
    return [
        PREDICTIONS / REPEATS.fold_run(fold, model) / f"{sample}{suffix}"
        for sample, fold in HELD_OUT_FOLD.items()
    ]


def cv_predict_command(wildcards, threads):
    """predict-model once per fold: each fold's model on the fold's held-out samples."""
    commands = []
    for fold in REPEATS.folds:
        run = REPEATS.fold_run(fold, wildcards.cv_model)
        stacks = preprocessed("stack.ome.tif", FOLD_SPLITS[fold]["test"])
        commands.append(
            f"python -m ramanseg predict-model --model {wildcards.cv_model}"
            f" --weights {shlex.quote(str(MODELS / run))} --stacks {shlex.join(stacks)}"
            f" --split {shlex.quote(str(fold_split_json(fold)))}"
            f" --outdir {shlex.quote(str(PREDICTIONS / run))}"
            f" --timing {shlex.quote(str(PREDICTIONS / run / 'timing.json'))}"
            f" --threads {threads} --settings {shlex.quote(run_settings(run))}"
        )
    return " && ".join(commands)


def held_out_data():
    """The preprocessed files of every training + validation sample (cross-validation)."""
    samples = list(HELD_OUT_FOLD)
    return {
        "stacks": preprocessed("stack.ome.tif", samples),
        "masks": preprocessed("mask.tif", samples),
        "foregrounds": preprocessed("foreground.tif", samples),
    }


def per_fold_commands(model, command, threads, settings_json, **options):
    """`command` once per fold, each with the held-out samples' files, the threads (None:
    a command without `--threads`) and settings, and per option of `options` the fold's
    "split", "model_dir", "model_json" or "predictions" (e.g. `{"--split": "split"}`)."""
    files = held_out_data()
    data = " ".join(
        f"--{option} {shlex.join(str(path) for path in files[option])}" for option in files
    )
    commands = []
    for fold in REPEATS.folds:
        run = REPEATS.fold_run(fold, model)
        where = {
            "split": fold_split_json(fold),
            "model_dir": MODELS / run,
            "model_json": MODELS / run / "model.json",
            "predictions": PREDICTIONS / run,
        }
        named = " ".join(f"{flag} {shlex.quote(str(where[key]))}" for flag, key in options.items())
        threads_option = "" if threads is None else f" --threads {threads}"
        commands.append(
            f"python -m ramanseg {command} {data} {named}{threads_option}"
            f" --settings {shlex.quote(settings_json)}"
        )
    return " && ".join(commands)


def nnunet_validation_summary(fold):
    """nnU-Net's summary of one fold's validation predictions (written by nnunet_train)."""
    return NNUNET_MODEL / f"fold_{fold}" / "validation" / "summary.json"


def nnunet_cv_command():
    """nnunet-fold-predictions once per fold: its validation predictions in our format."""
    return " && ".join(
        "python -m ramanseg nnunet-fold-predictions"
        f" --summary {shlex.quote(str(nnunet_validation_summary(fold)))}"
        f" --split {shlex.quote(str(fold_split_json(fold)))}"
        f" --outdir {shlex.quote(str(PREDICTIONS / REPEATS.fold_run(fold, 'nnunet')))}"
        for fold in REPEATS.folds
    )


def repeat_outputs():
    """The cross-validated and repeated-seed tables, where switched on."""
    outputs = []
    if REPEATS.cross_validation:
        outputs += expand(RESULTS / "evaluation" / "results_cv.{ext}", ext=["csv", "md"])
    if REPEATS.repeats_seeds:
        outputs += expand(RESULTS / "evaluation" / "results_seeds.{ext}", ext=["csv", "md"])
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
