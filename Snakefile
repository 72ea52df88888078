# specbench: matched speculative vs baseline sweeps, equivalence, quality, metrics and report.
#
#   snakemake --cores all                                   # configs/default.yaml: offline, CPU, toy pair
#   snakemake --cores all --configfile configs/gemma2-9b.yaml
#   snakemake --profile profiles/slurm --configfile ...     # same rules on a cluster
#
# The config is validated (schema, files, vocabularies) in workflow/rules/common.smk before any
# rule is defined: a bad config stops here with one line naming the file and key.

from snakemake.utils import min_version

min_version("9.0")


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/run.smk"
include: "workflow/rules/equivalence.smk"
include: "workflow/rules/quality.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        final_targets(),
    default_target: True


onsuccess:
    print_summary(RESULTS)
