"""One-sided predictions: runs that label most pixels of one class as the other."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ramanseg.evaluate import confusion, metrics
from ramanseg.one_sided import FLAG, one_sided_note, one_sided_runs, with_one_sided_column


def _rows(model, truth, predictions, **keys):
    """Per-sample rows as evaluate_models writes them, from masks."""
    rows = []
    for index, prediction in enumerate(predictions):
        counts = confusion(prediction, truth, np.ones_like(truth, bool))
        rows.append(
            {
                "model": model,
                **keys,
                "sample": f"S{index}",
                "tp": counts.tp,
                "fp": counts.fp,
                "fn": counts.fn,
                "tn": counts.tn,
                **metrics(counts),
            }
        )
    return rows


TRUTH = np.zeros((10, 10), bool)
TRUTH[:3] = True  # 30 % tumour


def _frame(**predictions):
    return pd.DataFrame(
        [row for model, masks in predictions.items() for row in _rows(model, TRUTH, masks)]
    )


def test_all_tumour_and_empty_masks_are_one_sided_a_good_one_is_not():
    good = TRUTH.copy()
    good[3, :5] = True  # 5 false positives
    table = _frame(
        everything=[np.ones_like(TRUTH)] * 2,
        nothing=[np.zeros_like(TRUTH)] * 2,
        good=[good, TRUTH],
    )
    flagged = one_sided_runs(table).set_index("model")
    assert sorted(flagged.index) == ["everything", "nothing"]
    # Closed forms: all tumour has specificity 0 and predicts 100 % of the pixels tumour.
    assert flagged.loc["everything", "side"] == "tumour"
    assert flagged.loc["everything", "specificity"] == 0
    assert flagged.loc["everything", "predicted_share"] == 100
    assert flagged.loc["everything", "true_share"] == 30
    assert flagged.loc["nothing", "side"] == "background"
    assert flagged.loc["nothing", "sensitivity"] == 0
    assert (
        "labels most non-tumour pixels tumour (specificity 0.0 %"
        in (flagged.loc["everything", "message"])
    )
    assert "misses most tumour pixels (sensitivity 0.0 %" in flagged.loc["nothing", "message"]


def test_the_limit_is_half_of_a_class():
    # 35 of 70 non-tumour pixels labelled tumour: specificity exactly 50 %, not flagged;
    # one more pixel and most of the class is wrong.
    half = TRUTH.copy()
    half.flat[30:65] = True
    more = half.copy()
    more.flat[65] = True
    assert one_sided_runs(_frame(half=[half])).empty
    assert list(one_sided_runs(_frame(more=[more]))["model"]) == ["more"]


def test_a_mean_over_samples_decides_and_undefined_values_are_left_out():
    # Sample 0 all tumour (specificity 0), sample 1 perfect (1): mean 0.5, not flagged.
    assert one_sided_runs(_frame(mixed=[np.ones_like(TRUTH), TRUTH])).empty
    # A slide without tumour has no sensitivity: the other sample's decides.
    rows = _rows("m", np.zeros_like(TRUTH), [np.zeros_like(TRUTH)]) + _rows(
        "m", TRUTH, [np.zeros_like(TRUTH)]
    )
    flagged = one_sided_runs(pd.DataFrame(rows))
    assert list(flagged["side"]) == ["background"] and flagged["sensitivity"].iloc[0] == 0


def test_runs_by_model_and_seed_are_named_and_logged(caplog):
    rows = _rows("unet", TRUTH, [TRUTH], seed=0) + _rows(
        "unet", TRUTH, [np.ones_like(TRUTH)], seed=2
    )
    flagged = one_sided_runs(pd.DataFrame(rows), ("model", "seed"))
    assert list(flagged["seed"]) == [2]
    assert flagged["message"].iloc[0].startswith("U-Net, seed 2 labels most non-tumour")
    with caplog.at_level(logging.WARNING):
        note = one_sided_note(flagged)
    assert note.startswith(f"**{FLAG}**") and "U-Net, seed 2" in note
    assert f"{FLAG}: U-Net, seed 2" in caplog.text
    assert one_sided_note(flagged.iloc[:0]) == ""


def test_the_table_gets_the_side_of_each_flagged_model():
    flagged = one_sided_runs(_frame(everything=[np.ones_like(TRUTH)], good=[TRUTH]))
    table = pd.DataFrame({"model": ["good", "everything"]})
    assert list(with_one_sided_column(table, flagged)["one_sided"]) == ["", "tumour"]
