"""The SVM baselines of the skin-cancer paper (scikit-learn): standardised bands, an RBF
SVC with balanced class weights, probabilities by sigmoid calibration
(``CalibratedClassifierCV(..., ensemble=False)``, scikit-learn's replacement of the
deprecated ``SVC(probability=True)``); and the same SVM on bands chosen by a genetic
algorithm (the paper's SVM-GA; :func:`select_bands_ga`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def fit_svm(x: np.ndarray, y: np.ndarray, seed: int = 0, c: float = 1.0):
    """A fitted ``StandardScaler`` → ``SVC`` pipeline.

    Args:
        x: ``(n, bands)`` training spectra.
        y: ``(n,)`` class indices.
        seed: the SVC's seed.
        c: the SVM's regularisation.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    model = make_pipeline(
        StandardScaler(),
        CalibratedClassifierCV(
            SVC(C=c, kernel="rbf", class_weight="balanced", random_state=seed),
            method="sigmoid",
            ensemble=False,
        ),
    )
    return model.fit(x, y)


def svm_probabilities(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n, n_classes)`` probabilities (classes absent from training get 0)."""
    out = np.zeros((len(x), n_classes))
    out[:, model.classes_] = model.predict_proba(x)
    return out


@dataclass(frozen=True)
class GeneticSettings:
    """The genetic algorithm of the band selection (``spectra.svm_ga``).

    Attributes:
        population: band masks per generation.
        generations: how many generations after the first.
        mutation: each band's chance to flip in a child.
        keep: the fraction of bands a first-generation mask keeps.
        elite: the best masks carried over unchanged.
    """

    population: int = 16
    generations: int = 8
    mutation: float = 0.01
    keep: float = 0.3
    elite: int = 2


def _fitness(x_train, y_train, x_val, y_val, mask, seed) -> float:
    """Balanced validation accuracy of the SVM (uncalibrated: the ranking is the same) on
    the bands of ``mask``; 0 for an empty mask."""
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if not mask.any():
        return 0.0
    model = make_pipeline(
        StandardScaler(), SVC(kernel="rbf", class_weight="balanced", random_state=seed)
    )
    model.fit(x_train[:, mask], y_train)
    return float(balanced_accuracy_score(y_val, model.predict(x_val[:, mask])))


def select_bands_ga(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    settings: GeneticSettings,
    seed: int = 0,
) -> tuple[np.ndarray, list[float]]:
    """Bands chosen by a seeded genetic algorithm: masks over the bands, fitness the SVM's
    balanced accuracy on the validation spectra (never the test set), tournament selection
    of parents, uniform crossover, bit-flip mutation, the best masks kept.

    Args:
        x_train: ``(n, bands)`` training spectra; ``y_train`` their class indices.
        x_val: ``(m, bands)`` validation spectra; ``y_val`` their class indices.
        settings: the algorithm's settings.
        seed: the seed of the masks and of the SVM.

    Returns:
        The best mask (``(bands,)`` bool) and the best fitness of each generation.
    """
    rng = np.random.default_rng(seed)
    bands = x_train.shape[1]
    population = rng.random((settings.population, bands)) < settings.keep

    def score(masks):
        return np.array([_fitness(x_train, y_train, x_val, y_val, m, seed) for m in masks])

    fitness = score(population)
    history = [float(fitness.max())]
    for _ in range(settings.generations):
        order = np.argsort(fitness)[::-1]
        children = [population[i] for i in order[: settings.elite]]
        while len(children) < settings.population:
            parents = []
            for _ in range(2):
                a, b = rng.integers(0, settings.population, 2)
                parents.append(population[a] if fitness[a] >= fitness[b] else population[b])
            child = np.where(rng.random(bands) < 0.5, parents[0], parents[1])
            children.append(child ^ (rng.random(bands) < settings.mutation))
        population = np.array(children)
        fitness = score(population)
        history.append(float(fitness.max()))
    return population[int(np.argmax(fitness))], history
