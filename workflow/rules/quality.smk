# Stage 4: task quality per (pair, task) with the task's own metric and 95% CI, baseline vs
# each speculative setting, sample by sample.


rule quality:
    input:
        quality_manifests,
        config=local(CONFIG_FILE),
    output:
        f"{RESULTS}/quality/{{pair}}__{{task}}.json",
    log:
        f"{LOGS}/quality/{{pair}}__{{task}}.log",
    resources:
        mem_mb=rule_resources("analysis", "mem_mb"),
        runtime=rule_resources("analysis", "runtime"),
    shell:
        "python -m specbench.workflow.quality --config {input.config} --pair {wildcards.pair}"
        " --task {wildcards.task} > {log} 2>&1"
