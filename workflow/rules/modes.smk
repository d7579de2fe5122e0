# The targets of the other mode: training (no `model_package`) or `snakemake predict` (a
# `model_package`). Each mode defines only its own rules, so a target of the other one
# would end in Snakemake's bare "No rule to produce ..."; here it is a rule that stops the
# run (exit code 2) with the setting to change. Its input function runs only when the
# target is asked for, and the rule has no output, so it never takes part in a plan.

#: Training's entry points (README): the default target and the named stages.
TRAINING_TARGETS = ["all", "data", "paper", "package", "hsrs", "spectra"]


def other_mode_target(target):
    """An input function that stops the run: `target` belongs to the other mode."""
    if PREDICTING:
        message = (
            f"`snakemake {target}` is a target of training, but config key `model_package` "
            f"is set ({config['model_package']}), which makes this run a prediction of new "
            "slides whose only target is `predict`. Fix: run `snakemake predict`, or leave "
            f"`model_package` empty to train: `snakemake {target} --config model_package=`"
        )
    else:
        message = (
            f"`snakemake {target}` segments new slides with a model package, but config "
            "key `model_package` is empty. Fix: name the package and the slides' sample "
            f"sheet: `snakemake {target} --config model_package=path/to/models.zip "
            "predict_samplesheet=slides.tsv` (`snakemake package` writes "
            f"{RESULTS / 'package' / 'models.zip'}; README: Segment new slides)"
        )

    def refuse(wildcards):
        stop(message)

    return refuse


for _target in TRAINING_TARGETS if PREDICTING else ["predict"]:

    rule:
        """Not a target of this mode (training, or `predict` with a `model_package`): stops."""
        name:
            _target
        input:
            other_mode_target(_target),
