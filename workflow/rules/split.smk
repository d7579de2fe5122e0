# The patient-grouped train / validation / test split and cross-validation folds.


rule split:
    input:
        sheet=SAMPLESHEET,
    output:
        SPLIT_JSON,
    params:
        settings=settings("split"),
    log:
        LOGS / "split.log",
    benchmark:
        BENCHMARKS / "split.tsv"
    threads: rule_resources("split")["threads"]
    resources:
        mem_mb=rule_resources("split")["mem_mb"],
        runtime=rule_resources("split")["runtime"],
        gpu=rule_resources("split")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "python -m ramanseg split --samples {input.sheet:q} --out {output:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"
