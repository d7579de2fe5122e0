# Helpers of the spectra rules (spectra.smk): paths, dataset tables, the target's outputs.

SPECTRA = RESULTS / "spectra"
SPECTRA_DATASETS = list(config["spectra"]["datasets"])
SPECTRA_FIGURES = ["metrics.md", "training_curves.png", "confusion.png", "spectra.png", "explanations.png"]
SPECTRA_CATEGORY = "4. Spectra"


wildcard_constraints:
    spectra_dataset="|".join(SPECTRA_DATASETS),


def spectra_table(dataset):
    """The table of a dataset: the synthetic set's output for `table: ""`; a relative path
    from the working directory, else from the workflow (the shipped tables)."""
    table = config["spectra"]["datasets"][dataset]["table"]
    if not table:
        return SPECTRA / "synthetic" / f"{dataset}.parquet"
    if Path(table).is_absolute() or Path(table).exists():
        return Path(table)
    return Path(workflow.basedir) / table


def check_spectra_datasets():
    """Stop before any job on a `transfer_from` that names no dataset, or a dataset that
    is its own source."""
    for name, entry in config["spectra"]["datasets"].items():
        source = entry.get("transfer_from")
        key = f"config key `spectra.datasets.{name}.transfer_from`"
        if source is not None and source not in SPECTRA_DATASETS:
            stop(f"{key}: {source!r} is not a dataset of spectra.datasets ({', '.join(SPECTRA_DATASETS)})")
        if source == name:
            stop(f"{key}: a dataset cannot be its own pretraining task; name another dataset")


def spectra_inputs(wildcards):
    """The dataset's table and, if it names one, its transfer source's table."""
    entry = config["spectra"]["datasets"][wildcards.spectra_dataset]
    inputs = {"table": spectra_table(wildcards.spectra_dataset)}
    if entry.get("transfer_from"):
        inputs["source"] = spectra_table(entry["transfer_from"])
    return inputs


def spectra_source_argument(wildcards, input):
    """`--source PATH` when the dataset has a transfer source."""
    return f"--source {shlex.quote(str(input.source))}" if "source" in input.keys() else ""


def spectra_outputs():
    """Everything `snakemake spectra` writes."""
    return [
        *expand(SPECTRA / "metrics.{ext}", ext=["csv", "parquet", "md"]),
        *expand(SPECTRA / "{dataset}" / "{name}", dataset=SPECTRA_DATASETS, name=SPECTRA_FIGURES),
    ]


#: The samples the per-pixel 1D-CNN reads: training and validation pixels, and the test
#: samples it predicts and explains (their masks only for the band importance).
PIXEL_CNN_SAMPLES = list(SPLIT["train"]) + list(SPLIT["val"]) + TEST_SAMPLES
