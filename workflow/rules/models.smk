# Our PyTorch models (U-Net, UNETR, RamanSeg variants) and the per-pixel baseline.

TRAINING_SAMPLES = list(SPLIT["train"]) + list(SPLIT["val"])


# RamanSeg with projection has its own training rule (it also writes its prototypes).
wildcard_constraints:
    model="|".join(TORCH_MODELS),
    trained="|".join(m for m in TORCH_MODELS if m != "ramanseg"),
    prototypes=r"\d+",


rule train_model:
    input:
        stacks=preprocessed("stack.ome.tif", TRAINING_SAMPLES),
        masks=preprocessed("mask.tif", TRAINING_SAMPLES),
        split=SPLIT_JSON,
    output:
        weights=MODELS / "{trained}" / "model.pt",
        metadata=MODELS / "{trained}" / "model.json",
        training_log=MODELS / "{trained}" / "training_log.csv",
    params:
        preprocessed=PREPROCESSED,
        outdir=lambda wildcards: MODELS / wildcards.trained,
        settings=lambda wildcards: model_settings(wildcards.trained),
    log:
        LOGS / "models" / "train_{trained}.log",
    benchmark:
        BENCHMARKS / "models" / "train_{trained}.tsv"
    threads: rule_resources("train_model")["threads"]
    resources:
        mem_mb=rule_resources("train_model")["mem_mb"],
        runtime=rule_resources("train_model")["runtime"],
        gpu=rule_resources("train_model")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m ramanseg train-model --model {wildcards.trained} --preprocessed {params.preprocessed:q}"
        " --split {input.split:q} --outdir {params.outdir:q} --threads {threads}"
        " --no-progress --settings {params.settings:q} > {log:q} 2>&1"


rule train_ramanseg:
    input:
        stacks=preprocessed("stack.ome.tif", TRAINING_SAMPLES),
        masks=preprocessed("mask.tif", TRAINING_SAMPLES),
        split=SPLIT_JSON,
    output:
        weights=MODELS / "ramanseg" / "model.pt",
        metadata=MODELS / "ramanseg" / "model.json",
        training_log=MODELS / "ramanseg" / "training_log.csv",
        prototypes=MODELS / "ramanseg" / "prototypes.json",
        gallery=MODELS / "ramanseg" / "prototype_gallery.png",
    params:
        preprocessed=PREPROCESSED,
        outdir=MODELS / "ramanseg",
        settings=model_settings("ramanseg"),
    log:
        LOGS / "models" / "train_ramanseg.log",
    benchmark:
        BENCHMARKS / "models" / "train_ramanseg.tsv"
    threads: rule_resources("train_ramanseg")["threads"]
    resources:
        mem_mb=rule_resources("train_ramanseg")["mem_mb"],
        runtime=rule_resources("train_ramanseg")["runtime"],
        gpu=rule_resources("train_ramanseg")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m ramanseg train-model --model ramanseg --preprocessed {params.preprocessed:q}"
        " --split {input.split:q} --outdir {params.outdir:q} --threads {threads}"
        " --no-progress --settings {params.settings:q} > {log:q} 2>&1"


rule train_sweep:
    input:
        stacks=preprocessed("stack.ome.tif", TRAINING_SAMPLES),
        masks=preprocessed("mask.tif", TRAINING_SAMPLES),
        split=SPLIT_JSON,
    output:
        weights=MODELS / "sweep" / "p{prototypes}" / "model.pt",
        metadata=MODELS / "sweep" / "p{prototypes}" / "model.json",
        training_log=MODELS / "sweep" / "p{prototypes}" / "training_log.csv",
        prototypes=MODELS / "sweep" / "p{prototypes}" / "prototypes.json",
        gallery=MODELS / "sweep" / "p{prototypes}" / "prototype_gallery.png",
    params:
        preprocessed=PREPROCESSED,
        outdir=lambda wildcards: MODELS / "sweep" / f"p{wildcards.prototypes}",
        settings=lambda wildcards: model_settings(
            "ramanseg", prototypes_per_class=int(wildcards.prototypes)
        ),
    log:
        LOGS / "models" / "train_sweep_p{prototypes}.log",
    benchmark:
        BENCHMARKS / "models" / "train_sweep_p{prototypes}.tsv"
    threads: rule_resources("train_sweep")["threads"]
    resources:
        mem_mb=rule_resources("train_sweep")["mem_mb"],
        runtime=rule_resources("train_sweep")["runtime"],
        gpu=rule_resources("train_sweep")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m ramanseg train-model --model ramanseg --preprocessed {params.preprocessed:q}"
        " --split {input.split:q} --outdir {params.outdir:q} --threads {threads}"
        " --no-progress --settings {params.settings:q} > {log:q} 2>&1"


rule sweep_summary:
    input:
        [sweep_run(count) / "model.json" for count in SWEEP_COUNTS],
    output:
        table=report(
            RESULTS / "sweep" / "prototype_sweep.csv",
            caption="../report/prototype_sweep.rst",
            category="2. RamanSeg",
        ),
        parquet=RESULTS / "sweep" / "prototype_sweep.parquet",
        markdown=RESULTS / "sweep" / "prototype_sweep.md",
        plot=report(
            RESULTS / "sweep" / "prototype_sweep.png",
            caption="../report/prototype_sweep.rst",
            category="2. RamanSeg",
        ),
        pdf=RESULTS / "sweep" / "prototype_sweep.pdf",
    params:
        runs=[sweep_run(count) for count in SWEEP_COUNTS],
        prefix=RESULTS / "sweep" / "prototype_sweep",
    log:
        LOGS / "models" / "sweep_summary.log",
    benchmark:
        BENCHMARKS / "models" / "sweep_summary.tsv"
    threads: rule_resources("sweep_summary")["threads"]
    resources:
        mem_mb=rule_resources("sweep_summary")["mem_mb"],
        runtime=rule_resources("sweep_summary")["runtime"],
        gpu=rule_resources("sweep_summary")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m ramanseg sweep-summary --runs {params.runs:q} --out-prefix {params.prefix:q}"
        " > {log:q} 2>&1"


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
