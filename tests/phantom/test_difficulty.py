"""The harder phantom (``phantom.difficulty``): each knob is really in what is written,
the output is deterministic, and with every knob at 0 nothing changes."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from skimage.registration import phase_cross_correlation

from ramanseg import phantom
from ramanseg.config import ConfigError, load_config_files, validate_config
from ramanseg.phantom.difficulty import DIFFICULTY_KNOBS, Difficulty
from ramanseg.phantom.spectra import class_spectrum
from ramanseg.phantom.tissue import SLIDE, TUMOR
from tests.conftest import DEMO_CONFIG, REPO
from tests.phantom.conftest import file_hashes, rasterise, typed

HARD_CONFIG = REPO / "config" / "hard.yaml"


def _with(config: dict, **knobs: float) -> dict:
    """A deep copy of ``config`` with these ``phantom.difficulty`` knobs."""
    config = copy.deepcopy(config)
    config["phantom"]["difficulty"] = dict(knobs)
    return config


def _samples(config: dict) -> list[phantom.PhantomSample]:
    settings = typed(config)
    return [phantom.generate_sample(settings, i) for i in range(settings.samples)]


@pytest.fixture(scope="module")
def cohort(demo) -> dict:
    """8 patients with one small sample each: enough to compare patients and samples."""
    config = copy.deepcopy(demo)
    config["phantom"].update(patients=8, samples=8, height=48, width=64, seed=5)
    return config


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.sum(a & b) / max(1, a.sum() + b.sum())


# ------------------------------------------------------------------------- default


def test_difficulty_all_zero_writes_the_same_bytes_as_no_difficulty_key(tiny, dataset, tmp_path):
    config = _with(tiny, **dict.fromkeys(DIFFICULTY_KNOBS, 0))
    assert not typed(config).difficulty.active
    phantom.write_phantom(typed(config), tmp_path / "data")
    assert file_hashes(tmp_path / "data") == file_hashes(dataset)


def test_difficulty_keys_match_the_schema_and_hard_yaml_turns_each_on():
    import yaml

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    keys = schema["properties"]["phantom"]["properties"]["difficulty"]["properties"]
    assert tuple(keys) == DIFFICULTY_KNOBS
    config = validate_config(load_config_files([DEMO_CONFIG, HARD_CONFIG]))
    difficulty = phantom.PhantomSettings.from_config(config).difficulty
    assert all(getattr(difficulty, knob) > 0 for knob in DIFFICULTY_KNOBS)
    assert (
        config["phantom"]["outdir"]
        != validate_config(load_config_files([DEMO_CONFIG]))["phantom"]["outdir"]
    )


@pytest.mark.parametrize(
    ("knob", "value"),
    [("annotation_error", -1), ("tumour_mixing", 1.5), ("tumour_shrink", 1), ("blur", 1)],
)
def test_bad_difficulty_values_are_config_errors(tiny, knob, value):
    with pytest.raises(ConfigError, match="difficulty"):
        typed(_with(tiny, **{knob: value}))


# ------------------------------------------------------------------------- each knob


def test_annotation_error_draws_annotations_off_the_truth(tiny, tmp_path):
    config = _with(tiny, annotation_error=3)
    names = typed(config).annotations.class_names
    outdir = tmp_path / "data"
    phantom.write_phantom(typed(config), outdir)
    tumour = names.index("Tumor") + 1
    dice = []
    for sample in _samples(config):
        document = json.loads((outdir / f"annotations/{sample.sample_id}.geojson").read_text())
        written = rasterise(document, names, sample.class_map.shape)
        # The file is what class_map says; the truth is kept beside it.
        assert np.mean(written == sample.class_map) > 0.97
        assert not np.array_equal(sample.true_class_map, sample.class_map)
        dice.append(_dice(written == tumour, sample.true_class_map == tumour))
    assert max(dice) < 0.97
    assert min(dice) > 0.3  # imprecise, not unrelated


def test_registration_error_shifts_the_he_against_the_srs(tiny, tmp_path):
    aligned = _samples(tiny)
    config = _with(tiny, registration_error=4)
    outdir = tmp_path / "data"
    phantom.write_phantom(typed(config), outdir)
    for reference, sample in zip(aligned, _samples(config), strict=True):
        # Without the knob the H&E is on the SRS grid: it is the reference here.
        assert np.array_equal(reference.srs, sample.srs)
        he = tifffile.imread(outdir / f"he/{sample.sample_id}.tif")
        shift, _, _ = phase_cross_correlation(
            reference.he.mean(axis=2), he.mean(axis=2).astype(np.float64)
        )
        # phase_cross_correlation gives the shift that registers the second image.
        measured = tuple(-round(float(value)) for value in shift)
        assert measured == sample.he_offset
        assert 3 <= np.hypot(*measured) <= 5
        # The annotations are drawn on the H&E, so they move with it.
        moved = phantom.difficulty.shift_image(reference.class_map, sample.he_offset)
        assert np.array_equal(sample.class_map, moved)


def test_patient_shift_and_gain_spread_the_patients_spectra(cohort):
    def spread(config: dict) -> tuple[float, float]:
        raman = np.array([role == "raman" for role in typed(config).channels.roles])
        means = []
        for sample in _samples(config):
            tissue = sample.tissue != SLIDE
            means.append(sample.srs[raman][:, tissue].astype(np.float64).mean(axis=1))
        means = np.array(means)
        total = means.sum(axis=1)
        shape = means / total[:, None]
        return float(np.std(np.log(total))), float(np.std(shape, axis=0).sum())

    gain, shape = spread(cohort)
    harder_gain, harder_shape = spread(_with(cohort, patient_shift=8, patient_gain=0.3))
    assert harder_gain > 1.5 * gain
    assert harder_shape > 1.3 * shape


def test_tumour_mixing_moves_tumour_spectra_towards_epithelium(cohort):
    settings = typed(cohort)
    raman = np.array([role == "raman" for role in settings.channels.roles])
    wavenumbers = [c.wavenumber for c in settings.channels.channels if c.role == "raman"]
    towards = class_spectrum("Epithelium", wavenumbers) - class_spectrum("Tumor", wavenumbers)
    mixed = _samples(_with(cohort, tumour_mixing=1))
    correlations = []
    for default, sample in zip(_samples(cohort), mixed, strict=True):
        assert np.array_equal(default.tissue, sample.tissue)
        tumour = ndimage.binary_erosion(sample.tissue == TUMOR, iterations=2)
        if tumour.sum() < 20:
            continue
        # The same tissue: what moved is the tumour's spectrum, towards epithelium.
        delta = sample.srs[raman].astype(np.float64) - default.srs[raman]
        moved = delta[:, tumour].mean(axis=1)
        correlations.append(np.corrcoef(moved, towards)[0, 1])
    # Nuclei, drift and the patient's shift blur the direction a little.
    assert len(correlations) >= 3
    assert min(correlations) > 0.5 and np.mean(correlations) > 0.8


def test_tumour_shrink_lowers_the_tumour_share(cohort):
    def share(config: dict) -> float:
        samples = _samples(config)
        return float(np.mean([np.mean(s.tissue[s.tissue != SLIDE] == TUMOR) for s in samples]))

    assert share(_with(cohort, tumour_shrink=0.5)) < 0.75 * share(cohort)


# ------------------------------------------------------------------------- determinism


def test_the_hard_phantom_is_deterministic_for_a_seed(tiny):
    knobs = {knob: 0.5 for knob in DIFFICULTY_KNOBS} | {"annotation_error": 2}
    first, second = _samples(_with(tiny, **knobs)), _samples(_with(tiny, **knobs))
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a.srs, b.srs) and np.array_equal(a.he, b.he)
        assert a.annotations == b.annotations and a.he_offset == b.he_offset
    other = _with(tiny, **knobs)
    other["phantom"]["seed"] += 1
    assert not np.array_equal(_samples(other)[0].he, first[0].he)


def test_difficulty_defaults_to_off():
    assert not Difficulty().active
    section = validate_config({"phantom": {}}, partial=True)["phantom"]["difficulty"]
    assert Difficulty.from_section(section) == Difficulty()
