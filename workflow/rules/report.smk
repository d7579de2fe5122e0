# The per-rule times for the report, and the `paper` target.


rule benchmark_summary:
    input:
        paper_outputs(),
    output:
        table=report(
            RESULTS / "report" / "rule_times.csv",
            caption="../report/rule_times.rst",
            category="5. Run",
        ),
        parquet=RESULTS / "report" / "rule_times.parquet",
        markdown=RESULTS / "report" / "rule_times.md",
        plot=report(
            RESULTS / "report" / "rule_times.png",
            caption="../report/rule_times.rst",
            category="5. Run",
        ),
        pdf=RESULTS / "report" / "rule_times.pdf",
    params:
        benchmarks=BENCHMARKS,
        prefix=RESULTS / "report" / "rule_times",
    log:
        LOGS / "benchmark_summary.log",
    benchmark:
        BENCHMARKS / "benchmark_summary.tsv"
    threads: rule_resources("benchmark_summary")["threads"]
    resources:
        mem_mb=rule_resources("benchmark_summary")["mem_mb"],
        runtime=rule_resources("benchmark_summary")["runtime"],
        gpu=rule_resources("benchmark_summary")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "python -m ramanseg benchmark-summary --benchmarks {params.benchmarks:q}"
        " --out-prefix {params.prefix:q} > {log:q} 2>&1"


localrules:
    paper,


rule paper:
    input:
        paper_outputs(),
        RESULTS / "report" / "rule_times.csv",
