# Stage 3: greedy speculative tokens against the baseline's, prompt by prompt; a real
# mismatch (or any divergence where the config demands exactness) fails the rule.


rule check_equivalence:
    input:
        job=f"{RESULTS}/jobs/{{pair}}__{{backend}}__{{task}}.json",
        config=CONFIG_FILE,
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
