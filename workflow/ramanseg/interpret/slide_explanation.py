"""RamanSeg's "this looks like that" on a new slide: which prototypes drive each tumour region.

A two-class softmax decides by the *margin* ``logit_t - logit_b`` (the log-odds of tumour), not
by the tumour logit alone: what the background prototypes add to the background logit votes
against tumour as much as what the tumour prototypes add to the tumour logit votes for it, and
adding the same vector to both rows of the readout changes the tumour logit but not a single
prediction. RamanSeg's margin at a latent cell is a sum over its prototypes (no bias)::

    logit_t - logit_b = sum_j (w[t, j] - w[b, j]) * head_j,     head_j = s_j + correction_j

with ``s_j`` prototype ``j``'s log similarity, ``w`` the readout (the last layer) and
``correction`` the residual head's learned correction (zero for ``head_layers: 0``; see
:class:`~ramanseg.models.ramanseg.PrototypeHead`). Prototype ``j``'s *contribution* to a
region is ``(w[t, j] - w[b, j]) * s_j``, similarity times the difference of its last-layer
weights to the two classes, summed over the region's pixels: positive for evidence of tumour,
negative for evidence of background. The head's part, ``sum_j (w[t, j] - w[b, j]) *
correction_j``, mixes every prototype's similarity in a neighbourhood, so it is reported on
its own and attributed to no prototype. The contributions and the head's part add up exactly
to the region's *tumour margin*: the sum over its pixels of the margin of the network's latent
logits, window by window as the prediction runs them
(:func:`ramanseg.models.inference.sliding_window_probability`: the training patch size,
overlapping windows blended with the same weights), each window's latent margin upsampled
bilinearly to its pixels (a linear map, so the sum splits exactly). At a latent cell the margin
is exactly the log-odds of the tumour probability; the prediction upsamples and blends the
probabilities themselves, so a pixel's margin here is the blend of its cells' log-odds.

Regions are the 8-connected components of the predicted tumour mask; those smaller than a
latent cell (``stride**2`` pixels) by default are skipped, since no prototype sees them on
their own. Each prototype is shown by its source patch from the training set
(``prototype_patches.npz``, :mod:`ramanseg.models.prototypes.patches`), which travels with
the model, so the training data are not needed here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage

from ramanseg.config import ConfigError
from ramanseg.errors import InputError
from ramanseg.figures import figure_bytes, new_figure, table_bytes
from ramanseg.fileio import write_files
from ramanseg.interpret.prototypes import PROTOTYPE_CLASS_NAMES
from ramanseg.models.data import pad_to_min_size
from ramanseg.models.inference import blending_weights, window_corners
from ramanseg.models.prototypes.patches import (
    PATCHES_NAME,
    PrototypePatches,
    read_prototype_patches,
)
from ramanseg.models.ramanseg import RamanSeg

log = logging.getLogger(__name__)

#: The two classes of the binary models, whose logit margin (tumour minus background) is explained.
BACKGROUND_CLASS, TUMOUR_CLASS = 0, 1
#: Prototypes shown per region, and regions shown in the figure, by default.
TOP_K = 3
MAX_REGIONS = 8


@dataclass(frozen=True)
class SlideExplanation:
    """The prototypes behind each predicted tumour region of one slide.

    Attributes:
        sample_id: the slide.
        labels: int32 ``(Y, X)``: region ``r`` (1 the largest) where explained, 0 elsewhere.
        regions: one row per region: ``region``, ``area_px``, ``centroid_y``,
            ``centroid_x``, ``tumour_margin`` (the region's summed tumour-minus-background
            logit margin), ``head_correction`` (the head's part of it, attributed to no
            prototype).
        contributions: one row per region and prototype, by region, then by decreasing
            contribution to the margin (positive: evidence of tumour, negative: of
            background): ``region``, ``rank`` (1 the largest), ``prototype``,
            ``prototype_class``, ``contribution``, ``source_sample``.
        skipped: tumour components smaller than ``min_area`` (not explained).
        min_area: the smallest region explained, in pixels.
    """

    sample_id: str
    labels: np.ndarray
    regions: pd.DataFrame
    contributions: pd.DataFrame
    skipped: int
    min_area: int


def tumour_regions(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, int]:
    """The 8-connected components of a tumour mask, numbered by decreasing area.

    Args:
        mask: ``(Y, X)``, non-zero where tumour is predicted.
        min_area: components of fewer pixels are left out.

    Returns:
        ``(labels, skipped)``: int32 labels (1 the largest component, ties in raster order;
        0 background and left-out components) and the number of components left out.
    """
    components, count = ndimage.label(np.asarray(mask) != 0, structure=np.ones((3, 3), bool))
    areas = np.bincount(components.ravel(), minlength=count + 1)[1:]
    order = np.argsort(-areas, kind="stable")
    kept = [int(i) for i in order if areas[i] >= min_area]
    relabel = np.zeros(count + 1, dtype=np.int32)
    relabel[np.asarray(kept, dtype=np.int64) + 1] = np.arange(1, len(kept) + 1, dtype=np.int32)
    return relabel[components], count - len(kept)


@torch.no_grad()
def region_contributions(
    model: RamanSeg,
    image: np.ndarray,
    labels: np.ndarray,
    patch_size: int,
    *,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """Each prototype's contribution to each region's tumour margin, window by window.

    The windows and their blending are those of
    :func:`~ramanseg.models.inference.sliding_window_probability`; each pixel's value is
    ``sum(w * v) / sum(w)`` over the windows covering it, ``v`` the window's latent map
    upsampled bilinearly (``align_corners=False``).

    Args:
        model: the trained RamanSeg, in eval mode.
        image: float32 ``(C, Y, X)``.
        labels: int ``(Y, X)``, regions ``1..R``, 0 elsewhere.
        patch_size: the window side (the training patch size).
        overlap: the windows' overlap, in ``[0, 1)``.
        blend: the blending weights' mode (:func:`~ramanseg.models.inference.blending_weights`).
        batch_size: windows per forward pass.

    Returns:
        ``(contributions, head)``: float64 ``(R, P)``, ``sum over the region of
        (w[t, j] - w[b, j]) * s_j``, and ``(R,)``, the head's part; their sum over ``j`` plus
        the head's part is the region's summed margin ``logit_t - logit_b``.

    Raises:
        ValueError: a model of other than two classes (no single margin to explain).
    """
    if model.num_classes != 2:
        raise ValueError(
            f"the explanation needs a two-class (background / tumour) RamanSeg, got "
            f"{model.num_classes} classes"
        )
    device = next(model.parameters()).device
    regions = int(labels.max(initial=0))
    num = model.prototype_layer.num_prototypes
    weights = blending_weights(patch_size, blend)
    padded = pad_to_min_size(np.asarray(image, dtype=np.float32), patch_size)
    padded_labels = pad_to_min_size(np.asarray(labels, dtype=np.int32), patch_size)
    corners = window_corners(padded.shape[1:], patch_size, overlap)
    weight_sum = np.zeros(padded.shape[1:], dtype=np.float64)
    for y, x in corners:
        weight_sum[y : y + patch_size, x : x + patch_size] += weights
    weight = model.readout.weight[:, :, 0, 0]
    readout = (weight[TUMOUR_CLASS] - weight[BACKGROUND_CLASS]).view(1, num, 1, 1)
    sums = torch.zeros((regions + 1, num + 1), dtype=torch.float64)
    for start in range(0, len(corners), batch_size):
        chunk = corners[start : start + batch_size]
        if not any(padded_labels[y : y + patch_size, x : x + patch_size].any() for y, x in chunk):
            continue  # no region in these windows: nothing to add
        batch = np.stack([padded[:, y : y + patch_size, x : x + patch_size] for y, x in chunk])
        _, similarities = model.prototype_layer(model.latent(torch.from_numpy(batch).to(device)))
        head = model.head(similarities)
        maps = torch.cat(
            [readout * similarities, (readout * (head - similarities)).sum(1, keepdim=True)], 1
        )
        maps = F.interpolate(
            maps, size=(patch_size, patch_size), mode="bilinear", align_corners=False
        )
        maps = maps.double().cpu()
        for (y, x), window in zip(chunk, maps, strict=True):
            share = torch.from_numpy(weights / weight_sum[y : y + patch_size, x : x + patch_size])
            index = torch.from_numpy(padded_labels[y : y + patch_size, x : x + patch_size])
            sums.index_add_(0, index.flatten().long(), (window * share).reshape(num + 1, -1).T)
    return sums[1:, :num].numpy(), sums[1:, num].numpy()


def _tables(
    sample_id: str,
    labels: np.ndarray,
    contributions: np.ndarray,
    head: np.ndarray,
    model: RamanSeg,
    patches: PrototypePatches,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    count = contributions.shape[0]
    index = np.arange(1, count + 1)
    areas = ndimage.sum_labels(np.ones_like(labels), labels, index) if count else []
    centres = ndimage.center_of_mass(np.ones_like(labels), labels, index) if count else []
    regions = pd.DataFrame(
        {
            "sample_id": sample_id,
            "region": index,
            "area_px": np.asarray(areas, dtype=np.int64),
            "centroid_y": [float(c[0]) for c in centres],
            "centroid_x": [float(c[1]) for c in centres],
            "tumour_margin": contributions.sum(axis=1) + head,
            "head_correction": head,
        }
    )
    classes = model.prototype_class.cpu().numpy()
    rows = []
    for r in range(count):
        order = np.argsort(-contributions[r], kind="stable")
        for rank, j in enumerate(order, start=1):
            rows.append(
                {
                    "sample_id": sample_id,
                    "region": r + 1,
                    "rank": rank,
                    "prototype": int(j),
                    "prototype_class": int(classes[j]),
                    "contribution": float(contributions[r, j]),
                    "source_sample": patches[int(j)].sample_id,
                }
            )
    columns = [
        "sample_id", "region", "rank", "prototype", "prototype_class", "contribution",
        "source_sample",
    ]  # fmt: skip
    return regions, pd.DataFrame(rows, columns=columns)


def _number(value: float) -> str:
    """A signed contribution for a title: whole numbers from 1000 on, else 3 digits."""
    return f"{value:+,.0f}" if abs(value) >= 1000 else f"{value:+.3g}"


def _class_name(label: int) -> str:
    return PROTOTYPE_CLASS_NAMES[label] if label < len(PROTOTYPE_CLASS_NAMES) else f"class {label}"


def explanation_figure(
    explanation: SlideExplanation,
    band: np.ndarray,
    patches: PrototypePatches,
    *,
    top_k: int = TOP_K,
    max_regions: int = MAX_REGIONS,
):
    """The slide with its regions numbered, and per region its top-k prototypes' source patches.

    Args:
        explanation: what :func:`explain` found.
        band: the slide's display band ``(Y, X)`` (the band of the source patches).
        patches: the prototypes' source patches.
        top_k: prototypes per region.
        max_regions: regions shown (the largest; the table holds all).
    """
    from matplotlib.patches import Rectangle

    shown = min(len(explanation.regions), max_regions)
    rows = max(shown, 1)
    height, width = band.shape
    slide_width = min(8.0, max(3.0, 2.0 * rows * width / height))
    figure = new_figure(slide_width + 1.9 * top_k, max(3.5, 2.1 * rows))
    grid = figure.add_gridspec(rows, 1 + top_k, width_ratios=[slide_width / 1.9] + [1] * top_k)
    axis = figure.add_subplot(grid[:, 0])
    # The same grey scale as the source patches: the preprocessed bands are normalised to [0, 1].
    axis.imshow(band, cmap="gray", interpolation="nearest", vmin=0, vmax=1)
    axis.set_axis_off()
    labels = explanation.labels
    if labels.any():
        axis.contour(labels > 0, levels=[0.5], colors="red", linewidths=1.0)
        for row in explanation.regions.itertuples():
            axis.text(
                row.centroid_x, row.centroid_y, str(row.region), color="red", fontsize=8,
                fontweight="bold", ha="center", va="center",
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.8, "lw": 0},
            )  # fmt: skip
    axis.set_title(f"{explanation.sample_id} ({patches.channel})", fontsize=9)
    if not shown:
        figure.suptitle(
            f"{explanation.sample_id}: no predicted tumour region of at least "
            f"{explanation.min_area} px, nothing to explain"
            + (f" ({explanation.skipped} smaller ones skipped)" if explanation.skipped else ""),
            fontsize=10,
        )
        return figure
    table = explanation.contributions
    for r, region in enumerate(explanation.regions.head(shown).itertuples()):
        rows_of_region = table[table["region"] == region.region]
        top = rows_of_region[rows_of_region["rank"] <= top_k]
        against = rows_of_region["contribution"].clip(upper=0).sum()
        for column in range(top_k):
            ax = figure.add_subplot(grid[r, 1 + column])
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                # A predicted region whose summed margin is not positive: the explanation
                # does not carry its prediction (near the threshold, blended probabilities
                # and blended log-odds can disagree); said, not hidden.
                contrary = region.tumour_margin <= 0
                ax.set_ylabel(
                    f"region {region.region}\n{region.area_px} px\n"
                    f"margin {_number(region.tumour_margin)}\n"
                    f"against {_number(against)}\n"
                    f"head {_number(region.head_correction)}"
                    + ("\nmargin <= 0: borderline,\nnot explained" if contrary else ""),
                    fontsize=7,
                    color="red" if contrary else "black",
                )
            if column >= len(top):
                ax.set_axis_off()
                continue
            entry = top.iloc[column]
            patch = patches[int(entry["prototype"])]
            ax.imshow(patch.crop, cmap="gray", interpolation="nearest", vmin=0, vmax=1)
            y0, y1, x0, x1 = patch.box_in_crop
            ax.add_patch(
                Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="yellow")
            )
            sharing = [
                p.prototype
                for p in patches.patches
                if p.prototype != patch.prototype
                and (p.sample_id, p.bbox) == (patch.sample_id, patch.bbox)
            ]
            shared = f", same patch as #{', #'.join(map(str, sharing))}" if sharing else ""
            ax.set_title(
                f"#{patch.prototype} {_class_name(patch.prototype_class)} "
                f"{_number(entry['contribution'])}\nfrom {patch.sample_id}{shared}",
                fontsize=7,
                color="red" if sharing else "black",
            )
    more = len(explanation.regions) - shown
    figure.suptitle(
        f"{explanation.sample_id}: the {top_k} prototypes contributing most to each tumour "
        "region's margin, tumour minus background logit\n(similarity x (tumour - background "
        "last-layer weight), summed over the region; 'against': all negative contributions)"
        + (f"; {more} smaller regions in the table only" if more > 0 else "")
        + (
            f"; {explanation.skipped} under {explanation.min_area} px skipped"
            if explanation.skipped
            else ""
        ),
        fontsize=9,
    )
    return figure


def explain(
    model: RamanSeg,
    image: np.ndarray,
    mask: np.ndarray,
    patch_size: int,
    patches: PrototypePatches,
    *,
    sample_id: str = "slide",
    min_area: int | None = None,
    overlap: float = 0.5,
    blend: str = "gaussian",
) -> SlideExplanation:
    """The prototypes behind each tumour region of ``mask`` on ``image``.

    Args:
        model: the trained RamanSeg, in eval mode.
        image: float32 ``(C, Y, X)``, preprocessed like the training data.
        mask: the predicted tumour mask ``(Y, X)``.
        patch_size: the prediction's window side (the training patch size).
        patches: the prototypes' source patches (one per prototype).
        sample_id: the slide, for the tables and the figure.
        min_area: the smallest region explained, in pixels (default: a latent cell,
            ``stride**2``).
        overlap: the prediction's window overlap.
        blend: the prediction's blending mode.
    """
    min_area = model.stride**2 if min_area is None else int(min_area)
    labels, skipped = tumour_regions(mask, min_area)
    contributions, head = region_contributions(
        model, image, labels, patch_size, overlap=overlap, blend=blend
    )
    regions, table = _tables(sample_id, labels, contributions, head, model, patches)
    return SlideExplanation(sample_id, labels, regions, table, skipped, min_area)


def explain_slide(
    model_dir: str | Path,
    stack: str | Path,
    mask: str | Path,
    out: str | Path,
    *,
    table: str | Path | None = None,
    top_k: int = TOP_K,
    min_area: int | None = None,
    max_regions: int = MAX_REGIONS,
    overlap: float = 0.5,
    blend: str = "gaussian",
) -> SlideExplanation:
    """Explain one slide's predicted tumour regions by RamanSeg's prototypes; write the figure.

    Args:
        model_dir: the trained RamanSeg folder (``model.json``, ``model.pt`` and
            ``prototype_patches.npz``), e.g. from the model package.
        stack: the slide's preprocessed ``stack.ome.tif`` (its folder names the sample).
        mask: RamanSeg's predicted mask of the slide (a 2-D TIFF of 0 and 1).
        out: the figure (``.png`` or ``.pdf``).
        table: where to write the contributions as CSV (one row per region and
            prototype, with the region's area, tumour margin and head part), if wanted.
        top_k: prototypes shown per region.
        min_area: the smallest region explained, in pixels (default ``stride**2``).
        max_regions: regions shown in the figure (the largest).
        overlap: the prediction's window overlap.
        blend: the prediction's blending mode.

    Returns:
        The explanation.

    Raises:
        InputError: a model that is not RamanSeg or has no source patches, a stack of
            other channels than the model's, a mask of another size than the stack.
    """
    from ramanseg.models.registry import load_trained_model
    from ramanseg.predictions import read_predicted_mask
    from ramanseg.preprocessed import read_stack

    model_dir, stack, out = Path(model_dir), Path(stack), Path(out)
    if out.suffix not in (".png", ".pdf"):
        raise InputError(
            "the explanation figure must be a .png or .pdf", path=out, fix="name it <slide>.png"
        )
    if top_k < 1 or max_regions < 1 or (min_area is not None and min_area < 1):
        raise ConfigError(
            f"top-k, the regions shown and the minimum area must be >= 1, got {top_k}, "
            f"{max_regions} and {min_area}"
        )
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"the window overlap must lie in [0, 1), got {overlap}")
    sample_id = stack.parent.name if stack.name == "stack.ome.tif" else stack.name.split(".")[0]
    model, metadata = load_trained_model(model_dir)
    if not isinstance(model, RamanSeg):
        raise InputError(
            f"the model is {metadata['model']!r}, not RamanSeg; only RamanSeg has prototypes",
            path=model_dir,
            fix="give the folder of RamanSeg with projection",
        )
    patches = read_prototype_patches(model_dir / PATCHES_NAME)
    if len(patches) != model.prototype_layer.num_prototypes:
        raise InputError(
            f"{PATCHES_NAME} holds {len(patches)} prototypes, the model "
            f"{model.prototype_layer.num_prototypes}",
            path=model_dir / PATCHES_NAME,
            fix="write the patches again from this model's training folder",
        )
    names = metadata.get("channel_names")
    image, _ = read_stack(stack, sample_id, n_channels=model.in_channels, channel_names=names)
    fix = "pass RamanSeg's predicted mask of this slide"
    predicted = read_predicted_mask(mask, sample_id, fix)
    if predicted.shape != image.shape[1:]:
        raise InputError(
            f"the mask is {predicted.shape[0]} x {predicted.shape[1]} px, the slide "
            f"{image.shape[1]} x {image.shape[2]} px",
            sample=sample_id,
            path=mask,
            fix=fix,
        )
    explanation = explain(
        model,
        image,
        predicted,
        int(metadata["patch_size"]),
        patches,
        sample_id=sample_id,
        min_area=min_area,
        overlap=overlap,
        blend=blend,
    )
    band = image[names.index(patches.channel)] if names and patches.channel in names else image[0]
    figure = explanation_figure(explanation, band, patches, top_k=top_k, max_regions=max_regions)
    files: dict[Path, Any] = {out: figure_bytes(figure, [out.suffix])[out.suffix]}
    if table is not None:
        merged = explanation.contributions.merge(
            explanation.regions.drop(columns="sample_id"), on="region", how="left"
        )
        files[Path(table)] = table_bytes(merged)[".csv"]
    write_files(files)
    if explanation.regions.empty:
        log.info(
            "%s: no tumour region of at least %d px to explain", sample_id, explanation.min_area
        )
    else:
        log.info(
            "%s: %d tumour regions explained (%d small ones skipped) in %s",
            sample_id,
            len(explanation.regions),
            explanation.skipped,
            out,
        )
        contrary = explanation.regions[explanation.regions["tumour_margin"] <= 0]
        if not contrary.empty:
            log.warning(
                "%s: predicted tumour region(s) %s have a summed margin <= 0: the prototypes "
                "do not explain their prediction (borderline pixels, where the blended "
                "probabilities and the blended log-odds disagree); marked in red in %s",
                sample_id,
                ", ".join(str(r) for r in contrary["region"]),
                out,
            )
    return explanation


def add_commands(subparsers: Any) -> None:
    """Add ``explain-slide`` to the ``ramanseg`` command line."""
    from ramanseg.models.inference import BLEND_MODES

    parser = subparsers.add_parser(
        "explain-slide",
        help="RamanSeg's 'this looks like that' for each predicted tumour region of a slide",
        description="For each predicted tumour region of a slide, the RamanSeg prototypes "
        "contributing most to its tumour-minus-background logit margin (similarity x the "
        "difference of the last-layer weights to the two classes, summed over the region), "
        "shown beside their source patches from the training set.",
    )
    parser.add_argument(
        "--model-dir",
        required=True,
        type=Path,
        help=f"the RamanSeg folder (model.json, model.pt, {PATCHES_NAME})",
    )
    parser.add_argument("--stack", required=True, type=Path, help="the slide's stack.ome.tif")
    parser.add_argument("--mask", required=True, type=Path, help="RamanSeg's predicted mask")
    parser.add_argument("--out", required=True, type=Path, help="the figure (.png or .pdf)")
    parser.add_argument("--table", type=Path, help="also write the contributions as CSV")
    parser.add_argument("--top-k", type=int, default=TOP_K, help=f"default {TOP_K}")
    parser.add_argument(
        "--min-area", type=int, help="smallest region explained, px (default: a latent cell)"
    )
    parser.add_argument("--overlap", type=float, default=0.5, help="window overlap (default 0.5)")
    parser.add_argument("--blend", choices=BLEND_MODES, default="gaussian")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")

    def run(args: Any) -> int:
        torch.set_num_threads(max(1, args.threads))
        explain_slide(
            args.model_dir,
            args.stack,
            args.mask,
            args.out,
            table=args.table,
            top_k=args.top_k,
            min_area=args.min_area,
            overlap=args.overlap,
            blend=args.blend,
        )
        return 0

    parser.set_defaults(func=run)
