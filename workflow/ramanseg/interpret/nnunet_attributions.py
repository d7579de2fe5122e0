"""Post-hoc attributions of the nnU-Net ensemble with Captum (paper section 4.1.1).

The paper explains one pixel in a false-positive region of one test image:

1. **Layer Grad-CAM** at an encoder layer, for each of the five fold networks and averaged
   over them (the mean of the fold maps, not Grad-CAM of the ensemble);
2. **Integrated Gradients** on the ensemble (the mean of the folds' logits), summed in
   absolute value over the image for each input channel. Attributions are linear in the
   model, so the ensemble's are computed as the mean of the folds' (one network's
   activations in memory at a time, same numbers);
3. **Feature Ablation** of each channel over the epithelium: the channel is replaced by the
   baseline inside the region of the ablation class and the change of the target pixel's
   output is recorded, ``F(x) - F(x with channel c ablated in the region)`` (Captum's sign:
   positive means the channel's values there are evidence *for* the tumour class).

Captum's segmentation recipe: the network is wrapped (:class:`SegmentationOutput`) so that it
returns one number per class, here the logit at the target pixel (``output: logit``) or the
tumour-minus-background logit margin (``output: margin``), and that number is attributed.

The network input is what nnU-Net's predictor feeds its network: the stack goes through the
predictor's own preprocessor (``configuration_manager.preprocessor_class().run_case_npy``:
transpose, crop to the nonzero region, the planned normalisation — ``ZScoreNormalization``
per image and channel for our plans — and resampling to the planned spacing, an identity for
our 1 x 1 spacing), then it is zero-padded at the bottom and right to a multiple of the
network's total stride. The whole image is one forward pass (no sliding windows, no mirroring):
the attributions explain this pass, whose tumour probability at the target pixel is recorded
next to the ensemble prediction's in ``target.json``.

**Baselines.** Integrated Gradients integrates the gradient along the straight path from a
baseline to the input. nnU-Net's networks normalise every feature map per image
(``InstanceNorm``) right after each convolution, so they are nearly invariant to the input's
scale: ``F(a x)`` is the same for every ``a`` above about 0.01 and only ``F(0)`` differs. With
the all-zero baseline the whole output difference therefore happens in a sliver of the path
next to zero that no quadrature resolves, and the attributions miss almost all of it (we
measured a convergence delta equal to the output difference). ``interpret.ig_baseline``:

* ``blur`` (default): the input blurred by a Gaussian of ``ig_baseline_sigma`` pixels per
  channel (same channel means, structure finer than sigma removed): the attributions say
  which channels' local structure the output rests on;
* ``noise``: Gaussian noise with each normalised channel's mean 0 and standard deviation 1
  (seeded by ``seed``): every channel's content against none;
* ``zeros``: the all-zero input (Captum's default; degenerate for nnU-Net, see above).

Captum's convergence delta and the output difference are written to ``target.json`` and a
warning is logged when the delta exceeds 10 % of the difference.

Feature Ablation replaces a channel inside the region by **0 in the network's input space**,
which after nnU-Net's per-image z-score is the channel's image mean: the region then carries
no information in that channel. (Only part of the input changes, so the scale invariance
above does not apply.)

**Target pixel** (``interpret.sample`` / ``interpret.target_pixel`` ``auto``): see
:func:`select_target`.

This module runs the analysis and writes its files; the pieces live beside it: the target
pixel in :mod:`~ramanseg.interpret.nnunet_target`, the Captum wrappers and the network
input in :mod:`~ramanseg.interpret.nnunet_network`, the attribution methods in
:mod:`~ramanseg.interpret.nnunet_methods` and the figures in
:mod:`~ramanseg.interpret.nnunet_figures`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ramanseg.config import ConfigError, channel_names, channel_roles, class_names
from ramanseg.errors import InputError
from ramanseg.evaluate import read_ground_truth
from ramanseg.figures import figure_bytes, table_bytes
from ramanseg.fileio import json_bytes, prefixed, write_files
from ramanseg.interpret import (
    InterpretSettings,
    class_index,
    display_channel_index,
    interpret_settings,
    read_class_map,
    read_stack,
)
from ramanseg.interpret.nnunet_figures import (
    Scene,
    channel_bar_figure,
    gradcam_folds_figure,
    gradcam_mean_figure,
)
from ramanseg.interpret.nnunet_methods import (
    ablate_channels,
    channel_totals,
    gradcam_maps,
    ig_baseline,
    integrated_gradients,
    resolve_layer,
)
from ramanseg.interpret.nnunet_network import (
    TUMOUR_LABEL,
    MeanOfModels,
    NetworkInput,
    SegmentationOutput,
    fold_networks,
    prepare_input,
    target_index,
)
from ramanseg.interpret.nnunet_target import Target, select_target
from ramanseg.predictions import read_prediction_files
from ramanseg.preprocessed import PreprocessedSource
from ramanseg.split import read_split

log = logging.getLogger(__name__)


@dataclass
class AttributionResult:
    """Everything :func:`explain` computes.

    Attributes:
        layer: the Grad-CAM layer's module path.
        layer_size: its feature-map size.
        gradcam: ``(F, Y, X)`` per-fold Grad-CAM, image coordinates, NaN outside the crop.
        ig: ``(C, H', W')`` Integrated Gradients on the ensemble, network coordinates.
        ig_delta: the completeness gap ``|sum of attributions - ig_output_difference|``
            (Captum's convergence delta, for the ensemble).
        ig_output_difference: ``F(x) - F(baseline)`` of the explained output.
        ablation: ``(C,)`` Feature Ablation per channel, or ``None`` without a region.
        ablation_pixels: pixels of the ablation region inside the network input.
        model_probability: the ensemble pass's tumour probability at the pixel.
        timings: seconds per step.
    """

    layer: str
    layer_size: tuple[int, int]
    gradcam: np.ndarray
    ig: np.ndarray
    ig_delta: float
    ig_output_difference: float
    ablation: np.ndarray | None
    ablation_pixels: int
    model_probability: float
    timings: dict[str, float] = field(default_factory=dict)


def explain(
    networks: Sequence[nn.Module],
    network_input: NetworkInput,
    target: Target,
    settings: InterpretSettings,
    region: np.ndarray | None,
) -> AttributionResult:
    """Grad-CAM per fold, then Integrated Gradients and Feature Ablation on the ensemble.

    Args:
        networks: the fold networks (prepared with :func:`prepare_network`).
        network_input: the target sample's input.
        target: the pixel.
        settings: the ``interpret`` settings.
        region: the ablation region in image coordinates (``None`` or empty: no ablation).

    Returns:
        The result.
    """
    inputs = network_input.tensor
    pixel = network_input.to_network(target.y, target.x)
    output, index = settings.output, target_index(settings.output)
    timings: dict[str, float] = {}
    layer, layer_size = resolve_layer(networks[0], settings.gradcam_layer, inputs)

    start = time.perf_counter()
    maps = gradcam_maps(networks, inputs, layer, pixel, output)
    gradcam = np.stack([network_input.to_image(m) for m in maps])
    timings["gradcam_seconds"] = time.perf_counter() - start

    ensemble = MeanOfModels(networks)
    baseline = ig_baseline(inputs, settings.ig_baseline, settings.ig_baseline_sigma, settings.seed)
    with torch.no_grad():
        logits = SegmentationOutput(ensemble, pixel=pixel)(inputs)
        probability = float(torch.softmax(logits, dim=1)[0, TUMOUR_LABEL])
        explained = SegmentationOutput(ensemble, pixel=pixel, output=output)
        difference = float(explained(inputs)[0, index] - explained(baseline)[0, index])
    start = time.perf_counter()
    # IG is linear in the model: IG of the mean of the folds is the mean of the folds' IG
    # (same path, same quadrature). Fold by fold keeps one network's activations in memory.
    ig = np.mean(
        [
            integrated_gradients(
                network,
                inputs,
                pixel,
                output,
                settings.ig_steps,
                settings.internal_batch_size,
                baseline=baseline,
            )[0]
            for network in networks
        ],
        axis=0,
    )
    delta = abs(float(ig.sum()) - difference)
    timings["integrated_gradients_seconds"] = time.perf_counter() - start
    if delta > 0.1 * abs(difference):
        log.warning(
            "Integrated Gradients: convergence delta %.3g is more than 10%% of the output "
            "difference %.3g; raise interpret.ig_steps or change interpret.ig_baseline",
            delta,
            difference,
        )

    ablation, ablation_pixels = _ensemble_ablation(
        networks, network_input, region, pixel, output, settings.internal_batch_size, timings
    )
    return AttributionResult(
        layer=layer,
        layer_size=layer_size,
        gradcam=gradcam,
        ig=ig,
        ig_delta=delta,
        ig_output_difference=difference,
        ablation=ablation,
        ablation_pixels=ablation_pixels,
        model_probability=probability,
        timings=timings,
    )


def _ensemble_ablation(
    networks: Sequence[nn.Module],
    network_input: NetworkInput,
    region: np.ndarray | None,
    pixel: tuple[int, int],
    output: str,
    batch_size: int,
    timings: dict[str, float],
) -> tuple[np.ndarray | None, int]:
    """Feature Ablation of the ensemble over the region (``None`` without region pixels in
    the network input) and the region's pixel count there; adds its time to ``timings``."""
    if region is None:
        return None, 0
    cropped = network_input.crop(np.asarray(region, dtype=bool), fill=False)
    pixels = int(cropped.sum())
    if not pixels:
        return None, 0
    start = time.perf_counter()
    # Linear in the model, as IG is: the ensemble's output change is the mean of the folds'.
    ablation = np.mean(
        [
            ablate_channels(network, network_input.tensor, cropped, pixel, output, batch_size)
            for network in networks
        ],
        axis=0,
    )
    timings["feature_ablation_seconds"] = time.perf_counter() - start
    return ablation, pixels


def channel_table(config: Mapping[str, Any], column: str, values: np.ndarray) -> pd.DataFrame:
    """A per-channel table: index, name, role, ``column`` and its rank (1 = largest)."""
    names = channel_names(config)
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(-values, kind="stable")
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[order] = np.arange(1, len(values) + 1)
    return pd.DataFrame(
        {
            "channel": np.arange(len(names)),
            "name": names,
            "role": channel_roles(config),
            column: values,
            "rank": ranks,
        }
    )


@dataclass
class _TestSet:
    """The test samples' predictions and ground truth, as the target selection needs them."""

    samples: list[str]
    predicted: dict[str, np.ndarray]
    probability: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]
    tissue: dict[str, np.ndarray]
    classes: dict[str, np.ndarray]


def _read_test_set(
    samples: Sequence[str],
    preprocessed: PreprocessedSource,
    predictions: Mapping[str, Mapping[str, Path]],
    names: Sequence[str],
) -> _TestSet:
    data = _TestSet(list(samples), {}, {}, {}, {}, {})
    for sample in samples:
        files = predictions.get(sample, {})
        for kind in ("mask", "probability"):
            if kind not in files:
                raise InputError(
                    f"the nnU-Net prediction ({kind}) of this test sample was not given",
                    sample=sample,
                    fix="run the rule nnunet_predict first, and pass its files",
                )
        data.predicted[sample], data.probability[sample] = read_prediction_files(
            files["mask"], files["probability"], sample
        )
        truth, tissue = read_ground_truth(preprocessed, sample, "tissue")
        data.truth[sample], data.tissue[sample] = truth, tissue
        data.classes[sample] = read_class_map(preprocessed, sample, names)
        if data.predicted[sample].shape != truth.shape:
            raise InputError(
                f"the nnU-Net prediction has shape {data.predicted[sample].shape}, the ground "
                f"truth {truth.shape}",
                sample=sample,
                path=files["mask"],
                fix="rerun the rule nnunet_predict",
            )
    return data


def run_interpret_nnunet(
    model_dir: str | Path,
    folds: Sequence[int],
    preprocessed: PreprocessedSource,
    predictions: Mapping[str, Mapping[str, Path]],
    split: str | Path,
    outdir: str | Path,
    config: Mapping[str, Any],
    device: torch.device,
) -> dict[str, Any]:
    """Run the nnU-Net attributions and write their figures, tables and ``target.json``.

    Call :func:`ramanseg.nnunet.environment.configure_nnunet` first.

    Writes into ``outdir``: ``gradcam_folds.png/.pdf``, ``gradcam_mean.png/.pdf``,
    ``integrated_gradients.png/.pdf/.csv``, ``feature_ablation.png/.pdf/.csv`` and
    ``target.json`` (the target and how it was chosen, the layer, the settings and Integrated
    Gradients' completeness check; the timings go to the log, so that reruns give identical
    files). When the target sample has no pixel of the
    ablation class (possible only with a configured sample) the ablation table is all zeros
    and the figure says so.

    Args:
        model_dir: the trained nnU-Net model folder (holding ``fold_<k>``).
        folds: the folds.
        preprocessed: the test samples' preprocessed files (stack, mask, class map,
            foreground) by sample, or ``results/preprocessed``.
        predictions: the nnU-Net predictions' files by sample
            (:func:`ramanseg.predictions.predictions_by_sample`).
        split: ``results/split/split.json``.
        outdir: ``results/interpret/nnunet``.
        config: the configuration (``channels``, ``annotations``, ``interpret``).
        device: the torch device.

    Returns:
        The content of ``target.json``.

    Raises:
        InputError: missing inputs (a missing prediction names the rule ``nnunet_predict``),
            or no test sample with pixels of the ablation class.
        ConfigError: invalid ``interpret`` settings.
    """
    from ramanseg.nnunet.run import load_ensemble

    settings = interpret_settings(config)
    channels = channel_names(config)
    display = display_channel_index(config, settings.display_channel)
    ablation_value = class_index(config, settings.ablation_class)
    test = _read_test_set(read_split(split)["test"], preprocessed, predictions, class_names(config))
    target = _choose_target(test, settings, ablation_value)
    log.info("target: %s", target.describe())

    start = time.perf_counter()
    predictor = load_ensemble(model_dir, folds, device)
    networks = fold_networks(predictor, device)
    load_seconds = time.perf_counter() - start
    stack = read_stack(preprocessed, target.sample, len(channels))
    network_input = prepare_input(predictor, stack, device)
    region = test.classes[target.sample] == ablation_value
    try:
        result = explain(networks, network_input, target, settings, region)
    except ValueError as error:  # a target pixel in nnU-Net's all-zero border
        raise ConfigError(f"sample {target.sample!r}: {error}") from None
    result.timings["load_seconds"] = load_seconds

    outdir = Path(outdir)
    scene = Scene(stack[display], channels[display], target, result.layer, result.layer_size)
    outlines = [
        (test.truth[target.sample], "#ff3030", "ground truth tumour", "solid"),
        (test.predicted[target.sample] != 0, "#ff4fd8", "nnU-Net prediction", "dashed"),
        (region, "#e6a01e", settings.ablation_class, "dotted"),
    ]
    totals = channel_totals(result.ig)
    ig_table = channel_table(config, "ig_abs_sum", totals)
    ig_table["ig_sum"] = result.ig.reshape(result.ig.shape[0], -1).sum(axis=1)
    ablation, ablation_title = _ablation_values(result, settings, target, len(channels))
    ig_title = (
        f"Integrated Gradients on the {len(folds)}-fold ensemble, tumour {settings.output}, "
        f"baseline {_baseline_text(settings)}, {settings.ig_steps} steps\n{target.describe()}"
    )
    figures = {
        "gradcam_folds": gradcam_folds_figure(result.gradcam, folds, scene),
        "gradcam_mean": gradcam_mean_figure(
            result.gradcam.mean(axis=0), len(folds), scene, outlines
        ),
        "integrated_gradients": channel_bar_figure(
            totals, channels, "sum over pixels of |attribution|", ig_title, signed=False
        ),
        "feature_ablation": channel_bar_figure(
            ablation,
            channels,
            f"F(x) - F(x ablated), tumour {settings.output}",
            ablation_title,
            signed=True,
        ),
    }
    summary = _summary(result, settings, target, folds, network_input, channels[display])
    files: dict[Path, bytes] = {}
    for name, figure in figures.items():
        files.update(prefixed(outdir / name, figure_bytes(figure)))
    files[outdir / "integrated_gradients.csv"] = table_bytes(ig_table)[".csv"]
    files[outdir / "feature_ablation.csv"] = table_bytes(
        channel_table(config, "output_change", ablation)
    )[".csv"]
    files[outdir / "target.json"] = json_bytes(summary)
    write_files(files)
    timings = {key: round(value, 3) for key, value in sorted(result.timings.items())}
    log.info("nnU-Net attributions written to %s (seconds: %s)", outdir, timings)
    return summary


def _choose_target(test: _TestSet, settings: InterpretSettings, ablation_value: int) -> Target:
    """The target pixel by the ``interpret`` settings, among the test samples that have
    pixels of the ablation class (``interpret.sample: auto``)."""
    eligible = {s: bool((test.classes[s] == ablation_value).any()) for s in test.samples}
    if settings.sample == "auto" and not any(eligible.values()):
        raise InputError(
            f"no test sample has pixels of the ablation class {settings.ablation_class!r}",
            fix="set interpret.ablation_class to a class of the test set, or interpret.sample",
        )
    try:
        return select_target(
            test.samples,
            test.predicted,
            test.probability,
            test.truth,
            test.tissue,
            sample=settings.sample,
            pixel=settings.target_pixel,
            eligible=eligible,
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _baseline_text(settings: InterpretSettings) -> str:
    """The Integrated Gradients baseline in words, for titles and ``target.json``."""
    return {
        "blur": f"blurred input (sigma {settings.ig_baseline_sigma:g} px)",
        "noise": "Gaussian noise",
        "zeros": "zeros",
    }[settings.ig_baseline]


def _ablation_values(
    result: AttributionResult, settings: InterpretSettings, target: Target, channels: int
) -> tuple[np.ndarray, str]:
    """Feature Ablation per channel and the figure's title; zeros without a region."""
    if result.ablation is not None:
        return result.ablation, (
            f"Feature Ablation of each channel over {settings.ablation_class} "
            f"({result.ablation_pixels} px; baseline 0 = channel mean)\n{target.describe()}"
        )
    return np.zeros(channels), (
        f"Feature Ablation: no {settings.ablation_class} pixels in {target.sample}, "
        f"nothing ablated\n{target.describe()}"
    )


def _summary(
    result: AttributionResult,
    settings: InterpretSettings,
    target: Target,
    folds: Sequence[int],
    network_input: NetworkInput,
    display_channel: str,
) -> dict[str, Any]:
    """The content of ``target.json`` (no timings, so that reruns give identical files)."""
    return {
        "target": asdict(target),
        "layer": result.layer,
        "layer_size": list(result.layer_size),
        "folds": list(folds),
        "output": settings.output,
        "model_probability": result.model_probability,
        "display_channel": display_channel,
        "integrated_gradients": {
            "steps": settings.ig_steps,
            "method": "gausslegendre",
            "baseline": _baseline_text(settings),
            "output_difference": result.ig_output_difference,
            "attribution_sum": float(result.ig.sum()),
            "convergence_delta": result.ig_delta,
        },
        "feature_ablation": {
            "class": settings.ablation_class,
            "pixels": result.ablation_pixels,
            "baseline": "0 in the network input (the channel's image mean after z-score)",
        },
        "network_input": {
            "offset": list(network_input.offset),
            "size": list(network_input.size),
            "padded": [int(s) for s in network_input.tensor.shape[2:]],
        },
    }


def interpret_nnunet_dir(
    nnunet_dir: str | Path,
    preprocessed: PreprocessedSource,
    predictions: Mapping[str, Mapping[str, Path]],
    split: str | Path,
    outdir: str | Path,
    config: Mapping[str, Any],
    threads: int = 1,
) -> dict[str, Any]:
    """``ramanseg interpret-nnunet``: configure nnU-Net, find the trained folds, explain.

    The model folder follows from ``nnunet.dataset_id``, ``trainer``, ``planner`` and
    ``configuration``; the folds from the split's ``folds`` list.

    Args:
        nnunet_dir: the folder holding nnU-Net's raw, preprocessed and trained folders.
        preprocessed: the test samples' preprocessed files by sample.
        predictions: the nnU-Net predictions' files by sample.
        split: ``results/split/split.json``.
        outdir: ``results/interpret/nnunet``.
        config: the configuration (also ``nnunet``, ``device``, ``seed``, ``deterministic``).
        threads: torch CPU threads.

    Returns:
        The content of ``target.json``.

    Raises:
        ConfigError: a missing ``nnunet`` key or invalid ``interpret`` settings.
        InputError: a missing checkpoint (naming the rule ``nnunet_train``) or input.
    """
    from ramanseg.nnunet.environment import configure_nnunet
    from ramanseg.nnunet.run import trained_model_dir
    from ramanseg.runtime import configure_reproducibility, resolve_device

    nnunet = config.get("nnunet") or {}
    for key in ("dataset_id", "trainer", "planner", "configuration"):
        if key not in nnunet:
            raise ConfigError(f"configuration key 'nnunet.{key}' is required here")
    interpret_settings(config)  # fail on bad settings before loading anything
    threads = max(int(threads), 1)
    configure_nnunet(nnunet_dir, processes=threads)
    torch.set_num_threads(threads)
    device = resolve_device(config.get("device", "auto"))
    configure_reproducibility(
        int(config.get("seed", 0)), bool(config.get("deterministic", True)), device
    )
    folds = list(range(len(read_split(split)["folds"])))
    model_dir = trained_model_dir(
        nnunet["dataset_id"], nnunet["trainer"], nnunet["planner"], nnunet["configuration"]
    )
    for fold in folds:
        checkpoint = model_dir / f"fold_{fold}" / "checkpoint_final.pth"
        if not checkpoint.is_file():
            raise InputError(
                "the fold's final checkpoint does not exist",
                path=checkpoint,
                fix=f"run the rule nnunet_train for fold {fold}",
            )
    return run_interpret_nnunet(
        model_dir, folds, preprocessed, predictions, split, outdir, config, device
    )
