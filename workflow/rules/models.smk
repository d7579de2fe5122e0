# Our PyTorch models (U-Net, UNETR, RamanSeg with and without projection, the prototype
# sweep's RamanSeg runs) and the per-pixel baseline.

# A run on a cross-validation fold or with another seed (ramanseg.repeats) is trained
# and predicted by the same rules: results/models/cv/fold<k>/<model>, seed<k>/<model>.
wildcard_constraints:
    model=PREDICTED_RUN,
    run=TRAINING_RUN,


rule train_model:
    input:
        unpack(lambda wildcards: training_inputs(wildcards.run)),
    output:
        weights=MODELS / "{run}" / "model.pt",
        metadata=MODELS / "{run}" / "model.json",
        training_log=MODELS / "{run}" / "training_log.csv",
    params:
        model=lambda wildcards: run_model(wildcards.run),
        outdir=lambda wildcards, output: Path(output.weights).parent,
        settings=lambda wildcards: run_settings(wildcards.run),
    log:
        LOGS / "models" / "train_{run}.log",
    benchmark:
        BENCHMARKS / "models" / "train_{run}.tsv"
    threads: rule_resources("train_model")["threads"]
    resources:
        mem_mb=rule_resources("train_model")["mem_mb"],
        runtime=rule_resources("train_model")["runtime"],
        gpu=rule_resources("train_model")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m ramanseg train-model --model {params.model} --stacks {input.stacks:q}"
        " --masks {input.masks:q} --foregrounds {input.foregrounds:q} --split {input.split:q}"
        " --outdir {params.outdir:q} --threads {threads} --no-progress"
        " --settings {params.settings:q} > {log:q} 2>&1"


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
        weights=lambda wildcards, input: Path(input.weights).parent,
        outdir=lambda wildcards, output: Path(output.timing).parent,
        model=lambda wildcards: run_model(wildcards.model),
        settings=lambda wildcards: run_settings(wildcards.model),
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
        "python -m ramanseg predict-model --model {params.model} --weights {params.weights:q}"
        " --stacks {input.stacks:q} --split {input.split:q} --outdir {params.outdir:q}"
        " --timing {output.timing:q} --threads {threads} --settings {params.settings:q}"
        " > {log:q} 2>&1"


rule fit_baseline:
    input:
        stacks=preprocessed("stack.ome.tif", SPLIT["train"] + TEST_SAMPLES),
        masks=preprocessed("mask.tif", SPLIT["train"]),
        foregrounds=preprocessed("foreground.tif", SPLIT["train"]),
        split=SPLIT_JSON,
    output:
        model=MODELS / "{seed_dir}logreg" / "model.json",
        masks=predictions("{seed_dir}logreg", "mask"),
        probabilities=predictions("{seed_dir}logreg", "probability"),
    params:
        outdir=lambda wildcards: PREDICTIONS / f"{wildcards.seed_dir}logreg",
        settings=seeded_settings("seed", "channels"),
    log:
        LOGS / "models" / "{seed_dir}fit_baseline.log",
    benchmark:
        BENCHMARKS / "models" / "{seed_dir}fit_baseline.tsv"
    threads: rule_resources("fit_baseline")["threads"]
    resources:
        mem_mb=rule_resources("fit_baseline")["mem_mb"],
        runtime=rule_resources("fit_baseline")["runtime"],
        gpu=rule_resources("fit_baseline")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m ramanseg fit-baseline --stacks {input.stacks:q} --masks {input.masks:q}"
        " --foregrounds {input.foregrounds:q} --split {input.split:q}"
        " --model-out {output.model:q} --outdir {params.outdir:q} --threads {threads}"
        " --settings {params.settings:q} > {log:q} 2>&1"
