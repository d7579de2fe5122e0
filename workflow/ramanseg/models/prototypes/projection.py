"""Prototype projection (ProtoPNet's push) and the records of where each prototype came from."""

from __future__ import annotations

import dataclasses
import logging
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

from ramanseg.errors import InputError
from ramanseg.models.folder import METADATA_NAME, read_metadata
from ramanseg.models.prototypes.layer import PrototypeLayer, l2_distance_map, log_similarity
from ramanseg.models.prototypes.losses import downsample_labels

if TYPE_CHECKING:
    from ramanseg.models.ramanseg import RamanSeg

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Projection.


#: How projection assigns latent patches to prototypes (config ``projection_assignment``):
#: ``paper``: each prototype independently takes its nearest patch of its class (ProtoPNet,
#: the paper), so several may take the same one; ``distinct``: the prototypes of a class take
#: pairwise different patches, chosen to minimise the summed distance.
PROJECTION_ASSIGNMENTS = ("paper", "distinct")
#: How a prototype's source region is drawn from its activation map (config
#: ``region``): ``protopnet``: the box around every pixel at or above the percentile
#: (ProtoPNet's ``find_high_activation_crop``); ``peak_component``: the box around the
#: 8-connected component of those pixels that holds the maximum.
REGION_METHODS = ("protopnet", "peak_component")


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
        bbox: ``(y0, y1, x0, x1)``, half-open, image pixels: the prototype's source region,
            the high-activation box of the projected prototype's upsampled similarity map on
            its source image (see :func:`high_activation_bbox`).
        patch_box: ``(y0, y1, x0, x1)``: the image pixels pooled into the k x k latent window.
        image_size: ``(H, W)`` of the source image.
        latent_size: ``(h, w)`` of its latent map.
        purity: the fraction of the source region's pixels whose ground truth is the
            prototype's class (None in records written before it was recorded).
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
    purity: float | None = None

    @property
    def source(self) -> tuple[str, int, int]:
        """The source patch: ``(sample_id, latent_y, latent_x)``."""
        return self.sample_id, self.latent_y, self.latent_x

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def high_activation_bbox(
    activation: np.ndarray, percentile: float = 95.0, region: str = "protopnet"
) -> tuple[int, int, int, int]:
    """The bounding box of a prototype's high-activation region.

    ``protopnet`` (ProtoPNet's ``find_high_activation_crop``): the box around every pixel at or
    above the ``percentile``-th percentile of the map. ``peak_component``: the box around the
    8-connected component of those pixels that contains the maximum (the first maximum in
    row-major order when tied), a tighter box where a prototype fires in several places.

    Args:
        activation: a 2-D activation map (image size).
        percentile: the threshold percentile in ``[0, 100]``.
        region: ``protopnet`` or ``peak_component`` (see :data:`REGION_METHODS`).

    Returns:
        ``(y0, y1, x0, x1)``, half-open.

    Raises:
        ValueError: on a non-2-D or non-finite map, a percentile outside ``[0, 100]`` or an
            unknown ``region``.
    """
    activation = np.asarray(activation, dtype=np.float64)
    if activation.ndim != 2 or activation.size == 0:
        raise ValueError(f"activation must be a non-empty 2-D array, got shape {activation.shape}")
    if not np.isfinite(activation).all():
        raise ValueError("activation contains NaN or infinite values")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    if region not in REGION_METHODS:
        raise ValueError(f"region must be one of {list(REGION_METHODS)}, got {region!r}")
    high = activation >= np.percentile(activation, percentile)
    if region == "peak_component":
        components, _ = ndimage.label(high, structure=np.ones((3, 3), dtype=bool))
        peak = np.unravel_index(int(np.argmax(activation)), activation.shape)
        high = components == components[peak]
    rows = np.flatnonzero(high.any(axis=1))
    cols = np.flatnonzero(high.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _as_tensor(array: Any, dtype: torch.dtype) -> Tensor:
    if isinstance(array, Tensor):
        return array.detach().to(dtype=dtype)
    return torch.as_tensor(np.asarray(array)).to(dtype=dtype)


def _check_options(assignment: str, percentile: float, region: str) -> None:
    if assignment not in PROJECTION_ASSIGNMENTS:
        raise ValueError(
            f"assignment must be one of {list(PROJECTION_ASSIGNMENTS)}, got {assignment!r}"
        )
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    if region not in REGION_METHODS:
        raise ValueError(f"region must be one of {list(REGION_METHODS)}, got {region!r}")


def _distinct_assignment(
    prototypes: Tensor, prototype_class: Tensor, cand_where: Tensor, cand_patch: Tensor
) -> tuple[list[tuple[int, int, int]], Tensor, list[int]]:
    """Pairwise different patches for the prototypes of each class, minimising the class's
    summed squared distance.

    Each prototype's candidates are its ``K`` nearest patches (``K`` its class's prototype
    count); an optimum over all patches needs no others: a prototype holding a patch outside
    its ``K`` nearest could move to one of them that no other prototype holds (at most
    ``K - 1`` are held) at a lower cost. The assignment over the union of the candidates is
    solved exactly (scipy's ``linear_sum_assignment``).

    Args:
        prototypes: ``(P, D, k, k)``.
        prototype_class: ``(P,)``.
        cand_where: ``(P, K, 3)`` each candidate's ``(image, y, x)``; ``-1`` where none.
        cand_patch: ``(P, K, D, k, k)`` the candidate windows.

    Returns:
        per prototype its patch's ``(image, y, x)``, the patches ``(P, D, k, k)``, and the
        prototypes left over where a class has fewer patches than prototypes (they keep their
        nearest patch, shared with another prototype).
    """
    from scipy.optimize import linear_sum_assignment

    num = prototypes.shape[0]
    where: list[tuple[int, int, int]] = [(-1, -1, -1)] * num
    patches = torch.empty_like(prototypes)
    left_over: list[int] = []
    for c in torch.unique(prototype_class).tolist():
        members = torch.nonzero(prototype_class == c).flatten().tolist()
        columns: dict[tuple[int, int, int], Tensor] = {}
        for j in members:
            for slot in range(cand_where.shape[1]):
                key = tuple(int(v) for v in cand_where[j, slot])
                if key[0] >= 0 and key not in columns:
                    columns[key] = cand_patch[j, slot]
        keys = list(columns)
        flat_patches = torch.stack([columns[key] for key in keys]).flatten(1).double()
        cost = torch.cdist(prototypes[members].flatten(1).double(), flat_patches).pow(2)
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        assigned = dict(zip(rows.tolist(), cols.tolist(), strict=True))
        for row, j in enumerate(members):
            if row in assigned:
                key = keys[assigned[row]]
            else:
                key = tuple(int(v) for v in cand_where[j, 0])
                left_over.append(j)
            where[j] = key
            patches[j] = columns[key]
    return where, patches, left_over


@torch.no_grad()
def project_prototypes(
    model: RamanSeg,
    images: Iterable[Any],
    masks: Iterable[Any],
    sample_ids: Sequence[str],
    *,
    assignment: str = "paper",
    include_border: bool = False,
    percentile: float = 95.0,
    region: str = "protopnet",
    region_window: int | None = None,
    device: torch.device | str | None = None,
) -> list[PrototypeRecord]:
    """Replace each prototype by a latent patch of its own class (ProtoPNet's push).

    Every image is encoded (in eval mode, one image at a time, so images of any size work).
    A latent position counts as class ``c`` when the ground truth downsampled to the latent
    size (:func:`downsample_labels`) is ``c`` there; with ``k > 1`` and
    ``include_border=False`` only windows lying fully inside the latent map are candidates, so
    a projected prototype never contains the zero padding. Distances ``||z_window - p_j||^2``
    are computed with the prototypes as they were before projection; all prototypes are
    replaced at the end.

    * ``assignment="paper"`` (ProtoPNet, the paper): prototype ``j`` becomes its nearest
      candidate window over all images (the first one on ties), whatever the others take.
    * ``assignment="distinct"``: the prototypes of a class take pairwise different windows,
      the assignment minimising their summed distance (:func:`_distinct_assignment`, an
      optimal assignment over each prototype's ``P_c`` nearest windows).

    The source region of each prototype is then taken from the *projected* prototype's
    similarity map on its source image, upsampled bilinearly to the image size (see
    :func:`high_activation_bbox`), and its purity is the fraction of the region whose ground
    truth is the prototype's class. With ``region_window`` the box is drawn on the
    ``region_window``-pixel square of that map centred on the prototype's source (shifted to
    lie inside the image): the training input the prototype's patch belongs to, as in
    ProtoPNet, whose inputs are its training images. A whole slide holds many places a
    prototype fires on, and a box around all of them is not the prototype's region.

    Args:
        model: a :class:`~ramanseg.models.ramanseg.RamanSeg` (its prototypes are updated).
        images: the images, each ``(C, H, W)`` (tensor or array).
        masks: their integer ground truth, each ``(H, W)``, in the same order.
        sample_ids: the sample ids, in the same order.
        assignment: ``paper`` or ``distinct`` (see :data:`PROJECTION_ASSIGNMENTS`).
        include_border: also consider windows overlapping the padding (k > 1 only).
        percentile: the source-region threshold percentile.
        region: ``protopnet`` or ``peak_component`` (see :data:`REGION_METHODS`).
        region_window: the side of the square the box is drawn on (the training patch
            size), or None for the whole image.
        device: where to compute; the model's device by default.

    Returns:
        one :class:`PrototypeRecord` per prototype, in prototype order.

    Raises:
        ValueError: on a shape mismatch (naming the sample), fewer/more images, masks and ids
            than each other, an unknown option, or a class without any candidate position.
    """
    # Checked before anything changes: the prototypes are replaced before the boxes are drawn.
    _check_options(assignment, percentile, region)
    if region_window is not None and region_window < 1:
        raise ValueError(f"region_window must be a positive pixel count, got {region_window}")
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
    # The K nearest candidate windows of every prototype so far (K = 1 for the paper's
    # assignment): distance, (image, y, x) and the window itself.
    keep = 1 if assignment == "paper" else int(torch.bincount(prototype_class).max())
    cand_distance = torch.full((num, keep), math.inf, device=device, dtype=dtype)
    cand_where = torch.full((num, keep, 3), -1, device=device, dtype=torch.int64)
    cand_patch = torch.zeros((num, keep, *prototypes.shape[1:]), device=device, dtype=dtype)
    sizes: list[tuple[tuple[int, int], tuple[int, int]]] = []
    sample_ids = list(sample_ids)
    images = list(images)
    masks = list(masks)
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    if len(images) != len(sample_ids):
        raise ValueError(f"{len(images)} images and masks for {len(sample_ids)} sample ids")
    was_training = model.training
    model.eval()

    def encode(index: int) -> tuple[Tensor, Tensor]:
        sample = sample_ids[index]
        image_t = _as_tensor(images[index], dtype)
        mask_t = _as_tensor(masks[index], torch.int64)
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
        return model.latent(image_t.unsqueeze(0).to(device)).to(dtype), mask_t

    try:
        for index in range(len(images)):
            latent, mask_t = encode(index)  # (1, D, h, w)
            h, w = latent.shape[2:]
            sizes.append(((int(mask_t.shape[0]), int(mask_t.shape[1])), (int(h), int(w))))
            try:
                labels = downsample_labels(mask_t.unsqueeze(0), (h, w), num_classes)[0].to(device)
            except ValueError as error:
                raise ValueError(f"sample {sample_ids[index]!r}: {error}") from None
            candidate = labels.unsqueeze(0) == prototype_class.view(-1, 1, 1)  # (P, h, w)
            if k > 1 and not include_border:
                inside = torch.zeros((h, w), dtype=torch.bool, device=device)
                inside[r : h - r, r : w - r] = True
                candidate &= inside
            distances = l2_distance_map(latent, prototypes)[0]  # (P, h, w)
            masked = distances.masked_fill(~candidate, math.inf).reshape(num, -1)
            # A stable sort keeps the first window on ties, and earlier images before later
            # ones in the merge below (torch's min does the same for the paper's K = 1).
            values, flat_index = masked.sort(dim=1, stable=True)
            values, flat_index = values[:, :keep], flat_index[:, :keep]
            merged = torch.cat([cand_distance, values], dim=1)
            order = merged.sort(dim=1, stable=True).indices[:, :keep]
            new = order >= keep  # taken from this image
            if not bool(new.any()):
                continue
            padded = F.pad(latent, (r, r, r, r)) if r else latent
            distance_next = merged.gather(1, order)
            where_next = torch.empty_like(cand_where)
            patch_next = torch.empty_like(cand_patch)
            for j in range(num):
                for slot in range(keep):
                    source = int(order[j, slot])
                    if source < keep:
                        where_next[j, slot] = cand_where[j, source]
                        patch_next[j, slot] = cand_patch[j, source]
                    else:
                        position = int(flat_index[j, source - keep])
                        y, x = divmod(position, int(w))
                        where_next[j, slot] = torch.tensor((index, y, x))
                        # Padded coordinates: the window centred on (y, x) starts at (y, x).
                        patch_next[j, slot] = padded[0, :, y : y + k, x : x + k]
            cand_distance, cand_where, cand_patch = distance_next, where_next, patch_next
        found = torch.isfinite(cand_distance[:, 0])
        missing = sorted({int(prototype_class[j]) for j in range(num) if not bool(found[j])})
        if missing:
            raise ValueError(
                f"no latent position of class(es) {missing} in the projection images; "
                "their prototypes cannot be projected"
            )
        if assignment == "paper":
            best_where = [tuple(int(v) for v in cand_where[j, 0]) for j in range(num)]
            best_patch = cand_patch[:, 0]
        else:
            best_where, best_patch, left_over = _distinct_assignment(
                prototypes, prototype_class, cand_where, cand_patch
            )
            if left_over:
                log.warning(
                    "distinct projection: too few latent patches of their class for prototypes "
                    "%s; they take their nearest patch, shared with another prototype",
                    left_over,
                )
        best_distance = (best_patch - prototypes).flatten(1).pow(2).sum(dim=1)
        layer.prototypes.data.copy_(best_patch.to(layer.prototypes))

        # The similarity map of each projected prototype on its source image.
        activations: dict[int, Tensor] = {}
        for index in sorted({where[0] for where in best_where}):
            latent, _ = encode(index)
            users = [j for j in range(num) if best_where[j][0] == index]
            similarity = log_similarity(
                l2_distance_map(latent, best_patch[users])[0], layer.epsilon
            )
            for slot, j in enumerate(users):
                activations[j] = similarity[slot].cpu()
    finally:
        model.train(was_training)

    records = []
    for j in range(num):
        index, y, x = best_where[j]
        (height, width), (h, w) = sizes[index]
        activation = F.interpolate(
            activations[j][None, None],
            size=(height, width),
            mode="bilinear",
            align_corners=False,
        )[0, 0].numpy()
        scale_y, scale_x = height / h, width / w
        image_y = min(height - 1, int((y + 0.5) * scale_y))
        image_x = min(width - 1, int((x + 0.5) * scale_x))
        top = left = 0
        if region_window is not None:
            side_y, side_x = min(region_window, height), min(region_window, width)
            top = min(max(0, image_y - side_y // 2), height - side_y)
            left = min(max(0, image_x - side_x // 2), width - side_x)
            activation = activation[top : top + side_y, left : left + side_x]
        y0, y1, x0, x1 = high_activation_bbox(activation, percentile, region)
        bbox = (y0 + top, y1 + top, x0 + left, x1 + left)
        truth = np.asarray(_as_tensor(masks[index], torch.int64))[
            bbox[0] : bbox[1], bbox[2] : bbox[3]
        ]
        records.append(
            PrototypeRecord(
                prototype=j,
                prototype_class=int(prototype_class[j]),
                sample_id=str(sample_ids[index]),
                sample_index=index,
                latent_y=y,
                latent_x=x,
                image_y=image_y,
                image_x=image_x,
                distance=float(best_distance[j]),
                bbox=bbox,
                patch_box=(
                    max(0, math.floor((y - r) * scale_y)),
                    min(height, math.ceil((y + r + 1) * scale_y)),
                    max(0, math.floor((x - r) * scale_x)),
                    min(width, math.ceil((x + r + 1) * scale_x)),
                ),
                image_size=(height, width),
                latent_size=(h, w),
                purity=float(np.mean(truth == int(prototype_class[j]))),
            )
        )
    return records


#: ``model.json`` key of a projection model's projection record: ``{"prototypes": [one
#: record per prototype], "summary": ..., "diagnostics": ..., "settings": ...}``.
PROJECTION_KEY = "projection"


def projection_metadata(records: Sequence[PrototypeRecord], **extra: Any) -> dict[str, Any]:
    """The ``model.json`` entry of a projection model: ``{PROJECTION_KEY: {...}}``.

    Args:
        records: the records of :func:`project_prototypes`.
        extra: further JSON-serialisable entries (the training adds ``summary``,
            ``diagnostics`` and ``settings``).
    """
    return {PROJECTION_KEY: {"prototypes": [record.to_dict() for record in records], **extra}}


def read_projection(model_dir: str | Path) -> tuple[list[PrototypeRecord], dict[str, Any]]:
    """The projection record of a trained RamanSeg model: the one reader of it.

    Args:
        model_dir: the model's folder (``results/models/ramanseg``), or its ``model.json``.

    Returns:
        ``(records, record)``: one :class:`PrototypeRecord` per prototype, and the whole
        record (``summary``, ``diagnostics``, ``settings`` beside ``prototypes``).

    Raises:
        InputError: a missing or unreadable ``model.json``, a model trained without
            projection, or records lacking fields.
    """
    fix = "train RamanSeg with prototype projection (rule train_model, model ramanseg)"
    metadata = read_metadata(model_dir, fix=fix)
    path = Path(model_dir)
    path = path if path.name == METADATA_NAME else path / METADATA_NAME
    record = metadata.get(PROJECTION_KEY)
    if not isinstance(record, dict):
        raise InputError(
            f"model.json has no {PROJECTION_KEY!r} record: the model "
            f"{metadata.get('model')!r} was trained without prototype projection",
            path=path,
            fix=fix,
        )
    known = {field.name for field in dataclasses.fields(PrototypeRecord)}
    try:
        records = [
            PrototypeRecord(
                **{
                    k: tuple(v) if isinstance(v, list) else v
                    for k, v in entry.items()
                    if k in known
                }
            )
            for entry in record["prototypes"]
        ]
    except (KeyError, TypeError, AttributeError) as error:
        raise InputError(
            f"the prototype records cannot be read ({type(error).__name__}: {error})",
            path=path,
            fix=fix,
        ) from None
    if not records:
        raise InputError("the prototype records are empty", path=path, fix=fix)
    return records, record


@torch.no_grad()
def init_prototypes_from_latents_(
    model: RamanSeg,
    images: Sequence[Any],
    masks: Sequence[Any],
    generator: torch.Generator,
    *,
    device: torch.device | str | None = None,
) -> list[tuple[int, int, int]]:
    """Set each prototype to a random latent window of its own class (in place).

    Instead of the Xavier-style draw, which puts prototypes outside the latent cube
    ``[0, 1]^D`` the sigmoid add-on layer produces (so that one extreme training patch is
    nearest to all of them at projection), each class's prototypes start on pairwise
    different windows of its class, drawn uniformly over all its windows in ``images``
    (windows inside the latent map, as projection's candidates).

    Args:
        model: a :class:`~ramanseg.models.ramanseg.RamanSeg`.
        images: ``(C, H, W)`` images.
        masks: their ground truth ``(H, W)``.
        generator: the random generator (seeded by the caller).
        device: where to compute; the model's device by default.

    Returns:
        per prototype the ``(image, y, x)`` it started from.

    Raises:
        ValueError: a class with fewer windows than prototypes.
    """
    layer: PrototypeLayer = model.prototype_layer
    device = torch.device(device) if device is not None else layer.prototypes.device
    k, num_classes = layer.size, model.num_classes
    r = k // 2
    classes = layer.prototype_class.cpu()
    positions: dict[int, list[tuple[int, int, int]]] = {c: [] for c in range(num_classes)}
    for index, mask in enumerate(masks):
        mask_t = _as_tensor(mask, torch.int64)
        h, w = model.latent_size(tuple(mask_t.shape))
        labels = downsample_labels(mask_t.unsqueeze(0), (h, w), num_classes)[0]
        inside = torch.zeros((h, w), dtype=torch.bool)
        inside[r : h - r, r : w - r] = True
        for c in range(num_classes):
            for y, x in torch.nonzero((labels == c) & inside).tolist():
                positions[c].append((index, y, x))
    chosen: list[tuple[int, int, int]] = [(-1, -1, -1)] * layer.num_prototypes
    for c in classes.unique().tolist():
        members = torch.nonzero(classes == c).flatten().tolist()
        if len(positions[c]) < len(members):
            raise ValueError(
                f"class {c} has {len(positions[c])} latent windows for {len(members)} prototypes"
            )
        draw = torch.randperm(len(positions[c]), generator=generator)[: len(members)]
        for j, pick in zip(members, draw.tolist(), strict=True):
            chosen[j] = positions[c][pick]
    was_training = model.training
    model.eval()
    try:
        dtype = layer.prototypes.dtype
        for index in sorted({where[0] for where in chosen}):
            image = _as_tensor(images[index], dtype).unsqueeze(0).to(device)
            padded = F.pad(model.latent(image), (r, r, r, r)) if r else model.latent(image)
            for j, (source, y, x) in enumerate(chosen):
                if source == index:
                    layer.prototypes.data[j] = padded[0, :, y : y + k, x : x + k]
    finally:
        model.train(was_training)
    return chosen
