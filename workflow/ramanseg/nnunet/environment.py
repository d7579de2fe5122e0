"""The environment nnU-Net runs in: its folders, process counts and CPU compatibility.

nnU-Net v2 is configured through environment variables, several of which it reads when
its modules are imported; :func:`configure_nnunet` therefore sets them all, once, before
anything from ``nnunetv2`` is imported.
"""

from __future__ import annotations

import logging
import os
import sys
import types
from pathlib import Path

log = logging.getLogger(__name__)

#: Folder searched for our trainer subclasses (``nnUNet_extTrainer``).
TRAINERS_DIR = Path(__file__).resolve().parent / "trainers"
#: Environment variables through which our short trainer receives the config's numbers
#: (nnU-Net constructs trainers itself, with a fixed signature).
EPOCHS_VARIABLE = "RAMANSEG_NNUNET_EPOCHS"
ITERATIONS_VARIABLE = "RAMANSEG_NNUNET_ITERATIONS"
BATCH_SIZE_VARIABLE = "RAMANSEG_NNUNET_BATCH_SIZE"

_PRIMUS_MODULE = "nnunetv2.training.nnUNetTrainer.primus.primus_trainers"


def nnunet_folders(root: str | Path, trained: str | Path | None = None) -> dict[str, Path]:
    """nnU-Net's three folders: raw and preprocessed below ``root``, and its results.

    Args:
        root: the folder holding nnU-Net's folders.
        trained: the results folder (``nnUNet_results``); ``root/trained`` by default.
            Another training seed trains into a folder of its own from the same
            preprocessed data.
    """
    root = Path(root)
    return {
        "nnUNet_raw": root / "raw",
        "nnUNet_preprocessed": root / "preprocessed",
        "nnUNet_results": Path(trained) if trained is not None else root / "trained",
    }


def configure_nnunet(
    root: str | Path,
    *,
    trained: str | Path | None = None,
    processes: int = 1,
    deterministic: bool = False,
    epochs: int | None = None,
    iterations_per_epoch: int | None = None,
    batch_size: int | None = None,
) -> None:
    """Set nnU-Net's environment for this process and make its trainers importable.

    Args:
        root: the folder holding nnU-Net's raw, preprocessed and results folders.
        trained: another results folder than ``root/trained`` (:func:`nnunet_folders`).
        processes: processes nnU-Net may use for preprocessing, export and augmentation.
        deterministic: run data augmentation in the main process (``nnUNet_n_proc_DA=0``),
            whose random numbers are then seeded by us; worker processes are not.
        epochs: epochs of our short trainer (``nnUNetTrainerRamansegShort``).
        iterations_per_epoch: training iterations per epoch of our short trainer.
        batch_size: upper bound on the planned batch size, for our short trainer.

    Raises:
        ValueError: if ``processes`` < 1.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    if "nnunetv2.configuration" in sys.modules:
        log.warning("nnunetv2 was imported before configure_nnunet; process counts may not apply")
    for name, folder in nnunet_folders(root, trained).items():
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(folder.resolve())
    os.environ["nnUNet_extTrainer"] = str(TRAINERS_DIR)
    os.environ["nnUNet_def_n_proc"] = str(processes)
    os.environ["nnUNet_n_proc_DA"] = "0" if deterministic else str(processes)
    # torch.compile is slow to start and unavailable on some CPU builds; results are the same.
    os.environ["nnUNet_compile"] = "f"
    if epochs is not None:
        os.environ[EPOCHS_VARIABLE] = str(epochs)
    if iterations_per_epoch is not None:
        os.environ[ITERATIONS_VARIABLE] = str(iterations_per_epoch)
    if batch_size is not None:
        os.environ[BATCH_SIZE_VARIABLE] = str(batch_size)
    stand_in_for_primus_if_needed()


def stand_in_for_primus_if_needed() -> bool:
    """Register an empty stand-in for nnU-Net's Primus trainers where torchvision is broken.

    Resolving any trainer by name (``-tr``) imports every module under
    ``nnunetv2.training.nnUNetTrainer``, including the Primus trainers, which import timm
    and through it torchvision. Where torchvision cannot be imported (the CUDA build of
    torchvision beside a CPU build of torch, as on our CPU machines) that import fails and
    no trainer can be found. We use no Primus trainer, so an empty module in its place is
    harmless; on a machine where torchvision imports (a CUDA cluster) nothing is changed.

    Returns:
        True if the stand-in was registered.
    """
    if _PRIMUS_MODULE in sys.modules:
        return False
    try:
        import torchvision  # noqa: F401
    except Exception as error:  # torchvision raises RuntimeError for missing operators
        log.info("torchvision cannot be imported (%s); using a stand-in for Primus", error)
        stand_in = types.ModuleType(_PRIMUS_MODULE)
        stand_in.__doc__ = "Empty stand-in registered by ramanseg: torchvision is unavailable."
        sys.modules[_PRIMUS_MODULE] = stand_in
        return True
    return False
