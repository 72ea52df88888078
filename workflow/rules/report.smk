# Stage 6: the HTML/Markdown report, regenerated from the stored tables only.


rule report:
    input:
        f"{RESULTS}/tables/cells.parquet",
        f"{RESULTS}/tables/verdicts.json",
    output:
        f"{REPORTS}/index.html",
        f"{REPORTS}/index.md",
    log:
        f"{LOGS}/report.log",
    params:
        results=results_of_input,
        out=folder_of_output,
    resources:
        mem_mb=rule_resources("analysis", "mem_mb"),
        runtime=rule_resources("analysis", "runtime"),
    shell:
        "specbench report {params.results} --out {params.out} > {log} 2>&1"
