# Evaluation of every model's test predictions: the paper's results table.


rule evaluate:
    input:
        masks=[path for model in EVALUATED_MODELS for path in predictions(model, "mask")],
        truth=preprocessed("mask.tif", TEST_SAMPLES),
        classes=preprocessed("classes.tif", TEST_SAMPLES),
        foreground=preprocessed("foreground.tif", TEST_SAMPLES),
        split=SPLIT_JSON,
        paper=PAPER_RESULTS,
    output:
        table=report(
            RESULTS / "evaluation" / "results.csv",
            caption="../report/results_table.rst",
            category="3. Results",
        ),
        parquet=RESULTS / "evaluation" / "results.parquet",
        markdown=RESULTS / "evaluation" / "results.md",
        per_sample=report(
            RESULTS / "evaluation" / "results_per_sample.csv",
            caption="../report/results_per_sample.rst",
            category="3. Results",
        ),
        per_sample_parquet=RESULTS / "evaluation" / "results_per_sample.parquet",
        plot=report(
            RESULTS / "evaluation" / "results_dice.png",
            caption="../report/results_dice.rst",
            category="3. Results",
        ),
        pdf=RESULTS / "evaluation" / "results_dice.pdf",
    params:
        models=EVALUATED_MODELS,
        prefix=RESULTS / "evaluation" / "results",
        settings=settings("evaluate", "annotations"),
    log:
        LOGS / "evaluate.log",
    benchmark:
        BENCHMARKS / "evaluate.tsv"
    threads: rule_resources("evaluate")["threads"]
    resources:
        mem_mb=rule_resources("evaluate")["mem_mb"],
        runtime=rule_resources("evaluate")["runtime"],
        gpu=rule_resources("evaluate")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "python -m ramanseg evaluate --predictions {input.masks:q} --models {params.models}"
        " --truth {input.truth:q} --classes {input.classes:q} --foregrounds {input.foreground:q}"
        " --split {input.split:q} --paper {input.paper:q} --out-prefix {params.prefix:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"
