"""Planners: nnU-Net's Residual-Encoder presets, and a small one of ours for the CPU demo.

The paper's setting plans with nnU-Net's ``nnUNetPlannerResEncM`` (or L / XL). On a laptop
CPU that network (up to 512 features, 1-3-4-6-6-6 residual blocks) takes minutes per epoch,
so the demo plans with ``nnUNetPlannerResEncDemo`` (:mod:`ramanseg.nnunet.demo_planner`):
the same Residual-Encoder U-Net topology, planned the same way, narrower and shallower.
"""

from __future__ import annotations

#: Planner class name -> the plans identifier it writes.
PLANS_IDENTIFIERS = {
    "nnUNetPlannerResEncM": "nnUNetResEncUNetMPlans",
    "nnUNetPlannerResEncL": "nnUNetResEncUNetLPlans",
    "nnUNetPlannerResEncXL": "nnUNetResEncUNetXLPlans",
    "nnUNetPlannerResEncDemo": "nnUNetResEncUNetDemoPlans",
}


def plans_identifier(planner: str) -> str:
    """The plans identifier a Residual-Encoder planner writes.

    Raises:
        ValueError: for a planner that is not one of the known ResEnc planners.
    """
    if planner not in PLANS_IDENTIFIERS:
        known = sorted(PLANS_IDENTIFIERS)
        raise ValueError(f"nnunet.planner must be one of {known}, got {planner!r}")
    return PLANS_IDENTIFIERS[planner]


def planner_class(name: str) -> type:
    """The planner class for a configured name (nnU-Net's presets or ours).

    Raises:
        ValueError: for a name that is not a known Residual-Encoder planner.
    """
    from nnunetv2.experiment_planning.experiment_planners.residual_unets import (
        residual_encoder_unet_planners as presets,
    )

    if name == "nnUNetPlannerResEncDemo":
        from ramanseg.nnunet.demo_planner import nnUNetPlannerResEncDemo

        return nnUNetPlannerResEncDemo
    if name in PLANS_IDENTIFIERS:
        return getattr(presets, name)
    raise ValueError(f"nnunet.planner must be one of {sorted(PLANS_IDENTIFIERS)}, got {name!r}")
