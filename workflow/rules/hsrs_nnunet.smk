# Hyperspectral SRS: nnU-Net (bands as channels) on the spatial blocks and folds of the
# other HSRS models (ramanseg.hsrs.nnunet): export + plan per dataset, one training job
# per dataset and fold (our nnU-Net launcher), then the held-out blocks predicted and
# scored; the Dice rows join results/hsrs/dice.*.

include: "hsrs_nnunet_common.smk"


wildcard_constraints:
    hsrs_nnunet_name=r"Dataset\d{3}_\w+",
    hsrs_fold=r"\d+",


rule hsrs_nnunet_plan:
    input:
        stacks=lambda wildcards: hsrs_stacks(wildcards.hsrs_dataset),
    output:
        plans=HSRS / "nnunet" / "{hsrs_dataset}" / "preprocessed" / "{hsrs_nnunet_name}"
        / f"{NNUNET_PLANS}.json",
        splits=HSRS / "nnunet" / "{hsrs_dataset}" / "preprocessed" / "{hsrs_nnunet_name}"
        / "splits_final.json",
    params:
        nnunet=lambda wildcards: hsrs_nnunet_dir(wildcards.hsrs_dataset),
        export_settings=lambda wildcards: hsrs_nnunet_settings(wildcards.hsrs_dataset, True),
        settings=lambda wildcards: hsrs_nnunet_settings(wildcards.hsrs_dataset, False),
    log:
        LOGS / "hsrs" / "nnunet_plan_{hsrs_dataset}_{hsrs_nnunet_name}.log",
    benchmark:
        BENCHMARKS / "hsrs" / "nnunet_plan_{hsrs_dataset}_{hsrs_nnunet_name}.tsv"
    threads: rule_resources("hsrs_nnunet_plan")["threads"]
    resources:
        mem_mb=rule_resources("hsrs_nnunet_plan")["mem_mb"],
        runtime=rule_resources("hsrs_nnunet_plan")["runtime"],
        gpu=rule_resources("hsrs_nnunet_plan")["gpu"],
    conda:
        "../../envs/nnunet.yaml"
    shell:
        "(python -m ramanseg hsrs-nnunet-export --dataset {wildcards.hsrs_dataset}"
        " --stacks {input.stacks:q} --nnunet-dir {params.nnunet:q} --threads {threads}"
        " --settings {params.export_settings:q}"
        " && python -m ramanseg nnunet-plan --nnunet-dir {params.nnunet:q} --threads {threads}"
        " --settings {params.settings:q}) > {log:q} 2>&1"


rule hsrs_nnunet_train:
    input:
        plans=HSRS / "nnunet" / "{hsrs_dataset}" / "preprocessed" / "{hsrs_nnunet_name}"
        / f"{NNUNET_PLANS}.json",
        splits=HSRS / "nnunet" / "{hsrs_dataset}" / "preprocessed" / "{hsrs_nnunet_name}"
        / "splits_final.json",
    output:
        checkpoint=HSRS / "nnunet" / "{hsrs_dataset}" / "trained" / "{hsrs_nnunet_name}"
        / HSRS_NNUNET_MODEL / "fold_{hsrs_fold}" / "checkpoint_final.pth",
    params:
        nnunet=lambda wildcards: hsrs_nnunet_dir(wildcards.hsrs_dataset),
        settings=lambda wildcards: hsrs_nnunet_settings(wildcards.hsrs_dataset, False),
    log:
        LOGS / "hsrs" / "nnunet_train_{hsrs_dataset}_{hsrs_nnunet_name}_fold_{hsrs_fold}.log",
    benchmark:
        BENCHMARKS / "hsrs" / "nnunet_train_{hsrs_dataset}_{hsrs_nnunet_name}_fold_{hsrs_fold}.tsv"
    threads: rule_resources("hsrs_nnunet_train")["threads"]
    resources:
        mem_mb=rule_resources("hsrs_nnunet_train")["mem_mb"],
        runtime=rule_resources("hsrs_nnunet_train")["runtime"],
        gpu=rule_resources("hsrs_nnunet_train")["gpu"],
    conda:
        "../../envs/nnunet.yaml"
    shell:
        "python -m ramanseg nnunet-train --nnunet-dir {params.nnunet:q}"
        " --fold {wildcards.hsrs_fold} --threads {threads} --settings {params.settings:q}"
        " > {log:q} 2>&1"


rule hsrs_nnunet_predict:
    input:
        checkpoints=lambda wildcards: hsrs_nnunet_checkpoints(wildcards.hsrs_dataset),
        stacks=lambda wildcards: hsrs_stacks(wildcards.hsrs_dataset),
    output:
        dice=HSRS / "models" / "{hsrs_dataset}" / HSRS_NNUNET / "dice.csv",
        folds=HSRS / "models" / "{hsrs_dataset}" / HSRS_NNUNET / "folds.json",
        segmentation=report(
            HSRS / "models" / "{hsrs_dataset}" / HSRS_NNUNET / "segmentation.png",
            caption="../report/hsrs_nnunet_segmentation.rst",
            category=HSRS_CATEGORY,
            subcategory="{hsrs_dataset}",
        ),
        segmentation_pdf=HSRS / "models" / "{hsrs_dataset}" / HSRS_NNUNET / "segmentation.pdf",
    params:
        nnunet=lambda wildcards: hsrs_nnunet_dir(wildcards.hsrs_dataset),
        outdir=lambda wildcards, output: Path(output.dice).parent,
        settings=lambda wildcards: hsrs_nnunet_settings(wildcards.hsrs_dataset, True),
    log:
        LOGS / "hsrs" / "nnunet_predict_{hsrs_dataset}.log",
    benchmark:
        BENCHMARKS / "hsrs" / "nnunet_predict_{hsrs_dataset}.tsv"
    threads: rule_resources("hsrs_nnunet_predict")["threads"]
    resources:
        mem_mb=rule_resources("hsrs_nnunet_predict")["mem_mb"],
        runtime=rule_resources("hsrs_nnunet_predict")["runtime"],
        gpu=rule_resources("hsrs_nnunet_predict")["gpu"],
    conda:
        "../../envs/nnunet.yaml"
    shell:
        "python -m ramanseg hsrs-nnunet-predict --dataset {wildcards.hsrs_dataset}"
        " --stacks {input.stacks:q} --nnunet-dir {params.nnunet:q} --outdir {params.outdir:q}"
        " --threads {threads} --settings {params.settings:q} > {log:q} 2>&1"


# The hsrs_dice rule reads this list through a function, so these tables join its table.
HSRS_DICE_TABLES += expand(
    HSRS / "models" / "{dataset}" / HSRS_NNUNET / "dice.csv", dataset=HSRS_DATASETS
)
