# mitp: the paper as one DAG. Rules call the `mitp` CLI; this file only wires paths.
#   snakemake --cores 8 all                         full reproduction (GPU, internet)
#   snakemake --profile workflow/profiles/demo quick  one data set end to end, offline (CPU, under 3 minutes)
#   snakemake --profile workflow/profiles/demo      offline demo on the twins (CPU, minutes)
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


# The schema is generated from mitp's config models (mitp/config.py); defaults stay out of `config` so
# that its hash, which decides reruns, changes only with what the user wrote.
validate(config, "workflow/schemas/config.schema.yaml", set_default=False)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/score.smk"


rule all:
    input:
        all_targets(),
    default_target: True


rule quick:
    input:
        quick_targets(),
