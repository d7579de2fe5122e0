"""RamanSeg in the training harness: phases, projection, outputs, resume, prediction.

Tiny synthetic data (4 channels, 32 x 48 pixels, a square tumour; see test_training) and a
tiny RamanSeg (stride 4, 4 / 8 feature channels), one PyTorch thread.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F

from ramanseg.config import ConfigError
from ramanseg.errors import InputError
from ramanseg.models.cli import run_predict_model
from ramanseg.models.data import load_samples
from ramanseg.models.inference import foreground_probability
from ramanseg.models.prototypes import (
    PROJECTION_KEY,
    downsample_labels,
    log_similarity,
    read_projection,
)
from ramanseg.models.ramanseg import RamanSeg, parameter_groups
from ramanseg.models.ramanseg_training import (
    ENTRY,
    PROTOTYPE_CLASS_KEY,
    PROTOTYPES_KEY,
    PhaseSchedule,
    RamanSegStrategy,
    ramanseg_strategy,
)
from ramanseg.models.training import (
    CHECKPOINT_NAME,
    LOG_NAME,
    METADATA_NAME,
    WEIGHTS_NAME,
    configure_reproducibility,
    get_model_entry,
    load_trained_model,
    train,
)
from ramanseg.split import read_split
from tests.models.test_training import (  # noqa: F401 (fixture)
    CHANNELS,
    single_thread,
    tiny_settings,
    write_dataset,
)

#: The tiny feature extractor (not configuration keys, so set on the architecture).
SMALL = {"base_channels": 4, "max_channels": 8}
LEARNING_RATES = {"features": 1e-3, "addon": 3e-3, "prototypes": 3e-3, "last_layer": 1e-3}


def tiny_config() -> dict:
    """A configuration for the tiny data: both variants, stride 4."""
    common = {
        "prototype_channels": 4,
        "addon_channels": 8,
        "stride": 4,
        "diversity_loss": "activation_overlap",
        "learning_rates": dict(LEARNING_RATES),
    }
    return {
        "seed": 3,
        "deterministic": True,
        "device": "cpu",
        "channels": [
            {"name": CHANNELS[0], "role": "raman", "wavenumber": 2802.0},
            {"name": CHANNELS[1], "role": "raman", "wavenumber": 2850.0},
            {"name": CHANNELS[2], "role": "tpef"},
            {"name": CHANNELS[3], "role": "shg"},
        ],
        "models": {
            "training": {"patch_size": 16, "batch_size": 4, "patches_per_epoch": 8},
            "ramanseg": {
                **common,
                "prototypes_per_class": 2,
                "prototype_size": 3,
                "dropout": 0.2,
                "projection": True,
                "loss_weights": {"cross_entropy": 1.0, "dice": 0.0, "diversity": 0.01, "l1": 1e-4},
                "epochs": {"warmup": 1, "joint": 2, "last_layer": 2},
            },
            "ramanseg_noproj": {
                **common,
                "prototypes_per_class": 3,
                "prototype_size": 3,
                "dropout": 0.5,
                "projection": False,
                "loss_weights": {"cross_entropy": 1.0, "dice": 1.0, "diversity": 0.01, "l1": 1e-4},
                "epochs": {"warmup": 1, "joint": 2, "last_layer": 0},
            },
        },
    }


class RecordingStrategy(RamanSegStrategy):
    """Records, per epoch, which parameter groups train and the optimiser's groups; raises
    KeyboardInterrupt (a kill) at the start of ``kill_epoch``."""

    def __init__(self, *args, kill_epoch: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kill_epoch = kill_epoch
        self.seen: list[dict] = []

    def on_epoch_start(self, context) -> None:
        if context.epoch == self.kill_epoch:
            raise KeyboardInterrupt("simulated kill")
        super().on_epoch_start(context)
        self.seen.append(
            {
                "epoch": context.epoch,
                "trains": {
                    name: {p.requires_grad for p in params}
                    for name, params in parameter_groups(context.model).items()
                },
                "lr": {g["name"]: g["lr"] for g in context.optimizer.param_groups},
                "optimizer": id(context.optimizer),
            }
        )


def run(config: dict, name: str, samples, outdir: Path, kill_epoch: int | None = None):
    """Train ``name`` the way train-model does, with the small extractor."""
    train_samples, val_samples = samples
    settings = tiny_settings()
    architecture = {**ENTRY.architecture(config, name, 4), **SMALL}
    configure_reproducibility(settings.seed, settings.deterministic, torch.device("cpu"))
    model = ENTRY.build(**architecture)
    base = ramanseg_strategy(config, name, model)
    strategy = RecordingStrategy(
        model,
        base.criterion,
        base.schedule,
        base.learning_rates,
        joint_lr_schedule=base.joint_lr_schedule,
        kill_epoch=kill_epoch,
    )
    result = train(
        model,
        strategy,
        train_samples,
        val_samples,
        settings,
        outdir,
        model_name=name,
        architecture=architecture,
        hyperparameters=config["models"][name],
        progress=False,
    )
    return result, strategy


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    split_path = write_dataset(root, n_train=3, n_val=1, n_test=2)
    split = read_split(split_path)
    preprocessed = root / "preprocessed"
    samples = (load_samples(preprocessed, split["train"]), load_samples(preprocessed, split["val"]))
    return {"root": root, "split": split_path, "preprocessed": preprocessed, "samples": samples}


@pytest.fixture(scope="module")
def projection_run(dataset, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("models") / "ramanseg"
    result, strategy = run(tiny_config(), "ramanseg", dataset["samples"], outdir)
    return {"outdir": outdir, "result": result, "strategy": strategy}


@pytest.fixture(scope="module")
def noproj_run(dataset, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("models") / "ramanseg_noproj"
    result, strategy = run(tiny_config(), "ramanseg_noproj", dataset["samples"], outdir)
    return {"outdir": outdir, "result": result, "strategy": strategy}


def read_log(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


# --- configuration --------------------------------------------------------------------------


def test_phase_schedule():
    schedule = PhaseSchedule(warmup=2, joint=3, last_layer=1, projection=True)
    assert schedule.epochs == 6 and schedule.projection_epoch == 5
    assert [schedule.phase(e) for e in range(1, 7)] == [
        "warmup", "warmup", "joint", "joint", "joint", "last_layer",
    ]  # fmt: skip
    assert PhaseSchedule(0, 2, 0, projection=False).projection_epoch is None
    assert PhaseSchedule(1, 0, 1, projection=True).projection_epoch == 1
    with pytest.raises(ValueError, match=r"epoch must be in 1\.\.6, got 7"):
        schedule.phase(7)
    with pytest.raises(ValueError, match="at least one warm-up or joint epoch"):
        PhaseSchedule(0, 0, 5, projection=True)
    with pytest.raises(ValueError, match=r"epochs\.joint must be a non-negative integer"):
        PhaseSchedule(1, -1, 0, projection=False)


def test_registry_serves_both_variants_from_their_sections(demo_config):
    assert get_model_entry("ramanseg") is get_model_entry("ramanseg_noproj") is ENTRY
    for name in ("ramanseg", "ramanseg_noproj"):
        section = demo_config["models"][name]
        architecture = ENTRY.architecture(demo_config, name, 24)
        for key in ("prototypes_per_class", "prototype_size", "addon_channels", "dropout"):
            assert architecture[key] == section[key]
        assert architecture["in_channels"] == 24
        assert architecture["stride"] == section.get("stride", 8)
        assert architecture["head_layers"] == section.get("head_layers", 2)
        model = ENTRY.build(**architecture)
        strategy = ENTRY.strategy(demo_config, name, model)
        epochs = section["epochs"]
        assert strategy.epochs == epochs["warmup"] + epochs["joint"] + epochs["last_layer"]
        assert strategy.model_selection == ("last" if section["projection"] else "best")
        assert strategy.criterion.weights == {
            "cluster": 0.0,
            "separation": 0.0,
            **section["loss_weights"],
        }
    # The optional architecture keys of a section override the defaults.
    changed = copy.deepcopy(demo_config)
    changed["models"]["ramanseg"].update(stride=4, head_layers=0)
    architecture = ENTRY.architecture(changed, "ramanseg", 24)
    assert architecture["stride"] == 4 and architecture["head_layers"] == 0
    assert ENTRY.build(**architecture).head.layers == 0


def test_strategy_rejects_bad_configuration(config):
    model = ENTRY.build(**{**ENTRY.architecture(config, "ramanseg", 24), **SMALL})
    broken = copy.deepcopy(config)
    del broken["models"]["ramanseg"]["learning_rates"]["prototypes"]
    with pytest.raises(ValueError, match=r"models\.ramanseg: learning_rates lacks 'prototypes'"):
        ramanseg_strategy(broken, "ramanseg", model)
    broken = copy.deepcopy(config)
    del broken["models"]["ramanseg"]["epochs"]["joint"]
    with pytest.raises(ConfigError, match=r"models\.ramanseg\.epochs\.joint"):
        ramanseg_strategy(broken, "ramanseg", model)
    broken = copy.deepcopy(config)
    del broken["models"]["ramanseg"]["prototype_size"]
    with pytest.raises(ConfigError, match=r"models\.ramanseg\.prototype_size"):
        ENTRY.architecture(broken, "ramanseg", 24)
    with pytest.raises(TypeError, match="trains a RamanSeg"):
        ramanseg_strategy(config, "ramanseg", torch.nn.Linear(2, 2))


# --- phases and projection ------------------------------------------------------------------


def test_phases_switch_at_the_right_epochs(projection_run):
    seen = projection_run["strategy"].seen
    assert [s["epoch"] for s in seen] == [1, 2, 3, 4, 5]
    warmup = {"features": {False}, "addon": {True}, "prototypes": {True}, "head": {True},
              "last_layer": {False}}  # fmt: skip
    joint = {**warmup, "features": {True}}
    last = {"features": {False}, "addon": {False}, "prototypes": {False}, "head": {True},
            "last_layer": {True}}  # fmt: skip
    assert [s["trains"] for s in seen] == [warmup, joint, joint, last, last]
    lr = LEARNING_RATES
    assert seen[0]["lr"] == {
        "addon": lr["addon"],
        "prototypes": lr["prototypes"],
        "head": lr["addon"],
    }
    assert seen[1]["lr"] == {"features": lr["features"], **seen[0]["lr"]}
    # The joint rates are annealed by a cosine over the phase's two epochs.
    assert seen[2]["lr"] == pytest.approx({k: v / 2 for k, v in seen[1]["lr"].items()})
    assert seen[3]["lr"] == {"head": lr["addon"], "last_layer": lr["last_layer"]}
    # A new optimiser at each phase change, the same one within a phase.
    optimizers = [s["optimizer"] for s in seen]
    assert optimizers[1] == optimizers[2] and optimizers[3] == optimizers[4]
    assert len({optimizers[0], optimizers[1], optimizers[3]}) == 3
    log = read_log(projection_run["outdir"] / LOG_NAME)
    assert [row["epoch"] for row in log] == ["1", "2", "3", "4", "5"]
    assert {"loss_cross_entropy", "loss_diversity", "loss_l1"} <= set(log[0])
    assert "loss_dice" not in log[0]  # weight 0: not computed


def test_projected_prototypes_equal_latent_patches_of_their_class(projection_run, dataset):
    outdir = projection_run["outdir"]
    model, metadata = load_trained_model(outdir)
    assert metadata["selection"] == "last" and metadata["selected_epoch"] == 5
    state = torch.load(outdir / WEIGHTS_NAME, weights_only=True)
    prototypes = state[PROTOTYPES_KEY]
    assert prototypes.shape == (4, 4, 3, 3)
    assert state[PROTOTYPE_CLASS_KEY].tolist() == [0, 0, 1, 1]
    records = metadata[PROJECTION_KEY]["prototypes"]
    assert [r["prototype"] for r in records] == [0, 1, 2, 3]
    assert [r.to_dict() for r in read_projection(outdir)[0]] == records
    images = {s.sample_id: s for s in dataset["samples"][0]}
    for record in records:
        sample = images[record["sample_id"]]  # a training image
        with torch.no_grad():
            latent = model.latent(torch.from_numpy(sample.image)[None])
        y, x = record["latent_y"], record["latent_x"]
        h, w = latent.shape[2:]
        assert record["latent_size"] == [h, w] and 1 <= y < h - 1 and 1 <= x < w - 1
        padded = F.pad(latent, (1, 1, 1, 1))
        patch = padded[0, :, y : y + 3, x : x + 3]
        assert torch.equal(patch, prototypes[record["prototype"]])
        labels = downsample_labels(torch.from_numpy(sample.mask)[None].long(), (h, w), 2)[0]
        assert int(labels[y, x]) == record["prototype_class"]
        y0, y1, x0, x1 = record["bbox"]
        assert 0 <= y0 < y1 <= 32 and 0 <= x0 < x1 <= 48
        assert math.isfinite(record["distance"]) and record["distance"] >= 0
    # The model sees each prototype at its source window (distance 0 up to the rounding of
    # the distance expansion), so with its highest possible similarity there.
    with torch.no_grad():
        output = model(torch.from_numpy(images[records[0]["sample_id"]].image)[None])
    where = (0, 0, records[0]["latent_y"], records[0]["latent_x"])
    assert float(output.distances[where]) < 1e-5
    top = float(log_similarity(torch.tensor(0.0), model.prototype_layer.epsilon))
    assert float(output.similarities[where]) == pytest.approx(top, rel=1e-2)
    # The training writes the same three files as every model's.
    assert sorted(p.name for p in outdir.iterdir()) == sorted(
        [WEIGHTS_NAME, METADATA_NAME, LOG_NAME]
    )


@pytest.mark.parametrize("kill_epoch", [3, 4], ids=["before-projection", "after-projection"])
def test_resume_across_the_projection_matches_an_uninterrupted_run(
    projection_run, dataset, tmp_path, kill_epoch
):
    outdir = tmp_path / "ramanseg"
    with pytest.raises(KeyboardInterrupt):
        run(tiny_config(), "ramanseg", dataset["samples"], outdir, kill_epoch=kill_epoch)
    checkpoint = torch.load(outdir / CHECKPOINT_NAME, weights_only=True)
    assert checkpoint["epoch"] == kill_epoch - 1
    # The checkpoint after the projection epoch holds the projection records.
    assert len(checkpoint["strategy"]["records"]) == (4 if kill_epoch == 4 else 0)
    assert not (outdir / METADATA_NAME).exists()
    resumed, _ = run(tiny_config(), "ramanseg", dataset["samples"], outdir)
    assert resumed.resumed_from == kill_epoch - 1
    full = projection_run["outdir"]
    a = torch.load(full / WEIGHTS_NAME, weights_only=True)
    b = torch.load(outdir / WEIGHTS_NAME, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert read_log(outdir / LOG_NAME) == read_log(full / LOG_NAME)
    assert json.loads((outdir / METADATA_NAME).read_text()) == json.loads(
        (full / METADATA_NAME).read_text()
    )


def test_projection_free_variant_keeps_the_best_epoch_and_writes_no_prototypes(noproj_run):
    result, outdir = noproj_run["result"], noproj_run["outdir"]
    dice = [row["val_dice"] for row in result.history]
    assert len(dice) == 3 and result.selected_epoch == int(np.argmax(dice)) + 1
    metadata = json.loads((outdir / METADATA_NAME).read_text())
    assert metadata["selection"] == "best" and metadata["val_dice"] == max(dice)
    assert PROJECTION_KEY not in metadata
    with pytest.raises(InputError, match="without prototype projection"):
        read_projection(outdir)
    assert [s["trains"]["features"] for s in noproj_run["strategy"].seen] == [
        {False}, {True}, {True},
    ]  # fmt: skip
    log = read_log(outdir / LOG_NAME)
    assert {"loss_cross_entropy", "loss_dice", "loss_diversity", "loss_l1"} <= set(log[0])


@pytest.mark.parametrize("variant", ["projection_run", "noproj_run"])
def test_both_variants_predict_through_the_registry(request, dataset, tmp_path, variant):
    trained = request.getfixturevalue(variant)
    name = "ramanseg" if variant == "projection_run" else "ramanseg_noproj"
    config = tiny_config()
    settings = {"seed": 3, "device": "cpu", "models": {"training": config["models"]["training"]}}
    args = argparse.Namespace(
        model=name,
        weights=str(trained["outdir"]),
        stacks=sorted(map(str, Path(dataset["preprocessed"]).glob("*/stack.ome.tif"))),
        split=str(dataset["split"]),
        outdir=str(tmp_path / "predictions"),
        subset="test",
        overlap=0.5,
        blend="gaussian",
        timing=str(tmp_path / "timing.json"),
        patch_size=None,
        batch_size=None,
        threads=None,
        settings=json.dumps(settings),
        config=None,
    )
    assert run_predict_model(args) == 0
    model, _ = load_trained_model(trained["outdir"])
    for sample in load_samples(dataset["preprocessed"], ["te0", "te1"]):
        probability = tifffile.imread(
            tmp_path / "predictions" / f"{sample.sample_id}.probability.tif"
        )
        assert probability.shape == sample.mask.shape
        assert probability.min() >= 0.0 and probability.max() <= 1.0
    # The output's logits are log-probabilities: the harness's reading gives them back.
    with torch.no_grad():
        output = model(torch.rand(1, 4, 16, 16))
    torch.testing.assert_close(
        foreground_probability(model, output), output.logits.exp()[:, 1], rtol=1e-6, atol=1e-6
    )
    assert isinstance(model, RamanSeg)
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["model"] == name and timing["samples"] == 2


# --- prototype collapse and the paper's projection ------------------------------------------


def project_with(config: dict, dataset, collapsed: bool):
    """Build the tiny model (its prototypes one vector per class if ``collapsed``) and run
    the strategy's projection epoch; return the strategy."""
    from ramanseg.models.training import EpochContext

    torch.manual_seed(0)
    architecture = {**ENTRY.architecture(config, "ramanseg", 4), **SMALL}
    model = ENTRY.build(**architecture)
    if collapsed:
        with torch.no_grad():
            prototypes = model.prototype_layer.prototypes
            for start in (0, 2):  # 2 prototypes per class, in class blocks
                prototypes[start + 1] = prototypes[start]
    strategy = ramanseg_strategy(config, "ramanseg", model)
    context = EpochContext(
        epoch=strategy.schedule.projection_epoch,
        epochs=strategy.epochs,
        model=model,
        optimizer=None,
        device=torch.device("cpu"),
        sampler=None,
        train_samples=dataset["samples"][0],
        val_samples=dataset["samples"][1],
    )
    strategy.on_epoch_end(context)
    return strategy


def test_collapse_warning_fires_on_a_model_built_collapsed(dataset, caplog):
    config = tiny_config()
    config["models"]["ramanseg"]["projection_assignment"] = "paper"
    with caplog.at_level("WARNING"):
        strategy = project_with(config, dataset, collapsed=True)
    warnings = [r.getMessage() for r in caplog.records if "PROTOTYPE COLLAPSE" in r.getMessage()]
    assert len(warnings) == 2 and "only 1 distinct" in warnings[0]
    assert len({r.source for r in strategy.records}) == 2  # one patch per class
    stages = [d["stage"] for d in strategy.diagnostics]
    assert stages == ["before projection", "after projection"]
    after = strategy.diagnostics[1]["classes"]
    assert [row["distinct_vectors"] for row in after] == [1, 1]


def test_distinct_projection_of_a_collapsed_model_gives_every_prototype_its_patch(dataset, caplog):
    config = tiny_config()
    config["models"]["ramanseg"]["projection_assignment"] = "distinct"
    with caplog.at_level("WARNING"):
        strategy = project_with(config, dataset, collapsed=True)
    assert not [r for r in caplog.records if "PROTOTYPE COLLAPSE" in r.getMessage()]
    assert len({r.source for r in strategy.records}) == 4


def test_the_papers_formulation_stays_selectable(config):
    from ramanseg.config import load_config_files

    model = ENTRY.build(**ENTRY.architecture(config, "ramanseg", 24))
    demo = ramanseg_strategy(config, "ramanseg", model)
    assert (demo.assignment, demo.prototype_init) == ("distinct", "class_latents")
    entry = config["models"]["ramanseg"]
    for key in ("projection_assignment", "prototype_init", "region", "region_percentile"):
        entry.pop(key, None)
    strategy = ramanseg_strategy(config, "ramanseg", model)  # the defaults: the paper's
    assert (strategy.assignment, strategy.prototype_init) == ("paper", "xavier")
    assert (strategy.region, strategy.percentile) == ("protopnet", 95.0)
    assert strategy.criterion.weights["cluster"] == strategy.criterion.weights["separation"] == 0
    root = Path(__file__).resolve().parents[2]
    paper = load_config_files([root / "config" / "config.yaml", root / "config" / "paper.yaml"])
    strategy = ramanseg_strategy(paper, "ramanseg", model)
    assert (strategy.assignment, strategy.prototype_init, strategy.region) == (
        "paper",
        "xavier",
        "protopnet",
    )
    assert strategy.criterion.weights["cluster"] == strategy.criterion.weights["separation"] == 0
