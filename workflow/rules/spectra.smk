# Spectra (`snakemake spectra`): the skin-cancer paper's preprocessing chain and 1D-CNN, the
# SVM and 1D ResNet transfer baselines, metrics with bootstrap CIs and explanations, per
# labelled spectra table of `spectra.datasets`.

include: "spectra_common.smk"


check_spectra_datasets()


rule spectra_synthetic:
    output:
        SPECTRA / "synthetic" / "{spectra_dataset}.parquet",
    params:
        settings=settings("seed", "spectra"),
    log:
        LOGS / "spectra" / "synthetic_{spectra_dataset}.log",
    benchmark:
        BENCHMARKS / "spectra" / "synthetic_{spectra_dataset}.tsv"
    threads: rule_resources("spectra_synthetic")["threads"]
    resources:
        mem_mb=rule_resources("spectra_synthetic")["mem_mb"],
        runtime=rule_resources("spectra_synthetic")["runtime"],
        gpu=rule_resources("spectra_synthetic")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m ramanseg spectra-synthetic --out {output:q} --settings {params.settings:q}"
        " > {log:q} 2>&1"


rule spectra_dataset:
    input:
        unpack(spectra_inputs),
    output:
        metrics=SPECTRA / "{spectra_dataset}" / "metrics.csv",
        metrics_parquet=SPECTRA / "{spectra_dataset}" / "metrics.parquet",
        metrics_md=SPECTRA / "{spectra_dataset}" / "metrics.md",
        importance=SPECTRA / "{spectra_dataset}" / "importance.csv",
        predictions=SPECTRA / "{spectra_dataset}" / "predictions.csv",
        curves_table=SPECTRA / "{spectra_dataset}" / "training_curves.csv",
        curves=report(
            SPECTRA / "{spectra_dataset}" / "training_curves.png",
            caption="../report/spectra_training_curves.rst",
            category=SPECTRA_CATEGORY,
            subcategory="{spectra_dataset}",
        ),
        confusion=report(
            SPECTRA / "{spectra_dataset}" / "confusion.png",
            caption="../report/spectra_confusion.rst",
            category=SPECTRA_CATEGORY,
            subcategory="{spectra_dataset}",
        ),
        spectra=report(
            SPECTRA / "{spectra_dataset}" / "spectra.png",
            caption="../report/spectra_class_spectra.rst",
            category=SPECTRA_CATEGORY,
            subcategory="{spectra_dataset}",
        ),
        explanations=report(
            SPECTRA / "{spectra_dataset}" / "explanations.png",
            caption="../report/spectra_explanations.rst",
            category=SPECTRA_CATEGORY,
            subcategory="{spectra_dataset}",
        ),
        weights=SPECTRA / "{spectra_dataset}" / "cnn.pt",
        metadata=SPECTRA / "{spectra_dataset}" / "model.json",
    params:
        outdir=lambda wildcards, output: Path(output.metrics).parent,
        source=spectra_source_argument,
        settings=settings("seed", "spectra"),
    log:
        LOGS / "spectra" / "{spectra_dataset}.log",
    benchmark:
        BENCHMARKS / "spectra" / "{spectra_dataset}.tsv"
    threads: rule_resources("spectra_dataset")["threads"]
    resources:
        mem_mb=rule_resources("spectra_dataset")["mem_mb"],
        runtime=rule_resources("spectra_dataset")["runtime"],
        gpu=rule_resources("spectra_dataset")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m ramanseg spectra-run --dataset {wildcards.spectra_dataset}"
        " --table {input.table:q} {params.source} --outdir {params.outdir:q}"
        " --threads {threads} --settings {params.settings:q} > {log:q} 2>&1"


rule spectra_summary:
    input:
        expand(SPECTRA / "{dataset}" / "metrics.csv", dataset=SPECTRA_DATASETS),
    output:
        table=report(
            SPECTRA / "metrics.csv",
            caption="../report/spectra_metrics.rst",
            category=SPECTRA_CATEGORY,
        ),
        parquet=SPECTRA / "metrics.parquet",
        markdown=SPECTRA / "metrics.md",
    params:
        prefix=SPECTRA / "metrics",
    log:
        LOGS / "spectra" / "summary.log",
    benchmark:
        BENCHMARKS / "spectra" / "summary.tsv"
    threads: rule_resources("spectra_summary")["threads"]
    resources:
        mem_mb=rule_resources("spectra_summary")["mem_mb"],
        runtime=rule_resources("spectra_summary")["runtime"],
        gpu=rule_resources("spectra_summary")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "python -m ramanseg spectra-summary --metrics {input:q} --out-prefix {params.prefix:q}"
        " > {log:q} 2>&1"


rule spectra:
    input:
        spectra_outputs(),


# The 1D-CNN as a per-pixel model of the tumour table (its entry in ramanseg.catalog puts
# it into the evaluate rule's table).
rule fit_pixel_cnn:
    input:
        stacks=preprocessed("stack.ome.tif", PIXEL_CNN_SAMPLES),
        masks=preprocessed("mask.tif", PIXEL_CNN_SAMPLES),
        foregrounds=preprocessed("foreground.tif", PIXEL_CNN_SAMPLES),
        split=SPLIT_JSON,
    output:
        weights=MODELS / "{seed_dir}pixel_cnn" / "model.pt",
        metadata=MODELS / "{seed_dir}pixel_cnn" / "model.json",
        training_log=MODELS / "{seed_dir}pixel_cnn" / "training_log.csv",
        importance=MODELS / "{seed_dir}pixel_cnn" / "band_importance.csv",
        importance_parquet=MODELS / "{seed_dir}pixel_cnn" / "band_importance.parquet",
        importance_md=MODELS / "{seed_dir}pixel_cnn" / "band_importance.md",
        importance_plot=report(
            MODELS / "{seed_dir}pixel_cnn" / "band_importance.png",
            caption="../report/pixel_cnn_band_importance.rst",
            category="3. Results",
        ),
        importance_pdf=MODELS / "{seed_dir}pixel_cnn" / "band_importance.pdf",
        masks=predictions("{seed_dir}pixel_cnn", "mask"),
        probabilities=predictions("{seed_dir}pixel_cnn", "probability"),
    params:
        model_dir=lambda wildcards: MODELS / f"{wildcards.seed_dir}pixel_cnn",
        outdir=lambda wildcards: PREDICTIONS / f"{wildcards.seed_dir}pixel_cnn",
        settings=seeded_settings("seed", "channels", "spectra"),
    log:
        LOGS / "models" / "{seed_dir}fit_pixel_cnn.log",
    benchmark:
        BENCHMARKS / "models" / "{seed_dir}fit_pixel_cnn.tsv"
    threads: rule_resources("fit_pixel_cnn")["threads"]
    resources:
        mem_mb=rule_resources("fit_pixel_cnn")["mem_mb"],
        runtime=rule_resources("fit_pixel_cnn")["runtime"],
        gpu=rule_resources("fit_pixel_cnn")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m ramanseg spectra-pixel-model --stacks {input.stacks:q}"
        " --masks {input.masks:q} --foregrounds {input.foregrounds:q} --split {input.split:q}"
        " --model-dir {params.model_dir:q} --outdir {params.outdir:q} --threads {threads}"
        " --settings {params.settings:q} > {log:q} 2>&1"
