# Input data: the synthetic dataset (demo) and per-sample preprocessing.

if USE_PHANTOM:

    rule phantom:
        output:
            sheet=SAMPLESHEET,
            srs=list(SAMPLES["srs"]),
            # Samples without H&E (an empty `he`) have no file to write.
            he=[he for he in SAMPLES["he"] if he],
            annotations=list(SAMPLES["annotations"]),
            preview=report(
                PHANTOM_DIR / "preview.png",
                caption="../report/phantom.rst",
                category="1. Data",
            ),
        params:
            outdir=PHANTOM_DIR,
            settings=settings("phantom", "channels", "annotations"),
        log:
            LOGS / "phantom.log",
        benchmark:
            BENCHMARKS / "phantom.tsv"
        threads: rule_resources("phantom")["threads"]
        resources:
            mem_mb=rule_resources("phantom")["mem_mb"],
            runtime=rule_resources("phantom")["runtime"],
            gpu=rule_resources("phantom")["gpu"],
        conda:
            "../../envs/ramanseg.yaml"
        shell:
            "python -m ramanseg phantom --outdir {params.outdir:q} --threads {threads}"
            " --settings {params.settings:q} > {log:q} 2>&1"


rule preprocess:
    input:
        unpack(sample_files),
    output:
        stack=PREPROCESSED / "{sample}" / "stack.ome.tif",
        classes=PREPROCESSED / "{sample}" / "classes.tif",
        mask=PREPROCESSED / "{sample}" / "mask.tif",
        foreground=PREPROCESSED / "{sample}" / "foreground.tif",
        qc_json=PREPROCESSED / "{sample}" / "qc.json",
    params:
        he=he_argument,
        outdir=lambda wildcards, output: Path(output.stack).parent,
        settings=settings("channels", "annotations", "preprocess", "seed"),
    log:
        LOGS / "preprocess" / "{sample}.log",
    benchmark:
        BENCHMARKS / "preprocess" / "{sample}.tsv"
    # Every sample first: the nnU-Net chain, the demo's longest, needs all of them.
    priority: 10
    threads: rule_resources("preprocess")["threads"]
    resources:
        mem_mb=rule_resources("preprocess")["mem_mb"],
        runtime=rule_resources("preprocess")["runtime"],
        gpu=rule_resources("preprocess")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "python -m ramanseg preprocess --sample {wildcards.sample} --srs {input.srs:q} --threads {threads}"
        " {params.he} --annotations {input.annotations:q} --outdir {params.outdir:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"


# The paper's Figure 1 per sample, from the preprocessed files: its own job, so that the
# models do not wait for the figures and a figure change does not preprocess again.
rule qc_figure:
    input:
        unpack(sample_he),
        stack=PREPROCESSED / "{sample}" / "stack.ome.tif",
        classes=PREPROCESSED / "{sample}" / "classes.tif",
        foreground=PREPROCESSED / "{sample}" / "foreground.tif",
    output:
        report(
            PREPROCESSED / "{sample}" / "qc.png",
            caption="../report/qc.rst",
            category="1. Data",
            subcategory="Preprocessing QC",
            labels={"sample": "{sample}"},
        ),
    params:
        he=he_argument,
        settings=settings("channels", "annotations"),
    log:
        LOGS / "qc_figure" / "{sample}.log",
    benchmark:
        BENCHMARKS / "qc_figure" / "{sample}.tsv"
    threads: rule_resources("qc_figure")["threads"]
    resources:
        mem_mb=rule_resources("qc_figure")["mem_mb"],
        runtime=rule_resources("qc_figure")["runtime"],
        gpu=rule_resources("qc_figure")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "python -m ramanseg qc-figure --sample {wildcards.sample} --stack {input.stack:q}"
        " --classes {input.classes:q} --foreground {input.foreground:q} {params.he}"
        " --out {output:q} --settings {params.settings:q} > {log:q} 2>&1"


# `snakemake data`: every sample preprocessed and its QC figure drawn, to look at before
# any training starts.
localrules:
    data,


rule data:
    input:
        preprocessed("stack.ome.tif"),
        preprocessed("qc.png"),
