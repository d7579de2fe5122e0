"""Checkpoints: a killed run resumes with the results of an uninterrupted one; a checkpoint
of another run, or a damaged one, is not resumed."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from ramanseg.errors import InputError
from ramanseg.models import training
from ramanseg.models.checkpoint import (
    BEST_WEIGHTS_NAME,
    CHECKPOINT_NAME,
    LOG_NAME,
    WEIGHTS_NAME,
    rng_state,
    set_rng_state,
)
from tests.models.test_training import (  # noqa: F401 (fixtures)
    phased_run,
    read_log,
    single_thread,
    tiny_run,
)


def test_rng_state_round_trip_restores_every_generator():
    state = rng_state()
    drawn = (random.random(), np.random.random(), torch.rand(3))  # noqa: NPY002
    set_rng_state(state)
    again = (random.random(), np.random.random(), torch.rand(3))  # noqa: NPY002
    assert drawn[:2] == again[:2] and torch.equal(drawn[2], again[2])


def test_a_damaged_checkpoint_is_an_input_error_naming_the_file_and_the_fix(tmp_path, samples):
    outdir = tmp_path / "run"
    outdir.mkdir()
    (outdir / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"(?s)checkpoint_last\.pt.*cannot be read.*--restart"):
        tiny_run(outdir, *samples, epochs=1)
    # --restart ignores it and trains afresh.
    assert tiny_run(outdir, *samples, epochs=1, restart=True).resumed_from == 0


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, samples):
    full = tiny_run(tmp_path / "full", *samples, epochs=3)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        tiny_run(killed, *samples, epochs=3, crash_in_epoch=2)
    assert (killed / CHECKPOINT_NAME).is_file() and not (killed / WEIGHTS_NAME).exists()
    assert [row["epoch"] for row in read_log(killed / LOG_NAME)] == ["1"]
    # As if killed after epoch 1's checkpoint but before its best weights were saved.
    (killed / BEST_WEIGHTS_NAME).unlink()
    # The "new process": a freshly built model and strategy, the same outdir.
    resumed = tiny_run(killed, *samples, epochs=3)
    assert resumed.resumed_from == 1
    a = torch.load(full.weights, weights_only=True)
    b = torch.load(resumed.weights, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in read_log(full.log)]
    assert strip == [
        {k: v for k, v in row.items() if k != "seconds"} for row in read_log(resumed.log)
    ]
    assert len(strip) == 3
    meta_full = json.loads(full.metadata.read_text())
    meta_resumed = json.loads(resumed.metadata.read_text())
    assert meta_full == meta_resumed
    assert not (killed / CHECKPOINT_NAME).exists()  # removed after a completed run


def test_resume_repairs_best_weights_lost_to_a_kill(tmp_path, samples, monkeypatch):
    # Epoch 1 validates best (Dice 0.5, then 0.4), so its weights must survive the kill;
    # the runs below validate epochs 1, 2 (full), 1 (killed), 2 (resumed).
    dice = iter([0.5, 0.4, 0.5, 0.4])
    monkeypatch.setattr(training, "validate", lambda *args, **kwargs: next(dice))
    full = tiny_run(tmp_path / "full", *samples, epochs=2)
    assert full.selected_epoch == 1
    with pytest.raises(KeyboardInterrupt):
        tiny_run(tmp_path / "killed", *samples, epochs=2, crash_in_epoch=2)
    (tmp_path / "killed" / BEST_WEIGHTS_NAME).unlink()
    resumed = tiny_run(tmp_path / "killed", *samples, epochs=2)
    assert resumed.selected_epoch == 1
    a = torch.load(full.weights, weights_only=True)
    b = torch.load(resumed.weights, weights_only=True)
    assert all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize("crash_in_epoch", [2, 3])
def test_resume_across_and_within_training_phases(tmp_path, samples, crash_in_epoch):
    full = phased_run(tmp_path / "full", *samples)
    log = read_log(full.log)
    assert [float(row["lr"]) for row in log] == [0.05, 0.025, 1e-2, 5e-3]
    assert {"loss_dice", "loss_l1"} <= set(log[0])
    with pytest.raises(KeyboardInterrupt):
        phased_run(tmp_path / "killed", *samples, crash_in_epoch=crash_in_epoch)
    resumed = phased_run(tmp_path / "killed", *samples)
    assert resumed.resumed_from == crash_in_epoch - 1 and resumed.selected_epoch == 4
    a = torch.load(full.weights, weights_only=True)
    b = torch.load(resumed.weights, weights_only=True)
    assert all(torch.equal(a[key], b[key]) for key in a)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in log]
    assert strip == [
        {k: v for k, v in row.items() if k != "seconds"} for row in read_log(resumed.log)
    ]


def test_checkpoint_is_weights_only_and_a_changed_setting_starts_afresh(tmp_path, samples):
    outdir = tmp_path / "run"
    tiny_run(outdir, *samples, epochs=1, keep_checkpoint=True)
    checkpoint = torch.load(outdir / CHECKPOINT_NAME, weights_only=True)
    assert checkpoint["epoch"] == 1
    assert isinstance(checkpoint["rng"]["torch"], torch.Tensor)
    assert isinstance(checkpoint["rng"]["numpy_keys"], torch.Tensor)
    assert checkpoint["scaler"] is None  # no mixed precision on the CPU
    # Another learning rate is another run: the checkpoint is not resumed.
    result = tiny_run(outdir, *samples, epochs=1, lr=5e-3, keep_checkpoint=True)
    assert result.resumed_from == 0
    log = read_log(outdir / LOG_NAME)
    assert [row["epoch"] for row in log] == ["1"]
    assert set(log[0]) == {"epoch", "train_loss", "val_dice", "lr", "seconds"}
    assert float(log[0]["lr"]) == 5e-3
