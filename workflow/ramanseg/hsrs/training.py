"""Training the HSRS models on spatial blocks, with grouped cross-validation.

Each stack of a dataset is cut into a grid of spatial blocks of about ``block_size``
pixels (:func:`make_blocks`); the blocks are the groups of the cross-validation: every
block is held out in exactly one of ``folds`` folds (:func:`assign_folds`, seeded). A
fold's model learns from patches cut from inside its training blocks, so no patch holds a
held-out pixel, and the training pixels within ``buffer`` pixels of a held-out block are
left out of the loss (:func:`training_labels`), so that no label right next to a test
pixel is learnt. Each held-out block is then predicted on its own. Every pixel gets
exactly one out-of-fold prediction; the Dice per class is measured per fold on its
held-out pixels, in the HSRS Dice table's rows (:mod:`ramanseg.hsrs.dice`).

The cube is scaled by its 99th percentile (one number per stack, so the spectral shape
is kept) and, with ``max_bands``, adjacent bands are averaged down to that many. The
loss is cross-entropy plus soft Dice over the classes; the optimiser AdamW.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from ramanseg.hsrs.dice import dice_rows
from ramanseg.hsrs.models import UNET_2D, HsrsModelSettings
from ramanseg.hsrs.phasor import dice_per_class
from ramanseg.hsrs.stack import HsrsStack, check_labelled_stacks
from ramanseg.models.hybrid_unet import HybridUNet, hybrid_unet_kwargs
from ramanseg.models.unet import UNet
from ramanseg.runtime import configure_reproducibility, resolve_device

logger = logging.getLogger(__name__)

#: The label of pixels left out of the loss.
IGNORE = -1


@dataclass(frozen=True)
class Block:
    """One spatial block: ``stack``'s pixels ``[y0:y1, x0:x1]``."""

    stack: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """The block's (y, x) slices."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def make_blocks(shapes: Sequence[tuple[int, int]], block_size: int) -> list[Block]:
    """Tile each stack into a grid of blocks of at least ``block_size`` pixels a side.

    A side of ``n`` pixels gets ``n // block_size`` blocks (at least one), of near-equal
    sizes, so every block is at least ``block_size`` wide unless the image is narrower.

    Args:
        shapes: each stack's (Y, X).
        block_size: the smallest block side.

    Returns:
        The blocks, stack by stack, row by row.
    """
    blocks = []
    for index, (height, width) in enumerate(shapes):
        ys = np.linspace(0, height, max(1, height // block_size) + 1).round().astype(int)
        xs = np.linspace(0, width, max(1, width // block_size) + 1).round().astype(int)
        for y0, y1 in itertools.pairwise(ys):
            for x0, x1 in itertools.pairwise(xs):
                blocks.append(Block(index, int(y0), int(y1), int(x0), int(x1)))
    return blocks


def assign_folds(n_blocks: int, folds: int, seed: int) -> np.ndarray:
    """The fold of each block: a seeded shuffle dealt round-robin into ``folds`` folds.

    Raises:
        ValueError: fewer blocks than folds.
    """
    if n_blocks < folds:
        raise ValueError(
            f"{n_blocks} spatial blocks cannot fill {folds} folds; lower hsrs.models.block_size "
            "or hsrs.models.folds"
        )
    order = np.random.default_rng(seed).permutation(n_blocks)
    fold_of = np.empty(n_blocks, dtype=int)
    fold_of[order] = np.arange(n_blocks) % folds
    return fold_of


def training_labels(
    stacks: Sequence[HsrsStack], blocks: Sequence[Block], held_out: np.ndarray, buffer: int
) -> list[np.ndarray]:
    """Each stack's labels for one fold: held-out blocks and their ``buffer`` are IGNORE.

    Args:
        stacks: the labelled stacks.
        blocks: the blocks.
        held_out: bool per block, True for the fold's test blocks.
        buffer: pixels around the held-out blocks also left out (Chebyshev distance).
    """
    labels = []
    for index, stack in enumerate(stacks):
        test = np.zeros(stack.shape, dtype=bool)
        for block, out in zip(blocks, held_out, strict=True):
            if out and block.stack == index:
                test[block.slices] = True
        if buffer:
            test = ndimage.binary_dilation(test, np.ones((3, 3), bool), iterations=buffer)
        fold_labels = stack.labels.astype(np.int64)
        fold_labels[test] = IGNORE
        labels.append(fold_labels)
    return labels


def prepare_cube(cube: np.ndarray, max_bands: int | None) -> np.ndarray:
    """The network input of a cube: bands averaged down to ``max_bands``, scaled to its
    99th percentile.

    Args:
        cube: (bands, Y, X).
        max_bands: at most this many bands (adjacent ones averaged); None keeps all.

    Returns:
        float32 (bands', Y, X).
    """
    cube = np.asarray(cube, dtype=np.float32)
    if max_bands is not None and cube.shape[0] > max_bands:
        cube = np.stack([group.mean(axis=0) for group in np.array_split(cube, max_bands)])
    scale = float(np.percentile(cube, 99))
    return cube / scale if scale > 0 else cube


def block_folds(
    stacks: Sequence[HsrsStack], settings: HsrsModelSettings
) -> tuple[list[np.ndarray], list[Block], np.ndarray]:
    """What every cross-validated model of a dataset shares: the network inputs
    (:func:`prepare_cube`), the spatial blocks (:func:`make_blocks`) and each block's fold
    (:func:`assign_folds`), so that the hybrid U-Net and nnU-Net hold out the same blocks.

    Args:
        stacks: the dataset's stacks.
        settings: ``hsrs.models`` (``max_bands``, ``block_size``, ``folds``, ``seed``).

    Returns:
        The cubes (one per stack), the blocks and the fold of each block.

    Raises:
        ValueError: fewer blocks than folds.
    """
    cubes = [prepare_cube(stack.cube, settings.max_bands) for stack in stacks]
    blocks = make_blocks([stack.shape for stack in stacks], settings.block_size)
    return cubes, blocks, assign_folds(len(blocks), settings.folds, settings.seed)


def build_model(name: str, settings: HsrsModelSettings, bands: int, classes: int) -> nn.Module:
    """A freshly initialised model of the HSRS stage.

    Args:
        name: a name of :attr:`HsrsModelSettings.model_names`.
        settings: the settings.
        bands: input bands.
        classes: output classes.
    """
    if name == UNET_2D:
        return UNet(
            bands,
            classes,
            levels=int(settings.unet_2d["levels"]),
            base_channels=int(settings.unet_2d["base_channels"]),
        )
    section = {
        **settings.hybrid_unet,
        "modules": settings.hybrid_switches(name),
    }
    return HybridUNet(**hybrid_unet_kwargs(section, range(bands), bands, classes))


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice over the classes, on the pixels that are not IGNORE.

    Args:
        logits: (N, classes, H, W).
        target: (N, H, W) labels, IGNORE where left out.
    """
    cross_entropy = F.cross_entropy(logits, target, ignore_index=IGNORE)
    valid = (target != IGNORE).unsqueeze(1)
    probability = torch.softmax(logits, dim=1) * valid
    one_hot = F.one_hot(target.clamp(min=0), logits.shape[1]).permute(0, 3, 1, 2) * valid
    dims = (0, 2, 3)
    dice = (2 * (probability * one_hot).sum(dims) + 1) / (
        probability.sum(dims) + one_hot.sum(dims) + 1
    )
    return cross_entropy + (1 - dice.mean())


@dataclass
class CrossValidationResult:
    """What :func:`cross_validate` produced.

    Attributes:
        predictions: per stack, the out-of-fold labels (Y, X).
        fold_of_block: the fold of each block.
        blocks: the blocks.
        rows: the Dice table rows, one per fold and class.
        log: one row per fold and epoch (fold, epoch, train_loss, seconds).
    """

    predictions: list[np.ndarray]
    fold_of_block: np.ndarray
    blocks: list[Block]
    rows: list[dict]
    log: list[dict]


def _patches(
    cubes: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    blocks: Sequence[Block],
    settings: HsrsModelSettings,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``patches_per_epoch`` random patches from inside random training blocks, flipped
    and rotated at random."""
    images, targets = [], []
    for choice in rng.integers(0, len(blocks), settings.patches_per_epoch):
        block = blocks[choice]
        size_y = min(settings.patch_size, block.y1 - block.y0)
        size_x = min(settings.patch_size, block.x1 - block.x0)
        y = block.y0 + int(rng.integers(0, block.y1 - block.y0 - size_y + 1))
        x = block.x0 + int(rng.integers(0, block.x1 - block.x0 - size_x + 1))
        image = cubes[block.stack][:, y : y + size_y, x : x + size_x]
        target = labels[block.stack][y : y + size_y, x : x + size_x]
        # Pad a patch of a small block to the patch size; the padding is IGNORE.
        pad = ((0, settings.patch_size - size_y), (0, settings.patch_size - size_x))
        image = np.pad(image, ((0, 0), *pad))
        target = np.pad(target, pad, constant_values=IGNORE)
        turns, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
        image, target = np.rot90(image, turns, axes=(1, 2)), np.rot90(target, turns)
        if flip:
            image, target = image[:, :, ::-1], target[:, ::-1]
        images.append(np.ascontiguousarray(image))
        targets.append(np.ascontiguousarray(target))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(targets))


def _train_fold(
    model: nn.Module,
    cubes: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    blocks: Sequence[Block],
    settings: HsrsModelSettings,
    device: torch.device,
    fold: int,
) -> list[dict]:
    """Train one fold's model; its log rows."""
    rng = np.random.default_rng([settings.seed, fold])
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    log = []
    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        model.train()
        images, targets = _patches(cubes, labels, blocks, settings, rng)
        losses = []
        for start in range(0, len(images), settings.batch_size):
            image = images[start : start + settings.batch_size].to(device)
            target = targets[start : start + settings.batch_size].to(device)
            loss = segmentation_loss(model(image), target)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite training loss in fold {fold}, epoch {epoch}; lower "
                    "hsrs.models.learning_rate"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        log.append(
            {
                "fold": fold,
                "epoch": epoch,
                "train_loss": float(np.mean(losses)),
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
    return log


def cross_validate(
    dataset: str, name: str, stacks: Sequence[HsrsStack], settings: HsrsModelSettings
) -> CrossValidationResult:
    """Train and score one model on a dataset by grouped cross-validation over blocks.

    Args:
        dataset: the dataset's name (for the table).
        name: the model, a name of :attr:`HsrsModelSettings.model_names`.
        stacks: the labelled stacks, all with the same classes and bands.
        settings: the settings.

    Returns:
        The out-of-fold predictions, the folds, the Dice rows and the training log.

    Raises:
        ValueError: no stacks, an unlabelled stack, stacks whose classes or band counts
            differ, or fewer blocks than folds.
    """
    class_names = check_labelled_stacks(dataset, stacks)
    device = resolve_device(settings.device)
    cubes, blocks, fold_of = block_folds(stacks, settings)
    predictions = [np.full(stack.shape, IGNORE, dtype=np.int16) for stack in stacks]
    rows, log = [], []
    for fold in range(settings.folds):
        held_out = fold_of == fold
        labels = training_labels(stacks, blocks, held_out, settings.buffer)
        train_blocks = [block for block, out in zip(blocks, held_out, strict=True) if not out]
        configure_reproducibility(settings.seed + fold, settings.deterministic, device)
        model = build_model(name, settings, cubes[0].shape[0], len(class_names)).to(device)
        log += _train_fold(model, cubes, labels, train_blocks, settings, device, fold)
        model.eval()
        truth, predicted = [], []
        with torch.no_grad():
            for block, out in zip(blocks, held_out, strict=True):
                if not out:
                    continue
                image = torch.from_numpy(cubes[block.stack][(slice(None), *block.slices)])
                labels_of_block = model(image[None].to(device)).argmax(dim=1)[0].cpu().numpy()
                predictions[block.stack][block.slices] = labels_of_block
                truth.append(stacks[block.stack].labels[block.slices].ravel())
                predicted.append(labels_of_block.ravel())
        rows += held_out_dice_rows(dataset, name, fold, class_names, truth, predicted)
    return CrossValidationResult(predictions, fold_of, blocks, rows, log)


def held_out_dice_rows(
    dataset: str,
    name: str,
    fold: int,
    class_names: Sequence[str],
    truth: Sequence[np.ndarray],
    predicted: Sequence[np.ndarray],
) -> list[dict]:
    """The Dice table's rows of one fold, over all its held-out blocks' pixels (logged).

    Args:
        dataset: the dataset's name.
        name: the model's name.
        fold: the fold.
        class_names: the classes.
        truth: the true labels of each held-out block (flat).
        predicted: the predicted labels of each held-out block (flat), in the same order.
    """
    dice = dice_per_class(np.concatenate(predicted), np.concatenate(truth), len(class_names))
    logger.info(
        "%s %s fold %d: Dice %s",
        dataset,
        name,
        fold,
        ", ".join(f"{c} {d:.3f}" for c, d in zip(class_names, dice, strict=True)),
    )
    return dice_rows(dataset, name, f"block_fold{fold}", class_names, dice)


def out_of_fold_files(
    outdir: str | Path,
    dataset: str,
    name: str,
    stack_paths: Sequence[str | Path],
    stacks: Sequence[HsrsStack],
    result: CrossValidationResult,
    details: Mapping[str, Any] | None = None,
) -> dict[Path, bytes]:
    """What a cross-validated HSRS model writes to its folder (``hsrs-train``,
    ``hsrs-nnunet-predict``): ``dice.csv``, ``folds.json`` and ``segmentation.{png,pdf}``.

    Args:
        outdir: the model's folder, ``results/hsrs/models/<dataset>/<model>``.
        dataset: the dataset's name.
        name: the model's name.
        stack_paths: the stacks' files (named in ``folds.json``).
        stacks: the stacks; the first one's out-of-fold prediction is drawn.
        result: the cross-validation's predictions, folds and Dice rows.
        details: more keys of ``folds.json``, after ``model`` and before ``blocks``.

    Returns:
        File path -> bytes, for :func:`ramanseg.fileio.write_files`.
    """
    import pandas as pd

    from ramanseg.figures import figure_bytes, table_bytes
    from ramanseg.fileio import json_bytes, prefixed
    from ramanseg.hsrs.dice import COLUMNS
    from ramanseg.hsrs.figures import segmentation_figure

    outdir = Path(outdir)
    first = stacks[0]
    figure = segmentation_figure(
        first.cube.mean(axis=0),
        first.labels,
        {name: result.predictions[0]},
        first.class_names,
        f"{dataset}: {Path(stack_paths[0]).stem}, out-of-fold",
    )
    blocks = [
        {"stack": str(stack_paths[b.stack]), "y": [b.y0, b.y1], "x": [b.x0, b.x1], "fold": int(f)}
        for b, f in zip(result.blocks, result.fold_of_block, strict=True)
    ]
    return {
        outdir / "dice.csv": table_bytes(pd.DataFrame(result.rows, columns=list(COLUMNS)))[".csv"],
        outdir / "folds.json": json_bytes({"model": name, **(details or {}), "blocks": blocks}),
        **prefixed(outdir / "segmentation", figure_bytes(figure)),
    }
