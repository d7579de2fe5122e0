"""The models of the results table: the one list the workflow and the package share.

Snakemake (``workflow/rules/common.smk``) plans its training, prediction and evaluation
jobs from :data:`MODELS`; the evaluation labels the table from it; the training harness
finds our PyTorch models' builders through :attr:`ModelInfo.entry`. Adding a model is one
entry here (and its rule, if it is trained by a rule of its own). This module imports
nothing heavy: every Snakemake run reads it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    """One model of the results table.

    Attributes:
        name: the model's name: its config section ``models.<name>`` (our PyTorch models),
            its folders ``results/models/<name>`` and ``results/predictions/<name>``.
        label: its name in tables and figures (the paper's, where the paper has it).
        trained_by: the rule that trains it (``train_model``, for every PyTorch model),
            or ``None`` when another chain of rules produces its predictions.
        predicted_by: the rule that writes its test-set predictions.
        entry: for our PyTorch models, ``"module:attribute"`` naming its
            :class:`ramanseg.models.registry.ModelEntry`; ``None`` otherwise.
    """

    name: str
    label: str
    trained_by: str | None
    predicted_by: str
    entry: str | None = None

    @property
    def is_torch_model(self) -> bool:
        """Trained and predicted by our PyTorch harness."""
        return self.entry is not None


#: Every model of the results table, in the paper's order, then the per-pixel models.
MODELS: tuple[ModelInfo, ...] = (
    ModelInfo("unet", "U-Net", "train_model", "predict_model", "ramanseg.models.unet:ENTRY"),
    ModelInfo(
        "unetr", "UNet Transformer", "train_model", "predict_model", "ramanseg.models.unetr:ENTRY"
    ),
    ModelInfo("nnunet", "nnU-Net", None, "nnunet_predict"),
    ModelInfo(
        "ramanseg",
        "RamanSeg",
        "train_model",
        "predict_model",
        "ramanseg.models.ramanseg_training:ENTRY",
    ),
    ModelInfo(
        "ramanseg_noproj",
        "Projection-free RamanSeg",
        "train_model",
        "predict_model",
        "ramanseg.models.ramanseg_training:ENTRY",
    ),
    # The HSRS paper's hybrid 3D/2D U-Net (3-D encoder over the Raman bands).
    ModelInfo(
        "hybrid_unet",
        "Hybrid 3D/2D U-Net",
        "train_model",
        "predict_model",
        "ramanseg.models.hybrid_unet:ENTRY",
    ),
    ModelInfo("logreg", "Per-pixel logistic regression", None, "fit_baseline"),
    # The skin-cancer paper's 1D-CNN on each pixel's Raman spectrum (ramanseg.spectra.pixel).
    ModelInfo("pixel_cnn", "Per-pixel 1D-CNN (spectrum only)", None, "fit_pixel_cnn"),
    # Spectral phasor cursors on each pixel's Raman bands, training-free (ramanseg.hsrs.tumour).
    ModelInfo("phasor", "Spectral phasor cursors (spectrum only)", None, "fit_phasor"),
)
MODELS_BY_NAME = {model.name: model for model in MODELS}
#: The models of the results table, in table order.
EVALUATED_MODELS = tuple(model.name for model in MODELS)
#: Our PyTorch models (trained by the harness, predicted by ``predict-model``).
TORCH_MODELS = tuple(model.name for model in MODELS if model.is_torch_model)


def model_label(name: str) -> str:
    """The display name of a model (its own name if it is not in :data:`MODELS`)."""
    return MODELS_BY_NAME[name].label if name in MODELS_BY_NAME else name


def producing_rule(name: str) -> str:
    """The rule that writes ``results/predictions/<name>/``, as a user would look it up."""
    model = MODELS_BY_NAME.get(name)
    if model is None or model.predicted_by == "predict_model":
        return f"predict_model (model={name})"
    return model.predicted_by
