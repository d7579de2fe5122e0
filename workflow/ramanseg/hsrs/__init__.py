"""Hyperspectral SRS (HSRS) of cells: the stack format between stages, the synthetic cell
phantom, the real C. elegans stack, spectral phasor analysis and its figures.

Modules:
    stack: :class:`~ramanseg.hsrs.stack.HsrsStack` and its ``.npz`` file (the one owner).
    cells: the synthetic HSRS cell phantom with truth.
    celegans: the real C. elegans HSRS stack, labelled by phasor cursors.
    phasor: G and S of each pixel's spectrum, cursor and Gaussian-mixture segmentation.
    figures: the phasor plot with its cursors.
"""
