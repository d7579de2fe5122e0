"""Devices, seeds and deterministic mode: one place for every model of the workflow."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

#: cuBLAS workspace setting required for deterministic results on CUDA.
CUBLAS_WORKSPACE = ":4096:8"


def resolve_device(spec: str) -> torch.device:
    """The torch device for a configuration value.

    Args:
        spec: ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The device.

    Raises:
        ValueError: an unknown value, or CUDA asked for but not available (or no GPU N).
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} asked for, but CUDA is not available here")
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {spec!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist"
            )
        return device
    raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's (CPU and all GPUs) global generators.

    Args:
        seed: the seed.
    """
    random.seed(seed)
    # The legacy global generator, for code that still draws from it (ours does not).
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)


def configure_reproducibility(seed: int, deterministic: bool, device: torch.device) -> None:
    """Seed everything and switch PyTorch's deterministic mode on or off.

    Call it before the model is built (its initial weights use the seeded generators).
    Deterministic mode sets ``CUBLAS_WORKSPACE_CONFIG`` (if unset; it must be set before
    cuBLAS starts), ``torch.use_deterministic_algorithms(True)`` and cuDNN's
    deterministic flag, and turns cuDNN's autotuner off. On CUDA a few kernels (e.g. the
    backward pass of bilinear upsampling) have no deterministic implementation: there
    they warn instead of failing, so a long GPU job is not lost to one kernel; on the CPU
    every kernel we use is deterministic and two runs give identical numbers.

    Args:
        seed: the seed.
        deterministic: deterministic mode.
        device: the training device.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(deterministic, warn_only=device.type == "cuda")
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    seed_everything(seed)
