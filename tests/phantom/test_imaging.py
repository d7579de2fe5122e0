"""The phantom's images: class spectra, informative channels, detector effects."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from ramanseg import phantom
from ramanseg.config import (
    channel_names,
    raman_wavenumbers,
)
from tests.phantom.conftest import typed

# ------------------------------------------------------------------------- realism


def test_class_spectra_peak_at_the_c_h_bands():
    grid = np.arange(2790.0, 3110.0, 0.1)

    def peak(name: str) -> float:
        return grid[np.argmax(phantom.class_spectrum(name, grid))]

    def lipid_ratio(name: str) -> float:
        s2850, s2930 = phantom.class_spectrum(name, [2850.0, 2930.0])
        return s2850 / s2930

    assert abs(peak("Other") - 2850) <= 5
    for name in ("Tumor", "Epithelium", "Necrosis"):
        assert abs(peak(name) - 2930) <= 5, name
    assert abs(peak("Stroma") - 2940) <= 5
    for name in ("Tumor", "Epithelium", "Necrosis", "Stroma"):
        assert lipid_ratio("Other") > 2 * lipid_ratio(name), name
    # Tumour and epithelium: close, but not the same.
    tumour, epithelium = lipid_ratio("Tumor"), lipid_ratio("Epithelium")
    assert 0.01 < abs(tumour - epithelium) / tumour < 0.1
    s3010 = [phantom.class_spectrum(n, [3010.0])[0] for n in ("Tumor", "Epithelium")]
    assert s3010[0] != pytest.approx(s3010[1], rel=0.05)
    # A patient shift moves the peaks.
    shifted = phantom.class_spectrum("Other", grid, shift=3.0)
    assert grid[np.argmax(shifted)] == pytest.approx(peak("Other") + 3.0, abs=0.2)


def test_channels_carry_class_information_where_documented(demo):
    config = copy.deepcopy(demo)
    config["phantom"].update(height=96, width=96)
    names = channel_names(config)
    wavenumbers = raman_wavenumbers(config)
    sums: dict[tuple[str, int], list[float]] = {}
    for index in range(6):
        sample = phantom.generate_sample(typed(config), index)
        for channel in range(len(names)):
            for code in (phantom.TUMOR, phantom.EPITHELIUM, phantom.STROMA, phantom.OTHER):
                values = sample.srs[channel][sample.tissue == code].astype(float)
                sums.setdefault((names[channel], code), []).extend(values.tolist())
    mean = {key: float(np.mean(v)) for key, v in sums.items() if v}

    def channel(wavenumber: float) -> str:
        return names[int(np.argmin(np.abs(np.asarray(wavenumbers) - wavenumber)))]

    assert mean["SHG", phantom.STROMA] > 4 * mean["SHG", phantom.TUMOR]
    tumour, epithelium = (
        mean["Transmission", phantom.TUMOR],
        mean["Transmission", phantom.EPITHELIUM],
    )
    assert abs(tumour - epithelium) / tumour < 0.05
    assert mean[channel(2850), phantom.OTHER] > 1.5 * mean[channel(2850), phantom.TUMOR]
    assert mean[channel(2930), phantom.TUMOR] > 1.5 * mean[channel(2930), phantom.STROMA]

    # Far-wing bands separate tumour from stroma far less than the CH3 band does
    # (Fisher score: squared mean difference over the summed variances).
    def fisher(name: str) -> float:
        a, b = np.asarray(sums[name, phantom.TUMOR]), np.asarray(sums[name, phantom.STROMA])
        return (a.mean() - b.mean()) ** 2 / (a.var() + b.var())

    assert fisher(channel(2930)) > 1.0
    assert fisher(channel(2802)) < fisher(channel(2930)) / 10
    assert fisher(channel(3094)) < fisher(channel(2930)) / 10


def test_detector_effects_are_present(tiny):
    sample = phantom.generate_sample(typed(tiny), 0)
    raman = [i for i, c in enumerate(tiny["channels"]) if c["role"] == "raman"]
    assert (sample.srs[raman] == 65535).any()  # saturated pixels
    assert (sample.srs < 65535).mean() > 0.99
    # The glass is not constant: noise.
    glass = sample.srs[raman[0]][sample.tissue == phantom.SLIDE]
    assert glass.std() > 0


def test_works_without_optional_channel_roles(tiny):
    config = copy.deepcopy(tiny)
    config["channels"] = [c for c in config["channels"] if c["role"] == "raman"][::4]
    sample = phantom.generate_sample(typed(config), 1)
    assert sample.srs.shape == (len(config["channels"]), 48, 64)
