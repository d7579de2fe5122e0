"""The HSRS Dice table: the one owner of its format, shared by every method of the stage.

Each method writes its rows as a CSV with the columns :data:`COLUMNS`, one row per
dataset, model, fold and class::

    dataset   the HSRS dataset (``cells``, ``celegans``)
    model     the method (``phasor_cursors``, ``phasor_gmm``, the trained models' names)
    fold      the fold (or field) the row's Dice is measured on
    class     the class
    dice      Dice of the class on that fold, in [0, 1]; empty if the class is absent
              from both the truth and the prediction

:func:`combine_dice_tables` joins them into ``results/hsrs/dice.{csv,parquet,md}``, the
Markdown with the mean (and standard deviation) over the folds per model and class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ramanseg.errors import InputError

COLUMNS = ("dataset", "model", "fold", "class", "dice")


def dice_rows(
    dataset: str, model: str, fold: str, class_names: Sequence[str], dice: Sequence[float]
) -> list[dict]:
    """The table rows of one fold's per-class Dice.

    Args:
        dataset: the dataset.
        model: the method.
        fold: the fold.
        class_names: the classes.
        dice: their Dice (NaN: absent from truth and prediction).
    """
    return [
        {"dataset": dataset, "model": model, "fold": str(fold), "class": name, "dice": value}
        for name, value in zip(class_names, np.asarray(dice, dtype=float), strict=True)
    ]


def read_dice_table(path: str | Path) -> pd.DataFrame:
    """Read one method's Dice rows.

    Args:
        path: the CSV.

    Raises:
        InputError: a missing or unreadable file, other columns, or Dice outside [0, 1].
    """
    path = Path(path)
    fix = "rerun the rule that writes it"
    if not path.is_file():
        raise InputError("the Dice table does not exist", path=path, fix=fix)
    try:
        frame = pd.read_csv(path, dtype={"fold": str})
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise InputError(f"the Dice table cannot be read ({error})", path=path, fix=fix) from error
    if tuple(frame.columns) != COLUMNS:
        raise InputError(
            f"the Dice table has columns {list(frame.columns)}, expected {list(COLUMNS)}",
            path=path,
            fix=fix,
        )
    dice = pd.to_numeric(frame["dice"], errors="coerce")
    if (dice.notna() != frame["dice"].notna()).any() or ((dice < 0) | (dice > 1)).any():
        raise InputError("the Dice table has Dice values outside [0, 1]", path=path, fix=fix)
    return frame.assign(dice=dice)


def missed_classes(frame: pd.DataFrame) -> list[str]:
    """The degenerate rows of a Dice table: a model that found none of a class on a fold
    (Dice 0), one line each (``dataset: model missed class on fold``)."""
    missed = frame[frame["dice"] == 0]
    return [
        f"{dataset}: {model} missed {name} on {fold}"
        for dataset, model, name, fold in zip(
            missed["dataset"], missed["model"], missed["class"], missed["fold"], strict=True
        )
    ]


def summary_markdown(frame: pd.DataFrame) -> str:
    """Per dataset, the mean ± std of Dice over the folds, models as rows, classes as columns."""
    parts = []
    for dataset, rows in frame.groupby("dataset", sort=False):
        classes = list(dict.fromkeys(rows["class"]))
        stats = rows.groupby(["model", "class"], sort=False)["dice"].agg(["mean", "std", "count"])
        models = list(dict.fromkeys(rows["model"]))
        # Methods split a dataset their own way (fields, blocks): each row has its count.
        folds = rows.groupby("model", sort=False)["fold"].nunique()
        table = {"model": models, "folds": [str(int(folds[model])) for model in models]}
        for name in classes:
            column = []
            for model in table["model"]:
                if (model, name) not in stats.index:
                    column.append("")
                    continue
                mean, std, count = stats.loc[(model, name)]
                text = "" if np.isnan(mean) else f"{100 * mean:.1f}"
                if count > 1 and not np.isnan(std):
                    text += f" ± {100 * std:.1f}"
                column.append(text)
            table[name] = column
        missed = missed_classes(rows)
        warning = (
            "\n**A class missed entirely (Dice 0) on a fold**, so its mean and spread say "
            "more about that fold than about the model: "
            + "; ".join(line.split(": ", 1)[1] for line in missed)
            + ".\n"
            if missed
            else ""
        )
        parts.append(
            f"## {dataset}\n\nDice (%) per class, mean ± std over each model's folds.\n\n"
            + pd.DataFrame(table).to_markdown(index=False, disable_numparse=True)
            + "\n"
            + warning
        )
    return "# HSRS segmentation: Dice per class\n\n" + "\n".join(parts)


def combine_dice_tables(paths: Sequence[str | Path]) -> tuple[pd.DataFrame, str]:
    """Join the methods' Dice rows.

    Args:
        paths: the CSVs.

    Returns:
        ``(table, markdown)``.
    """
    frames = [read_dice_table(path) for path in paths]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    return frame, summary_markdown(frame)
