# Evaluation of every model's test predictions: the paper's results table, with patient
# bootstrap confidence intervals and paired comparisons with evaluate.reference_model.

from ramanseg.evaluate import check_reference_model

# Checked when the workflow starts (the schema cannot know the models), not in the job.
try:
    check_reference_model(config["evaluate"]["reference_model"], EVALUATED_MODELS)
except ConfigError as error:
    stop(str(error))


rule evaluate:
    input:
        masks=[path for model in EVALUATED_MODELS for path in predictions(model, "mask")],
        truth=preprocessed("mask.tif", TEST_SAMPLES),
        classes=preprocessed("classes.tif", TEST_SAMPLES),
        foreground=preprocessed("foreground.tif", TEST_SAMPLES),
        split=SPLIT_JSON,
        # Each test sample's patient: the bootstrap resamples patients.
        samples=SAMPLESHEET,
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
        comparisons=report(
            RESULTS / "evaluation" / "results_comparisons.csv",
            caption="../report/results_comparisons.rst",
            category="3. Results",
        ),
        comparisons_parquet=RESULTS / "evaluation" / "results_comparisons.parquet",
        paired=report(
            RESULTS / "evaluation" / "results_paired.png",
            caption="../report/results_paired.rst",
            category="3. Results",
        ),
        paired_pdf=RESULTS / "evaluation" / "results_paired.pdf",
        forest=report(
            RESULTS / "evaluation" / "results_forest.png",
            caption="../report/results_forest.rst",
            category="3. Results",
        ),
        forest_pdf=RESULTS / "evaluation" / "results_forest.pdf",
    params:
        models=EVALUATED_MODELS,
        prefix=RESULTS / "evaluation" / "results",
        settings=settings("evaluate", "annotations", "seed"),
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
        " --split {input.split:q} --samples {input.samples:q} --paper {input.paper:q}"
        " --out-prefix {params.prefix:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"
