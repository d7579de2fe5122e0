"""The phasor baseline of the tumour table: cursors from training tissue, predictions."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from ramanseg.cli import main
from ramanseg.errors import InputError
from ramanseg.hsrs.tumour import (
    TumourPhasorSettings,
    fit_tumour_cursors,
    load_tumour_cursors,
    raman_order,
    tumour_probability,
)
from ramanseg.predictions import read_prediction
from ramanseg.settings import Channel, ChannelLayout
from tests.sample_files import write_preprocessed_files

WAVENUMBERS = np.linspace(2800, 3100, 12)
#: Raman bands in file order deliberately not sorted, then a non-Raman channel.
FILE_ORDER = [*range(6, 12), *range(6)]
CHANNELS = [
    {"name": f"Raman {WAVENUMBERS[i]:.0f}", "role": "raman", "wavenumber": float(WAVENUMBERS[i])}
    for i in FILE_ORDER
] + [{"name": "TPEF", "role": "tpef"}]
LAYOUT = ChannelLayout(tuple(Channel(**c) for c in CHANNELS))
SETTINGS = TumourPhasorSettings(harmonics=(1, 2), max_pixels=5000)


def make_sample(seed: int, size: int = 32):
    """Tumour pixels carry a band at 2930 cm-1, the rest at 2850 (plus noise)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), dtype=np.uint8)
    y, x = rng.integers(0, size - 12, 2)
    mask[y : y + 12, x : x + 12] = 1
    lipid = np.exp(-(((WAVENUMBERS - 2850) / 25) ** 2))
    protein = np.exp(-(((WAVENUMBERS - 2930) / 25) ** 2))
    spectra = np.where(mask[None] == 1, protein[:, None, None], lipid[:, None, None])
    spectra = spectra + rng.normal(0, 0.05, spectra.shape) + 0.1
    stack = np.concatenate([spectra[FILE_ORDER], rng.uniform(0, 1, (1, size, size))])
    tissue = np.ones_like(mask)
    tissue[:2] = 0
    return SimpleNamespace(image=np.clip(stack, 0, 1).astype(np.float32), mask=mask, tissue=tissue)


def test_raman_bands_in_order_of_wavenumber():
    order = raman_order(LAYOUT)
    assert [LAYOUT.channels[i].wavenumber for i in order] == sorted(WAVENUMBERS)
    assert 12 not in order  # not the TPEF channel
    few = ChannelLayout(tuple(Channel(f"R{i}", "raman", 2800.0 + i) for i in range(2)))
    with pytest.raises(InputError, match="at least 3 Raman channels"):
        raman_order(few)


def test_cursors_separate_tumour_from_the_rest():
    bands = raman_order(LAYOUT)
    train = [(f"s{i}", s.image, s.mask, s.tissue) for i, s in enumerate(map(make_sample, [0, 1]))]
    cursors = fit_tumour_cursors(train, bands, SETTINGS, seed=0)
    assert cursors.class_names == ("non-tumour", "tumour")
    assert sum(cursors.n_pixels) == 2 * 30 * 32  # tissue pixels only, all under max_pixels
    test = make_sample(9)
    probability = tumour_probability(cursors, test.image, bands, SETTINGS)
    assert probability.shape == test.mask.shape and probability.dtype == np.float32
    assert ((probability >= 0.5) == (test.mask == 1)).mean() > 0.95


def test_cursors_need_tumour_pixels():
    sample = make_sample(0)
    with pytest.raises(InputError, match="'tumour' has 0 training pixels"):
        fit_tumour_cursors(
            [("s", sample.image, np.zeros_like(sample.mask), sample.tissue)],
            raman_order(LAYOUT),
            SETTINGS,
        )


def _write_dataset(root):
    ids = {"train": ["tr0", "tr1"], "val": [], "test": ["te0", "te1"]}
    for seed, sample_id in enumerate(ids["train"] + ids["test"]):
        names = [c["name"] for c in CHANNELS]
        write_preprocessed_files(root / "preprocessed" / sample_id, make_sample(seed), names)
    split = root / "split.json"
    split.write_text(json.dumps({**ids, "folds": []}))
    return ids, split


def _argv(root, split, samples, **kinds):
    argv = ["fit-phasor"]
    for option, name in (("stacks", "stack.ome.tif"), ("masks", "mask.tif")):
        argv += [f"--{option}", *(str(root / "preprocessed" / s / name) for s in samples[option])]
    argv += ["--foregrounds"]
    argv += [str(root / "preprocessed" / s / "foreground.tif") for s in samples["masks"]]
    settings = {"seed": 0, "channels": CHANNELS, "hsrs": {"tumour": {"max_pixels": 1000}}}
    argv += ["--split", str(split), "--model-out", str(root / "model.json")]
    return [*argv, "--outdir", str(root / "predictions"), "--settings", json.dumps(settings)]


def test_cli_fits_and_predicts(tmp_path):
    ids, split = _write_dataset(tmp_path)
    samples = {"stacks": ids["train"] + ids["test"], "masks": ids["train"]}
    assert main(_argv(tmp_path, split, samples)) == 0
    cursors = load_tumour_cursors(tmp_path / "model.json")
    assert sum(cursors.n_pixels) == 1000  # the subsample of the 2 x 960 tissue pixels
    assert json.loads((tmp_path / "model.json").read_text())["train_samples"] == ids["train"]
    for sample_id in ids["test"]:
        mask, _ = read_prediction(tmp_path / "predictions", sample_id)
        truth = make_sample(len(ids["train"]) + ids["test"].index(sample_id)).mask
        assert (mask == truth).mean() > 0.95


def test_cli_names_a_missing_stack_and_exits_2(tmp_path, capsys):
    ids, split = _write_dataset(tmp_path)
    samples = {"stacks": ids["train"] + ids["test"][:1], "masks": ids["train"]}
    assert main(_argv(tmp_path, split, samples)) == 2
    error = capsys.readouterr().err
    assert "'te1'" in error and "no preprocessed stack" in error
    assert not (tmp_path / "model.json").exists()


def test_missing_cursors_file():
    with pytest.raises(InputError, match="do not exist"):
        load_tumour_cursors("/nonexistent/model.json")
