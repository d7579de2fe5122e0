"""The SVM baseline of the skin-cancer paper (scikit-learn), without its genetic-algorithm
feature selection (the paper cites SVM-GA; the GA part is optional in our issue and left
out): standardised bands, an RBF SVC with balanced class weights, probabilities by sigmoid
calibration (``CalibratedClassifierCV(..., ensemble=False)``, scikit-learn's replacement of
the deprecated ``SVC(probability=True)``)."""

from __future__ import annotations

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
