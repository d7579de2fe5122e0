# ramanseg: from stimulated-Raman images to tumour segmentations and the RamanSeg paper's
# tables and figures. This file only wires the stages; see README.md and
# workflow/rules/*.smk.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


if PREDICTING:

    # `snakemake predict --config predict_samplesheet=SHEET model_package=ZIP`: only the
    # package and the slides are needed; `predict` is then the default target.
    include: "workflow/rules/predict.smk"

    localrules:
        predict,

    rule predict:
        input:
            predict_outputs(),
        default_target: True

else:

    include: "workflow/rules/data.smk"
    include: "workflow/rules/split.smk"
    include: "workflow/rules/bottleneck.smk"
    include: "workflow/rules/nnunet.smk"
    include: "workflow/rules/models.smk"
    include: "workflow/rules/evaluate.smk"
    include: "workflow/rules/interpret.smk"
    include: "workflow/rules/spectra.smk"
    include: "workflow/rules/hsrs.smk"
    include: "workflow/rules/hsrs_models.smk"
    include: "workflow/rules/hsrs_nnunet.smk"
    include: "workflow/rules/report.smk"
    include: "workflow/rules/package.smk"

    check_resource_rules()

    rule all:
        input:
            all_outputs(),
        default_target: True


# The other mode's targets stop the run with the setting to change.
include: "workflow/rules/modes.smk"
