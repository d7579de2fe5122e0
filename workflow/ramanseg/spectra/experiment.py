"""One spectra dataset end to end: read, preprocess, grouped split, the 1D-CNN, the SVM and
the 1D ResNet transfer baseline, metrics with bootstrap CIs, explanations and figures."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ramanseg.config import require
from ramanseg.spectra.explain import class_importance
from ramanseg.spectra.metrics import bootstrap_metrics, confusion
from ramanseg.spectra.networks import ResNet1d, SpectraCNN
from ramanseg.spectra.preprocessing import PreprocessingSettings, preprocess_spectra
from ramanseg.spectra.svm import GeneticSettings, fit_svm, select_bands_ga, svm_probabilities
from ramanseg.spectra.table import SpectraTable, encode_labels, grouped_split
from ramanseg.spectra.training import TrainingSettings, probabilities, train_network

LOGGER = logging.getLogger(__name__)
#: The models of the spectra metrics table, in table order, with their labels.
SPECTRA_MODELS = {
    "cnn": "1D-CNN",
    "resnet": "1D ResNet (transfer)",
    "svm": "SVM",
    "svm_ga": "SVM-GA (bands by a genetic algorithm)",
}


@dataclass
class PreparedData:
    """A dataset ready for the models.

    Attributes:
        x: ``(n, bands)`` preprocessed spectra.
        wavenumbers: ``(bands,)`` cm-1.
        y: ``(n,)`` class indices.
        classes: the class names in index order.
        groups: ``(n,)`` group ids.
        split: ``train`` / ``val`` / ``test`` row indices.
    """

    x: np.ndarray
    wavenumbers: np.ndarray
    y: np.ndarray
    classes: list[str]
    groups: np.ndarray
    split: dict[str, np.ndarray]


def dataset_settings(config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """A dataset's entry of ``spectra.datasets``."""
    return require(config, f"spectra.datasets.{dataset}")


def preprocessing_settings(config: Mapping[str, Any], dataset: str) -> PreprocessingSettings:
    """``spectra.preprocessing``, with the dataset's own ``preprocessing`` over it."""
    section = {
        step: dict(values) for step, values in require(config, "spectra.preprocessing").items()
    }
    for step, values in dataset_settings(config, dataset).get("preprocessing", {}).items():
        section.setdefault(step, {}).update(values)
    key = "spectra.preprocessing"
    if dataset_settings(config, dataset).get("preprocessing"):
        key = f"spectra.preprocessing (with spectra.datasets.{dataset}.preprocessing)"
    return PreprocessingSettings.from_config(section, key=key)


def prepare(table: SpectraTable, config: Mapping[str, Any], dataset: str) -> PreparedData:
    """Preprocess, encode the labels and split by group."""
    x, wavenumbers = preprocess_spectra(
        table.spectra, table.wavenumbers, preprocessing_settings(config, dataset)
    )
    y, classes = encode_labels(table.labels, dataset_settings(config, dataset).get("positive"))
    split_config = require(config, "spectra.split")
    split = grouped_split(
        y,
        table.groups,
        split_config["test_fraction"],
        split_config["val_fraction"],
        int(require(config, "seed")),
    )
    return PreparedData(x, wavenumbers, y, classes, table.groups, split)


def explain_block(config: Mapping[str, Any]) -> int | None:
    """``spectra.explain_block``: the 1-based block the explanations use; ``None`` (the
    default): each network's deepest block at band resolution."""
    block = require(config, "spectra").get("explain_block")
    return None if block is None else int(block)


def genetic_settings(config: Mapping[str, Any]) -> GeneticSettings:
    """``spectra.svm_ga`` as :class:`GeneticSettings` (unset keys: its defaults)."""
    return GeneticSettings(**require(config, "spectra").get("svm_ga", {}))


def training_settings(config: Mapping[str, Any], **overrides: Any) -> TrainingSettings:
    """``spectra.training`` as :class:`TrainingSettings` (seeded by ``seed``)."""
    section = dict(require(config, "spectra.training"))
    section.update(overrides)
    return TrainingSettings(seed=int(require(config, "seed")), **section)


def pretrain_resnet(
    source: SpectraTable, target_wavenumbers: np.ndarray, config: Mapping[str, Any], dataset: str
) -> tuple[ResNet1d, pd.DataFrame]:
    """The ResNet pretrained on another spectral task: the source spectra are interpolated
    onto the target's axis (raw), preprocessed with the target's settings, and split by
    their own groups."""
    raw = np.stack(
        [np.interp(target_wavenumbers, source.wavenumbers, row) for row in source.spectra]
    )
    table = SpectraTable(raw, np.asarray(target_wavenumbers), source.labels, source.groups)
    settings = preprocessing_settings(config, dataset)
    # The target's axis is already cropped: do not crop again.
    settings.steps["crop"] = {**settings.steps["crop"], "enabled": False}
    x, _ = preprocess_spectra(table.spectra, table.wavenumbers, settings)
    y, classes = encode_labels(table.labels)
    split = grouped_split(y, table.groups, 0.2, 0.2, int(require(config, "seed")))
    model = ResNet1d(len(classes))
    transfer = require(config, "spectra.transfer")
    history = train_network(
        model,
        x[split["train"]],
        y[split["train"]],
        x[split["val"]],
        y[split["val"]],
        len(classes),
        training_settings(config, epochs=int(transfer["pretrain_epochs"])),
    )
    return model, history


def fine_tune_resnet(
    model: ResNet1d, data: PreparedData, config: Mapping[str, Any]
) -> pd.DataFrame:
    """The paper's fine-tuning: a new head; the last two stages at the backbone rate, the
    head at the head rate; everything else frozen."""
    transfer = require(config, "spectra.transfer")
    model.replace_head(len(data.classes))
    backbone, head = model.fine_tune_groups()
    groups = [
        {"params": backbone, "lr": float(transfer["backbone_learning_rate"])},
        {"params": head, "lr": float(transfer["head_learning_rate"])},
    ]
    train, val = data.split["train"], data.split["val"]
    return train_network(
        model,
        data.x[train],
        data.y[train],
        data.x[val],
        data.y[val],
        len(data.classes),
        training_settings(config),
        parameter_groups=groups,
    )


def explain_cnn(model: SpectraCNN, data: PreparedData, block: int | None = None) -> pd.DataFrame:
    """Band importance of the CNN on the test spectra, per class: Grad-CAM and the weight
    map of that class's logit, its spectra against the others (:func:`class_importance`;
    for two classes, the positive class only), scaled to a maximum absolute value of 1.

    Args:
        model: the trained network.
        data: the dataset (its test spectra are explained; all its spectra if the test set
            lacks the class).
        block: the 1-based block explained; ``None``: the deepest at band resolution.
    """
    test = data.split["test"]
    targets = [1] if len(data.classes) == 2 else list(range(len(data.classes)))
    rows = {"wavenumber": data.wavenumbers}
    for target in targets:
        x, y = data.x[test], data.y[test]
        if not (y == target).any() or (y == target).all():
            x, y = data.x, data.y
        name = data.classes[target]
        importance = class_importance(model, x, y == target, target, block)
        for method, values in importance.items():
            rows[f"{method}:{name}"] = values
    return pd.DataFrame(rows)


def run_dataset(
    table: SpectraTable,
    config: Mapping[str, Any],
    dataset: str,
    source: SpectraTable | None = None,
) -> dict[str, Any]:
    """Everything for one dataset, in memory.

    Args:
        table: the dataset.
        config: the workflow configuration (``seed``, ``spectra``).
        dataset: its name in ``spectra.datasets``.
        source: the spectra of the transfer baseline's pretraining task; None: no ResNet.

    Returns:
        ``data`` (:class:`PreparedData`), ``metrics`` (one row per model and metric),
        ``histories`` (model -> training curves), ``confusions`` (model -> matrix),
        ``importance`` (band importance table), ``predictions`` (test-set table),
        ``cnn`` (the trained network).
    """
    torch.manual_seed(int(require(config, "seed")))
    data = prepare(table, config, dataset)
    train, val, test = data.split["train"], data.split["val"], data.split["test"]
    LOGGER.info(
        "%s: %d spectra x %d bands, classes %s, split %d / %d / %d",
        dataset,
        len(data.y),
        data.x.shape[1],
        data.classes,
        len(train),
        len(val),
        len(test),
    )
    n_classes = len(data.classes)
    cnn = SpectraCNN(data.x.shape[1], n_classes)
    histories = {
        "cnn": train_network(
            cnn,
            data.x[train],
            data.y[train],
            data.x[val],
            data.y[val],
            n_classes,
            training_settings(config),
        )
    }
    predicted = {"cnn": probabilities(cnn, data.x[test])}
    if source is not None:
        resnet, pretrain_history = pretrain_resnet(source, data.wavenumbers, config, dataset)
        histories["resnet_pretrain"] = pretrain_history
        histories["resnet"] = fine_tune_resnet(resnet, data, config)
        predicted["resnet"] = probabilities(resnet, data.x[test])
    seed = int(require(config, "seed"))
    svm = fit_svm(data.x[train], data.y[train], seed=seed)
    predicted["svm"] = svm_probabilities(svm, data.x[test], n_classes)
    bands, ga_history = select_bands_ga(
        data.x[train], data.y[train], data.x[val], data.y[val], genetic_settings(config), seed
    )
    LOGGER.info(
        "%s: SVM-GA keeps %d of %d bands (validation balanced accuracy by generation %s)",
        dataset,
        bands.sum(),
        len(bands),
        [round(f, 3) for f in ga_history],
    )
    svm_ga = fit_svm(data.x[train][:, bands], data.y[train], seed=seed)
    predicted["svm_ga"] = svm_probabilities(svm_ga, data.x[test][:, bands], n_classes)
    bootstrap = require(config, "spectra.bootstrap")
    metrics = []
    for model, probability in predicted.items():
        table_ = bootstrap_metrics(
            data.y[test],
            probability,
            int(bootstrap["resamples"]),
            int(require(config, "seed")),
            float(bootstrap["level"]),
        )
        metrics.append(table_.assign(dataset=dataset, model=model))
    metrics = pd.concat(metrics, ignore_index=True)[
        ["dataset", "model", "metric", "value", "ci_low", "ci_high"]
    ]
    predictions = pd.DataFrame(
        {"row": test, "group": data.groups[test], "label": np.array(data.classes)[data.y[test]]}
    )
    for model, probability in predicted.items():
        for index, name in enumerate(data.classes):
            predictions[f"{model}:{name}"] = probability[:, index]
    return {
        "data": data,
        "metrics": metrics,
        "histories": histories,
        "confusions": {m: confusion(data.y[test], p) for m, p in predicted.items()},
        "importance": explain_cnn(cnn, data, explain_block(config)),
        "predictions": predictions,
        "cnn": cnn,
    }


def metrics_markdown(metrics: pd.DataFrame) -> str:
    """The metrics table as Markdown: one row per dataset and model, ``value [low, high]``."""
    frame = metrics.copy()
    frame["cell"] = [
        f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
        for v, lo, hi in zip(frame["value"], frame["ci_low"], frame["ci_high"], strict=True)
    ]
    wide = frame.pivot_table(
        index=["dataset", "model"], columns="metric", values="cell", aggfunc="first", sort=False
    ).reset_index()
    wide["model"] = wide["model"].map(lambda name: SPECTRA_MODELS.get(name, name))
    return (
        "Test-set metrics per dataset (95 % bootstrap CI, seeded resamples of the test "
        "spectra)\n\n" + wide.to_markdown(index=False) + "\n"
    )


def model_path(outdir: str | Path) -> Path:
    """Where :func:`run_dataset`'s CNN weights are written."""
    return Path(outdir) / "cnn.pt"
