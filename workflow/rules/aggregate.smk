# Stage 5: every cell (and the equivalence files) into tables with metrics and verdicts.


rule aggregate:
    input:
        job_manifests(),
        equivalence_files(),
        quality_files(),
    output:
        f"{RESULTS}/tables/cells.parquet",
        f"{RESULTS}/tables/samples.parquet",
        f"{RESULTS}/tables/verdicts.json",
    log:
        f"{LOGS}/aggregate.log",
    params:
        results=results_of_output,
    resources:
        mem_mb=rule_resources("analysis", "mem_mb"),
        runtime=rule_resources("analysis", "runtime"),
    shell:
        "specbench aggregate {params.results} > {log} 2>&1"
