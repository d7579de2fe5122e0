"""One-sided predictions: a run that labels most pixels of one class as the other.

A model that has collapsed towards one class (a diverged training run, a seed that never
left its start) still gets a Dice, and a mean over samples or seeds hides it: on the
demo with three seeds, one seed of the hybrid U-Net labelled most of the tissue tumour
and still scored a mean Dice of 42. Such a run is flagged here so that the tables, their
notes and the log say it, rather than averaging it in silently.

A run (one model, or one model and seed) is *one-sided* when, averaged over its samples,

* its specificity is below :data:`LIMIT`: most non-tumour pixels are labelled tumour, or
* its sensitivity is below :data:`LIMIT`: most tumour pixels are missed

(percent of the counted pixels, those of :mod:`ramanseg.evaluate`). The limit is where a
run gets the majority of a class's pixels wrong: a rule anyone can check against the
table's own columns, not a tuned threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ramanseg.catalog import model_label

log = logging.getLogger(__name__)

#: Mean sensitivity or specificity (fraction) below which a run is one-sided.
LIMIT = 0.5
#: The log's and the notes' name for it.
FLAG = "ONE-SIDED PREDICTION"


def one_sided_runs(per_sample: pd.DataFrame, keys: Sequence[str] = ("model",)) -> pd.DataFrame:
    """The runs whose predictions lean to one class.

    Args:
        per_sample: :func:`ramanseg.evaluate.evaluate_models`'s rows (``tp``, ``fp``,
            ``fn``, ``tn``, ``sensitivity``, ``specificity``), with the ``keys`` columns.
        keys: the columns naming a run (``model``; ``model`` and ``seed``).

    Returns:
        One row per one-sided run, in the order of ``per_sample``: the ``keys``,
        ``sensitivity`` and ``specificity`` (means over the samples where defined, percent),
        ``predicted_share`` and ``true_share`` (tumour pixels of the counted pixels over
        all its samples, percent), ``side`` (``"tumour"``: most non-tumour labelled tumour;
        ``"background"``: most tumour missed) and ``message``.
    """
    rows = []
    for run, group in per_sample.groupby(list(keys), sort=False):
        run = run if isinstance(run, tuple) else (run,)
        sensitivity, specificity = _mean(group["sensitivity"]), _mean(group["specificity"])
        pixels = float((group["tp"] + group["fp"] + group["fn"] + group["tn"]).sum())
        predicted = 100.0 * float((group["tp"] + group["fp"]).sum()) / pixels if pixels else np.nan
        true = 100.0 * float((group["tp"] + group["fn"]).sum()) / pixels if pixels else np.nan
        if specificity < LIMIT:
            side = "tumour"
            what = f"labels most non-tumour pixels tumour (specificity {100 * specificity:.1f} %"
        elif sensitivity < LIMIT:
            side = "background"
            what = f"misses most tumour pixels (sensitivity {100 * sensitivity:.1f} %"
        else:
            continue
        named = dict(zip(keys, run, strict=True))
        name = model_label(str(named["model"])) + "".join(
            f", {key} {value}" for key, value in named.items() if key != "model"
        )
        rows.append(
            {
                **named,
                "sensitivity": 100.0 * sensitivity,
                "specificity": 100.0 * specificity,
                "predicted_share": predicted,
                "true_share": true,
                "side": side,
                "message": (
                    f"{name} {what}; predicted tumour {predicted:.1f} % of the counted pixels, "
                    f"true tumour {true:.1f} %)"
                ),
            }
        )
    columns = ["sensitivity", "specificity", "predicted_share", "true_share", "side", "message"]
    return pd.DataFrame(rows, columns=[*keys, *columns])


def _mean(values: pd.Series) -> float:
    """The mean of the defined values (NaN when none is: then no limit is crossed)."""
    defined = values.dropna()
    return float(defined.mean()) if len(defined) else np.nan


def one_sided_note(flagged: pd.DataFrame) -> str:
    """A Markdown note naming the one-sided runs ("" when there is none), and each logged."""
    if flagged.empty:
        return ""
    for message in flagged["message"]:
        log.warning("%s: %s", FLAG, message)
    runs = "; ".join(flagged["message"])
    return (
        f"**{FLAG}** (mean sensitivity or specificity below {100 * LIMIT:.0f} %: the run "
        f"labels most pixels of one class as the other, and its mean is not a "
        f"segmentation's): {runs}."
    )


def with_one_sided_note(markdown: str, flagged: pd.DataFrame) -> str:
    """``markdown`` with :func:`one_sided_note` appended as a paragraph, if there is one."""
    note = one_sided_note(flagged)
    return f"{markdown}\n{note}\n" if note else markdown


def with_one_sided_column(table: pd.DataFrame, flagged: pd.DataFrame) -> pd.DataFrame:
    """``table`` (one row per model) with ``one_sided``: the flagged side, or ""."""
    side = dict(zip(flagged["model"], flagged["side"], strict=True))
    return table.assign(one_sided=[side.get(model, "") for model in table["model"]])
