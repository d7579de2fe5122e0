"""A short nnU-Net trainer for the demo and the tests, found through ``nnUNet_extTrainer``.

It is nnU-Net's standard trainer (Dice + cross-entropy, SGD with Nesterov momentum, poly
learning rate) with fewer epochs and iterations, taken from the environment variables
``RAMANSEG_NNUNET_EPOCHS`` and ``RAMANSEG_NNUNET_ITERATIONS`` (nnU-Net constructs trainers
itself with a fixed signature), the plan's batch size capped at
``RAMANSEG_NNUNET_BATCH_SIZE`` when that is set (the planner sizes batches for a GPU's
memory), and a checkpoint after every epoch so that a killed run resumes where it stopped.
"""

import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerRamansegShort(nnUNetTrainer):
    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's signature
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ.get("RAMANSEG_NNUNET_EPOCHS", "2"))
        self.num_iterations_per_epoch = int(os.environ.get("RAMANSEG_NNUNET_ITERATIONS", "10"))
        self.num_val_iterations_per_epoch = max(1, self.num_iterations_per_epoch // 5)
        self.save_every = 1

    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()
        cap = os.environ.get("RAMANSEG_NNUNET_BATCH_SIZE")
        if cap:
            self.batch_size = min(self.batch_size, int(cap))
