# `snakemake package`: the trained models, their settings and versions in one models.zip
# (ramanseg.package), which `snakemake predict` reads on another machine.

rule package:
    input:
        unpack(package_inputs),
    output:
        RESULTS / "package" / "models.zip",
    params:
        models=PACKAGE_MODELS,
        models_dir=MODELS,
        nnunet_model_dir=NNUNET_MODEL,
        folds=FOLDS,
        settings=settings("channels", "annotations", "preprocess", "seed", "nnunet", "models"),
    log:
        LOGS / "package.log",
    benchmark:
        BENCHMARKS / "package.tsv"
    threads: rule_resources("package")["threads"]
    resources:
        mem_mb=rule_resources("package")["mem_mb"],
        runtime=rule_resources("package")["runtime"],
        gpu=rule_resources("package")["gpu"],
    conda:
        "../../envs/nnunet.yaml"
    shell:
        "python -m ramanseg package --models {params.models} --models-dir {params.models_dir:q}"
        " --nnunet-model-dir {params.nnunet_model_dir:q} --folds {params.folds}"
        " --out {output:q} --settings {params.settings:q} > {log:q} 2>&1"
