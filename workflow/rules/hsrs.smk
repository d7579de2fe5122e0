# Hyperspectral SRS of cells (`snakemake hsrs`): the synthetic HSRS cell phantom, the real
# C. elegans stack (when `hsrs.celegans_dir` is set), phasor segmentation of each with Dice
# per class and phasor plots, and the HSRS Dice table; plus the phasor baseline of the
# tumour table (fit_phasor, in the demo through the evaluate rule).

include: "hsrs_common.smk"


wildcard_constraints:
    hsrs_dataset="cells|celegans",


rule hsrs_cells:
    output:
        HSRS_CELL_FIELDS,
    params:
        outdir=HSRS_DATA / "cells",
        settings=settings("hsrs"),
    log:
        LOGS / "hsrs" / "cells.log",
    benchmark:
        BENCHMARKS / "hsrs" / "cells.tsv"
    threads: rule_resources("hsrs_cells")["threads"]
    resources:
        mem_mb=rule_resources("hsrs_cells")["mem_mb"],
        runtime=rule_resources("hsrs_cells")["runtime"],
        gpu=rule_resources("hsrs_cells")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "python -m ramanseg hsrs-cells --outdir {params.outdir:q} --settings {params.settings:q}"
        " > {log:q} 2>&1"


rule hsrs_celegans:
    output:
        HSRS_CELEGANS,
    params:
        settings=settings("hsrs"),
    log:
        LOGS / "hsrs" / "celegans.log",
    benchmark:
        BENCHMARKS / "hsrs" / "celegans.tsv"
    threads: rule_resources("hsrs_celegans")["threads"]
    resources:
        mem_mb=rule_resources("hsrs_celegans")["mem_mb"],
        runtime=rule_resources("hsrs_celegans")["runtime"],
        gpu=rule_resources("hsrs_celegans")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "python -m ramanseg hsrs-celegans --out {output:q} --settings {params.settings:q}"
        " > {log:q} 2>&1"


rule hsrs_phasor:
    input:
        stacks=lambda wildcards: hsrs_stacks(wildcards.hsrs_dataset),
    output:
        dice=HSRS / "phasor" / "{hsrs_dataset}" / "dice.csv",
        cursors=HSRS / "phasor" / "{hsrs_dataset}" / "cursors.json",
        plot=report(
            HSRS / "phasor" / "{hsrs_dataset}" / "phasor_plot.png",
            caption="../report/hsrs_phasor_plot.rst",
            category=HSRS_CATEGORY,
            subcategory="{hsrs_dataset}",
        ),
        plot_pdf=HSRS / "phasor" / "{hsrs_dataset}" / "phasor_plot.pdf",
        segmentation=report(
            HSRS / "phasor" / "{hsrs_dataset}" / "segmentation.png",
            caption="../report/hsrs_segmentation.rst",
            category=HSRS_CATEGORY,
            subcategory="{hsrs_dataset}",
        ),
        segmentation_pdf=HSRS / "phasor" / "{hsrs_dataset}" / "segmentation.pdf",
    params:
        outdir=lambda wildcards, output: Path(output.dice).parent,
        settings=settings("hsrs"),
    log:
        LOGS / "hsrs" / "phasor_{hsrs_dataset}.log",
    benchmark:
        BENCHMARKS / "hsrs" / "phasor_{hsrs_dataset}.tsv"
    threads: rule_resources("hsrs_phasor")["threads"]
    resources:
        mem_mb=rule_resources("hsrs_phasor")["mem_mb"],
        runtime=rule_resources("hsrs_phasor")["runtime"],
        gpu=rule_resources("hsrs_phasor")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "python -m ramanseg hsrs-phasor --dataset {wildcards.hsrs_dataset}"
        " --stacks {input.stacks:q} --outdir {params.outdir:q} --settings {params.settings:q}"
        " > {log:q} 2>&1"


rule hsrs_dice:
    input:
        # A function, so that tables other rule files append are seen.
        lambda wildcards: HSRS_DICE_TABLES,
    output:
        table=report(
            HSRS / "dice.csv",
            caption="../report/hsrs_dice.rst",
            category=HSRS_CATEGORY,
        ),
        parquet=HSRS / "dice.parquet",
        markdown=HSRS / "dice.md",
    params:
        prefix=HSRS / "dice",
    log:
        LOGS / "hsrs" / "dice.log",
    benchmark:
        BENCHMARKS / "hsrs" / "dice.tsv"
    threads: rule_resources("hsrs_dice")["threads"]
    resources:
        mem_mb=rule_resources("hsrs_dice")["mem_mb"],
        runtime=rule_resources("hsrs_dice")["runtime"],
        gpu=rule_resources("hsrs_dice")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "python -m ramanseg hsrs-dice --tables {input:q} --out-prefix {params.prefix:q}"
        " > {log:q} 2>&1"


rule hsrs:
    input:
        lambda wildcards: hsrs_outputs(),


# The phasor baseline of the tumour table (its entry in ramanseg.catalog puts it into the
# evaluate rule's table): cursors placed on the training samples' tissue pixels.
rule fit_phasor:
    input:
        stacks=preprocessed("stack.ome.tif", SPLIT["train"] + TEST_SAMPLES),
        masks=preprocessed("mask.tif", SPLIT["train"]),
        foregrounds=preprocessed("foreground.tif", SPLIT["train"]),
        split=SPLIT_JSON,
    output:
        model=MODELS / "{seed_dir}phasor" / "model.json",
        masks=predictions("{seed_dir}phasor", "mask"),
        probabilities=predictions("{seed_dir}phasor", "probability"),
    params:
        outdir=lambda wildcards: PREDICTIONS / f"{wildcards.seed_dir}phasor",
        settings=seeded_settings("seed", "channels", "hsrs"),
    log:
        LOGS / "models" / "{seed_dir}fit_phasor.log",
    benchmark:
        BENCHMARKS / "models" / "{seed_dir}fit_phasor.tsv"
    threads: rule_resources("fit_phasor")["threads"]
    resources:
        mem_mb=rule_resources("fit_phasor")["mem_mb"],
        runtime=rule_resources("fit_phasor")["runtime"],
        gpu=rule_resources("fit_phasor")["gpu"],
    conda:
        "../../envs/ramanseg.yaml"
    shell:
        "python -m ramanseg fit-phasor --stacks {input.stacks:q} --masks {input.masks:q}"
        " --foregrounds {input.foregrounds:q} --split {input.split:q}"
        " --model-out {output.model:q} --outdir {params.outdir:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"
