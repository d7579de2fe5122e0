"""Training a spectra network as the skin-cancer paper does (section 2.4): weighted
cross-entropy (BCE for two classes), Adam, cosine annealing, batch 32, early stopping on
the validation loss (patience 15), the best epoch's weights kept."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSettings:
    """Attributes:
    epochs: the most epochs (the cosine schedule's period).
    batch_size: spectra per batch.
    learning_rate: Adam's learning rate.
    patience: epochs without a lower validation loss before stopping.
    seed: the seed of the initialisation and the batch order.
    """

    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 1e-3
    patience: int = 15
    seed: int = 0


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse class frequencies, ``n / (classes * n_c)`` (1 where a class is absent)."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 1.0)
    return torch.as_tensor(weights, dtype=torch.float32)


def weighted_loss(y: np.ndarray, n_classes: int) -> nn.Module:
    """The weighted loss: BCE with the positive class weighted by ``n_neg / n_pos`` for two
    classes (the paper's ω), cross-entropy with inverse-frequency weights otherwise."""
    weights = class_weights(y, n_classes)
    if n_classes == 2:
        return _BinaryLoss(weights[1] / weights[0])
    return nn.CrossEntropyLoss(weight=weights)


class _BinaryLoss(nn.Module):
    def __init__(self, pos_weight: torch.Tensor) -> None:
        super().__init__()
        self.loss = nn.BCEWithLogitsLoss(pos_weight=pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits[:, 0], target.float())


def probabilities(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """``(n, classes)`` class probabilities of ``x`` (``(n, bands)``), in eval mode."""
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = torch.as_tensor(x[start : start + batch_size], dtype=torch.float32)
            logits = model(batch[:, None, :])
            if logits.shape[1] == 1:
                positive = torch.sigmoid(logits)
                outputs.append(torch.cat([1 - positive, positive], dim=1).numpy())
            else:
                outputs.append(torch.softmax(logits, dim=1).numpy())
    return np.concatenate(outputs).astype(np.float64)


def _epoch_loss(model: nn.Module, loss: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(loss(model(x[:, None, :]), y))


def train_network(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    settings: TrainingSettings,
    parameter_groups: Iterable[dict] | None = None,
) -> pd.DataFrame:
    """Train ``model`` in place; it ends with the weights of its lowest validation loss.

    Args:
        model: a network from :mod:`ramanseg.spectra.networks`.
        x_train: ``(n, bands)`` training spectra; ``y_train`` their class indices.
        x_val: ``(m, bands)`` validation spectra; ``y_val`` their class indices.
        n_classes: the number of classes.
        settings: the training settings.
        parameter_groups: Adam's parameter groups (per-group learning rates for fine-tuning);
            default: every parameter at ``settings.learning_rate``.

    Returns:
        The training curves: epoch, train_loss, val_loss, train_accuracy, val_accuracy.
    """
    torch.manual_seed(settings.seed)
    generator = np.random.default_rng(settings.seed)
    loss = weighted_loss(y_train, n_classes)
    xt = torch.as_tensor(x_train, dtype=torch.float32)
    yt = torch.as_tensor(y_train)
    xv = torch.as_tensor(x_val, dtype=torch.float32)
    yv = torch.as_tensor(y_val)
    groups = parameter_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    optimiser = torch.optim.Adam(groups, lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=settings.epochs)
    best_loss, best_state, waited, rows = np.inf, None, 0, []
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = generator.permutation(len(xt))
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            if len(batch) < 2:  # batch norm needs two spectra
                continue
            optimiser.zero_grad()
            loss(model(xt[batch][:, None, :]), yt[batch]).backward()
            optimiser.step()
        schedule.step()
        val_loss = _epoch_loss(model, loss, xv, yv)
        rows.append(
            {
                "epoch": epoch,
                "train_loss": _epoch_loss(model, loss, xt, yt),
                "val_loss": val_loss,
                "train_accuracy": float(
                    (probabilities(model, x_train).argmax(1) == y_train).mean()
                ),
                "val_accuracy": float((probabilities(model, x_val).argmax(1) == y_val).mean()),
            }
        )
        if val_loss < best_loss:
            best_loss, best_state, waited = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            waited += 1
            if waited >= settings.patience:
                LOGGER.info("early stopping at epoch %d (best %.4f)", epoch, best_loss)
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    history = pd.DataFrame(rows)
    history["selected"] = history["val_loss"] == history["val_loss"].min()
    return history
