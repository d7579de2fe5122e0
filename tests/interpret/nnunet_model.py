"""A randomly initialised nnU-Net model folder, as ``nnUNetPredictor`` loads a trained one.

It holds ``plans.json``, ``dataset.json`` and ``fold_<k>/checkpoint_final.pth`` for a
``ResidualEncoderUNet`` of any size, so that the attribution command can be run end to end
(and timed at the demo's scale) without training nnU-Net. Call
:func:`ramanseg.nnunet.environment.configure_nnunet` before :func:`write_model_folder`.

Also the tests' small nnU-Net network (:func:`tiny_resenc_unet`) and their one-thread
fixture (:func:`one_thread`, imported by each test module of the nnU-Net attributions).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch import nn

RESENC_UNET = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
#: The environment variables :func:`ramanseg.nnunet.environment.configure_nnunet` sets.
NNUNET_VARIABLES = (
    "nnUNet_raw",
    "nnUNet_preprocessed",
    "nnUNet_results",
    "nnUNet_extTrainer",
    "nnUNet_def_n_proc",
    "nnUNet_n_proc_DA",
    "nnUNet_compile",
)


def configure_nnunet_for_test(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Path:
    """``configure_nnunet(folder)`` for one test: nnU-Net's environment variables are
    restored (or removed) afterwards.

    Args:
        monkeypatch: the test's monkeypatch fixture.
        folder: the folder for nnU-Net's raw, preprocessed and results folders.

    Returns:
        ``folder``.
    """
    from ramanseg.nnunet.environment import configure_nnunet

    for name in NNUNET_VARIABLES:
        monkeypatch.setenv(name, "")
    configure_nnunet(folder)
    return folder


def architecture(features: Sequence[int], blocks: Sequence[int], kernel: int = 3) -> dict:
    """The ``architecture`` entry of a 2-D ResEnc U-Net configuration (nnU-Net's format)."""
    n_stages = len(features)
    return {
        "network_class_name": RESENC_UNET,
        "arch_kwargs": {
            "n_stages": n_stages,
            "features_per_stage": list(features),
            "conv_op": "torch.nn.modules.conv.Conv2d",
            "kernel_sizes": [[kernel, kernel]] * n_stages,
            "strides": [[1, 1]] + [[2, 2]] * (n_stages - 1),
            "n_blocks_per_stage": list(blocks),
            "n_conv_per_stage_decoder": [1] * (n_stages - 1),
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def plans(channels: int, size: int, arch: dict) -> dict:
    """nnU-Net plans with one ``2d`` configuration: z-score per channel, spacing 1 x 1."""
    resampling = "resample_data_or_seg_to_shape"
    properties = {
        "max": 1.0,
        "mean": 0.5,
        "median": 0.5,
        "min": 0.0,
        "percentile_00_5": 0.0,
        "percentile_99_5": 1.0,
        "std": 0.25,
    }
    return {
        "dataset_name": "Dataset999_Tiny",
        "plans_name": "TinyPlans",
        "original_median_spacing_after_transp": [999.0, 1.0, 1.0],
        "original_median_shape_after_transp": [1, size, size],
        "image_reader_writer": "NaturalImage2DIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            "2d": {
                "data_identifier": "TinyPlans_2d",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": [size, size],
                "median_image_size_in_voxels": [float(size), float(size)],
                "spacing": [1.0, 1.0],
                "normalization_schemes": ["ZScoreNormalization"] * channels,
                "use_mask_for_norm": [False] * channels,
                "resampling_fn_data": resampling,
                "resampling_fn_seg": resampling,
                "resampling_fn_data_kwargs": {
                    "is_seg": False,
                    "order": 3,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "resampling_fn_seg_kwargs": {
                    "is_seg": True,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "resampling_fn_probabilities": resampling,
                "resampling_fn_probabilities_kwargs": {
                    "is_seg": False,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "architecture": arch,
                "batch_dice": True,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(c): dict(properties) for c in range(channels)
        },
    }


def write_model_folder(
    folder: str | Path,
    channels: int,
    size: int,
    features: Sequence[int] = (4, 8, 8),
    blocks: Sequence[int] = (1, 1, 1),
    folds: Sequence[int] = (0, 1),
    seed: int = 0,
) -> Path:
    """Write a model folder with one randomly initialised network per fold.

    Args:
        folder: the model folder to create.
        channels: input channels.
        size: the patch size (square).
        features: features per encoder stage (its length is the number of stages).
        blocks: residual blocks per encoder stage.
        folds: the folds to write.
        seed: seeds fold ``k``'s initialisation with ``seed + k``.

    Returns:
        ``folder``.
    """
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    folder = Path(folder)
    arch = architecture(features, blocks)
    plan = plans(channels, size, arch)
    dataset = {
        "channel_names": {str(c): f"channel {c}" for c in range(channels)},
        "labels": {"background": 0, "tumour": 1},
        "numTraining": 1,
        "file_ending": ".tif",
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plan, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    for fold in folds:
        torch.manual_seed(seed + fold)
        network = get_network_from_plans(
            arch["network_class_name"],
            arch["arch_kwargs"],
            arch["_kw_requires_import"],
            channels,
            2,
            allow_init=True,
            deep_supervision=False,
        )
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(
            {
                "network_weights": network.state_dict(),
                "trainer_name": "nnUNetTrainer",
                "init_args": {"configuration": "2d", "fold": fold},
                "inference_allowed_mirroring_axes": (0, 1),
            },
            folder / f"fold_{fold}" / "checkpoint_final.pth",
        )
    return folder


def write_validation_summaries(model_dir: Path, dice: dict[int, float]) -> None:
    """Write each fold's validation summary as nnU-Net does (its foreground mean Dice), by
    which the best folds are chosen."""
    for fold, value in dice.items():
        folder = model_dir / f"fold_{fold}" / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(json.dumps({"foreground_mean": {"Dice": value}}))


@pytest.fixture
def one_thread():
    """One torch thread; the command's deterministic mode is switched back afterwards."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def tiny_resenc_unet(seed: int, channels: int = 4) -> nn.Module:
    """A 3-stage ResidualEncoderUNet as nnU-Net builds it (InstanceNorm, LeakyReLU in place)."""
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    torch.manual_seed(seed)
    return ResidualEncoderUNet(
        input_channels=channels,
        n_stages=3,
        features_per_stage=[4, 8, 8],
        conv_op=nn.Conv2d,
        kernel_sizes=3,
        strides=[1, 2, 2],
        n_blocks_per_stage=[1, 1, 1],
        num_classes=2,
        n_conv_per_stage_decoder=[1, 1],
        conv_bias=True,
        norm_op=nn.InstanceNorm2d,
        norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True},
        deep_supervision=False,
    )
