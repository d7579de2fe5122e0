# Helpers of the HSRS rules (workflow/rules/hsrs.smk): the datasets, their stack files and
# the outputs of `snakemake hsrs`.

from ramanseg.hsrs.cli import field_paths

HSRS = RESULTS / "hsrs"
HSRS_CATEGORY = "6. Hyperspectral SRS"
HSRS_DATA = HSRS / "data"
HSRS_CELL_FIELDS = field_paths(HSRS_DATA / "cells", config["hsrs"]["cells"]["fields"])
HSRS_CELEGANS = HSRS_DATA / "celegans.npz"
CELEGANS_DIR = config["hsrs"]["celegans_dir"]
#: The HSRS datasets: the phantom always, the C. elegans stack when configured.
HSRS_DATASETS = ["cells"] + (["celegans"] if CELEGANS_DIR else [])
if CELEGANS_DIR:
    # Checked when the workflow starts: a wrong path would otherwise surface as a missing
    # input file of a rule the user never named.
    for _name in ("celegans_srs_cube.npy", "celegans_spec_init.mat"):
        if not (Path(CELEGANS_DIR) / _name).is_file():
            stop(
                f"config key `hsrs.celegans_dir`: {CELEGANS_DIR!r} holds no {_name}; set it "
                "to the folder of the C. elegans stack (e.g. ../shared/data/real/celegans-srs) "
                "or to null to skip it"
            )
#: The per-method Dice tables joined into results/hsrs/dice.*: the phasor methods' here;
#: the trained models' Dice tables are appended to it, in ramanseg.hsrs.dice.COLUMNS.
HSRS_DICE_TABLES = [HSRS / "phasor" / dataset / "dice.csv" for dataset in HSRS_DATASETS]


def hsrs_stacks(dataset):
    """The stack files of an HSRS dataset."""
    return HSRS_CELL_FIELDS if dataset == "cells" else [HSRS_CELEGANS]


def hsrs_outputs():
    """Every output of `snakemake hsrs`: the Dice table and each dataset's figures."""
    return [
        *expand(HSRS / "dice.{ext}", ext=["csv", "parquet", "md"]),
        *expand(
            HSRS / "phasor" / "{dataset}" / "{name}.png",
            dataset=HSRS_DATASETS,
            name=["phasor_plot", "segmentation"],
        ),
    ]
