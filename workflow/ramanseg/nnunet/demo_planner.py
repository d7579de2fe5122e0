"""``nnUNetPlannerResEncDemo``: ResEnc M's topology, narrower, on smaller patches, for CPUs."""

from __future__ import annotations

import numpy as np
from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (  # noqa: E501
    nnUNetPlannerResEncM,
)


class nnUNetPlannerResEncDemo(nnUNetPlannerResEncM):
    """ResEnc M's topology at a width a CPU trains in minutes, on patches of at most
    :attr:`max_patch_edge` pixels a side (demo only).

    nnU-Net sizes the patch from the median image shape (up to the whole image) and the GPU
    memory target. On a CPU an iteration's cost grows with the patch area: the demo's 128 px
    images as whole-image patches cost 0.55 s per iteration of batch 8 on two threads, 64 px
    patches 0.25 s. The smaller patch leaves time for more gradient steps, which the demo's
    short training needs more than context (ensemble test Dice 0.87 with 15 x 20 iterations
    on 64 px, 0.84 with 10 x 15 on 128 px, in less time per fold).
    """

    max_patch_edge = 64

    def __init__(
        self,
        dataset_name_or_id,
        gpu_memory_target_in_gb: float = 8,
        preprocessor_name: str = "DefaultPreprocessor",
        plans_name: str = "nnUNetResEncUNetDemoPlans",
        overwrite_target_spacing=None,
        suppress_transpose: bool = False,
    ):
        super().__init__(
            dataset_name_or_id,
            gpu_memory_target_in_gb,
            preprocessor_name,
            plans_name,
            overwrite_target_spacing,
            suppress_transpose,
        )
        self.UNet_base_num_features = 16
        self.UNet_max_features_2d = 128
        self.UNet_blocks_per_stage_encoder = (1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2)

    def get_plans_for_configuration(self, spacing, median_shape, *args, **kwargs):
        # nnU-Net clips the initial patch size to the median shape: clip that first.
        capped = np.minimum(np.asarray(median_shape), self.max_patch_edge)
        return super().get_plans_for_configuration(spacing, capped, *args, **kwargs)
