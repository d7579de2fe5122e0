"""Our PyTorch segmentation models, their training harness, inference and baselines.

RamanSeg (paper section 3.2) lives in :mod:`ramanseg.models.ramanseg` (the network and its
training phases) and :mod:`ramanseg.models.prototypes` (prototype layer, losses,
initialisation, projection). Their public names are re-exported here lazily, so that importing
the package (as the command line does for every command) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ramanseg.models.ramanseg": (
        "PHASES",
        "RamanSeg",
        "RamanSegOutput",
        "parameter_groups",
        "phase_param_groups",
        "phase_parameters",
        "set_phase",
    ),
    "ramanseg.models.prototypes": (
        "LossTerms",
        "PrototypeLayer",
        "PrototypeRecord",
        "RamanSegLoss",
        "activation_overlap_loss",
        "downsample_labels",
        "kld_diversity_loss",
        "project_prototypes",
        "prototype_gallery",
        "write_projection_json",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
