# Stage 1: models. The toy pair is trained here; hub models are downloaded (or found in the
# cache when HF_HUB_OFFLINE=1); then each pair's vocabularies are checked and recorded.


rule toy_pair:
    output:
        directory(f"{MODELS}/{{pair}}/toy"),
    log:
        f"{LOGS}/models/{{pair}}.toy-pair.log",
    params:
        arguments=toy_pair_arguments,
    threads: PREPARE_THREADS
    resources:
        mem_mb=rule_resources("prepare", "mem_mb"),
        runtime=rule_resources("prepare", "runtime"),
    shell:
        "specbench toy-pair --out {output} {params.arguments} > {log} 2>&1"


rule prepare_pair:
    input:
        pair_inputs,
        config=local(CONFIG_FILE),
    output:
        f"{MODELS}/{{pair}}/pair.json",
    log:
        f"{LOGS}/models/{{pair}}.prepare.log",
    resources:
        mem_mb=rule_resources("prepare", "mem_mb"),
        runtime=rule_resources("prepare", "runtime"),
    shell:
        "python -m specbench.workflow.prepare --config {input.config} --pair {wildcards.pair} > {log} 2>&1"
