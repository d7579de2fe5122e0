"""Prototype projection (ProtoPNet's push) and the records of where each prototype came from."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from ramanseg.fileio import write_json
from ramanseg.models.prototypes.layer import PrototypeLayer, l2_distance_map, log_similarity
from ramanseg.models.prototypes.losses import downsample_labels

if TYPE_CHECKING:
    from ramanseg.models.ramanseg import RamanSeg

# --------------------------------------------------------------------------------------------
# Projection.


@dataclass(frozen=True)
class PrototypeRecord:
    """Where a projected prototype came from.

    Attributes:
        prototype: prototype index ``j``.
        prototype_class: its class.
        sample_id: the source sample.
        sample_index: position of the sample in the projection set.
        latent_y, latent_x: centre of the source window on the latent map.
        image_y, image_x: that latent cell's centre in image pixels.
        distance: squared distance between the prototype before projection and its new value.
        bbox: ``(y0, y1, x0, x1)``, half-open, image pixels: the connected region above the
            percentile threshold of the projected prototype's upsampled similarity map that
            contains its maximum (ProtoPNet's bounding region).
        patch_box: ``(y0, y1, x0, x1)``: the image pixels pooled into the k x k latent window.
        image_size: ``(H, W)`` of the source image.
        latent_size: ``(h, w)`` of its latent map.
    """

    prototype: int
    prototype_class: int
    sample_id: str
    sample_index: int
    latent_y: int
    latent_x: int
    image_y: int
    image_x: int
    distance: float
    bbox: tuple[int, int, int, int]
    patch_box: tuple[int, int, int, int]
    image_size: tuple[int, int]
    latent_size: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def high_activation_bbox(
    activation: np.ndarray, percentile: float = 95.0
) -> tuple[int, int, int, int]:
    """The bounding box of the high-activation region containing the activation's maximum.

    ProtoPNet (``find_high_activation_crop``) boxes *every* pixel at or above the 95th
    percentile; on whole tissue images a prototype fires in many places, so we box only the
    8-connected component of those pixels that contains the maximum (the first maximum in
    row-major order when tied).

    Args:
        activation: a 2-D activation map (image size).
        percentile: the threshold percentile in ``[0, 100]``.

    Returns:
        ``(y0, y1, x0, x1)``, half-open.

    Raises:
        ValueError: on a non-2-D or non-finite map or a percentile outside ``[0, 100]``.
    """
    activation = np.asarray(activation, dtype=np.float64)
    if activation.ndim != 2 or activation.size == 0:
        raise ValueError(f"activation must be a non-empty 2-D array, got shape {activation.shape}")
    if not np.isfinite(activation).all():
        raise ValueError("activation contains NaN or infinite values")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    threshold = np.percentile(activation, percentile)
    components, _ = ndimage.label(activation >= threshold, structure=np.ones((3, 3), dtype=bool))
    peak = np.unravel_index(int(np.argmax(activation)), activation.shape)
    region = components == components[peak]
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _as_tensor(array: Any, dtype: torch.dtype) -> Tensor:
    if isinstance(array, Tensor):
        return array.detach().to(dtype=dtype)
    return torch.as_tensor(np.asarray(array)).to(dtype=dtype)


@torch.no_grad()
def project_prototypes(
    model: RamanSeg,
    images: Iterable[Any],
    masks: Iterable[Any],
    sample_ids: Sequence[str],
    *,
    include_border: bool = False,
    percentile: float = 95.0,
    device: torch.device | str | None = None,
) -> list[PrototypeRecord]:
    """Replace each prototype by its nearest latent patch of its own class (ProtoPNet's push).

    Every image is encoded once (in eval mode, one image at a time, so images of any size
    work). A latent position counts as class ``c`` when the ground truth downsampled to the
    latent size (:func:`downsample_labels`) is ``c`` there; with ``k > 1`` and
    ``include_border=False`` only windows lying fully inside the latent map are candidates, so
    a projected prototype never contains the zero padding. Prototype ``j`` becomes the
    candidate k x k window minimising ``||z_window - p_j||^2`` over all images (the first one
    on ties), computed with the prototypes as they were before projection; all prototypes are
    replaced at the end. The bounding region of each prototype is then taken from the
    *projected* prototype's similarity map on its source image, upsampled bilinearly to the
    image size (see :func:`high_activation_bbox`).

    Args:
        model: a :class:`~ramanseg.models.ramanseg.RamanSeg` (its prototypes are updated).
        images: the images, each ``(C, H, W)`` (tensor or array).
        masks: their integer ground truth, each ``(H, W)``, in the same order.
        sample_ids: the sample ids, in the same order.
        include_border: also consider windows overlapping the padding (k > 1 only).
        percentile: the bounding-region threshold percentile.
        device: where to compute; the model's device by default.

    Returns:
        one :class:`PrototypeRecord` per prototype, in prototype order.

    Raises:
        ValueError: on a shape mismatch (naming the sample), fewer/more images, masks and ids
            than each other, or a class without any candidate position.
    """
    # Checked before anything changes: the prototypes are replaced before the boxes are drawn.
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    layer: PrototypeLayer = model.prototype_layer
    if device is None:
        device = layer.prototypes.device
    device = torch.device(device)
    num_classes = model.num_classes
    k = layer.size
    r = k // 2
    # Compute in the prototypes' precision (at least float32), so that the stored patches are
    # bit-identical to what the model computes for that image.
    dtype = torch.promote_types(layer.prototypes.dtype, torch.float32)
    prototypes = layer.prototypes.detach().to(device=device, dtype=dtype)
    prototype_class = layer.prototype_class.to(device)
    num = layer.num_prototypes
    best_distance = torch.full((num,), math.inf, device=device, dtype=dtype)
    best_patch = torch.zeros_like(prototypes)
    best_where: list[tuple[int, int, int] | None] = [None] * num
    best_activation: list[Tensor | None] = [None] * num
    sizes: list[tuple[tuple[int, int], tuple[int, int]]] = []
    sample_ids = list(sample_ids)
    was_training = model.training
    model.eval()
    try:
        count = 0
        for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
            if index >= len(sample_ids):
                raise ValueError(f"more images than sample ids ({len(sample_ids)})")
            sample = sample_ids[index]
            image_t = _as_tensor(image, dtype)
            mask_t = _as_tensor(mask, torch.int64)
            if image_t.ndim != 3 or image_t.shape[0] != model.in_channels:
                raise ValueError(
                    f"sample {sample!r}: image must have shape ({model.in_channels}, H, W), "
                    f"got {tuple(image_t.shape)}"
                )
            if tuple(mask_t.shape) != tuple(image_t.shape[1:]):
                raise ValueError(
                    f"sample {sample!r}: mask shape {tuple(mask_t.shape)} does not match "
                    f"the image's {tuple(image_t.shape[1:])}"
                )
            latent = model.latent(image_t.unsqueeze(0).to(device)).to(dtype)  # (1, D, h, w)
            h, w = latent.shape[2:]
            sizes.append(((int(image_t.shape[1]), int(image_t.shape[2])), (int(h), int(w))))
            try:
                labels = downsample_labels(mask_t.unsqueeze(0), (h, w), num_classes)[0].to(device)
            except ValueError as error:
                raise ValueError(f"sample {sample!r}: {error}") from None
            candidate = labels.unsqueeze(0) == prototype_class.view(-1, 1, 1)  # (P, h, w)
            if k > 1 and not include_border:
                inside = torch.zeros((h, w), dtype=torch.bool, device=device)
                inside[r : h - r, r : w - r] = True
                candidate &= inside
            distances = l2_distance_map(latent, prototypes)[0]  # (P, h, w)
            masked = distances.masked_fill(~candidate, math.inf).reshape(num, -1)
            values, flat_index = masked.min(dim=1)
            improved = torch.nonzero(values < best_distance).flatten().tolist()
            if improved:
                padded = F.pad(latent, (r, r, r, r)) if r else latent
                for j in improved:
                    y, x = divmod(int(flat_index[j]), int(w))
                    # Padded coordinates: the window centred on (y, x) starts at (y, x).
                    best_patch[j] = padded[0, :, y : y + k, x : x + k]
                    best_distance[j] = values[j]
                    best_where[j] = (index, y, x)
                # Similarity of each new prototype on its source image, for the bounding box.
                new_distances = l2_distance_map(latent, best_patch[improved])[0]
                activation = log_similarity(new_distances, layer.epsilon).cpu()
                for slot, j in enumerate(improved):
                    best_activation[j] = activation[slot]
            count += 1
        if count != len(sample_ids):
            raise ValueError(f"{count} images and masks for {len(sample_ids)} sample ids")
        missing = sorted({int(prototype_class[j]) for j in range(num) if best_where[j] is None})
        if missing:
            raise ValueError(
                f"no latent position of class(es) {missing} in the projection images; "
                "their prototypes cannot be projected"
            )
        layer.prototypes.data.copy_(best_patch.to(layer.prototypes))
    finally:
        model.train(was_training)

    records = []
    for j in range(num):
        index, y, x = best_where[j]  # type: ignore[misc]
        (height, width), (h, w) = sizes[index]
        activation = F.interpolate(
            best_activation[j][None, None],
            size=(height, width),
            mode="bilinear",
            align_corners=False,
        )[0, 0].numpy()
        scale_y, scale_x = height / h, width / w
        records.append(
            PrototypeRecord(
                prototype=j,
                prototype_class=int(prototype_class[j]),
                sample_id=str(sample_ids[index]),
                sample_index=index,
                latent_y=y,
                latent_x=x,
                image_y=min(height - 1, int((y + 0.5) * scale_y)),
                image_x=min(width - 1, int((x + 0.5) * scale_x)),
                distance=float(best_distance[j]),
                bbox=high_activation_bbox(activation, percentile),
                patch_box=(
                    max(0, math.floor((y - r) * scale_y)),
                    min(height, math.ceil((y + r + 1) * scale_y)),
                    max(0, math.floor((x - r) * scale_x)),
                    min(width, math.ceil((x + r + 1) * scale_x)),
                ),
                image_size=(height, width),
                latent_size=(h, w),
            )
        )
    return records


def write_projection_json(records: Sequence[PrototypeRecord], path: str | Path) -> None:
    """Write projection records as JSON ``{"prototypes": [...]}``, atomically.

    Args:
        records: the records of :func:`project_prototypes`.
        path: the output file.
    """
    payload = {"prototypes": [record.to_dict() for record in records]}
    write_json(path, payload)
