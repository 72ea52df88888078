"""The sweep: configs, the per-job runner, the results store, equivalence and aggregation.

The Snakemake workflow (`Snakefile`, `workflow/rules/`) only wires these together; each
stage is a `specbench` subcommand, so the same command runs by hand, in CI or on a cluster.
"""
