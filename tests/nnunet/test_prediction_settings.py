"""nnU-Net's prediction settings (``nnunet.prediction``, ``nnunet.fast_prediction``): their
validation, and nnU-Net's real predictor honouring them on a randomly initialised model
folder (forward passes counted with a hook on the network)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from ramanseg.config import ConfigError, load_config_files, parse_settings
from ramanseg.nnunet.settings import NnunetSettings, PredictionSettings
from tests.interpret.nnunet_model import write_validation_summaries

#: The model of these tests: patch 32 px, 4 channels, two folds; images of 64 px.
CHANNELS, PATCH, SIZE = 4, 32, 64
SETTINGS = {
    "device": "cpu",
    "channels": [{"name": f"band {c}", "role": "raman"} for c in range(CHANNELS)],
    "nnunet": {
        "dataset_id": 998,
        "trainer": "nnUNetTrainer",
        "planner": "nnUNetPlannerResEncM",
        "configuration": "2d",
    },
}


def test_defaults_are_nnunets_and_the_fast_preset_is_configured():
    config = load_config_files(["config/config.yaml"])
    nnunet = NnunetSettings.from_config(config)
    assert nnunet.prediction == PredictionSettings()  # nnU-Net's defaults
    assert nnunet.prediction.key == "nnunet.prediction"
    fast = nnunet.fast_prediction
    assert fast.key == "nnunet.fast_prediction" and fast != nnunet.prediction
    # A rule's --settings without the sections gets the schema's defaults: the same two.
    partial = NnunetSettings.from_config(parse_settings(json.dumps({"nnunet": {}})))
    assert partial.prediction == nnunet.prediction
    assert partial.fast_prediction == fast


def test_a_section_takes_a_fold_list_or_a_number_of_best_folds():
    settings = {"nnunet": {"fast_prediction": {"mirroring": False, "folds": [2, 0]}}}
    fast = NnunetSettings.from_config(parse_settings(json.dumps(settings))).fast_prediction
    assert fast.folds == (2, 0) and not fast.mirroring and fast.tile_step_size == 0.5
    assert fast.select_folds(range(5)) == [2, 0] and not fast.needs_validation_dice
    assert PredictionSettings().select_folds([3, 1]) == [1, 3]
    settings = {"nnunet": {"fast_prediction": {"folds": 2}}}
    best = NnunetSettings.from_config(parse_settings(json.dumps(settings))).fast_prediction
    assert best.folds == 2 and best.needs_validation_dice
    # The two highest validation Dice, in fold order; a tie goes to the lower fold.
    dice = {0: 0.80, 1: 0.90, 2: 0.70, 3: 0.90}
    assert best.select_folds([0, 1, 2, 3], dice) == [1, 3]
    assert PredictionSettings(folds=3).select_folds([0, 1, 2, 3], dice) == [0, 1, 3]
    assert PredictionSettings(folds=5).select_folds([0, 1, 2, 3], dice) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"tile_step_size": 0}, r"nnunet\.prediction\.tile_step_size: 0 is less than or equal"),
        ({"tile_step_size": 1.5}, r"nnunet\.prediction\.tile_step_size: 1\.5 is greater"),
        ({"mirroring": "no"}, r"nnunet\.prediction\.mirroring: 'no' is not of type 'boolean'"),
        ({"folds": []}, r"nnunet\.prediction\.folds: \[\] is not valid"),
        ({"folds": [1, 1]}, r"nnunet\.prediction\.folds: \[1, 1\] is not valid"),
        ({"folds": "some"}, r"nnunet\.prediction\.folds: 'some' is not valid"),
        ({"folds": [-1]}, r"nnunet\.prediction\.folds: \[-1\] is not valid"),
        ({"folds": 0}, r"nnunet\.prediction\.folds: 0 is not valid"),
        ({"tiles": 2}, r"nnunet\.prediction: Additional properties .*'tiles'"),
    ],
)
def test_bad_values_are_config_errors_naming_the_key(section, message):
    with pytest.raises(ConfigError, match=message):
        parse_settings(json.dumps({"nnunet": {"prediction": section}}))


def test_folds_beyond_the_trained_ones_are_config_errors(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text("nnunet:\n  fast_prediction: {folds: [0, 5, 7]}\n")
    with pytest.raises(ConfigError, match=r"nnunet\.fast_prediction\.folds lists folds \[5, 7\]"):
        load_config_files(["config/config.yaml", override])
    fast = PredictionSettings(folds=(0, 3), key="nnunet.fast_prediction")
    with pytest.raises(ConfigError, match=r"nnunet\.fast_prediction\.folds lists folds \[3\]"):
        fast.select_folds([0, 1])


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    """A randomly initialised two-fold nnU-Net model folder, nnU-Net configured for it."""
    from ramanseg.nnunet.run import trained_model_dir
    from tests.interpret.nnunet_model import configure_nnunet_for_test, write_model_folder

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    configure_nnunet_for_test(monkeypatch, tmp_path / "nnunet")
    folder = trained_model_dir(998, "nnUNetTrainer", "nnUNetPlannerResEncM", "2d")
    yield write_model_folder(folder, channels=CHANNELS, size=PATCH, folds=(0, 1))
    torch.set_num_threads(threads)


def forward_passes(model_dir, folds, settings: PredictionSettings) -> tuple[int, np.ndarray]:
    """The network's forward calls while the ensemble predicts one 64 px image, and the
    probability it gives."""
    from ramanseg.nnunet.run import load_ensemble, predict_probability

    predictor = load_ensemble(model_dir, folds, torch.device("cpu"), settings)
    calls = []
    hook = predictor.network.register_forward_hook(lambda *_: calls.append(1))
    image = np.random.default_rng(0).random((CHANNELS, SIZE, SIZE), dtype=np.float32)
    probability = predict_probability(predictor, image)
    hook.remove()
    return len(calls), probability


def test_the_predictor_honours_mirroring_tile_step_and_folds(model_dir):
    # Step 0.5 on 64 px with 32 px tiles: 3 x 3 tiles; step 1: 2 x 2. Mirroring in 2-D:
    # the tile and its 3 flips. One pass per fold.
    default, probability = forward_passes(model_dir, (0, 1), PredictionSettings())
    assert default == 9 * 4 * 2
    assert probability.shape == (SIZE, SIZE) and probability.dtype == np.float32
    assert forward_passes(model_dir, (0, 1), PredictionSettings(mirroring=False))[0] == 9 * 2
    assert forward_passes(model_dir, (0, 1), PredictionSettings(tile_step_size=1.0))[0] == 16 * 2
    fast = PredictionSettings(mirroring=False, tile_step_size=1.0)
    assert forward_passes(model_dir, (1,), fast)[0] == 4


def _write_stacks(root, samples):
    rng = np.random.default_rng(1)
    for sample in samples:
        (root / sample).mkdir(parents=True)
        stack = rng.random((CHANNELS, SIZE, SIZE), dtype=np.float32)
        tifffile.imwrite(root / sample / "stack.ome.tif", stack)
    return [str(root / sample / "stack.ome.tif") for sample in samples]


@pytest.mark.parametrize("fast", [False, True])
def test_nnunet_predict_runs_the_configured_or_the_fast_setting(model_dir, tmp_path, fast):
    from ramanseg.cli import main
    from ramanseg.predictions import read_prediction

    stacks = _write_stacks(tmp_path / "preprocessed", ["T1"])
    split = tmp_path / "split.json"
    folds = [{"train": ["A"], "val": ["B"]}, {"train": ["B"], "val": ["A"]}]
    split.write_text(json.dumps({"train": ["A"], "val": ["B"], "test": ["T1"], "folds": folds}))
    write_validation_summaries(model_dir, {0: 0.6, 1: 0.7})
    # The fast setting: the best fold by validation Dice (fold 1), no mirroring, step 1.
    fast_prediction = {"folds": 1, "mirroring": False, "tile_step_size": 1.0}
    settings = dict(SETTINGS, nnunet=dict(SETTINGS["nnunet"], fast_prediction=fast_prediction))
    timing = tmp_path / "timing.json"
    argv = [
        "nnunet-predict", "--nnunet-dir", str(tmp_path / "nnunet"), "--stacks", *stacks,
        "--split", str(split), "--outdir", str(tmp_path / "out"), "--timing", str(timing),
        "--settings", json.dumps(settings), *(["--fast"] if fast else []),
    ]  # fmt: skip
    assert main(argv) == 0
    numbers = json.loads(timing.read_text())
    expected = (False, 1.0, [1]) if fast else (True, 0.5, [0, 1])
    assert (numbers["mirroring"], numbers["tile_step_size"], numbers["folds"]) == expected
    mask, probability = read_prediction(tmp_path / "out", "T1")
    assert mask.shape == probability.shape == (SIZE, SIZE)


def test_nnunet_predict_with_an_untrained_fold_is_a_config_error(model_dir, tmp_path, capsys):
    from ramanseg.cli import main

    stacks = _write_stacks(tmp_path / "preprocessed", ["T1"])
    split = tmp_path / "split.json"
    folds = [{"train": ["A"], "val": ["B"]}, {"train": ["B"], "val": ["A"]}]
    split.write_text(json.dumps({"train": ["A"], "val": ["B"], "test": ["T1"], "folds": folds}))
    settings = dict(SETTINGS, nnunet=dict(SETTINGS["nnunet"], prediction={"folds": [0, 4]}))
    argv = [
        "nnunet-predict", "--nnunet-dir", str(tmp_path / "nnunet"), "--stacks", *stacks,
        "--split", str(split), "--outdir", str(tmp_path / "out"),
        "--timing", str(tmp_path / "timing.json"), "--settings", json.dumps(settings),
    ]  # fmt: skip
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "nnunet.prediction.folds lists folds [4]" in error and "Traceback" not in error
    assert not (tmp_path / "out").exists() and not (tmp_path / "timing.json").exists()
    # The best folds are chosen by the validation summaries, which this model lacks.
    settings["nnunet"]["prediction"] = {"folds": 1}
    argv[argv.index("--settings") + 1] = json.dumps(settings)
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "fold 0 has no validation summary" in error and "summary.json" in error
    assert "nnunet.fast_prediction.folds" in error and "Traceback" not in error
    assert not (tmp_path / "out").exists() and not (tmp_path / "timing.json").exists()
