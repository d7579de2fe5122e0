# `snakemake predict --config predict_samplesheet=SHEET model_package=ZIP`: new slides
# segmented with the models of a package (ramanseg.package, ramanseg.predict). Planned from
# the package's manifest and the slides' sheet alone: no training data is needed.

include: "predict_common.smk"


rule unpack_package:
    input:
        config["model_package"],
    output:
        manifest=PACKAGE_DIR / "manifest.json",
        settings=PACKAGE_SETTINGS,
    params:
        outdir=PACKAGE_DIR,
    log:
        LOGS / "predict" / "unpack_package.log",
    benchmark:
        BENCHMARKS / "predict" / "unpack_package.tsv"
    threads: rule_resources("unpack_package")["threads"]
    resources:
        mem_mb=rule_resources("unpack_package")["mem_mb"],
        runtime=rule_resources("unpack_package")["runtime"],
        gpu=rule_resources("unpack_package")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m ramanseg unpack-package --package {input:q} --outdir {params.outdir:q}"
        " > {log:q} 2>&1"


# Each slide preprocessed as the package's models were trained: the package's channels,
# percentiles, tissue detection and drift correction.
rule predict_preprocess:
    input:
        unpack(slide_inputs),
        settings=PACKAGE_SETTINGS,
    output:
        stack=PREDICT_PREPROCESSED / "{slide}" / "stack.ome.tif",
        classes=PREDICT_PREPROCESSED / "{slide}" / "classes.tif",
        mask=PREDICT_PREPROCESSED / "{slide}" / "mask.tif",
        foreground=PREDICT_PREPROCESSED / "{slide}" / "foreground.tif",
        qc_json=PREDICT_PREPROCESSED / "{slide}" / "qc.json",
    params:
        he=optional_argument("--he", "he"),
        annotations=optional_argument("--annotations", "annotations"),
        outdir=lambda wildcards, output: Path(output.stack).parent,
    log:
        LOGS / "predict" / "preprocess_{slide}.log",
    benchmark:
        BENCHMARKS / "predict" / "preprocess_{slide}.tsv"
    threads: rule_resources("predict_preprocess")["threads"]
    resources:
        mem_mb=rule_resources("predict_preprocess")["mem_mb"],
        runtime=rule_resources("predict_preprocess")["runtime"],
        gpu=rule_resources("predict_preprocess")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "python -m ramanseg preprocess --sample {wildcards.slide} --srs {input.srs:q}"
        " {params.he} {params.annotations} --outdir {params.outdir:q} --threads {threads}"
        " --settings @{input.settings:q} > {log:q} 2>&1"


# One job per model over every slide: the model is loaded once.
rule predict_slides:
    input:
        manifest=PACKAGE_DIR / "manifest.json",
        stacks=expand(PREDICT_PREPROCESSED / "{slide}" / "stack.ome.tif", slide=SLIDE_IDS),
        sheet=config["predict_samplesheet"],
    output:
        masks=[slide_prediction_paths(PREDICT / s, "{predict_model}")[0] for s in SLIDE_IDS],
        probabilities=[
            slide_prediction_paths(PREDICT / s, "{predict_model}")[1] for s in SLIDE_IDS
        ],
    params:
        package=PACKAGE_DIR,
        root=PREDICT,
        settings=settings("device", "nnunet"),
    log:
        LOGS / "predict" / "predict_{predict_model}.log",
    benchmark:
        BENCHMARKS / "predict" / "predict_{predict_model}.tsv"
    threads: rule_resources("predict_slides")["threads"]
    resources:
        mem_mb=rule_resources("predict_slides")["mem_mb"],
        runtime=rule_resources("predict_slides")["runtime"],
        gpu=rule_resources("predict_slides")["gpu"],
    conda:
        "../../envs/nnunet.yaml"
    shell:
        "python -m ramanseg predict-slides --package-dir {params.package:q}"
        " --model {wildcards.predict_model} --stacks {input.stacks:q} --sheet {input.sheet:q}"
        " --root {params.root:q} --threads {threads} --settings {params.settings:q}"
        " > {log:q} 2>&1"


rule predict_export:
    input:
        manifest=PACKAGE_DIR / "manifest.json",
        stack=PREDICT_PREPROCESSED / "{slide}" / "stack.ome.tif",
        masks=lambda wildcards: slide_predictions(wildcards.slide),
    output:
        geojson=[PREDICT / "{slide}" / f"{model}.geojson" for model in PREDICT_MODELS],
        overlay=report(
            PREDICT / "{slide}" / "overlay.png",
            caption="../report/predict_overlay.rst",
            category="6. New slides",
            labels={"slide": "{slide}"},
        ),
    params:
        package=PACKAGE_DIR,
        slide_dir=lambda wildcards: PREDICT / wildcards.slide,
        models=PREDICT_MODELS,
        min_area=config["predict"]["min_area_px"],
    log:
        LOGS / "predict" / "export_{slide}.log",
    benchmark:
        BENCHMARKS / "predict" / "export_{slide}.tsv"
    threads: rule_resources("predict_export")["threads"]
    resources:
        mem_mb=rule_resources("predict_export")["mem_mb"],
        runtime=rule_resources("predict_export")["runtime"],
        gpu=rule_resources("predict_export")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "python -m ramanseg predict-export --package-dir {params.package:q}"
        " --sample {wildcards.slide} --stack {input.stack:q} --slide-dir {params.slide_dir:q}"
        " --models {params.models} --min-area {params.min_area} > {log:q} 2>&1"


# RamanSeg's "this looks like that" per slide: for each predicted tumour region, the
# prototypes that drive it beside their source patches from the training set (which the
# package carries).
rule explain_slide:
    input:
        manifest=PACKAGE_DIR / "manifest.json",
        stack=PREDICT_PREPROCESSED / "{slide}" / "stack.ome.tif",
        mask=PREDICT / "{slide}" / f"ramanseg{SLIDE_MASK_SUFFIX}",
    output:
        figure=report(
            PREDICT / "{slide}" / "explanation.png",
            caption="../report/predict_explanation.rst",
            category="6. New slides",
            labels={"slide": "{slide}", "figure": "this looks like that"},
        ),
        table=PREDICT / "{slide}" / "explanation.csv",
    params:
        model_dir=PACKAGE_DIR / "models" / "ramanseg",
    log:
        LOGS / "predict" / "explain_{slide}.log",
    benchmark:
        BENCHMARKS / "predict" / "explain_{slide}.tsv"
    threads: rule_resources("explain_slide")["threads"]
    resources:
        mem_mb=rule_resources("explain_slide")["mem_mb"],
        runtime=rule_resources("explain_slide")["runtime"],
        gpu=rule_resources("explain_slide")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m ramanseg explain-slide --model-dir {params.model_dir:q} --stack {input.stack:q}"
        " --mask {input.mask:q} --out {output.figure:q} --table {output.table:q}"
        " --threads {threads} > {log:q} 2>&1"


rule predict_summary:
    input:
        sheet=config["predict_samplesheet"],
        masks=[mask for slide in SLIDE_IDS for mask in slide_predictions(slide)],
        foregrounds=expand(PREDICT_PREPROCESSED / "{slide}" / "foreground.tif", slide=SLIDE_IDS),
    output:
        table=report(
            PREDICT / "summary.csv",
            caption="../report/predict_summary.rst",
            category="6. New slides",
        ),
        parquet=PREDICT / "summary.parquet",
        markdown=PREDICT / "summary.md",
    params:
        root=PREDICT,
        models=PREDICT_MODELS,
        prefix=PREDICT / "summary",
    log:
        LOGS / "predict" / "summary.log",
    benchmark:
        BENCHMARKS / "predict" / "summary.tsv"
    threads: rule_resources("predict_summary")["threads"]
    resources:
        mem_mb=rule_resources("predict_summary")["mem_mb"],
        runtime=rule_resources("predict_summary")["runtime"],
        gpu=rule_resources("predict_summary")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "python -m ramanseg predict-summary --sheet {input.sheet:q} --root {params.root:q}"
        " --models {params.models} --out-prefix {params.prefix:q} > {log:q} 2>&1"
