"""nnU-Net v2 for the paper's strongest model: dataset export, planning, fold training and
the ensemble prediction, driven through nnU-Net's own Python API.

Import :mod:`ramanseg.nnunet.environment` and call :func:`configure_nnunet` before any
``nnunetv2`` module: nnU-Net reads several settings from the environment at import time.
"""
