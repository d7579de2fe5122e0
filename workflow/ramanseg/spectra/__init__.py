"""Spectra as first-class data: the skin-cancer paper's preprocessing chain and 1D-CNN, its
baselines, metrics with bootstrap confidence intervals, and spectral explanations checked
on synthetic Lorentzian spectra (``snakemake spectra``)."""
