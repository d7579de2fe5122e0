# Interpretability (paper section 4.1): Captum on the nnU-Net ensemble, RamanSeg prototypes.


rule interpret_nnunet:
    input:
        checkpoints=expand(NNUNET_MODEL / "fold_{fold}" / "checkpoint_final.pth", fold=FOLDS),
        masks=predictions("nnunet", "mask"),
        probabilities=predictions("nnunet", "probability"),
        stacks=preprocessed("stack.ome.tif", TEST_SAMPLES),
        truth=preprocessed("mask.tif", TEST_SAMPLES),
        classes=preprocessed("classes.tif", TEST_SAMPLES),
        foreground=preprocessed("foreground.tif", TEST_SAMPLES),
        split=SPLIT_JSON,
    output:
        figures=[
            report(
                INTERPRET / "nnunet" / f"{name}.png",
                caption=f"../report/{name}.rst",
                category="4. Interpretability",
                subcategory="nnU-Net",
            )
            for name in NNUNET_FIGURES
        ],
        pdfs=expand(INTERPRET / "nnunet" / "{name}.pdf", name=NNUNET_FIGURES),
        tables=expand(
            INTERPRET / "nnunet" / "{name}.csv", name=["integrated_gradients", "feature_ablation"]
        ),
        target=INTERPRET / "nnunet" / "target.json",
    params:
        nnunet=NNUNET,
        outdir=lambda wildcards, output: Path(output.target).parent,
        settings=settings(
            "seed", "deterministic", "device", "channels", "annotations", "nnunet", "interpret"
        ),
    log:
        LOGS / "interpret" / "nnunet.log",
    benchmark:
        BENCHMARKS / "interpret" / "nnunet.tsv"
    threads: rule_resources("interpret_nnunet")["threads"]
    resources:
        mem_mb=rule_resources("interpret_nnunet")["mem_mb"],
        runtime=rule_resources("interpret_nnunet")["runtime"],
        gpu=rule_resources("interpret_nnunet")["gpu"],
    conda:
        "../../envs/nnunet.yaml"
    shell:
        "python -m ramanseg interpret-nnunet --nnunet-dir {params.nnunet:q}"
        " --stacks {input.stacks:q} --truth {input.truth:q} --classes {input.classes:q}"
        " --foregrounds {input.foreground:q} --predictions {input.masks:q}"
        " {input.probabilities:q} --split {input.split:q} --outdir {params.outdir:q}"
        " --threads {threads}"
        " --settings {params.settings:q} > {log:q} 2>&1"


rule interpret_prototypes:
    input:
        weights=MODELS / "ramanseg" / "model.pt",
        metadata=MODELS / "ramanseg" / "model.json",
        stacks=preprocessed("stack.ome.tif"),
        classes=preprocessed("classes.tif"),
        caption_templates=[REPORT_TEMPLATES / f"{name}.rst" for name in PROTOTYPE_CAPTIONED],
    output:
        figures=[
            report(
                INTERPRET / "ramanseg" / f"{name}.png",
                caption=prototype_caption(name),
                category="4. Interpretability",
                subcategory="RamanSeg",
            )
            for name in PROTOTYPE_FIGURES
        ],
        pdfs=expand(INTERPRET / "ramanseg" / "{name}.pdf", name=PROTOTYPE_FIGURES),
        tables=expand(INTERPRET / "ramanseg" / "{name}.csv", name=PROTOTYPE_FIGURES),
        summary=report(
            INTERPRET / "ramanseg" / "prototype_summary.csv",
            caption=prototype_caption("prototype_summary"),
            category="4. Interpretability",
            subcategory="RamanSeg",
        ),
        gallery=report(
            INTERPRET / "ramanseg" / "prototype_gallery.png",
            caption=prototype_caption("prototype_gallery"),
            category="4. Interpretability",
            subcategory="RamanSeg",
        ),
        captions=expand(PROTOTYPE_CAPTIONS / "{name}.rst", name=PROTOTYPE_CAPTIONED),
    params:
        model_dir=lambda wildcards, input: Path(input.weights).parent,
        outdir=lambda wildcards, output: Path(output.gallery).parent,
        captions_dir=PROTOTYPE_CAPTIONS,
        settings=settings("seed", "channels", "annotations", "interpret"),
    log:
        LOGS / "interpret" / "prototypes.log",
    benchmark:
        BENCHMARKS / "interpret" / "prototypes.tsv"
    threads: rule_resources("interpret_prototypes")["threads"]
    resources:
        mem_mb=rule_resources("interpret_prototypes")["mem_mb"],
        runtime=rule_resources("interpret_prototypes")["runtime"],
        gpu=rule_resources("interpret_prototypes")["gpu"],
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m ramanseg interpret-prototypes --model-dir {params.model_dir:q}"
        " --stacks {input.stacks:q} --classes {input.classes:q} --outdir {params.outdir:q}"
        " --caption-templates {input.caption_templates:q}"
        " --captions-dir {params.captions_dir:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"
