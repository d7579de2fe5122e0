"""The real C. elegans HSRS stack, labelled by phasor cursors at its reference spectra.

The stack (buchenglab/LASSO-spectral-unmixing, ``Data/CElegans``; GPL-3.0, so it is read
in place from the configured folder ``hsrs.celegans_dir`` and never copied into the
project) is a folder with:

* ``celegans_srs_cube.npy``: uint8 (Y, X, frames) = (200, 200, 100), a hyperspectral SRS
  stack over the C-H region (the frames' wavenumbers are not published);
* ``celegans_spec_init.mat``: ``celegans_spec_init``, (4, frames), the reference spectra
  of oxidised lipid, nucleus, protein and water, in this order.

Its labels are the paper's gold standard: phasor segmentation with a cursor at each
reference spectrum's phasor; each pixel takes the nearest reference (in the phasor
plane of the configured harmonics, after the configured median filter). Pixels outside
the worm carry almost no signal (a few counts above the dark level against 15-30 inside),
so their phasors are noise: they are labelled background first, below Otsu's threshold
of the mean-intensity image (the image is clearly bimodal). The detector's
dark level (the flat floor of every reference spectrum, about 30 counts) is subtracted
from the stack and the references first: a constant offset pulls every phasor towards
the origin and would crowd the references together.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ramanseg.errors import InputError
from ramanseg.hsrs.phasor import PhasorCursors, PhasorSettings, compute_phasor, phasor_numpy
from ramanseg.hsrs.stack import HsrsStack

CUBE_FILE = "celegans_srs_cube.npy"
SPECTRA_FILE = "celegans_spec_init.mat"
SPECTRA_KEY = "celegans_spec_init"
#: The reference spectra, in the order of the .mat file (data/real/README.md).
REFERENCE_NAMES = ("oxidised_lipid", "nucleus", "protein", "water")
#: The label classes: the slide outside the worm, then one per reference spectrum.
CLASS_NAMES = ("background", *REFERENCE_NAMES)
SOURCE = "buchenglab/LASSO-spectral-unmixing Data/CElegans (GPL-3.0)"
FIX = (
    "set `hsrs.celegans_dir` to the folder holding celegans_srs_cube.npy and "
    "celegans_spec_init.mat as published (or to null to skip the C. elegans stack)"
)


def read_celegans(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the C. elegans stack and its reference spectra.

    Args:
        folder: the folder (``hsrs.celegans_dir``).

    Returns:
        ``(cube, references)``: float32 (frames, Y, X) and float64 (4, frames).

    Raises:
        InputError: a missing folder or file, an unreadable file, or arrays of other
            shapes than described above (naming the file).
    """
    import scipy.io

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("the C. elegans folder does not exist", path=folder, fix=FIX)
    cube_path, spectra_path = folder / CUBE_FILE, folder / SPECTRA_FILE
    for path in (cube_path, spectra_path):
        if not path.is_file():
            raise InputError("the C. elegans stack's file is missing", path=path, fix=FIX)
    try:
        cube = np.load(cube_path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise InputError(
            f"cannot be read as a .npy array ({error})", path=cube_path, fix=FIX
        ) from error
    if cube.ndim != 3 or not np.issubdtype(cube.dtype, np.number) or min(cube.shape) < 5:
        raise InputError(
            f"expected a (Y, X, frames) numeric stack, got shape {cube.shape}, dtype {cube.dtype}",
            path=cube_path,
            fix=FIX,
        )
    cube = np.moveaxis(cube.astype(np.float32), -1, 0)
    if not np.isfinite(cube).all():
        raise InputError("the stack has non-finite values", path=cube_path, fix=FIX)
    try:
        mat = scipy.io.loadmat(spectra_path)
    except (OSError, ValueError, NotImplementedError) as error:
        raise InputError(
            f"cannot be read as a .mat file ({error})", path=spectra_path, fix=FIX
        ) from error
    references = np.asarray(mat.get(SPECTRA_KEY, np.empty(0)), dtype=np.float64)
    expected = (len(REFERENCE_NAMES), cube.shape[0])
    if references.shape != expected:
        raise InputError(
            f"expected `{SPECTRA_KEY}` of shape {expected} (one reference spectrum per class, "
            f"one value per frame of the stack), got {references.shape}",
            path=spectra_path,
            fix=FIX,
        )
    if not np.isfinite(references).all():
        raise InputError("the reference spectra have non-finite values", path=spectra_path)
    return cube, references


def reference_cursors(
    references: np.ndarray, settings: PhasorSettings, radius: float = 0.05
) -> PhasorCursors:
    """Circular cursors at the reference spectra's phasors, of equal size, so that each
    pixel takes the nearest reference.

    Args:
        references: (classes, frames) spectra, dark level already subtracted.
        settings: the phasor settings (harmonics, cursor half-width ``sigma``).
        radius: the drawn cursors' radius in the phasor plane.

    Returns:
        The cursors (no fallback: every pixel gets a class).
    """
    _, g, s = phasor_numpy(references.T, settings.harmonics)
    centers = np.stack([c for h in range(len(settings.harmonics)) for c in (g[h], s[h])], 1)
    dims = centers.shape[1]
    # Equal isotropic covariances: the most likely class is the nearest centre.
    variance = (radius / settings.sigma) ** 2
    return PhasorCursors(
        class_names=REFERENCE_NAMES,
        harmonics=tuple(settings.harmonics),
        centers=centers,
        covariances=np.repeat(np.eye(dims)[None] * variance, len(centers), axis=0),
        shape="circular",
        sigma=settings.sigma,
    )


def label_celegans(
    cube: np.ndarray, references: np.ndarray, settings: PhasorSettings
) -> tuple[np.ndarray, PhasorCursors, float]:
    """Label the background by intensity and every other pixel by the nearest reference
    spectrum in the phasor plane.

    Args:
        cube: float32 (frames, Y, X).
        references: (classes, frames).
        settings: the phasor settings.

    Returns:
        ``(labels, cursors, dark_level)``: int16 (Y, X) labels in ``CLASS_NAMES`` order,
        the cursors (of the references, label - 1), and the dark level subtracted.
    """
    from skimage.filters import threshold_otsu

    dark_level = float(references.min())
    cursors = reference_cursors(references - dark_level, settings)
    phasor = compute_phasor(cube - dark_level, settings.harmonics, settings.median_filter)
    labels = 1 + cursors.classify(phasor.features()).reshape(cube.shape[1:])
    labels[phasor.mean < threshold_otsu(phasor.mean)] = CLASS_NAMES.index("background")
    return labels.astype(np.int16), cursors, dark_level


def celegans_stack(folder: str | Path, settings: PhasorSettings) -> HsrsStack:
    """The C. elegans stack with its phasor labels (the paper's gold standard).

    Args:
        folder: the folder (``hsrs.celegans_dir``).
        settings: the phasor settings.

    Returns:
        The stack: the cube as read (float32, dark level kept), no wavenumbers, labels.

    Raises:
        InputError: see :func:`read_celegans`.
    """
    cube, references = read_celegans(folder)
    labels, _, dark_level = label_celegans(cube, references, settings)
    return HsrsStack(
        cube=cube,
        wavenumbers=None,
        labels=labels,
        class_names=CLASS_NAMES,
        source=f"{SOURCE}; labels: nearest reference phasor, dark level {dark_level:g}",
    )
