"""The training data of our PyTorch models: preprocessed samples and patch sampling.

A preprocessed sample is the preprocessing stage's ``stack.ome.tif`` (float32 (C, Y, X),
values in [0, 1]), ``mask.tif`` (uint8 (Y, X), 1 = tumour) and ``foreground.tif`` (uint8
(Y, X), 1 = tissue), read through their owner, :mod:`ramanseg.preprocessed`. Samples are
held in memory: at the paper's scale (19 training samples of 24 channels) that is a few
hundred megabytes to a couple of gigabytes, and slicing patches out of in-memory arrays
keeps the sampler exact and fast without worker processes.

Patch sampling is a pure function of ``(seed, epoch)``: every epoch draws its patches from
its own generator ``numpy.random.default_rng([seed, epoch])``, so a run resumed after a
kill sees exactly the patches an uninterrupted run would, with no sampler state to save.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ramanseg.errors import InputError
from ramanseg.preprocessed import (
    PreprocessedSource,
    files_of,
    read_foreground,
    read_mask,
    read_stack,
)


@dataclass(frozen=True)
class Sample:
    """One preprocessed sample.

    Attributes:
        sample_id: the sample.
        image: float32 (C, Y, X), every value finite.
        mask: uint8 (Y, X), 1 = tumour (the segmentation target); ``None`` when read for
            prediction only.
        tissue: uint8 (Y, X), 1 = tissue (the foreground found from the H&E image);
            ``None`` when read for prediction only.
        channel_names: the OME channel names of the stack (empty if the file has none).
    """

    sample_id: str
    image: np.ndarray
    mask: np.ndarray | None
    tissue: np.ndarray | None
    channel_names: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        """(Y, X) of the sample."""
        return self.image.shape[1:]


class Batch(NamedTuple):
    """A batch of patches.

    Attributes:
        image: float32 (N, C, P, P).
        target: int64 (N, P, P), 1 = tumour; what every loss of ours takes.
    """

    image: torch.Tensor
    target: torch.Tensor


def load_sample(
    source: PreprocessedSource,
    sample_id: str,
    *,
    channel_names: Sequence[str] | None = None,
    labels: bool = True,
) -> Sample:
    """Read one preprocessed sample: its stack and, with ``labels``, its tumour mask and
    tissue foreground.

    Args:
        source: the sample's files by sample id (what a rule passes), or the folder holding
            one sub-folder per sample.
        sample_id: the sample.
        channel_names: the configured channels, checked against the stack where given.
        labels: read the mask and the foreground too (training); without, they are
            ``None`` (prediction needs only the stack).

    Raises:
        InputError: as :func:`ramanseg.preprocessed.read_stack` and
            :func:`~ramanseg.preprocessed.read_label`.
    """
    files = files_of(source, sample_id)
    image, names = read_stack(
        files.path("stack", "--stacks"), sample_id, channel_names=channel_names
    )
    if not labels:
        return Sample(sample_id, image, None, None, names)
    shape = image.shape[1:]
    mask = read_mask(files.path("mask", "--masks"), sample_id, shape)
    tissue = read_foreground(files.path("foreground", "--foregrounds"), sample_id, shape)
    return Sample(sample_id, image, mask, tissue, names)


def load_samples(
    source: PreprocessedSource,
    sample_ids: Sequence[str],
    *,
    channel_names: Sequence[str] | None = None,
    labels: bool = True,
) -> list[Sample]:
    """Read several preprocessed samples and check that they have the same channels.

    Args:
        source: the samples' files by sample id, or the folder of per-sample folders.
        sample_ids: the samples, in order.
        channel_names: the configured channels, checked against every stack where given.
        labels: read masks and foregrounds too (see :func:`load_sample`).

    Returns:
        The samples, in the order given.

    Raises:
        InputError: as :func:`load_sample`, or when channel counts or names differ.
    """
    samples = [
        load_sample(source, sample_id, channel_names=channel_names, labels=labels)
        for sample_id in sample_ids
    ]
    for sample in samples[1:]:
        first = samples[0]
        path = files_of(source, sample.sample_id).stack
        if sample.image.shape[0] != first.image.shape[0]:
            raise InputError(
                f"the stack has {sample.image.shape[0]} channels but sample "
                f"{first.sample_id!r} has {first.image.shape[0]}",
                sample=sample.sample_id,
                path=path,
                fix="preprocess every sample with the same channel configuration",
            )
        if sample.channel_names and first.channel_names:
            if sample.channel_names != first.channel_names:
                raise InputError(
                    f"the channel names {list(sample.channel_names)} differ from those of "
                    f"sample {first.sample_id!r}",
                    sample=sample.sample_id,
                    path=path,
                    fix="preprocess every sample with the same channel configuration",
                )
    return samples


def pad_to_min_size(array: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad the last two axes at their end so both are at least ``size``.

    Padding at the end keeps pixel coordinates unchanged; zeros are the darkest value of
    the normalised data, as off-tissue glass mostly is.

    Args:
        array: (..., Y, X).
        size: the minimum length of Y and X.

    Returns:
        ``array`` itself when it is large enough, otherwise a padded copy.
    """
    pad_y = max(0, size - array.shape[-2])
    pad_x = max(0, size - array.shape[-1])
    if not pad_y and not pad_x:
        return array
    widths = [(0, 0)] * (array.ndim - 2) + [(0, pad_y), (0, pad_x)]
    return np.pad(array, widths, mode="constant")


@dataclass(frozen=True)
class PatchPlan:
    """The patches of one epoch, in batch order.

    Attributes:
        sample: index of each patch's sample, int64 (N,).
        y0: top row of each patch, int64 (N,).
        x0: left column of each patch, int64 (N,).
        flip: whether each patch is flipped horizontally (along X), bool (N,).
        on_tumour: whether the patch was centred on a tumour pixel, bool (N,).
    """

    sample: np.ndarray
    y0: np.ndarray
    x0: np.ndarray
    flip: np.ndarray
    on_tumour: np.ndarray

    def __len__(self) -> int:
        return len(self.sample)


class PatchSampler:
    """Random square patches from the training samples, seeded per epoch.

    Each epoch has ``patches_per_epoch`` patches. ``round(tumour_fraction * n)`` of them
    are centred on a tumour pixel drawn uniformly from all tumour pixels of all samples
    (so larger tumours are seen proportionally more), the rest on a pixel drawn uniformly
    from all pixels (tissue and glass alike, so the model also learns what is not
    tissue). A patch is the ``patch_size`` square around its centre, shifted inside the
    image where the centre is near a border; images smaller than a patch are zero-padded
    at their end. With ``horizontal_flip`` each patch is flipped along X with probability
    1/2 (the paper's augmentation). The patch order is shuffled.

    Args:
        samples: the training samples (at least one).
        patch_size: side of the square patches, in pixels.
        patches_per_epoch: patches drawn per epoch.
        batch_size: patches per batch (the last batch of an epoch may be smaller).
        tumour_fraction: fraction of patches centred on tumour, in [0, 1].
        horizontal_flip: random flips along X.
        seed: the seed; epoch ``e`` uses ``numpy.random.default_rng([seed, e])``.

    Raises:
        ValueError: no samples, a non-positive size or count, or a fraction outside [0, 1].
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        patch_size: int,
        patches_per_epoch: int,
        batch_size: int,
        *,
        tumour_fraction: float = 0.5,
        horizontal_flip: bool = True,
        seed: int = 0,
    ) -> None:
        if not samples:
            raise ValueError("PatchSampler needs at least one training sample")
        for name, value in (
            ("patch_size", patch_size),
            ("patches_per_epoch", patches_per_epoch),
            ("batch_size", batch_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= tumour_fraction <= 1.0:
            raise ValueError(f"tumour_fraction must lie in [0, 1], got {tumour_fraction}")
        self.patch_size = patch_size
        self.patches_per_epoch = patches_per_epoch
        self.batch_size = batch_size
        self.tumour_fraction = tumour_fraction
        self.horizontal_flip = horizontal_flip
        self.seed = seed
        self.sample_ids = [s.sample_id for s in samples]
        self._shapes = [s.shape for s in samples]
        self._images = [pad_to_min_size(s.image, patch_size) for s in samples]
        self._masks = [pad_to_min_size(s.mask, patch_size) for s in samples]
        # Flat indices of tumour pixels per sample, and cumulative counts to draw one
        # uniformly over all samples with a single integer.
        self._tumour = [np.flatnonzero(s.mask).astype(np.int64) for s in samples]
        self._tumour_cum = np.cumsum([len(t) for t in self._tumour])
        self._pixel_cum = np.cumsum([y * x for y, x in self._shapes])

    def __len__(self) -> int:
        """Batches per epoch."""
        return math.ceil(self.patches_per_epoch / self.batch_size)

    @property
    def has_tumour(self) -> bool:
        """Whether any training sample has tumour pixels."""
        return bool(self._tumour_cum[-1] > 0)

    def plan(self, epoch: int) -> PatchPlan:
        """The patches of ``epoch``, a pure function of ``(seed, epoch)``.

        Args:
            epoch: the epoch (any non-negative integer).

        Returns:
            The epoch's patches in batch order.
        """
        rng = np.random.default_rng([self.seed, epoch])
        n = self.patches_per_epoch
        # With no tumour anywhere every centre is drawn uniformly instead.
        n_tumour = round(self.tumour_fraction * n) if self.has_tumour else 0
        on_tumour = np.zeros(n, dtype=bool)
        on_tumour[:n_tumour] = True
        sample = np.empty(n, dtype=np.int64)
        flat = np.empty(n, dtype=np.int64)
        if n_tumour:
            draw = rng.integers(0, self._tumour_cum[-1], size=n_tumour)
            sample[:n_tumour] = np.searchsorted(self._tumour_cum, draw, side="right")
            offset = draw - np.concatenate([[0], self._tumour_cum[:-1]])[sample[:n_tumour]]
            flat[:n_tumour] = [
                self._tumour[s][o] for s, o in zip(sample[:n_tumour], offset, strict=True)
            ]
        if n - n_tumour:
            draw = rng.integers(0, self._pixel_cum[-1], size=n - n_tumour)
            sample[n_tumour:] = np.searchsorted(self._pixel_cum, draw, side="right")
            flat[n_tumour:] = draw - np.concatenate([[0], self._pixel_cum[:-1]])[sample[n_tumour:]]
        widths = np.array([x for _, x in self._shapes])[sample]
        cy, cx = flat // widths, flat % widths
        flip = rng.random(n) < 0.5 if self.horizontal_flip else np.zeros(n, dtype=bool)
        order = rng.permutation(n)
        sample, cy, cx, flip, on_tumour = (a[order] for a in (sample, cy, cx, flip, on_tumour))
        half = self.patch_size // 2
        padded = np.array([m.shape for m in self._masks])[sample]
        y0 = np.clip(cy - half, 0, padded[:, 0] - self.patch_size)
        x0 = np.clip(cx - half, 0, padded[:, 1] - self.patch_size)
        return PatchPlan(sample, y0, x0, flip, on_tumour)

    def patch(self, plan: PatchPlan, index: int) -> tuple[np.ndarray, np.ndarray]:
        """One patch of a plan as numpy arrays.

        Args:
            plan: from :meth:`plan`.
            index: the patch's position in the plan.

        Returns:
            image float32 (C, P, P) and target uint8 (P, P), flipped if planned.
        """
        s, y0, x0 = int(plan.sample[index]), int(plan.y0[index]), int(plan.x0[index])
        window = (slice(y0, y0 + self.patch_size), slice(x0, x0 + self.patch_size))
        image = self._images[s][(slice(None), *window)]
        target = self._masks[s][window]
        if plan.flip[index]:
            image, target = image[..., ::-1], target[..., ::-1]
        return image, target

    def batches(self, epoch: int) -> Iterator[Batch]:
        """The batches of ``epoch`` as CPU tensors.

        Args:
            epoch: the epoch.

        Yields:
            :class:`Batch` objects of ``batch_size`` patches (the last may be smaller).
        """
        plan = self.plan(epoch)
        for start in range(0, len(plan), self.batch_size):
            pairs = [
                self.patch(plan, i) for i in range(start, min(start + self.batch_size, len(plan)))
            ]
            images = np.stack([p[0] for p in pairs])
            targets = np.stack([p[1] for p in pairs]).astype(np.int64)
            yield Batch(torch.from_numpy(images), torch.from_numpy(targets))
