# Our PyTorch models (U-Net, UNETR, RamanSeg variants) and the per-pixel baseline.

TRAINING_SAMPLES = list(SPLIT["train"]) + list(SPLIT["val"])


wildcard_constraints:
    model="|".join(TORCH_MODELS),


rule train_model:
    input:
        stacks=preprocessed("stack.ome.tif", TRAINING_SAMPLES),
        masks=preprocessed("mask.tif", TRAINING_SAMPLES),
        split=SPLIT_JSON,
    output:
        weights=MODELS / "{model}" / "model.pt",
        metadata=MODELS / "{model}" / "model.json",
        training_log=MODELS / "{model}" / "training_log.csv",
    params:
        preprocessed=PREPROCESSED,
        outdir=lambda wildcards: MODELS / wildcards.model,
        settings=lambda wildcards: model_settings(wildcards.model),
    log:
        LOGS / "models" / "train_{model}.log",
    benchmark:
        BENCHMARKS / "models" / "train_{model}.tsv"
    threads: rule_resources("train_model")["threads"]
    resources:
        mem_mb=rule_resources("train_model")["mem_mb"],
        runtime=rule_resources("train_model")["runtime"],
        gpu=rule_resources("train_model")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m ramanseg train-model --model {wildcards.model} --preprocessed {params.preprocessed:q}"
        " --split {input.split:q} --outdir {params.outdir:q} --threads {threads}"
        " --no-progress --settings {params.settings:q} > {log:q} 2>&1"


rule predict_model:
    input:
        weights=MODELS / "{model}" / "model.pt",
        metadata=MODELS / "{model}" / "model.json",
        stacks=preprocessed("stack.ome.tif", TEST_SAMPLES),
        split=SPLIT_JSON,
    output:
        masks=predictions("{model}", "mask"),
        probabilities=predictions("{model}", "probability"),
        timing=PREDICTIONS / "{model}" / "timing.json",
    params:
        preprocessed=PREPROCESSED,
        weights=lambda wildcards: MODELS / wildcards.model,
        outdir=lambda wildcards: PREDICTIONS / wildcards.model,
        settings=lambda wildcards: model_settings(wildcards.model),
    log:
        LOGS / "models" / "predict_{model}.log",
    benchmark:
        BENCHMARKS / "models" / "predict_{model}.tsv"
    threads: rule_resources("predict_model")["threads"]
    resources:
        mem_mb=rule_resources("predict_model")["mem_mb"],
        runtime=rule_resources("predict_model")["runtime"],
        gpu=rule_resources("predict_model")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m ramanseg predict-model --model {wildcards.model} --weights {params.weights:q}"
        " --preprocessed {params.preprocessed:q} --split {input.split:q} --outdir {params.outdir:q}"
        " --timing {output.timing:q} --threads {threads} --settings {params.settings:q}"
        " > {log:q} 2>&1"


rule fit_baseline:
    input:
        stacks=preprocessed("stack.ome.tif", TRAINING_SAMPLES + TEST_SAMPLES),
        masks=preprocessed("mask.tif", TRAINING_SAMPLES),
        split=SPLIT_JSON,
    output:
        model=MODELS / "logreg" / "model.json",
        masks=predictions("logreg", "mask"),
        probabilities=predictions("logreg", "probability"),
    params:
        preprocessed=PREPROCESSED,
        outdir=PREDICTIONS / "logreg",
        settings=settings("seed", "channels"),
    log:
        LOGS / "models" / "fit_baseline.log",
    benchmark:
        BENCHMARKS / "models" / "fit_baseline.tsv"
    threads: rule_resources("fit_baseline")["threads"]
    resources:
        mem_mb=rule_resources("fit_baseline")["mem_mb"],
        runtime=rule_resources("fit_baseline")["runtime"],
        gpu=rule_resources("fit_baseline")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m ramanseg fit-baseline --preprocessed {params.preprocessed:q} --split {input.split:q}"
        " --model-out {output.model:q} --outdir {params.outdir:q} --threads {threads}"
        " --settings {params.settings:q} > {log:q} 2>&1"
