"""SVM-GA: the genetic band selection is seeded, keeps its best mask, and finds the
informative bands of a toy problem."""

from __future__ import annotations

import numpy as np
import pytest

from ramanseg.config import ConfigError, validate_config
from ramanseg.spectra.experiment import genetic_settings
from ramanseg.spectra.svm import GeneticSettings, select_bands_ga


@pytest.fixture(scope="module")
def toy():
    """60 bands of noise; only bands 10 and 45 tell the classes apart."""
    rng = np.random.default_rng(0)
    y = np.arange(240) % 2
    x = rng.normal(0, 1, (240, 60))
    x[:, 10] += 2.0 * y
    x[:, 45] -= 2.0 * y
    return x[:160], y[:160], x[160:], y[160:]


def test_ga_is_seeded_and_never_loses_its_best(toy):
    settings = GeneticSettings(population=8, generations=4)
    first = select_bands_ga(*toy, settings, seed=3)
    second = select_bands_ga(*toy, settings, seed=3)
    assert (first[0] == second[0]).all() and first[1] == second[1]
    assert np.all(np.diff(first[1]) >= 0)


def test_ga_keeps_the_informative_bands(toy):
    mask, history = select_bands_ga(*toy, GeneticSettings(population=12, generations=6), seed=0)
    assert mask[10] and mask[45]
    assert history[-1] > 0.9


def test_ga_settings_come_from_the_config_with_defaults(config):
    config["spectra"]["svm_ga"] = {"population": 6}
    settings = genetic_settings(validate_config(config))
    assert settings == GeneticSettings(population=6)


def test_a_population_too_small_is_a_config_error(config):
    config["spectra"]["svm_ga"] = {"population": 1}
    with pytest.raises(ConfigError, match="svm_ga"):
        validate_config(config)
