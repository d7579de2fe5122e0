# Hyperspectral SRS: the trained models of `snakemake hsrs` (the hybrid 3D/2D U-Net, its
# ablations and a 2-D U-Net), each cross-validated over spatial blocks of every HSRS
# dataset; their Dice rows join the phasor methods' in results/hsrs/dice.*.

from ramanseg.hsrs.models import HsrsModelSettings

#: The trained HSRS models, in table order (ramanseg.hsrs.models).
HSRS_MODELS = HsrsModelSettings.from_config(config).model_names


wildcard_constraints:
    hsrs_model="|".join(HSRS_MODELS),


#: Settings of hsrs-train: the seed, the device and `hsrs.models` only (a change to the
#: phantom or the phasor settings reaches it through the stacks).
HSRS_MODEL_SETTINGS = json.dumps(
    {
        "seed": config["seed"],
        "deterministic": config["deterministic"],
        "device": config["device"],
        "hsrs": {"models": config["hsrs"]["models"]},
    }
)


rule hsrs_train:
    input:
        stacks=lambda wildcards: hsrs_stacks(wildcards.hsrs_dataset),
    output:
        dice=HSRS / "models" / "{hsrs_dataset}" / "{hsrs_model}" / "dice.csv",
        training_log=HSRS / "models" / "{hsrs_dataset}" / "{hsrs_model}" / "training_log.csv",
        folds=HSRS / "models" / "{hsrs_dataset}" / "{hsrs_model}" / "folds.json",
        segmentation=report(
            HSRS / "models" / "{hsrs_dataset}" / "{hsrs_model}" / "segmentation.png",
            caption="../report/hsrs_model_segmentation.rst",
            category=HSRS_CATEGORY,
            subcategory="{hsrs_dataset}",
        ),
        segmentation_pdf=HSRS / "models" / "{hsrs_dataset}" / "{hsrs_model}" / "segmentation.pdf",
    params:
        outdir=lambda wildcards, output: Path(output.dice).parent,
        settings=HSRS_MODEL_SETTINGS,
    log:
        LOGS / "hsrs" / "train_{hsrs_dataset}_{hsrs_model}.log",
    benchmark:
        BENCHMARKS / "hsrs" / "train_{hsrs_dataset}_{hsrs_model}.tsv"
    threads: rule_resources("hsrs_train")["threads"]
    resources:
        mem_mb=rule_resources("hsrs_train")["mem_mb"],
        runtime=rule_resources("hsrs_train")["runtime"],
        gpu=rule_resources("hsrs_train")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m ramanseg hsrs-train --dataset {wildcards.hsrs_dataset}"
        " --model {wildcards.hsrs_model} --stacks {input.stacks:q} --outdir {params.outdir:q}"
        " --threads {threads} --settings {params.settings:q} > {log:q} 2>&1"


# The hsrs_dice rule reads this list through a function, so these tables join its table.
HSRS_DICE_TABLES += expand(
    HSRS / "models" / "{dataset}" / "{model}" / "dice.csv",
    dataset=HSRS_DATASETS,
    model=HSRS_MODELS,
)
