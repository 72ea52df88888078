# Stage 3: greedy speculative tokens against the baseline's, prompt by prompt; a real
# mismatch (or any divergence where the config demands exactness) fails the rule.


rule check_equivalence:
    input:
        job=f"{RESULTS}/jobs/{{pair}}__{{backend}}__{{task}}.json",
        config=local(CONFIG_FILE),
    output:
        f"{RESULTS}/equivalence/{{pair}}__{{backend}}__{{task}}.json",
    log:
        f"{LOGS}/equivalence/{{pair}}__{{backend}}__{{task}}.log",
    params:
        results=results_of_output,
    resources:
        mem_mb=rule_resources("analysis", "mem_mb"),
        runtime=rule_resources("analysis", "runtime"),
    shell:
        "specbench check-equivalence {params.results} --config {input.config} --pair {wildcards.pair}"
        " --backend {wildcards.backend} --task {wildcards.task} > {log} 2>&1"


# Sampled cells cannot be compared token by token (other random streams); instead the
# speculative sampler's first tokens are G-tested against the target's exact distribution.
rule sampling_test:
    input:
        pair=f"{MODELS}/{{pair}}/pair.json",
        config=local(CONFIG_FILE),
    output:
        f"{RESULTS}/sampling/{{pair}}__{{backend}}.json",
    log:
        f"{LOGS}/sampling/{{pair}}__{{backend}}.log",
    threads: RUN_THREADS
    resources:
        gpu=GPUS,
        mem_mb=rule_resources("run", "mem_mb"),
        runtime=rule_resources("run", "runtime"),
    shell:
        "python -m specbench.workflow.sampling --config {input.config} --threads {threads} > {log} 2>&1"
