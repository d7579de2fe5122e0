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

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ramanseg import preprocessed
from ramanseg.config import (  # noqa: F401 (display_channel_index: the analyses' import)
    ConfigError,
    class_names,
    display_channel_index,
    require,
)
from ramanseg.preprocessed import PreprocessedSource, files_of

log = logging.getLogger(__name__)

#: The output the attributions explain, per target pixel: the tumour logit, or the
#: tumour-minus-background logit margin (the log-odds of a two-class softmax).
OUTPUTS = ("logit", "margin")
#: Integrated Gradients baselines (see ramanseg.interpret.nnunet_attributions.ig_baseline).
IG_BASELINES = ("blur", "noise", "zeros")
#: Smallest side (pixels) of the feature map ``gradcam_layer: auto`` may choose.
GRADCAM_MIN_SIZE = 16


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
            ``auto`` (see :func:`ramanseg.config.display_channel_index`).
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
    """The ``interpret`` section of a validated configuration, typed.

    The schema validated every value and filled in the defaults; the relations between
    sections (a target pixel needs its sample, the ablation class and the display channel
    must exist) were checked by :func:`ramanseg.config.check_config_semantics`.

    Args:
        config: the validated configuration (``interpret``, ``seed``).
    """
    values = require(config, "interpret")
    pixel = values["target_pixel"]
    return InterpretSettings(
        sample=values["sample"],
        target_pixel=None if pixel == "auto" else (int(pixel[0]), int(pixel[1])),
        gradcam_layer=values["gradcam_layer"],
        ig_steps=values["ig_steps"],
        ig_baseline=values["ig_baseline"],
        ig_baseline_sigma=float(values["ig_baseline_sigma"]),
        internal_batch_size=values["internal_batch_size"],
        ablation_class=values["ablation_class"],
        output=values["output"],
        display_channel=values["display_channel"],
        kmeans_n_init=values["kmeans_n_init"],
        seed=int(config.get("seed", 0)),
    )


def class_index(config: Mapping[str, Any], name: str) -> int:
    """The class-map value of an annotation class (1 + its position in ``annotations.classes``).

    Raises:
        ConfigError: a name not in ``annotations.classes``.
    """
    names = class_names(config)
    if name not in names:
        raise ConfigError(f"annotation class {name!r} is not in annotations.classes {names}")
    return names.index(name) + 1


def read_class_map(source: PreprocessedSource, sample: str, names: Sequence[str]) -> np.ndarray:
    """A sample's class map (``classes.tif``: 0 = unannotated, ``1 + index`` into ``names``),
    read by its owner, :func:`ramanseg.preprocessed.read_class_map`.

    Args:
        source: the samples' preprocessed files by sample id, or ``results/preprocessed``.
        sample: the sample id.
        names: the annotation classes in configuration order.
    """
    return preprocessed.read_class_map(
        files_of(source, sample).path("classes", "--classes"), sample, names
    )


def read_stack(source: PreprocessedSource, sample: str, n_channels: int) -> np.ndarray:
    """A sample's preprocessed stack, float32 (C, Y, X), read by its owner.

    Raises:
        InputError: a missing or unreadable file, or a channel count other than ``n_channels``.
    """
    stack, _ = preprocessed.read_stack(
        files_of(source, sample).path("stack", "--stacks"), sample, n_channels=n_channels
    )
    return stack


#: The preprocessed files each option passes, and their kind for
#: :func:`ramanseg.preprocessed.files_by_sample`.
FILE_OPTIONS = {
    "--stacks": "stacks", "--truth": "masks", "--classes": "classes",
    "--foregrounds": "foregrounds",
}  # fmt: skip


def _files_arguments(parser: Any, whose: str, options: Sequence[str]) -> None:
    for option in options:
        kind = FILE_OPTIONS[option]
        name = preprocessed.FILE_NAMES[preprocessed.LIST_KINDS[kind]]
        parser.add_argument(
            option,
            dest=kind,
            required=True,
            nargs="+",
            metavar="FILE",
            help=f"the {whose} preprocessed {name}",
        )


def _files(args: Any) -> dict[str, preprocessed.PreprocessedFiles]:
    return preprocessed.files_by_sample(
        **{kind: getattr(args, kind, None) for kind in FILE_OPTIONS.values()}
    )


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
    _files_arguments(parser, "test samples'", ("--stacks", "--truth", "--classes", "--foregrounds"))
    parser.add_argument(
        "--predictions",
        required=True,
        nargs="+",
        metavar="FILE",
        help="the nnU-Net ensemble's test predictions (masks and probabilities)",
    )
    parser.add_argument("--split", required=True, type=Path, help="results/split/split.json")
    parser.add_argument("--outdir", required=True, type=Path, help="results/interpret/nnunet")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    add_settings_arguments(parser)

    def run_nnunet(args: Any) -> int:
        from ramanseg.interpret.nnunet_attributions import interpret_nnunet_dir
        from ramanseg.predictions import predictions_by_sample

        interpret_nnunet_dir(
            args.nnunet_dir,
            _files(args),
            predictions_by_sample(args.predictions),
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
        "k, and draw the prototype gallery. Writes class_proportions and kmeans_inertia "
        "(.png .pdf .csv), prototype_summary.csv and prototype_gallery.png to --outdir.",
    )
    parser.add_argument(
        "--model-dir",
        required=True,
        type=Path,
        help="results/models/ramanseg (model.json with its projection record, model.pt)",
    )
    _files_arguments(parser, "samples'", ("--stacks", "--classes"))
    parser.add_argument("--outdir", required=True, type=Path, help="results/interpret/ramanseg")
    parser.add_argument(
        "--caption-templates",
        nargs="+",
        type=Path,
        default=[],
        help="report captions (workflow/report/*.rst) to write after this run's measurements",
    )
    parser.add_argument("--captions-dir", type=Path, help="where to write them")
    add_settings_arguments(parser)

    def run_prototypes(args: Any) -> int:
        from ramanseg.interpret.prototypes import run_interpret_prototypes

        if args.caption_templates and args.captions_dir is None:
            parser.error("--caption-templates needs --captions-dir")
        run_interpret_prototypes(
            args.model_dir,
            _files(args),
            args.outdir,
            settings_from_args(args),
            args.caption_templates,
            args.captions_dir,
        )
        return 0

    parser.set_defaults(func=run_prototypes)
