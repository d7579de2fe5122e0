"""The bottleneck experiment (paper section 3.2.1).

RamanSeg has no decoder: its latent class-probability map is upsampled bilinearly to the
input size. How good can that be? For every ground-truth mask and every feature-map size
``s``, the mask is downsampled by ``s / reference_size`` (the resolution a latent map of
size ``s`` has for an input of ``reference_size``: the perfect bottleneck), upsampled
bilinearly back to its own size, thresholded, and compared with the original by Dice.

* Downsampling is **area averaging**: each low-resolution pixel is the exact mean of the
  mask over its footprint, fractional pixels weighted by their overlap (OpenCV's
  ``INTER_AREA``; PyTorch's ``adaptive_avg_pool2d`` for integer factors). This is the
  best a latent map can do: its value is the foreground fraction of its patch.
* The low-resolution size of an ``H x W`` mask is ``round(H s / R) x round(W s / R)``
  (at least 1), halves rounded up.
* Upsampling is bilinear with pixel centres aligned (``align_corners=False``, as
  ``torch.nn.functional.interpolate`` and ``skimage.transform.resize(order=1)``): output
  pixel ``o`` samples the input at ``u = (o + 0.5) n_in / n_out - 0.5``, clamped to
  ``[0, n_in - 1]``.
* Threshold: foreground where the upsampled value is **> 0.5**; exactly 0.5 is background,
  as a two-class argmax gives the first class (background) on a tie.
* Dice ``2 |A and B| / (|A| + |B|)``; two empty masks have Dice 1 (they agree perfectly).

Both resamplings are separable linear maps, applied as sparse matrices along y and x.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse

from ramanseg.figures import table_bytes
from ramanseg.fileio import prefixed, write_files
from ramanseg.metrics import dice_score as dice
from ramanseg.preprocessed import read_mask, sample_id_of
from ramanseg.settings import BottleneckSettings

log = logging.getLogger(__name__)

TABLE_COLUMNS = ("feature_map_size", "scale", "mean_dice", "std_dice", "n_samples")


def area_downsample_matrix(n_in: int, n_out: int) -> scipy.sparse.csr_matrix:
    """The (n_out, n_in) matrix of 1-D area averaging from ``n_in`` to ``n_out`` pixels.

    Output pixel ``i`` covers ``[i f, (i + 1) f]`` in input pixel units, ``f = n_in /
    n_out``; its weight on input pixel ``j`` is the overlap of ``[j, j + 1]`` with that
    interval divided by ``f``. Each row sums to 1.

    Args:
        n_in: input length.
        n_out: output length (at most ``n_in`` for a downsampling; any positive value works).

    Returns:
        Sparse CSR matrix of float64.
    """
    factor = n_in / n_out
    rows, cols, weights = [], [], []
    for i in range(n_out):
        start, stop = i * factor, (i + 1) * factor
        for j in range(math.floor(start), min(n_in, math.ceil(stop))):
            overlap = min(j + 1, stop) - max(j, start)
            if overlap > 0:
                rows.append(i)
                cols.append(j)
                weights.append(overlap / factor)
    return scipy.sparse.csr_matrix((weights, (rows, cols)), shape=(n_out, n_in))


def bilinear_upsample_matrix(n_in: int, n_out: int) -> scipy.sparse.csr_matrix:
    """The (n_out, n_in) matrix of 1-D linear interpolation with ``align_corners=False``.

    Output pixel ``o`` samples the input at ``u = (o + 0.5) n_in / n_out - 0.5`` clamped
    to ``[0, n_in - 1]``: weight ``1 - (u - floor(u))`` on ``floor(u)`` and
    ``u - floor(u)`` on the next pixel (the last pixel where there is none).

    Args:
        n_in: input length.
        n_out: output length.

    Returns:
        Sparse CSR matrix of float64.
    """
    outputs = np.arange(n_out)
    source = np.clip((outputs + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    lower = np.floor(source).astype(np.int64)
    upper = np.minimum(lower + 1, n_in - 1)
    fraction = source - lower
    matrix = scipy.sparse.coo_matrix(
        (
            np.concatenate([1.0 - fraction, fraction]),
            (np.concatenate([outputs, outputs]), np.concatenate([lower, upper])),
        ),
        shape=(n_out, n_in),
    )
    return matrix.tocsr()  # duplicate (row, column) entries are summed


def bottleneck_shape(shape: tuple[int, int], size: int, reference_size: int) -> tuple[int, int]:
    """The latent-map shape of a mask: each side scaled by ``size / reference_size``,
    rounded half up, at least 1."""
    return tuple(max(1, math.floor(n * size / reference_size + 0.5)) for n in shape)


def bottleneck_mask(mask: np.ndarray, size: int, reference_size: int) -> np.ndarray:
    """The mask as seen through a perfect bottleneck of ``size`` (see the module docstring).

    Args:
        mask: 2-D array, nonzero = foreground.
        size: the feature-map size.
        reference_size: the input size the feature-map size refers to.

    Returns:
        bool array of the mask's shape: area-downsampled, bilinearly upsampled, > 0.5.
    """
    height, width = mask.shape
    low_h, low_w = bottleneck_shape(mask.shape, size, reference_size)
    values = (mask != 0).astype(np.float64)
    low = area_downsample_matrix(height, low_h) @ values  # (low_h, W)
    low = (area_downsample_matrix(width, low_w) @ low.T).T  # (low_h, low_w)
    high = bilinear_upsample_matrix(low_h, height) @ low  # (H, low_w)
    high = (bilinear_upsample_matrix(low_w, width) @ high.T).T  # (H, W)
    return high > 0.5


def bottleneck_table(
    masks: Sequence[np.ndarray], sizes: Sequence[int], reference_size: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dice of every mask through every bottleneck size, and its summary per size.

    The reference size itself is the baseline row (no resampling, Dice 1.0); it is
    computed like the others, so it checks the resampling too. Sizes are listed from
    the largest down, as in the paper's table.

    Args:
        masks: the ground-truth masks (2-D, nonzero = foreground).
        sizes: feature-map sizes (config ``bottleneck.sizes``).
        reference_size: the size they refer to (``bottleneck.reference_size``).

    Returns:
        ``(summary, per_mask)``: ``summary`` with columns ``feature_map_size``,
        ``scale`` (= size / reference_size), ``mean_dice``, ``std_dice`` (population
        standard deviation, ddof = 0) and ``n_samples``; ``per_mask`` with one Dice per
        mask (rows) and size (columns).

    Raises:
        ValueError: no masks, a size or reference size below 1, or a mask not 2-D.
    """
    if not masks:
        raise ValueError("the bottleneck experiment needs at least one mask")
    if reference_size < 1 or any(size < 1 for size in sizes):
        raise ValueError(
            "`bottleneck.reference_size` and every `bottleneck.sizes` entry must be >= 1, "
            f"got {reference_size} and {list(sizes)}"
        )
    for index, mask in enumerate(masks):
        if mask.ndim != 2:
            raise ValueError(f"mask {index} has shape {mask.shape}; masks must be 2-D")
    all_sizes = sorted({int(reference_size), *(int(s) for s in sizes)}, reverse=True)
    per_mask = pd.DataFrame(
        {
            size: [dice(bottleneck_mask(mask, size, reference_size), mask != 0) for mask in masks]
            for size in all_sizes
        }
    )
    summary = pd.DataFrame(
        {
            "feature_map_size": all_sizes,
            "scale": [size / reference_size for size in all_sizes],
            "mean_dice": [float(per_mask[size].mean()) for size in all_sizes],
            "std_dice": [float(per_mask[size].std(ddof=0)) for size in all_sizes],
            "n_samples": [len(masks)] * len(all_sizes),
        }
    )
    return summary, per_mask


def markdown_table(summary: pd.DataFrame, reference_size: int) -> str:
    """The summary as the paper's Markdown table (4 decimals, the baseline marked)."""
    header = "| Feature map size | Scale | Mean Dice | Std | n |\n|---:|---:|---:|---:|---:|\n"
    lines = []
    for row in summary.itertuples(index=False):
        label = f"{row.feature_map_size}"
        if row.feature_map_size == reference_size:
            label += " (baseline)"
        lines.append(
            f"| {label} | {row.scale:.4g} | {row.mean_dice:.4f} | {row.std_dice:.4f} "
            f"| {row.n_samples} |"
        )
    return header + "\n".join(lines) + "\n"


def _figure_bytes(summary: pd.DataFrame, reference_size: int) -> dict[str, bytes]:
    """The Dice-vs-size plot as deterministic ``{".png": ..., ".pdf": ...}`` bytes."""
    from ramanseg.figures import figure_bytes, new_figure

    figure = new_figure(5.0, 3.6)
    axis = figure.subplots()
    axis.errorbar(
        summary["feature_map_size"],
        summary["mean_dice"],
        yerr=summary["std_dice"],
        marker="o",
        capsize=3,
    )
    axis.set_xscale("log", base=2)
    axis.set_xticks(summary["feature_map_size"])
    axis.set_xticklabels([str(s) for s in summary["feature_map_size"]])
    axis.set_xlabel(f"feature-map size (pixels per side, input {reference_size})")
    axis.set_ylabel("Dice with the ground truth (mean ± std)")
    axis.set_ylim(min(0.0, float((summary["mean_dice"] - summary["std_dice"]).min())), 1.02)
    axis.grid(True, alpha=0.3)
    axis.set_title(f"Perfect bottleneck, {int(summary['n_samples'].iloc[0])} masks")
    return figure_bytes(figure)


def run_bottleneck(
    mask_paths: Sequence[str | Path], settings: BottleneckSettings, out_prefix: str | Path
) -> pd.DataFrame:
    """Run the experiment on mask files and write the table and the figure.

    Writes ``<prefix>.csv``, ``<prefix>.parquet``, ``<prefix>.md``, ``<prefix>.png`` and
    ``<prefix>.pdf``, each atomically, after everything is computed.

    Args:
        mask_paths: ground-truth mask TIFFs.
        settings: the ``bottleneck`` settings (reference size, feature-map sizes).
        out_prefix: output path without extension.

    Returns:
        The summary table.

    Raises:
        InputError: a missing or unreadable mask.
    """
    reference_size = settings.reference_size
    sizes = list(settings.sizes)
    masks = [read_mask(path, sample_id_of(path)) for path in mask_paths]
    summary, _ = bottleneck_table(masks, sizes, reference_size)
    markdown = markdown_table(summary, reference_size)
    outputs = table_bytes(summary, markdown, float_format="%.6f")
    outputs |= _figure_bytes(summary, reference_size)
    write_files(prefixed(Path(out_prefix), outputs))
    log.info("bottleneck experiment on %d masks:\n%s", len(masks), markdown)
    return summary


def add_commands(subparsers: Any) -> None:
    """Add ``bottleneck`` to the ``ramanseg`` command line."""
    from ramanseg.cli import add_settings_arguments, settings_from_args

    parser = subparsers.add_parser(
        "bottleneck",
        help="the bottleneck experiment (paper section 3.2.1)",
        description="Downsample every ground-truth mask to each feature-map size, upsample "
        "bilinearly, and tabulate the Dice with the original.",
    )
    parser.add_argument("--masks", nargs="+", required=True, help="ground-truth mask TIFFs")
    parser.add_argument(
        "--out-prefix",
        required=True,
        help="output path without extension (writes .csv .parquet .md .png .pdf)",
    )
    add_settings_arguments(parser)

    def run(args: Any) -> int:
        settings = BottleneckSettings.from_config(settings_from_args(args))
        run_bottleneck(args.masks, settings, args.out_prefix)
        return 0

    parser.set_defaults(func=run)
