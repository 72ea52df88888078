# Stage 2: one job per (pair, backend, task) runs all of its cells (baseline and every k,
# temperature, dtype) in one process; cells are stored as they finish, the manifest last.


rule run_job:
    input:
        pair=f"{MODELS}/{{pair}}/pair.json",
        config=local(CONFIG_FILE),
    output:
        f"{RESULTS}/jobs/{{pair}}__{{backend}}__{{task}}.json",
    log:
        f"{LOGS}/run/{{pair}}__{{backend}}__{{task}}.log",
    threads: RUN_THREADS
    resources:
        gpu=GPUS,
        mem_mb=rule_resources("run", "mem_mb"),
        runtime=rule_resources("run", "runtime"),
    shell:
        "specbench run --config {input.config} --pair {wildcards.pair} --backend {wildcards.backend}"
        " --task {wildcards.task} --threads {threads} > {log} 2>&1"
