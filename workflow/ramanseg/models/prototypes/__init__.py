"""The prototype machinery of RamanSeg: distances, similarities, losses, initialisation, projection.

RamanSeg (paper section 3.2) adapts ProtoSeg (Sacha et al., WACV 2023), itself an adaptation of
ProtoPNet (Chen et al., NeurIPS 2019), to per-pixel tumour segmentation of SRS images. Everything
here works on the latent map ``z`` of shape ``(B, D, h, w)`` produced by the network's feature
extractor and add-on layers (see :mod:`ramanseg.models.ramanseg`):

* :mod:`~ramanseg.models.prototypes.layer`: :class:`PrototypeLayer` holds ``P`` prototypes
  of shape ``(D, k, k)`` and computes, for every latent position, the squared L2 distance to
  every prototype (by convolution) and ProtoPNet's log similarity;
* :mod:`~ramanseg.models.prototypes.losses`: the paper's activation overlap loss, ProtoSeg's
  KLD diversity loss (the config alternative), cross-entropy and soft Dice on the latent map,
  and the L1 penalty on the class readout's wrong-class connections (:class:`RamanSegLoss`);
* :mod:`~ramanseg.models.prototypes.projection`: prototype projection (ProtoPNet's "push")
  with the records needed to interpret each prototype;
* :mod:`~ramanseg.models.prototypes.gallery`: :func:`prototype_gallery`, a figure of the
  prototypes' source regions.

The public names of the submodules are re-exported here.

Prototype ``j`` belongs to class ``prototype_class[j]``; the model lays prototypes out in class
blocks (the first ``P_c`` prototypes are class 0, ...), but nothing here relies on that order.
"""

from __future__ import annotations

from ramanseg.models.prototypes.gallery import prototype_gallery
from ramanseg.models.prototypes.layer import (
    PrototypeLayer,
    class_identity,
    init_last_layer_,
    l2_distance_map,
    log_similarity,
    xavier_prototype_bound,
    xavier_prototype_init_,
)
from ramanseg.models.prototypes.losses import (
    DEFAULT_LOSS_WEIGHTS,
    DIVERSITY_LOSSES,
    LossTerms,
    RamanSegLoss,
    activation_overlap_loss,
    cluster_separation_costs,
    downsample_labels,
    kld_diversity_loss,
    last_layer_l1,
    soft_dice_loss,
)
from ramanseg.models.prototypes.projection import (
    PROJECTION_ASSIGNMENTS,
    PROJECTION_KEY,
    REGION_METHODS,
    PrototypeRecord,
    high_activation_bbox,
    init_prototypes_from_latents_,
    project_prototypes,
    projection_metadata,
    read_projection,
)

__all__ = [
    "DEFAULT_LOSS_WEIGHTS",
    "DIVERSITY_LOSSES",
    "PROJECTION_ASSIGNMENTS",
    "PROJECTION_KEY",
    "REGION_METHODS",
    "LossTerms",
    "PrototypeLayer",
    "PrototypeRecord",
    "RamanSegLoss",
    "activation_overlap_loss",
    "class_identity",
    "cluster_separation_costs",
    "downsample_labels",
    "high_activation_bbox",
    "init_last_layer_",
    "init_prototypes_from_latents_",
    "kld_diversity_loss",
    "l2_distance_map",
    "last_layer_l1",
    "log_similarity",
    "project_prototypes",
    "projection_metadata",
    "prototype_gallery",
    "read_projection",
    "soft_dice_loss",
    "xavier_prototype_bound",
    "xavier_prototype_init_",
]
