"""nnU-Net's fold validation predictions in the shared prediction format.

When a fold finishes, nnU-Net predicts its validation cases (the fold's held-out samples,
``splits_final.json``'s ``val``) and writes each as ``fold_<k>/validation/<sample>.tif``
(uint8, 1 = tumour), listed in ``validation/summary.json``. These are nnU-Net's
cross-validated predictions: no fold saw the samples it predicts, and nnU-Net keeps its
last epoch rather than choosing one on them. The cross-validated evaluation
(:mod:`ramanseg.cross_validation`) reads them in the shared format
(:mod:`ramanseg.predictions`), like every other model's.

nnU-Net writes hard masks only (its probabilities only with ``--npz``, which costs a file
of every class's probabilities per case); the probability written beside each mask is the
mask itself (0 or 1).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ramanseg.errors import InputError
from ramanseg.io import open_tiff
from ramanseg.predictions import write_prediction

log = logging.getLogger(__name__)

_RETRAIN = "retrain the fold (delete its folder and rerun the rule nnunet_train)"


def validation_files(summary: str | Path) -> dict[str, Path]:
    """The fold's validation predictions by sample, from its ``validation/summary.json``.

    Each case's file is taken by its name beside the summary (nnU-Net records absolute
    paths, which differ when the results folder has moved).

    Args:
        summary: ``fold_<k>/validation/summary.json``.

    Returns:
        ``{sample: path}`` for every case the summary lists.

    Raises:
        InputError: a missing or unreadable summary, or one without the cases' files.
    """
    summary = Path(summary)
    if not summary.is_file():
        raise InputError("nnU-Net's validation summary does not exist", path=summary, fix=_RETRAIN)
    try:
        cases = json.loads(summary.read_text(encoding="utf-8"))["metric_per_case"]
        names = [Path(case["prediction_file"]).name for case in cases]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise InputError(
            f"nnU-Net's validation summary does not list the cases' files ({error!r})",
            path=summary,
            fix=_RETRAIN,
        ) from None
    return {Path(name).stem: summary.parent / name for name in names}


def read_validation_mask(path: str | Path, sample: str) -> np.ndarray:
    """One validation prediction of nnU-Net: bool (Y, X), tumour true.

    Raises:
        InputError: a missing or unreadable file, not 2-D, or labels other than 0 and 1.
    """
    path = Path(path)
    what = "nnU-Net validation prediction"
    if not path.is_file():
        raise InputError(f"the {what} does not exist", sample=sample, path=path, fix=_RETRAIN)
    with open_tiff(path, sample, what, _RETRAIN) as tif:
        mask = np.squeeze(tif.asarray())
    if mask.ndim != 2 or mask.dtype.kind not in "biu" or (mask.size and mask.max() > 1):
        raise InputError(
            f"the {what} is not a 2-D mask of 0 and 1 (shape {mask.shape}, {mask.dtype})",
            sample=sample,
            path=path,
            fix=_RETRAIN,
        )
    return mask != 0


def export_fold_predictions(
    summary: str | Path, samples: Sequence[str], outdir: str | Path
) -> list[Path]:
    """Write a fold's validation predictions of ``samples`` in the shared format.

    Args:
        summary: the fold's ``validation/summary.json``.
        samples: the fold's held-out samples (every one must be among the fold's cases).
        outdir: e.g. ``results/predictions/cv/fold<k>/nnunet``.

    Returns:
        The mask files written.

    Raises:
        InputError: a held-out sample nnU-Net did not validate on (its folds are not the
            split's), or a bad file.
    """
    files = validation_files(summary)
    missing = [sample for sample in samples if sample not in files]
    if missing:
        raise InputError(
            f"nnU-Net's fold did not validate on the held-out sample(s) {', '.join(missing)}: "
            "its folds are not the split's",
            sample=missing[0],
            path=summary,
            fix="rerun nnunet_export, nnunet_plan and the folds with the current split",
        )
    masks = [read_validation_mask(files[sample], sample) for sample in samples]
    written = []
    for sample, mask in zip(samples, masks, strict=True):
        written.append(write_prediction(outdir, sample, mask.astype(np.float32))[0])
    return written


def add_commands(subparsers: Any) -> None:
    """Add ``nnunet-fold-predictions`` to the ``ramanseg`` command line."""
    from ramanseg.split import read_split

    parser = subparsers.add_parser(
        "nnunet-fold-predictions",
        help="an nnU-Net fold's validation predictions in the shared prediction format",
        description="Write the held-out samples' predictions of one nnU-Net fold (its "
        "validation predictions) as <sample>.mask.tif / .probability.tif, for the "
        "cross-validated evaluation.",
    )
    parser.add_argument(
        "--summary", required=True, type=Path, help="fold_<k>/validation/summary.json"
    )
    parser.add_argument(
        "--split",
        required=True,
        type=Path,
        help="the fold's split (ramanseg fold-split): its test samples are the held-out ones",
    )
    parser.add_argument("--outdir", required=True, type=Path, help="the predictions folder")

    def run(args: Any) -> int:
        written = export_fold_predictions(args.summary, read_split(args.split)["test"], args.outdir)
        log.info("%d nnU-Net validation predictions written to %s", len(written), args.outdir)
        return 0

    parser.set_defaults(func=run)
