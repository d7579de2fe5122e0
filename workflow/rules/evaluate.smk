# Evaluation of every model's test predictions: the paper's results table, with patient
# bootstrap confidence intervals and paired comparisons with evaluate.reference_model.

from ramanseg.evaluate import check_reference_model

# Checked when the workflow starts (the schema cannot know the models), not in the job.
try:
    check_reference_model(config["evaluate"]["reference_model"], EVALUATED_MODELS)
except ConfigError as error:
    stop(str(error))

#: The sections the cross-validated and repeated-seed evaluations add to results.md.
RESULTS_SECTIONS = [path for path in repeat_outputs() if str(path).endswith(".md")]
EVALUATE_COMMAND = (
    "python -m ramanseg evaluate --predictions {input.masks:q} --models {params.models}"
    " --truth {input.truth:q} --classes {input.classes:q} --foregrounds {input.foreground:q}"
    " --split {input.split:q} --samples {input.samples:q} --paper {input.paper:q}"
    " --out-prefix {params.prefix:q}"
    + (" --sections {input.sections:q}" if RESULTS_SECTIONS else "")
    + " --settings {params.settings:q} > {log:q} 2>&1"
)


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
        sections=RESULTS_SECTIONS,
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
        EVALUATE_COMMAND


# Cross-validated evaluation (cross_validation) and repeated seeds (seeds): the
# runs `cv/fold<k>/<model>` and `seed<k>/<model>` are trained by the models' own rules.


rule fold_split:
    input:
        SPLIT_JSON,
    output:
        RESULTS / "split" / "cv" / "fold{fold}.json",
    wildcard_constraints:
        fold=r"\d+",
    log:
        LOGS / "split" / "fold{fold}.log",
    benchmark:
        BENCHMARKS / "split" / "fold{fold}.tsv"
    threads: rule_resources("fold_split")["threads"]
    resources:
        mem_mb=rule_resources("fold_split")["mem_mb"],
        runtime=rule_resources("fold_split")["runtime"],
        gpu=rule_resources("fold_split")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "python -m ramanseg fold-split --split {input:q} --fold {wildcards.fold}"
        " --out {output:q} > {log:q} 2>&1"


rule predict_cv:
    input:
        weights=[MODELS / REPEATS.fold_run(f, "{cv_model}") / "model.pt" for f in REPEATS.folds],
        metadata=[MODELS / REPEATS.fold_run(f, "{cv_model}") / "model.json" for f in REPEATS.folds],
        stacks=preprocessed("stack.ome.tif", list(HELD_OUT_FOLD)),
        splits=[fold_split_json(fold) for fold in REPEATS.folds],
    output:
        masks=held_out_predictions("{cv_model}", "mask"),
        probabilities=held_out_predictions("{cv_model}", "probability"),
        timing=[
            PREDICTIONS / REPEATS.fold_run(f, "{cv_model}") / "timing.json" for f in REPEATS.folds
        ],
    wildcard_constraints:
        cv_model="|".join(TORCH_MODELS),
    params:
        commands=cv_predict_command,
    log:
        LOGS / "models" / "predict_cv_{cv_model}.log",
    benchmark:
        BENCHMARKS / "models" / "predict_cv_{cv_model}.tsv"
    threads: rule_resources("predict_cv")["threads"]
    resources:
        mem_mb=rule_resources("predict_cv")["mem_mb"],
        runtime=rule_resources("predict_cv")["runtime"],
        gpu=rule_resources("predict_cv")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "({params.commands}) > {log:q} 2>&1"


rule nnunet_cv_predictions:
    input:
        summaries=[nnunet_validation_summary(fold) for fold in REPEATS.folds],
        splits=[fold_split_json(fold) for fold in REPEATS.folds],
    output:
        masks=held_out_predictions("nnunet", "mask"),
        probabilities=held_out_predictions("nnunet", "probability"),
    params:
        commands=nnunet_cv_command(),
    log:
        LOGS / "nnunet" / "cv_predictions.log",
    benchmark:
        BENCHMARKS / "nnunet" / "cv_predictions.tsv"
    threads: rule_resources("nnunet_cv_predictions")["threads"]
    resources:
        mem_mb=rule_resources("nnunet_cv_predictions")["mem_mb"],
        runtime=rule_resources("nnunet_cv_predictions")["runtime"],
        gpu=rule_resources("nnunet_cv_predictions")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "({params.commands}) > {log:q} 2>&1"


rule fit_baseline_cv:
    input:
        **held_out_data(),
        splits=[fold_split_json(fold) for fold in REPEATS.folds],
    output:
        models=[MODELS / REPEATS.fold_run(f, "logreg") / "model.json" for f in REPEATS.folds],
        masks=held_out_predictions("logreg", "mask"),
        probabilities=held_out_predictions("logreg", "probability"),
    params:
        commands=lambda wildcards, threads: per_fold_commands(
            "logreg",
            "fit-baseline",
            threads,
            settings("seed", "channels"),
            **{"--split": "split", "--model-out": "model_json", "--outdir": "predictions"},
        ),
    log:
        LOGS / "models" / "fit_baseline_cv.log",
    benchmark:
        BENCHMARKS / "models" / "fit_baseline_cv.tsv"
    threads: rule_resources("fit_baseline_cv")["threads"]
    resources:
        mem_mb=rule_resources("fit_baseline_cv")["mem_mb"],
        runtime=rule_resources("fit_baseline_cv")["runtime"],
        gpu=rule_resources("fit_baseline_cv")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "({params.commands}) > {log:q} 2>&1"


rule fit_pixel_cnn_cv:
    input:
        **held_out_data(),
        splits=[fold_split_json(fold) for fold in REPEATS.folds],
    output:
        models=[MODELS / REPEATS.fold_run(f, "pixel_cnn") / "model.pt" for f in REPEATS.folds],
        masks=held_out_predictions("pixel_cnn", "mask"),
        probabilities=held_out_predictions("pixel_cnn", "probability"),
    params:
        commands=lambda wildcards, threads: per_fold_commands(
            "pixel_cnn",
            "spectra-pixel-model",
            threads,
            settings("seed", "channels", "spectra"),
            **{"--split": "split", "--model-dir": "model_dir", "--outdir": "predictions"},
        ),
    log:
        LOGS / "models" / "fit_pixel_cnn_cv.log",
    benchmark:
        BENCHMARKS / "models" / "fit_pixel_cnn_cv.tsv"
    threads: rule_resources("fit_pixel_cnn_cv")["threads"]
    resources:
        mem_mb=rule_resources("fit_pixel_cnn_cv")["mem_mb"],
        runtime=rule_resources("fit_pixel_cnn_cv")["runtime"],
        gpu=rule_resources("fit_pixel_cnn_cv")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "({params.commands}) > {log:q} 2>&1"


rule fit_phasor_cv:
    input:
        **held_out_data(),
        splits=[fold_split_json(fold) for fold in REPEATS.folds],
    output:
        models=[MODELS / REPEATS.fold_run(f, "phasor") / "model.json" for f in REPEATS.folds],
        masks=held_out_predictions("phasor", "mask"),
        probabilities=held_out_predictions("phasor", "probability"),
    params:
        commands=per_fold_commands(
            "phasor",
            "fit-phasor",
            None,
            settings("seed", "channels", "hsrs"),
            **{"--split": "split", "--model-out": "model_json", "--outdir": "predictions"},
        ),
    log:
        LOGS / "models" / "fit_phasor_cv.log",
    benchmark:
        BENCHMARKS / "models" / "fit_phasor_cv.tsv"
    threads: rule_resources("fit_phasor_cv")["threads"]
    resources:
        mem_mb=rule_resources("fit_phasor_cv")["mem_mb"],
        runtime=rule_resources("fit_phasor_cv")["runtime"],
        gpu=rule_resources("fit_phasor_cv")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "({params.commands}) > {log:q} 2>&1"


rule evaluate_cv:
    input:
        masks=[path for model in CV_MODELS for path in held_out_predictions(model)],
        truth=preprocessed("mask.tif", list(HELD_OUT_FOLD)),
        classes=preprocessed("classes.tif", list(HELD_OUT_FOLD)),
        foreground=preprocessed("foreground.tif", list(HELD_OUT_FOLD)),
        split=SPLIT_JSON,
        samples=SAMPLESHEET,
    output:
        table=report(
            RESULTS / "evaluation" / "results_cv.csv",
            caption="../report/results_cv.rst",
            category="3. Results",
        ),
        parquet=RESULTS / "evaluation" / "results_cv.parquet",
        markdown=RESULTS / "evaluation" / "results_cv.md",
        per_sample=RESULTS / "evaluation" / "results_cv_per_sample.csv",
        per_sample_parquet=RESULTS / "evaluation" / "results_cv_per_sample.parquet",
        comparisons=RESULTS / "evaluation" / "results_cv_comparisons.csv",
        comparisons_parquet=RESULTS / "evaluation" / "results_cv_comparisons.parquet",
        folds=RESULTS / "evaluation" / "results_cv_folds.csv",
        folds_parquet=RESULTS / "evaluation" / "results_cv_folds.parquet",
    params:
        models=CV_MODELS,
        prefix=RESULTS / "evaluation" / "results_cv",
        settings=settings("evaluate", "seed"),
    log:
        LOGS / "evaluate_cv.log",
    benchmark:
        BENCHMARKS / "evaluate_cv.tsv"
    threads: rule_resources("evaluate_cv")["threads"]
    resources:
        mem_mb=rule_resources("evaluate_cv")["mem_mb"],
        runtime=rule_resources("evaluate_cv")["runtime"],
        gpu=rule_resources("evaluate_cv")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "python -m ramanseg evaluate-cv --predictions {input.masks:q} --models {params.models}"
        " --truth {input.truth:q} --classes {input.classes:q} --foregrounds {input.foreground:q}"
        " --split {input.split:q} --samples {input.samples:q} --out-prefix {params.prefix:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"


#: Every seed's run of every repeated model, in table order, then by seed.
SEED_RUNS = [(seed, model) for model in SEED_MODELS for seed in REPEATS.seeds]


rule evaluate_seeds:
    input:
        masks=[
            path
            for seed, model in SEED_RUNS
            for path in predictions(REPEATS.seed_run(seed, model), "mask")
        ],
        truth=preprocessed("mask.tif", TEST_SAMPLES),
        classes=preprocessed("classes.tif", TEST_SAMPLES),
        foreground=preprocessed("foreground.tif", TEST_SAMPLES),
        split=SPLIT_JSON,
    output:
        table=report(
            RESULTS / "evaluation" / "results_seeds.csv",
            caption="../report/results_seeds.rst",
            category="3. Results",
        ),
        parquet=RESULTS / "evaluation" / "results_seeds.parquet",
        markdown=RESULTS / "evaluation" / "results_seeds.md",
        runs=RESULTS / "evaluation" / "results_seeds_runs.csv",
        runs_parquet=RESULTS / "evaluation" / "results_seeds_runs.parquet",
        per_sample=RESULTS / "evaluation" / "results_seeds_per_sample.csv",
        per_sample_parquet=RESULTS / "evaluation" / "results_seeds_per_sample.parquet",
        figure=report(
            RESULTS / "evaluation" / "results_seeds_dice.png",
            caption="../report/results_seeds_dice.rst",
            category="3. Results",
        ),
        figure_pdf=RESULTS / "evaluation" / "results_seeds_dice.pdf",
    params:
        # The seed of each mask, in the order of input.masks.
        seeds=[seed for seed, model in SEED_RUNS for sample in TEST_SAMPLES],
        models=SEED_MODELS,
        prefix=RESULTS / "evaluation" / "results_seeds",
        settings=settings("evaluate", "seed"),
    log:
        LOGS / "evaluate_seeds.log",
    benchmark:
        BENCHMARKS / "evaluate_seeds.tsv"
    threads: rule_resources("evaluate_seeds")["threads"]
    resources:
        mem_mb=rule_resources("evaluate_seeds")["mem_mb"],
        runtime=rule_resources("evaluate_seeds")["runtime"],
        gpu=rule_resources("evaluate_seeds")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "python -m ramanseg evaluate-seeds --predictions {input.masks:q} --seeds {params.seeds}"
        " --models {params.models} --truth {input.truth:q} --classes {input.classes:q}"
        " --foregrounds {input.foreground:q} --split {input.split:q}"
        " --out-prefix {params.prefix:q} --settings {params.settings:q} > {log:q} 2>&1"
