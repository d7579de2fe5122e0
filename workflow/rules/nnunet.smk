# nnU-Net v2: raw dataset with our folds, ResEnc planning, one job per fold, the ensemble.
# Another training seed (`seeds`) trains and predicts into its own folders (`{seed_dir}`).


rule nnunet_export:
    input:
        stacks=preprocessed("stack.ome.tif", SPLIT["train"] + SPLIT["val"] + TEST_SAMPLES),
        masks=preprocessed("mask.tif", SPLIT["train"] + SPLIT["val"]),
        split=SPLIT_JSON,
    output:
        dataset_json=NNUNET_RAW / "dataset.json",
        splits=NNUNET_RAW / "splits_final.json",
    params:
        nnunet=NNUNET,
        settings=nnunet_settings(),
    log:
        LOGS / "nnunet" / "export.log",
    benchmark:
        BENCHMARKS / "nnunet" / "export.tsv"
    priority: 10
    threads: rule_resources("nnunet_export")["threads"]
    resources:
        mem_mb=rule_resources("nnunet_export")["mem_mb"],
        runtime=rule_resources("nnunet_export")["runtime"],
        gpu=rule_resources("nnunet_export")["gpu"],
    conda:
        "../../envs/nnunet.yaml"
    shell:
        "python -m ramanseg nnunet-export --nnunet-dir {params.nnunet:q} --stacks {input.stacks:q}"
        " --masks {input.masks:q} --split {input.split:q} --settings {params.settings:q}"
        " > {log:q} 2>&1"


rule nnunet_plan:
    input:
        dataset_json=NNUNET_RAW / "dataset.json",
        splits=NNUNET_RAW / "splits_final.json",
    output:
        plans=NNUNET_PREPROCESSED / f"{NNUNET_PLANS}.json",
        splits=NNUNET_PREPROCESSED / "splits_final.json",
    params:
        nnunet=NNUNET,
        settings=nnunet_settings(),
    log:
        LOGS / "nnunet" / "plan.log",
    benchmark:
        BENCHMARKS / "nnunet" / "plan.tsv"
    priority: 10
    threads: rule_resources("nnunet_plan")["threads"]
    resources:
        mem_mb=rule_resources("nnunet_plan")["mem_mb"],
        runtime=rule_resources("nnunet_plan")["runtime"],
        gpu=rule_resources("nnunet_plan")["gpu"],
    conda:
        "../../envs/nnunet.yaml"
    shell:
        "python -m ramanseg nnunet-plan --nnunet-dir {params.nnunet:q} --threads {threads}"
        " --settings {params.settings:q} > {log:q} 2>&1"


rule nnunet_train:
    input:
        plans=NNUNET_PREPROCESSED / f"{NNUNET_PLANS}.json",
        splits=NNUNET_PREPROCESSED / "splits_final.json",
    output:
        checkpoint=nnunet_model_dir("{seed_dir}") / "fold_{fold}" / "checkpoint_final.pth",
        summary=nnunet_model_dir("{seed_dir}") / "fold_{fold}" / "validation" / "summary.json",
    params:
        nnunet=NNUNET,
        trained=lambda wildcards: nnunet_trained(wildcards.seed_dir),
        settings=lambda wildcards: nnunet_settings(seed_dir=wildcards.seed_dir),
    log:
        LOGS / "nnunet" / "{seed_dir}train_fold_{fold}.log",
    benchmark:
        BENCHMARKS / "nnunet" / "{seed_dir}train_fold_{fold}.tsv"
    # The folds are the demo's longest chain: start them before the other models.
    priority: 10
    threads: rule_resources("nnunet_train")["threads"]
    resources:
        mem_mb=rule_resources("nnunet_train")["mem_mb"],
        runtime=rule_resources("nnunet_train")["runtime"],
        gpu=rule_resources("nnunet_train")["gpu"],
    conda:
        "../../envs/nnunet.yaml"
    shell:
        "python -m ramanseg nnunet-train --nnunet-dir {params.nnunet:q}"
        " --trained-dir {params.trained:q} --fold {wildcards.fold} --threads {threads}"
        " --settings {params.settings:q} > {log:q} 2>&1"


rule nnunet_predict:
    input:
        checkpoints=lambda wildcards: expand(
            nnunet_model_dir(wildcards.seed_dir) / "fold_{fold}" / "checkpoint_final.pth",
            fold=FOLDS,
        ),
        stacks=preprocessed("stack.ome.tif", TEST_SAMPLES),
        split=SPLIT_JSON,
    output:
        masks=predictions("{seed_dir}nnunet", "mask"),
        probabilities=predictions("{seed_dir}nnunet", "probability"),
        timing=PREDICTIONS / "{seed_dir}nnunet" / "timing.json",
    params:
        nnunet=NNUNET,
        trained=lambda wildcards: nnunet_trained(wildcards.seed_dir),
        outdir=lambda wildcards, output: Path(output.timing).parent,
        settings=lambda wildcards: nnunet_settings("prediction", seed_dir=wildcards.seed_dir),
    log:
        LOGS / "nnunet" / "{seed_dir}predict.log",
    benchmark:
        BENCHMARKS / "nnunet" / "{seed_dir}predict.tsv"
    threads: rule_resources("nnunet_predict")["threads"]
    resources:
        mem_mb=rule_resources("nnunet_predict")["mem_mb"],
        runtime=rule_resources("nnunet_predict")["runtime"],
        gpu=rule_resources("nnunet_predict")["gpu"],
    conda:
        "../../envs/nnunet.yaml"
    shell:
        "python -m ramanseg nnunet-predict --nnunet-dir {params.nnunet:q}"
        " --trained-dir {params.trained:q} --stacks {input.stacks:q} --split {input.split:q}"
        " --outdir {params.outdir:q} --timing {output.timing:q} --threads {threads}"
        " --settings {params.settings:q} > {log:q} 2>&1"
