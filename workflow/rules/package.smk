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


# RamanSeg's prototypes' source patches, cropped from the training stacks so that the
# package shows "this looks like that" on new slides without the training data.
rule prototype_patches:
    input:
        stacks=training_inputs()["stacks"],
        weights=MODELS / "ramanseg" / "model.pt",
    output:
        MODELS / "ramanseg" / "prototype_patches.npz",
    params:
        model_dir=MODELS / "ramanseg",
        settings=settings("channels", "annotations", "interpret"),
    log:
        LOGS / "models" / "prototype_patches.log",
    benchmark:
        BENCHMARKS / "models" / "prototype_patches.tsv"
    threads: rule_resources("prototype_patches")["threads"]
    resources:
        mem_mb=rule_resources("prototype_patches")["mem_mb"],
        runtime=rule_resources("prototype_patches")["runtime"],
        gpu=rule_resources("prototype_patches")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m ramanseg prototype-patches --model-dir {params.model_dir:q}"
        " --stacks {input.stacks:q} --out {output:q} --settings {params.settings:q}"
        " > {log:q} 2>&1"
