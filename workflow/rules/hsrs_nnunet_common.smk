# Helpers of the HSRS nnU-Net rules (workflow/rules/hsrs_nnunet.smk): each HSRS dataset's
# nnU-Net folders, dataset name, plans, checkpoints and command settings.

from ramanseg.hsrs.nnunet import NNUNET as HSRS_NNUNET, hsrs_nnunet_config
from ramanseg.nnunet.settings import model_folder_name

HSRS_NNUNET_FOLDS = list(range(config["hsrs"]["models"]["folds"]))
#: The trained model's folder name (the `nnunet` section's trainer, planner, configuration).
HSRS_NNUNET_MODEL = model_folder_name(
    NNUNET_SETTINGS.trainer, NNUNET_SETTINGS.planner, NNUNET_SETTINGS.configuration
)


def hsrs_nnunet_dir(dataset):
    """nnU-Net's folders (raw, preprocessed, trained) of one HSRS dataset."""
    return HSRS / "nnunet" / dataset


def hsrs_nnunet_name(dataset):
    """nnU-Net's dataset folder name of one HSRS dataset (its id from hsrs.nnunet)."""
    return NnunetSettings.from_config(hsrs_nnunet_config(config, dataset)).dataset


def hsrs_nnunet_plans(dataset):
    """The plans and the split file nnunet-plan writes for one HSRS dataset."""
    folder = hsrs_nnunet_dir(dataset) / "preprocessed" / hsrs_nnunet_name(dataset)
    return {"plans": folder / f"{NNUNET_PLANS}.json", "splits": folder / "splits_final.json"}


def hsrs_nnunet_checkpoints(dataset):
    """Every fold's final checkpoint of one HSRS dataset."""
    model = hsrs_nnunet_dir(dataset) / "trained" / hsrs_nnunet_name(dataset) / HSRS_NNUNET_MODEL
    return [model / f"fold_{fold}" / "checkpoint_final.pth" for fold in HSRS_NNUNET_FOLDS]


def hsrs_nnunet_settings(dataset, with_hsrs):
    """Settings of nnU-Net's commands on one HSRS dataset (the dataset's id and epochs in
    the `nnunet` section); `with_hsrs` adds `hsrs.models` and `hsrs.nnunet`, which the
    export and the prediction read (training reads the `nnunet` section only)."""
    nnunet = hsrs_nnunet_config(config, dataset)["nnunet"]
    nnunet = {k: v for k, v in nnunet.items() if k not in ("prediction", "fast_prediction")}
    if with_hsrs:
        nnunet["fast_prediction"] = config["nnunet"]["fast_prediction"]
    chosen = {key: config[key] for key in ("seed", "deterministic", "device")}
    if with_hsrs:
        chosen["hsrs"] = {key: config["hsrs"][key] for key in ("models", "nnunet")}
    return json.dumps({"nnunet": nnunet, **chosen})
