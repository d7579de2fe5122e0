# `snakemake package`: the trained models, their settings and versions in one models.zip
# (ramanseg.package), which `snakemake predict` reads on another machine.

PACKAGE_MODELS = config["package"]["models"]
PACKAGE_TORCH_MODELS = [model for model in PACKAGE_MODELS if model != "nnunet"]


def package_inputs(wildcards):
    """The trained files the package bundles: our models' folders, nnU-Net's folds."""
    inputs = {
        "weights": [MODELS / model / "model.pt" for model in PACKAGE_TORCH_MODELS],
        "metadata": [MODELS / model / "model.json" for model in PACKAGE_TORCH_MODELS],
    }
    if "ramanseg" in PACKAGE_TORCH_MODELS:
        inputs["prototypes"] = MODELS / "ramanseg" / "prototypes.json"
    if "nnunet" in PACKAGE_MODELS:
        inputs["folds"] = expand(
            NNUNET_MODEL / "fold_{fold}" / "validation" / "summary.json", fold=FOLDS
        )
    return inputs


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
