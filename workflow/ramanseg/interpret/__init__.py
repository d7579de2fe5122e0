"""Interpretability analyses of the paper's section 4.1, and what they share.

* :mod:`ramanseg.interpret.nnunet_attributions` (section 4.1.1): Captum's Layer Grad-CAM
  per nnU-Net fold and averaged, Integrated Gradients per input channel on the ensemble,
  and Feature Ablation of each channel over the epithelium, all for one target pixel in a
  false-positive region;
* :mod:`ramanseg.interpret.prototypes` (section 4.1.2): the class proportions inside each
  RamanSeg prototype's source region, the k-means inertia of the prototype vectors, and
  the prototype gallery.

Both read their settings from the configuration's ``interpret`` section through
:func:`interpret_settings` (every key has a default, so a configuration without the section
works), and class maps through :func:`read_class_map`. Their commands, ``interpret-nnunet``
and ``interpret-prototypes``, are added here (:func:`add_commands`), so that building the
command line does not import torch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ramanseg.config import ConfigError, channel_names, class_names, require
from ramanseg.errors import InputError
from ramanseg.io import open_tiff
from ramanseg.preprocessed import CLASSES_NAME, STACK_NAME

log = logging.getLogger(__name__)

#: The output the attributions explain, per target pixel: the tumour logit, or the
#: tumour-minus-background logit margin (the log-odds of a two-class softmax).
OUTPUTS = ("logit", "margin")
#: Integrated Gradients baselines (see ramanseg.interpret.nnunet_attributions.ig_baseline).
IG_BASELINES = ("blur", "noise", "zeros")
#: The Raman band shown under heatmaps when ``display_channel`` is ``auto`` (CH3 stretch).
AUTO_DISPLAY_WAVENUMBER = 2930.0
#: Smallest side (pixels) of the feature map ``gradcam_layer: auto`` may choose.
GRADCAM_MIN_SIZE = 16

DEFAULTS: dict[str, Any] = {
    "sample": "auto",
    "target_pixel": "auto",
    "gradcam_layer": "auto",
    "ig_steps": 32,
    "ig_baseline": "blur",
    "ig_baseline_sigma": 8.0,
    "internal_batch_size": 8,
    "ablation_class": "Epithelium",
    "output": "logit",
    "display_channel": "auto",
    "kmeans_n_init": 10,
}


@dataclass(frozen=True)
class InterpretSettings:
    """The ``interpret`` section of the configuration, with defaults filled in.

    Attributes:
        sample: the test sample to explain, or ``auto`` (the one with the largest
            false-positive area, see :func:`ramanseg.interpret.nnunet_attributions.select_target`).
        target_pixel: ``(y, x)`` in image pixels, or ``None`` for ``auto``.
        gradcam_layer: a module path in the nnU-Net network (``encoder.stages.2``), or
            ``auto``: the deepest encoder stage whose feature map is at least
            :data:`GRADCAM_MIN_SIZE` pixels on each side for the image explained.
        ig_steps: Integrated Gradients integration steps (Gauss-Legendre).
        ig_baseline: ``blur``, ``noise`` or ``zeros`` (see :data:`IG_BASELINES`).
        ig_baseline_sigma: the Gaussian blur's standard deviation in pixels (``blur``).
        internal_batch_size: inputs per forward pass inside Captum.
        ablation_class: the annotation class whose region Feature Ablation masks.
        output: ``logit`` or ``margin`` (see :data:`OUTPUTS`).
        display_channel: the channel shown under heatmaps (a name from ``channels``), or
            ``auto`` (the Raman band nearest :data:`AUTO_DISPLAY_WAVENUMBER` cm-1).
        kmeans_n_init: k-means restarts per k for the prototype inertia curve.
        seed: the random state of k-means (the configuration's ``seed``).
    """

    sample: str
    target_pixel: tuple[int, int] | None
    gradcam_layer: str
    ig_steps: int
    ig_baseline: str
    ig_baseline_sigma: float
    internal_batch_size: int
    ablation_class: str
    output: str
    display_channel: str
    kmeans_n_init: int
    seed: int


def interpret_settings(config: Mapping[str, Any]) -> InterpretSettings:
    """Read and check the ``interpret`` section (defaults for missing keys).

    Args:
        config: the workflow configuration.

    Returns:
        The settings.

    Raises:
        ConfigError: an unknown key or an invalid value, naming the key.
    """
    section = dict(config.get("interpret") or {})
    unknown = sorted(set(section) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in `interpret`; known: {sorted(DEFAULTS)}")
    values = {**DEFAULTS, **section}
    pixel = values["target_pixel"]
    if pixel == "auto":
        target_pixel = None
    elif (
        isinstance(pixel, Sequence)
        and not isinstance(pixel, str)
        and len(pixel) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pixel)
    ):
        target_pixel = (int(pixel[0]), int(pixel[1]))
    else:
        raise ConfigError(
            f"interpret.target_pixel must be `auto` or [y, x] (integers >= 0), got {pixel!r}"
        )
    if target_pixel is not None and values["sample"] == "auto":
        raise ConfigError("interpret.target_pixel is given, so interpret.sample must name a sample")
    for key in ("ig_steps", "internal_batch_size", "kmeans_n_init"):
        value = values[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"interpret.{key} must be a positive integer, got {value!r}")
    if values["ig_steps"] < 2:
        raise ConfigError(f"interpret.ig_steps must be at least 2, got {values['ig_steps']}")
    if values["ig_baseline"] not in IG_BASELINES:
        raise ConfigError(
            f"interpret.ig_baseline must be one of {IG_BASELINES}, got {values['ig_baseline']!r}"
        )
    sigma = values["ig_baseline_sigma"]
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise ConfigError(f"interpret.ig_baseline_sigma must be a number > 0, got {sigma!r}")
    if values["output"] not in OUTPUTS:
        raise ConfigError(f"interpret.output must be one of {OUTPUTS}, got {values['output']!r}")
    for key in ("sample", "gradcam_layer", "ablation_class", "display_channel"):
        if not isinstance(values[key], str) or not values[key]:
            raise ConfigError(f"interpret.{key} must be a non-empty string, got {values[key]!r}")
    return InterpretSettings(
        sample=values["sample"],
        target_pixel=target_pixel,
        gradcam_layer=values["gradcam_layer"],
        ig_steps=values["ig_steps"],
        ig_baseline=values["ig_baseline"],
        ig_baseline_sigma=float(sigma),
        internal_batch_size=values["internal_batch_size"],
        ablation_class=values["ablation_class"],
        output=values["output"],
        display_channel=values["display_channel"],
        kmeans_n_init=values["kmeans_n_init"],
        seed=int(config.get("seed", 0)),
    )


def display_channel_index(config: Mapping[str, Any], name: str = "auto") -> int:
    """The index of the channel shown under heatmaps.

    Args:
        config: the configuration (``channels``).
        name: a channel name, or ``auto``: the Raman band nearest
            :data:`AUTO_DISPLAY_WAVENUMBER` (the first channel if there is no Raman band).

    Raises:
        ConfigError: a name that is not a configured channel.
    """
    channels = require(config, "channels")
    if name != "auto":
        names = channel_names(config)
        if name not in names:
            raise ConfigError(
                f"interpret.display_channel {name!r} is not a channel; channels: {names}"
            )
        return names.index(name)
    raman = [
        (abs(channel["wavenumber"] - AUTO_DISPLAY_WAVENUMBER), index)
        for index, channel in enumerate(channels)
        if channel.get("role") == "raman" and "wavenumber" in channel
    ]
    return min(raman)[1] if raman else 0


def class_index(config: Mapping[str, Any], name: str) -> int:
    """The class-map value of an annotation class (1 + its position in ``annotations.classes``).

    Raises:
        ConfigError: a name not in ``annotations.classes``.
    """
    names = class_names(config)
    if name not in names:
        raise ConfigError(f"annotation class {name!r} is not in annotations.classes {names}")
    return names.index(name) + 1


def read_class_map(preprocessed: str | Path, sample: str, names: Sequence[str]) -> np.ndarray:
    """A sample's class map (``classes.tif``: 0 = unannotated, ``1 + index`` into ``names``).

    When the preprocessing's ``qc.json`` lies beside it, the order of its ``class_fractions``
    is compared with ``names``: the class map's values mean different classes if the
    preprocessing ran with another class order, and a warning says so.

    Args:
        preprocessed: ``results/preprocessed``.
        sample: the sample id.
        names: the annotation classes in configuration order.

    Returns:
        uint8 (Y, X).

    Raises:
        InputError: a missing or unreadable file, not 2-D, or a value above ``len(names)``.
    """
    folder = Path(preprocessed) / sample
    path = folder / CLASSES_NAME
    fix = "run the preprocess step for this sample first"
    if not path.is_file():
        raise InputError("the class map does not exist", sample=sample, path=path, fix=fix)
    with open_tiff(path, sample, "class map", fix) as tif:
        classes = np.squeeze(tif.asarray())
    if classes.ndim != 2:
        raise InputError(
            f"the class map has shape {classes.shape}", sample=sample, path=path, fix=fix
        )
    if classes.size and int(classes.max()) > len(names):
        raise InputError(
            f"the class map holds value {int(classes.max())}, but only {len(names)} classes "
            f"are configured ({list(names)})",
            sample=sample,
            path=path,
            fix="preprocess with the same annotations.classes as this step",
        )
    qc_path = folder / "qc.json"
    if qc_path.is_file():
        try:
            recorded = list(json.loads(qc_path.read_text()).get("class_fractions", {}))
        except (json.JSONDecodeError, AttributeError):
            recorded = []
        if recorded and recorded != list(names):
            log.warning(
                "sample %s: %s lists the classes in the order %s, this step uses %s; the class "
                "map's values may mean other classes",
                sample,
                qc_path,
                recorded,
                list(names),
            )
    return classes.astype(np.uint8)


def read_stack(preprocessed: str | Path, sample: str, n_channels: int) -> np.ndarray:
    """A sample's preprocessed stack (``stack.ome.tif``), float32 (C, Y, X).

    Raises:
        InputError: a missing or unreadable file, or a channel count other than ``n_channels``.
    """
    path = Path(preprocessed) / sample / STACK_NAME
    fix = "run the preprocess step for this sample first"
    if not path.is_file():
        raise InputError("the preprocessed stack does not exist", sample=sample, path=path, fix=fix)
    with open_tiff(path, sample, "stack", fix) as tif:
        stack = tif.asarray().astype(np.float32)
    if stack.ndim != 3 or stack.shape[0] != n_channels:
        raise InputError(
            f"the stack has shape {stack.shape}; expected ({n_channels}, Y, X)",
            sample=sample,
            path=path,
            fix="preprocess with the same channel list as this step",
        )
    return stack


def add_commands(subparsers: Any) -> None:
    """Add ``interpret-nnunet`` and ``interpret-prototypes`` to the ``ramanseg`` command line."""
    from ramanseg.cli import add_settings_arguments, settings_from_args

    parser = subparsers.add_parser(
        "interpret-nnunet",
        help="Grad-CAM, Integrated Gradients and Feature Ablation of nnU-Net (section 4.1.1)",
        description="Explain one pixel of a false-positive region of the nnU-Net ensemble "
        "with Captum: Layer Grad-CAM per fold and averaged, Integrated Gradients per channel, "
        "Feature Ablation of each channel over the ablation class's region. Writes "
        "gradcam_folds, gradcam_mean, integrated_gradients, feature_ablation (.png .pdf, "
        "tables .csv) and target.json to --outdir.",
    )
    parser.add_argument(
        "--nnunet-dir",
        required=True,
        type=Path,
        help="folder holding nnU-Net's raw, preprocessed and trained folders",
    )
    parser.add_argument("--preprocessed", required=True, type=Path, help="results/preprocessed")
    parser.add_argument(
        "--predictions", required=True, type=Path, help="results/predictions/nnunet"
    )
    parser.add_argument("--split", required=True, type=Path, help="results/split/split.json")
    parser.add_argument("--outdir", required=True, type=Path, help="results/interpret/nnunet")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    add_settings_arguments(parser)

    def run_nnunet(args: Any) -> int:
        from ramanseg.interpret.nnunet_attributions import interpret_nnunet_dir

        interpret_nnunet_dir(
            args.nnunet_dir,
            args.preprocessed,
            args.predictions,
            args.split,
            args.outdir,
            settings_from_args(args),
            args.threads,
        )
        return 0

    parser.set_defaults(func=run_nnunet)

    parser = subparsers.add_parser(
        "interpret-prototypes",
        help="class proportions and k-means inertia of RamanSeg's prototypes (section 4.1.2)",
        description="Tabulate and plot the annotation classes inside each projected "
        "prototype's source region and the k-means inertia of the prototype vectors for every "
        "k, and copy the prototype gallery. Writes class_proportions and kmeans_inertia "
        "(.png .pdf .csv) and prototype_gallery.png to --outdir.",
    )
    parser.add_argument(
        "--model-dir",
        required=True,
        type=Path,
        help="results/models/ramanseg (prototypes.json, model.pt, prototype_gallery.png)",
    )
    parser.add_argument("--preprocessed", required=True, type=Path, help="results/preprocessed")
    parser.add_argument("--outdir", required=True, type=Path, help="results/interpret/ramanseg")
    add_settings_arguments(parser)

    def run_prototypes(args: Any) -> int:
        from ramanseg.interpret.prototypes import run_interpret_prototypes

        run_interpret_prototypes(
            args.model_dir, args.preprocessed, args.outdir, settings_from_args(args)
        )
        return 0

    parser.set_defaults(func=run_prototypes)
