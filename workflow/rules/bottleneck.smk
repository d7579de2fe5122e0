# The bottleneck experiment (paper section 3.2.1, its Table 1).


rule bottleneck:
    input:
        masks=preprocessed("mask.tif"),
    output:
        csv=report(
            RESULTS / "bottleneck" / "bottleneck.csv",
            caption="../report/bottleneck.rst",
            category="2. Bottleneck",
        ),
        parquet=RESULTS / "bottleneck" / "bottleneck.parquet",
        markdown=RESULTS / "bottleneck" / "bottleneck.md",
        png=report(
            RESULTS / "bottleneck" / "bottleneck.png",
            caption="../report/bottleneck.rst",
            category="2. Bottleneck",
        ),
        pdf=RESULTS / "bottleneck" / "bottleneck.pdf",
    params:
        prefix=RESULTS / "bottleneck" / "bottleneck",
        settings=settings("bottleneck"),
    log:
        LOGS / "bottleneck.log",
    benchmark:
        BENCHMARKS / "bottleneck.tsv"
    threads: rule_resources("bottleneck")["threads"]
    resources:
        mem_mb=rule_resources("bottleneck")["mem_mb"],
        runtime=rule_resources("bottleneck")["runtime"],
        gpu=rule_resources("bottleneck")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "python -m ramanseg bottleneck --masks {input.masks:q} --out-prefix {params.prefix:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"
