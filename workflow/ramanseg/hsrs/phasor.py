"""Spectral phasor analysis (Fu & Xie, Anal. Chem. 2014) and segmentation in the phasor plane.

The spectral phasor of a pixel's spectrum ``I_k`` over ``K`` uniformly spaced bands is,
for harmonic ``n``, the normalised Fourier coefficient

    G_n = sum_k I_k cos(2 pi n k / K) / sum_k I_k,
    S_n = sum_k I_k sin(2 pi n k / K) / sum_k I_k,

so the spectral range is one period: a band's position along the spectrum becomes an
angle, its width a distance from the unit circle. The phasor is linear in the spectrum
with intensity weights: the phasor of a mixture lies on the segment between the
components' phasors, at the intensity fraction. :func:`compute_phasor` uses phasorpy
(``phasorpy.phasor.phasor_from_signal``, the same convention); :func:`phasor_numpy` is a
NumPy implementation it is checked against (``tests/hsrs``).

Segmentation:

* cursors (:class:`PhasorCursors`): one per class, placed from training pixels with known
  classes: the class mean in the phasor plane (both coordinates of every harmonic used),
  and an elliptic (class covariance) or circular (mean variance) region ``sigma`` standard
  deviations wide. A pixel takes the class whose Gaussian is the most likely; pixels
  outside every cursor take the fallback class if one is set (the unassigned pixels of a
  phasor plot). The same Gaussians give class probabilities, which is what the tumour
  pipeline's phasor baseline writes.
* clustering (:func:`gmm_segment`): a Gaussian mixture (scikit-learn) on the phasor
  coordinates, unsupervised; :func:`match_clusters` names the clusters after the classes
  they overlap most, for scoring against a truth.

Pixels whose spectrum sums to zero or less have no phasor (NaN); they take the fallback
class (or class 0) and probability 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

CursorShape = Literal["elliptic", "circular"]
CURSOR_SHAPES = ("elliptic", "circular")
MODEL_KIND = "phasor_cursors"
#: A floor on the cursors' variances, so that a class with (nearly) identical phasors
#: still has a region and a finite likelihood.
MIN_VARIANCE = 1e-8


@dataclass(frozen=True)
class PhasorSettings:
    """Settings of phasor segmentation of HSRS stacks (config section ``hsrs.phasor``).

    Attributes:
        harmonics: the harmonics of the phasor coordinates.
        median_filter: passes of the 3 x 3 median filter on G and S (0: none).
        cursor: the cursors' shape, ``elliptic`` or ``circular``.
        sigma: the cursors' half-width in standard deviations.
        seed: the seed of the Gaussian-mixture clustering.
    """

    harmonics: tuple[int, ...] = (1,)
    median_filter: int = 1
    cursor: CursorShape = "elliptic"
    sigma: float = 3.0
    seed: int = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PhasorSettings:
        """The settings from the validated workflow configuration (``hsrs.phasor``)."""
        section = dict(config["hsrs"]["phasor"])
        section["harmonics"] = tuple(section["harmonics"])
        return cls(**section)


@dataclass(frozen=True)
class Phasor:
    """The phasor image of a stack.

    Attributes:
        mean: (Y, X) mean intensity of each pixel's spectrum.
        g: (H, Y, X) real coordinate per harmonic.
        s: (H, Y, X) imaginary coordinate per harmonic.
        harmonics: the H harmonics.
    """

    mean: np.ndarray
    g: np.ndarray
    s: np.ndarray
    harmonics: tuple[int, ...]

    def features(self) -> np.ndarray:
        """(Y * X, 2H) coordinates per pixel: ``g1, s1, g2, s2, ...`` (NaN: no phasor)."""
        stacked = np.stack([c for h in range(len(self.harmonics)) for c in (self.g[h], self.s[h])])
        return stacked.reshape(stacked.shape[0], -1).T


def _check_cube(cube: np.ndarray, harmonics: Sequence[int]) -> tuple[np.ndarray, list[int]]:
    cube = np.asarray(cube)
    if cube.ndim < 1:
        raise ValueError("the spectra need a band axis (axis 0)")
    harmonics = [int(h) for h in harmonics]
    if not harmonics or min(harmonics) < 1:
        raise ValueError(f"harmonics must be positive integers, got {harmonics}")
    if cube.shape[0] < 2 * max(harmonics) + 1:
        raise ValueError(
            f"harmonic {max(harmonics)} needs at least {2 * max(harmonics) + 1} bands, the "
            f"spectra have {cube.shape[0]}"
        )
    return cube, harmonics


def phasor_numpy(
    cube: np.ndarray, harmonics: Sequence[int] = (1,)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The spectral phasor by the definition (a plain NumPy sum over the bands).

    Args:
        cube: spectra with the bands on axis 0: (bands, ...), uniformly spaced.
        harmonics: the harmonics.

    Returns:
        ``(mean, g, s)``: mean intensity (...), and G and S (H, ...), NaN where the
        spectrum sums to zero or less.

    Raises:
        ValueError: fewer than ``2 * max(harmonics) + 1`` bands, or a harmonic below 1.
    """
    cube, harmonics = _check_cube(cube, harmonics)
    spectra = cube.astype(np.float64)
    total = spectra.sum(axis=0)
    k = np.arange(cube.shape[0])
    g, s = [], []
    with np.errstate(invalid="ignore", divide="ignore"):
        for h in harmonics:
            phase = 2 * np.pi * h * k / cube.shape[0]
            g.append(np.tensordot(np.cos(phase), spectra, axes=(0, 0)) / total)
            s.append(np.tensordot(np.sin(phase), spectra, axes=(0, 0)) / total)
    g, s = np.array(g), np.array(s)
    nan = ~(total > 0)
    g[:, nan] = np.nan
    s[:, nan] = np.nan
    return total / cube.shape[0], g, s


def compute_phasor(
    cube: np.ndarray, harmonics: Sequence[int] = (1,), median_filter: int = 0
) -> Phasor:
    """The spectral phasor of every pixel, by phasorpy.

    Args:
        cube: (bands, Y, X), the bands uniformly spaced in wavenumber, in order.
        harmonics: the harmonics (1; 2 adds detail on narrow bands).
        median_filter: how many times to apply phasorpy's 3 x 3 median filter to G and S
            (0: none), which removes shot noise from the phasor plot without blurring
            the intensity image.

    Returns:
        The phasor; G and S are NaN where the spectrum sums to zero or less.

    Raises:
        ValueError: a cube that is not 3-D or has too few bands for the harmonics.
    """
    from phasorpy.phasor import phasor_filter_median, phasor_from_signal

    cube, harmonics = _check_cube(cube, harmonics)
    if cube.ndim != 3:
        raise ValueError(f"the cube must be (bands, Y, X), got shape {cube.shape}")
    mean, g, s = phasor_from_signal(
        cube.astype(np.float64), axis=0, harmonic=harmonics, dtype=np.float64
    )
    g, s = np.asarray(g).reshape(len(harmonics), *cube.shape[1:]), np.asarray(s)
    s = s.reshape(g.shape)
    invalid = ~(mean > 0)
    g[:, invalid] = np.nan
    s[:, invalid] = np.nan
    if median_filter:
        # phasorpy skips NaN pixels (and those of mean NaN) in the filter.
        mean_for_filter = np.where(invalid, np.nan, mean)
        _, g, s = phasor_filter_median(mean_for_filter, g, s, size=3, repeat=median_filter)
    return Phasor(mean, np.asarray(g), np.asarray(s), tuple(harmonics))


@dataclass(frozen=True)
class PhasorCursors:
    """Cursors in the phasor plane, one per class, with their Gaussian class models.

    Attributes:
        class_names: the classes, in label order.
        harmonics: the harmonics of the coordinates (features ``g1, s1, g2, s2, ...``).
        centers: (classes, 2H) class means.
        covariances: (classes, 2H, 2H) class covariances (isotropic for circular cursors).
        shape: ``elliptic`` or ``circular``.
        sigma: a cursor's half-width in standard deviations (Mahalanobis radius).
        fallback: the class of pixels outside every cursor, or ``None`` to give every
            pixel its most likely class.
        n_pixels: training pixels per class.
    """

    class_names: tuple[str, ...]
    harmonics: tuple[int, ...]
    centers: np.ndarray
    covariances: np.ndarray
    shape: CursorShape = "elliptic"
    sigma: float = 3.0
    fallback: int | None = None
    n_pixels: tuple[int, ...] = ()

    def mahalanobis(self, features: np.ndarray) -> np.ndarray:
        """(classes, N) Mahalanobis distance of each pixel to each class (NaN: no phasor)."""
        features = np.asarray(features, dtype=np.float64)
        out = np.empty((len(self.class_names), len(features)))
        pairs = zip(self.centers, self.covariances, strict=True)
        for index, (center, covariance) in enumerate(pairs):
            diff = features - center
            solved = np.linalg.solve(covariance, diff.T).T
            out[index] = np.sqrt(np.einsum("ij,ij->i", diff, solved))
        return out

    def log_likelihood(self, features: np.ndarray) -> np.ndarray:
        """(classes, N) Gaussian log density of each pixel under each class."""
        distance = self.mahalanobis(features)
        log_det = np.array([np.linalg.slogdet(c)[1] for c in self.covariances])
        dims = self.centers.shape[1]
        return -0.5 * (distance**2 + log_det[:, None] + dims * np.log(2 * np.pi))

    def inside(self, features: np.ndarray) -> np.ndarray:
        """(classes, N) whether each pixel lies inside each cursor."""
        with np.errstate(invalid="ignore"):
            return self.mahalanobis(features) <= self.sigma

    def classify(self, features: np.ndarray) -> np.ndarray:
        """The class of each pixel: the most likely class; outside every cursor (and
        without a phasor) the fallback class, if set.

        Args:
            features: (N, 2H) phasor coordinates (:meth:`Phasor.features`).

        Returns:
            int16 (N,) labels.
        """
        log_likelihood = self.log_likelihood(features)
        valid = np.isfinite(log_likelihood).all(axis=0)
        labels = np.argmax(np.where(np.isfinite(log_likelihood), log_likelihood, -np.inf), 0)
        default = 0 if self.fallback is None else self.fallback
        labels[~valid] = default
        if self.fallback is not None:
            labels[~self.inside(features).any(axis=0)] = self.fallback
        return labels.astype(np.int16)

    def probability(self, features: np.ndarray, positive: int) -> np.ndarray:
        """The posterior probability of class ``positive``, the classes equally likely a
        priori (as a cursor does not prefer one class); 0 where a pixel has no phasor.

        Args:
            features: (N, 2H) phasor coordinates.
            positive: the class index.

        Returns:
            float32 (N,) in [0, 1].
        """
        log_likelihood = self.log_likelihood(features)
        valid = np.isfinite(log_likelihood).all(axis=0)
        shifted = log_likelihood[:, valid] - log_likelihood[:, valid].max(axis=0)
        weights = np.exp(shifted)
        probability = np.zeros(len(features), dtype=np.float32)
        probability[valid] = weights[positive] / weights.sum(axis=0)
        return probability

    def ellipse(self, index: int, harmonic_index: int = 0) -> tuple[float, ...]:
        """A cursor as drawn in one harmonic's plane, in phasorpy's terms.

        Args:
            index: the class.
            harmonic_index: the position of the harmonic in :attr:`harmonics`.

        Returns:
            ``(center_g, center_s, radius, radius_minor, angle)``: the semi-axes (``sigma``
            standard deviations of that plane's marginal) and the major axis' angle in
            radians.
        """
        dims = slice(2 * harmonic_index, 2 * harmonic_index + 2)
        covariance = self.covariances[index][dims, dims]
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        major = eigenvectors[:, 1]
        angle = float(np.arctan2(major[1], major[0]) % np.pi)
        radius, radius_minor = self.sigma * np.sqrt(np.maximum(eigenvalues[::-1], 0))
        center = self.centers[index][dims]
        return float(center[0]), float(center[1]), float(radius), float(radius_minor), angle

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description, with ``kind`` identifying the model."""
        return {
            "kind": MODEL_KIND,
            "class_names": list(self.class_names),
            "harmonics": list(self.harmonics),
            "centers": self.centers.tolist(),
            "covariances": self.covariances.tolist(),
            "shape": self.shape,
            "sigma": self.sigma,
            "fallback": self.fallback,
            "n_pixels": list(self.n_pixels),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PhasorCursors:
        """The cursors from :meth:`to_dict`'s output.

        Raises:
            ValueError: the mapping does not describe phasor cursors.
        """
        if data.get("kind") != MODEL_KIND:
            raise ValueError(f"not a {MODEL_KIND} description: kind {data.get('kind')!r}")
        try:
            cursors = cls(
                class_names=tuple(data["class_names"]),
                harmonics=tuple(int(h) for h in data["harmonics"]),
                centers=np.asarray(data["centers"], dtype=np.float64),
                covariances=np.asarray(data["covariances"], dtype=np.float64),
                shape=data["shape"],
                sigma=float(data["sigma"]),
                fallback=data["fallback"],
                n_pixels=tuple(data.get("n_pixels", ())),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"incomplete {MODEL_KIND} description: {error!r}") from error
        classes, dims = len(cursors.class_names), 2 * len(cursors.harmonics)
        if cursors.centers.shape != (classes, dims) or cursors.covariances.shape != (
            classes,
            dims,
            dims,
        ):
            raise ValueError(
                f"centers {cursors.centers.shape} / covariances {cursors.covariances.shape} do "
                f"not fit {classes} classes and harmonics {list(cursors.harmonics)}"
            )
        return cursors


def fit_cursors(
    features: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    harmonics: Sequence[int],
    *,
    shape: CursorShape = "elliptic",
    sigma: float = 3.0,
    fallback: int | None = None,
) -> PhasorCursors:
    """Place one cursor per class from training pixels of known class.

    Args:
        features: (N, 2H) phasor coordinates (NaN rows, pixels without a phasor, are
            left out).
        labels: (N,) class of each pixel, in ``0 .. len(class_names) - 1``.
        class_names: the classes.
        harmonics: the harmonics of ``features``.
        shape: ``elliptic`` (each class's covariance) or ``circular`` (its mean variance
            in every direction).
        sigma: the cursors' half-width in standard deviations.
        fallback: the class of pixels outside every cursor (``None``: none).

    Returns:
        The cursors.

    Raises:
        ValueError: a class without two training pixels with a phasor, an unknown shape,
            or features and labels that do not match.
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if shape not in CURSOR_SHAPES:
        raise ValueError(f"cursor shape must be one of {CURSOR_SHAPES}, got {shape!r}")
    if features.ndim != 2 or features.shape[1] != 2 * len(harmonics):
        raise ValueError(
            f"features must be (N, {2 * len(harmonics)}) for harmonics {list(harmonics)}, got "
            f"{features.shape}"
        )
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} pixels but {len(labels)} labels")
    valid = np.isfinite(features).all(axis=1)
    centers, covariances, counts = [], [], []
    for index, name in enumerate(class_names):
        points = features[valid & (labels == index)]
        if len(points) < 2:
            raise ValueError(
                f"class {name!r} has {len(points)} training pixels with a phasor; a cursor "
                "needs at least 2"
            )
        covariance = np.cov(points, rowvar=False).reshape(features.shape[1], -1)
        if shape == "circular":
            covariance = np.eye(len(covariance)) * np.trace(covariance) / len(covariance)
        covariance = covariance + np.eye(len(covariance)) * MIN_VARIANCE
        centers.append(points.mean(axis=0))
        covariances.append(covariance)
        counts.append(len(points))
    return PhasorCursors(
        class_names=tuple(class_names),
        harmonics=tuple(int(h) for h in harmonics),
        centers=np.array(centers),
        covariances=np.array(covariances),
        shape=shape,
        sigma=float(sigma),
        fallback=fallback,
        n_pixels=tuple(counts),
    )


def gmm_segment(
    features: np.ndarray, n_clusters: int, seed: int = 0, max_pixels: int = 100_000
) -> tuple[np.ndarray, Any]:
    """Cluster the pixels' phasors with a Gaussian mixture (full covariances).

    Args:
        features: (N, 2H) phasor coordinates; pixels without a phasor get cluster -1.
        n_clusters: the number of clusters.
        seed: the seed of the initialisation and of the fitting subsample.
        max_pixels: at most this many pixels fit the mixture (all are assigned).

    Returns:
        ``(clusters, mixture)``: int16 (N,) cluster of each pixel (-1: no phasor), and the
        fitted ``sklearn.mixture.GaussianMixture``.

    Raises:
        ValueError: fewer pixels with a phasor than clusters.
    """
    from sklearn.mixture import GaussianMixture

    features = np.asarray(features, dtype=np.float64)
    valid = np.isfinite(features).all(axis=1)
    points = features[valid]
    if len(points) < n_clusters:
        raise ValueError(f"{len(points)} pixels with a phasor cannot form {n_clusters} clusters")
    rng = np.random.default_rng(seed)
    fit_points = points
    if len(points) > max_pixels:
        fit_points = points[rng.choice(len(points), max_pixels, replace=False)]
    mixture = GaussianMixture(
        n_components=n_clusters, covariance_type="full", random_state=seed, n_init=3
    ).fit(fit_points)
    clusters = np.full(len(features), -1, dtype=np.int16)
    clusters[valid] = mixture.predict(points)
    return clusters, mixture


def match_clusters(clusters: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """Name unsupervised clusters after classes: the one-to-one matching of clusters to
    classes with the most pixels in common (Hungarian algorithm).

    Args:
        clusters: (N,) cluster of each pixel (-1: none).
        truth: (N,) class of each pixel.
        n_classes: the number of classes.

    Returns:
        int16 (N,) the class of each pixel's cluster (-1 for a pixel of no cluster, or of a
        cluster left without a class when there are more clusters than classes).
    """
    clusters = np.asarray(clusters).reshape(-1)
    truth = np.asarray(truth).reshape(-1)
    n_clusters = int(clusters.max()) + 1 if clusters.size else 0
    overlap = np.zeros((n_clusters, n_classes))
    valid = clusters >= 0
    np.add.at(overlap, (clusters[valid], truth[valid]), 1)
    rows, cols = linear_sum_assignment(-overlap)
    lookup = np.full(n_clusters + 1, -1, dtype=np.int16)  # the last entry: cluster -1
    lookup[rows] = cols
    return lookup[clusters]


def dice_per_class(predicted: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """Dice of each class (NaN for a class absent from both).

    Args:
        predicted: labels of any shape.
        truth: labels of the same shape.
        n_classes: the number of classes.

    Returns:
        float64 (n_classes,).
    """
    predicted = np.asarray(predicted).reshape(-1)
    truth = np.asarray(truth).reshape(-1)
    if predicted.shape != truth.shape:
        raise ValueError(f"shapes differ: {predicted.shape} and {truth.shape}")
    dice = np.full(n_classes, np.nan)
    for index in range(n_classes):
        p, t = predicted == index, truth == index
        total = p.sum() + t.sum()
        if total:
            dice[index] = 2 * np.logical_and(p, t).sum() / total
    return dice
