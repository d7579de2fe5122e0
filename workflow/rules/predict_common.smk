# Planning `snakemake predict` (workflow/rules/predict.smk): the package's manifest, the
# slides' sheet and the helpers of the predict rules.

from ramanseg.io import srs_header
from ramanseg.package import inspect_package, package_channels
from ramanseg.predict import read_slide_sheet
from ramanseg.predictions import SLIDE_MASK_SUFFIX, slide_prediction_paths

PREDICT = RESULTS / "predict"
PACKAGE_DIR = PREDICT / "package"
PACKAGE_SETTINGS = PACKAGE_DIR / "settings.json"
PREDICT_PREPROCESSED = PREDICT / "preprocessed"

if not config["predict_samplesheet"]:
    stop(
        "config key `predict_samplesheet` is empty: name the sample sheet of the slides to "
        "segment (snakemake predict --config predict_samplesheet=SHEET model_package=ZIP). "
        "To train instead, leave `model_package` empty (--config model_package=): set, it "
        "makes the run a prediction"
    )
try:
    PACKAGE_MANIFEST = inspect_package(config["model_package"])
    PACKAGE_CHANNELS = package_channels(config["model_package"])
except InputError as error:
    stop(f"config key `model_package`: {error}")
try:
    SLIDES = read_slide_sheet(config["predict_samplesheet"])
    # Each slide's header against the package's channels, before any job starts.
    for _slide in SLIDES.itertuples():
        srs_header(_slide.srs, PACKAGE_CHANNELS, _slide.sample_id)
except InputError as error:
    stop(f"config key `predict_samplesheet`: {error}")
SLIDE_IDS = list(SLIDES["sample_id"])
#: RamanSeg's per-slide explanation needs its prototypes' source patches in the package.
PACKAGE_EXPLAINS = "models/ramanseg/prototype_patches.npz" in PACKAGE_MANIFEST["models"].get(
    "ramanseg", {}
).get("files", [])
PREDICT_MODELS = config["predict"]["models"] or list(PACKAGE_MANIFEST["models"])
_absent = [model for model in PREDICT_MODELS if model not in PACKAGE_MANIFEST["models"]]
if _absent:
    stop(
        f"config key `predict.models`: the package {config['model_package']} holds no model "
        f"{', '.join(_absent)} (it holds {', '.join(PACKAGE_MANIFEST['models'])})"
    )


wildcard_constraints:
    slide="|".join(SLIDE_IDS),
    predict_model="|".join(PREDICT_MODELS),


def slide_inputs(wildcards):
    """The input files of one slide: its SRS stack, and H&E and annotations if it has them."""
    row = SLIDES.loc[wildcards.slide]
    return {key: row[key] for key in ("srs", "he", "annotations") if row[key]}


def optional_argument(option, key):
    """`OPTION PATH` for a slide that has the file `key`, nothing otherwise."""

    def argument(wildcards, input):
        return f"{option} {shlex.quote(str(input[key]))}" if key in input.keys() else ""

    return argument


def slide_predictions(slide, kind=0):
    """The masks (kind 0) or probabilities (kind 1) of every chosen model for one slide."""
    return [slide_prediction_paths(PREDICT / slide, model)[kind] for model in PREDICT_MODELS]


def predict_outputs():
    """Every output of `snakemake predict`: per slide, and the summary over the slides."""
    outputs = []
    for slide in SLIDE_IDS:
        outputs += slide_predictions(slide, 0) + slide_predictions(slide, 1)
        outputs += [PREDICT / slide / f"{model}.geojson" for model in PREDICT_MODELS]
        outputs.append(PREDICT / slide / "overlay.png")
        if "ramanseg" in PREDICT_MODELS and PACKAGE_EXPLAINS:
            outputs.append(PREDICT / slide / "explanation.png")
    return outputs + [PREDICT / "summary.csv"]
