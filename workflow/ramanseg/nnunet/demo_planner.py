"""``nnUNetPlannerResEncDemo``: ResEnc M's topology, narrower and shallower, for CPUs."""

from __future__ import annotations

from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (  # noqa: E501
    nnUNetPlannerResEncM,
)


class nnUNetPlannerResEncDemo(nnUNetPlannerResEncM):
    """ResEnc M's topology at a width and depth a CPU trains in minutes (demo only)."""

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
