"""Train / validation / test split and cross-validation folds, grouped by patient.

The paper splits its 32 samples of 10 patients into 19 training, 8 validation and 5 test
samples with all samples of a patient in one split, and trains nnU-Net on 5 folds. Here
the split is an exact optimisation: among all assignments of whole patients to the
three splits, one whose sample counts are closest to the requested ones (smallest total
absolute deviation, then smallest largest deviation); ties are broken by the seed. The
folds are built over the training + validation samples, again by whole patients, with
sample counts balanced greedily. Everything is deterministic for a seed.

Output (``split.json``)::

    {"seed": 0,
     "requested": {"train": 19, "val": 8, "test": 5},
     "train": [sample ids], "val": [...], "test": [...], "unused": [...],
     "patients": {"train": [patient ids], "val": [...], "test": [...], "unused": [...]},
     "folds": [{"train": [...], "val": [...]}, ...]}

``folds`` has nnU-Net's ``splits_final.json`` shape. ``unused`` holds samples left out
when the requested counts add up to fewer samples than the sheet has.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ramanseg.config import require
from ramanseg.errors import InputError
from ramanseg.fileio import write_json
from ramanseg.samplesheet import read_samplesheet

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: Memory limit of the split search's table (one byte per reachable-state cell and patient).
MAX_TABLE_BYTES = 2_000_000_000


def _patients(samples: pd.DataFrame) -> dict[str, list[str]]:
    """Patient id -> its sample ids (sorted), in sorted patient order."""
    for column in ("sample_id", "patient_id"):
        if column not in samples.columns:
            raise ValueError(f"the sample table has no {column!r} column")
    ids = samples["sample_id"].astype(str)
    duplicated = sorted(set(ids[ids.duplicated()]))
    if duplicated:
        raise ValueError(f"duplicate sample ids: {', '.join(duplicated)}")
    groups: dict[str, list[str]] = {}
    for sample_id, patient_id in zip(ids, samples["patient_id"].astype(str), strict=True):
        groups.setdefault(patient_id, []).append(sample_id)
    return {patient: sorted(groups[patient]) for patient in sorted(groups)}


def _optimal_counts(
    reachable: np.ndarray, targets: Sequence[int], rng: np.random.Generator
) -> tuple[int, int, int]:
    """The reachable (train, val, test) counts closest to the targets.

    Closest: smallest total absolute deviation, then smallest largest deviation, then a
    seeded random choice. Splits with a positive target must be non-empty.
    """
    grid = np.indices(reachable.shape)
    deviation = np.abs(grid - np.asarray(targets).reshape(3, 1, 1, 1))
    allowed = reachable.copy()
    for axis, target in enumerate(targets):
        if target > 0:
            allowed &= grid[axis] > 0
    if not allowed.any():
        raise AssertionError("no admissible split; the feasibility checks should prevent this")
    total = np.where(allowed, deviation.sum(axis=0), np.iinfo(np.int64).max)
    best = allowed & (total == total.min())
    largest = np.where(best, deviation.max(axis=0), np.iinfo(np.int64).max)
    best &= largest == largest.min()
    candidates = np.argwhere(best)
    choice = candidates[rng.integers(len(candidates))]
    return int(choice[0]), int(choice[1]), int(choice[2])


def split_by_patient(
    samples: pd.DataFrame, n_train: int, n_val: int, n_test: int, seed: int
) -> dict[str, Any]:
    """Assign whole patients to train / val / test with sample counts closest to the request.

    Exact dynamic programming over the patients (in a seeded random order) records every
    reachable triple of split sizes, each split capped at its target plus the largest
    patient (an optimum never needs more: see below). The triple with the smallest total
    absolute deviation from ``(n_train, n_val, n_test)`` (then the smallest largest
    deviation, then a seeded choice) is chosen, and an assignment reaching it is traced
    back, choosing among the possible moves at random (seeded). So the counts are exact
    whenever some grouping achieves them, and the result depends only on the seed.

    Splits with a positive target receive at least one patient; splits with target 0
    none. When the targets add up to fewer samples than there are, leftover patients are
    ``unused`` (with a warning); otherwise every patient is assigned.

    Why the cap is safe: if a split held more than target + largest patient samples, it
    would hold at least two patients, and moving one of them (to ``unused``, or, when all
    samples must be used, to a split below its target) would lower the total deviation.

    Args:
        samples: table with ``sample_id`` and ``patient_id`` columns.
        n_train: requested training samples (config ``split.train``).
        n_val: requested validation samples (``split.val``).
        n_test: requested test samples (``split.test``).
        seed: random seed (``split.seed``).

    Returns:
        ``{"seed", "requested", "train", "val", "test", "unused", "patients"}`` with
        sorted sample and patient ids.

    Raises:
        ValueError: a negative count, counts adding up to more samples than the table
            has, fewer patients than non-empty splits (each message names the config
            keys), or a table without the needed columns or with duplicate sample ids.
    """
    groups = _patients(samples)
    targets = (int(n_train), int(n_val), int(n_test))
    n_samples = sum(len(ids) for ids in groups.values())
    for name, target in zip(SPLITS, targets, strict=True):
        if target < 0:
            raise ValueError(f"`split.{name}` must not be negative, got {target}")
    if sum(targets) > n_samples:
        raise ValueError(
            f"`split.train` + `split.val` + `split.test` = {sum(targets)} exceeds the "
            f"{n_samples} samples in the sample sheet; lower them"
        )
    non_empty = sum(target > 0 for target in targets)
    if non_empty > len(groups):
        raise ValueError(
            f"{non_empty} non-empty splits (`split.train`, `split.val`, `split.test` = "
            f"{targets[0]}, {targets[1]}, {targets[2]}) need at least {non_empty} patients, "
            f"but the sample sheet has {len(groups)}; set one of them to 0"
        )
    allow_unused = sum(targets) < n_samples
    rng = np.random.default_rng(seed)
    patients = [list(groups)[i] for i in rng.permutation(len(groups))]
    sizes = [len(groups[p]) for p in patients]
    largest = max(sizes)
    shape = tuple(target + largest + 1 if target > 0 else 1 for target in targets)
    table_bytes = int(np.prod(shape)) * (len(sizes) + 1)
    if table_bytes > MAX_TABLE_BYTES:
        raise ValueError(
            f"the exact split search would need {table_bytes / 1e9:.1f} GB for "
            f"{n_samples} samples of {len(groups)} patients; request fewer samples per split "
            "(`split.train`, `split.val`, `split.test`)"
        )

    # layers[k][t, v, s]: some assignment of the first k patients has those split sizes.
    layers = [np.zeros(shape, dtype=bool)]
    layers[0][0, 0, 0] = True
    for size in sizes:
        previous = layers[-1]
        current = previous.copy() if allow_unused else np.zeros(shape, dtype=bool)
        for axis in range(3):
            if shape[axis] > size:
                source = [slice(None)] * 3
                destination = [slice(None)] * 3
                source[axis] = slice(0, shape[axis] - size)
                destination[axis] = slice(size, shape[axis])
                current[tuple(destination)] |= previous[tuple(source)]
        layers.append(current)

    counts = list(_optimal_counts(layers[-1], targets, rng))
    assignment: dict[str, str] = {}
    for k in range(len(patients) - 1, -1, -1):
        size, previous = sizes[k], layers[k]
        options = []
        for axis, name in enumerate(SPLITS):
            if counts[axis] >= size:
                before = list(counts)
                before[axis] -= size
                if previous[tuple(before)]:
                    options.append(name)
        if allow_unused and previous[tuple(counts)]:
            options.append("unused")
        choice = options[rng.integers(len(options))]
        assignment[patients[k]] = choice
        if choice != "unused":
            counts[SPLITS.index(choice)] -= size

    result: dict[str, Any] = {
        "seed": int(seed),
        "requested": dict(zip(SPLITS, targets, strict=True)),
    }
    patients_of: dict[str, list[str]] = {}
    for name in (*SPLITS, "unused"):
        patients_of[name] = sorted(p for p in patients if assignment[p] == name)
        result[name] = sorted(s for p in patients_of[name] for s in groups[p])
    result["patients"] = patients_of
    achieved = tuple(len(result[name]) for name in SPLITS)
    if achieved != targets:
        log.warning(
            "patient grouping allows (train, val, test) = %s samples, not the requested %s",
            achieved,
            targets,
        )
    if result["unused"]:
        log.warning(
            "%d samples of %d patients are in no split (split.train + split.val + "
            "split.test = %d < %d samples)",
            len(result["unused"]),
            len(result["patients"]["unused"]),
            sum(targets),
            n_samples,
        )
    return result


def cross_validation_folds(
    samples: pd.DataFrame, train_val_ids: Sequence[str], n_folds: int, seed: int
) -> list[dict[str, list[str]]]:
    """Cross-validation folds over the given samples, grouped by patient.

    Like scikit-learn's ``GroupKFold`` but seeded: the patients of ``train_val_ids`` are
    shuffled with the seed, stably sorted by decreasing sample count (so the seed breaks
    ties between equal-sized patients), and each is put in the fold with the fewest
    samples so far (the lowest-numbered fold on a tie). Fold ``i`` validates on its own
    patients' samples and trains on the rest. Every fold has at least one patient.

    Args:
        samples: table with ``sample_id`` and ``patient_id`` columns.
        train_val_ids: the samples to fold (training + validation).
        n_folds: number of folds (config ``split.folds``); 0 gives no folds.
        seed: random seed.

    Returns:
        ``[{"train": [ids], "val": [ids]}, ...]`` with sorted ids (nnU-Net's
        ``splits_final.json``).

    Raises:
        ValueError: ``n_folds`` of 1 or negative, fewer patients than folds, or sample
            ids not in the table.
    """
    if n_folds == 0:
        return []
    if n_folds < 2:
        raise ValueError(f"`split.folds` must be 0 (no folds) or at least 2, got {n_folds}")
    groups = _patients(samples)
    patient_of = {s: p for p, ids in groups.items() for s in ids}
    missing = sorted(set(train_val_ids) - set(patient_of))
    if missing:
        raise ValueError(f"samples not in the sample table: {', '.join(missing)}")
    members: dict[str, list[str]] = {}
    for sample_id in sorted(set(train_val_ids)):
        members.setdefault(patient_of[sample_id], []).append(sample_id)
    if len(members) < n_folds:
        raise ValueError(
            f"`split.folds` = {n_folds} folds need at least {n_folds} patients in training + "
            f"validation, but there are {len(members)}; lower `split.folds` or move patients "
            "from the test split (`split.test`)"
        )
    rng = np.random.default_rng(seed)
    order = [sorted(members)[i] for i in rng.permutation(len(members))]
    order.sort(key=lambda p: -len(members[p]))  # stable: the seeded order breaks ties
    fold_patients: list[list[str]] = [[] for _ in range(n_folds)]
    fold_sizes = [0] * n_folds
    for patient in order:
        fold = int(np.argmin(fold_sizes))
        fold_patients[fold].append(patient)
        fold_sizes[fold] += len(members[patient])
    all_ids = sorted(set(train_val_ids))
    folds = []
    for patients in fold_patients:
        val = sorted(s for p in patients for s in members[p])
        val_set = set(val)
        folds.append({"train": [s for s in all_ids if s not in val_set], "val": val})
    return folds


def fold_split(split: Mapping[str, Any], fold: int) -> dict[str, Any]:
    """The split of one cross-validation fold, in ``split.json``'s shape.

    The fold's own samples (its ``val`` in ``folds``, nnU-Net's validation cases) become
    the ``test`` samples: they are held out, predicted and evaluated. The next fold's
    samples (``(fold + 1) % n_folds``) become the ``val`` samples that pick a model's
    epoch, and the other folds' samples the ``train`` samples. Our models select their
    epoch on a validation set, which must not be the held-out fold (its Dice would then be
    biased upwards), so they train on one fold fewer than nnU-Net, which keeps its last
    epoch and trains on every other fold. With 2 folds there is no fold left to train on
    beside the validation fold, so ``val`` stays empty (the last epoch is kept).

    Args:
        split: the split (:func:`read_split`) with at least 2 ``folds``.
        fold: the held-out fold's index.

    Returns:
        ``{"seed", "fold", "n_folds", "train", "val", "test", "unused", "folds": []}``
        with sorted sample ids; the test split's samples are ``unused`` (no fold holds
        them). It records no patients: the sample sheet has them.

    Raises:
        ValueError: fewer than 2 folds, a fold index out of range, or folds whose held-out
            samples overlap.
    """
    folds = list(split.get("folds") or [])
    if len(folds) < 2:
        raise ValueError(
            f"cross-validation needs at least 2 folds (`split.folds`), the split has {len(folds)}"
        )
    if not 0 <= fold < len(folds):
        raise ValueError(f"fold {fold} is not one of the split's folds 0..{len(folds) - 1}")
    held_out = [set(f["val"]) for f in folds]
    seen: set[str] = set()
    for members in held_out:
        if members & seen:
            raise ValueError(
                f"the split's folds hold out samples twice: {', '.join(sorted(members & seen))}"
            )
        seen |= members
    test = sorted(held_out[fold])
    val = sorted(held_out[(fold + 1) % len(folds)]) if len(folds) > 2 else []
    train = sorted(seen - set(test) - set(val))
    result: dict[str, Any] = {
        "seed": split.get("seed"),
        "fold": int(fold),
        "n_folds": len(folds),
        "train": train,
        "val": val,
        "test": test,
        "unused": sorted((set(split["test"]) | set(split.get("unused", []))) - seen),
        "folds": [],
    }
    return result


def read_split(path: str | Path) -> dict[str, Any]:
    """Read ``split.json`` as written by :func:`write_split`: the one reader of the split.

    Args:
        path: the split file.

    Returns:
        The split: ``train``, ``val``, ``test`` (lists of sample ids, no sample in two of
        them) and ``folds`` (a list of ``{"train": [...], "val": [...]}``), plus the other
        keys of the module docstring where present.

    Raises:
        InputError: a missing file, not JSON, a missing or malformed list, a sample in two
            splits, or a fold that is not a train / val pair of sample-id lists.
    """
    path = Path(path)
    rewrite = "write the split with `ramanseg split` (the split rule)"
    if not path.is_file():
        raise InputError("the split file does not exist", path=path, fix=rewrite)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(
            f"the split file is not valid JSON ({error})", path=path, fix=rewrite
        ) from None
    if not isinstance(data, dict):
        raise InputError("the split file is not a JSON object", path=path, fix=rewrite)

    def ids(value: Any, where: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
            raise InputError(f"the split file has no list of sample ids under {where}", path=path,
                             fix=rewrite)  # fmt: skip
        return value

    seen: dict[str, str] = {}
    for key in SPLITS:
        for sample_id in ids(data.get(key), repr(key)):
            if sample_id in seen:
                raise InputError(
                    f"sample {sample_id!r} is in both {seen[sample_id]!r} and {key!r}",
                    path=path, fix=rewrite,
                )  # fmt: skip
            seen[sample_id] = key
    folds = data.get("folds", [])
    if not isinstance(folds, list):
        raise InputError("the split file's 'folds' is not a list", path=path, fix=rewrite)
    for index, fold in enumerate(folds):
        if not isinstance(fold, dict):
            raise InputError(f"fold {index} of the split file is not an object", path=path,
                             fix=rewrite)  # fmt: skip
        ids(fold.get("train"), f"folds[{index}].train")
        ids(fold.get("val"), f"folds[{index}].val")
    data["folds"] = folds
    return data


def write_split(path: str | Path, split: Mapping[str, Any]) -> None:
    """Write ``split.json`` (atomically; the one writer of the split)."""
    write_json(path, dict(split))


def make_split(samples: pd.DataFrame, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The split and its folds from the ``split`` configuration section.

    Args:
        samples: table with ``sample_id`` and ``patient_id`` columns.
        settings: the workflow configuration (``split.train``, ``split.val``,
            ``split.test``, ``split.folds``, ``split.seed``).

    Returns:
        The ``split.json`` content (see the module docstring).
    """
    seed = int(require(settings, "split.seed"))
    result = split_by_patient(
        samples,
        int(require(settings, "split.train")),
        int(require(settings, "split.val")),
        int(require(settings, "split.test")),
        seed,
    )
    result["folds"] = cross_validation_folds(
        samples, result["train"] + result["val"], int(require(settings, "split.folds")), seed
    )
    return result


def add_commands(subparsers: Any) -> None:
    """Add ``split`` to the ``ramanseg`` command line."""
    from ramanseg.cli import add_settings_arguments, settings_from_args

    parser = subparsers.add_parser(
        "split",
        help="patient-grouped train / val / test split and cross-validation folds",
        description="Write split.json: train / val / test sample ids grouped by patient, "
        "and the cross-validation folds (nnU-Net splits_final.json shape).",
    )
    parser.add_argument(
        "--samples", required=True, help="the sample sheet (TSV), read as the workflow reads it"
    )
    parser.add_argument("--out", required=True, help="output JSON")
    add_settings_arguments(parser)

    def run(args: Any) -> int:
        settings = settings_from_args(args)
        # The workflow's own reader, so split.json is the split the DAG was planned with.
        samples = read_samplesheet(args.samples, check_files=False)[["sample_id", "patient_id"]]
        try:
            result = make_split(samples, settings)
        except ValueError as error:
            raise InputError(str(error), path=args.samples) from error
        write_split(args.out, result)
        log.info(
            "split: %s samples, %d folds",
            "/".join(str(len(result[name])) for name in SPLITS),
            len(result["folds"]),
        )
        return 0

    parser.set_defaults(func=run)

    fold_parser = subparsers.add_parser(
        "fold-split",
        help="the split of one cross-validation fold (its samples held out as the test set)",
        description="Write the split of one cross-validation fold of split.json: the fold's "
        "samples as the test set, the next fold's as the validation set, the other folds' as "
        "the training set (cross-validated evaluation, evaluate.cross_validation).",
    )
    fold_parser.add_argument("--split", required=True, type=Path, help="results/split/split.json")
    fold_parser.add_argument("--fold", required=True, type=int, help="the held-out fold")
    fold_parser.add_argument("--out", required=True, help="output JSON")

    def run_fold(args: Any) -> int:
        split = read_split(args.split)
        try:
            result = fold_split(split, args.fold)
        except ValueError as error:
            raise InputError(
                str(error),
                path=args.split,
                fix="set `split.folds` to at least 2 and rerun the split",
            ) from error
        write_split(args.out, result)
        log.info(
            "fold %d of %d: %s train / val / test samples",
            args.fold,
            result["n_folds"],
            "/".join(str(len(result[name])) for name in SPLITS),
        )
        return 0

    fold_parser.set_defaults(func=run_fold)
