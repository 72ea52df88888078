# Shared set-up and helpers: the config (validated before any rule exists), paths, wildcard
# constraints, resources and target lists. Rules themselves hold no logic, only calls to these.

import os
import re
import sys

from specbench.errors import SpecbenchError
from specbench.workflow.config import load_config, logs_dir, reports_dir, results_dir
from specbench.workflow.progress import print_summary


def sweep_config_file():
    """The one config file of this run: `--configfile X`, else configs/default.yaml beside the Snakefile.

    Not Snakemake's `configfile:` directive on purpose: it deep-merges a --configfile over the
    default, so a real-run config would silently inherit the default's pairs and tasks.
    """
    given = list(workflow.overwrite_configfiles or [])
    if len(given) > 1:
        sys.exit("specbench: give one --configfile (got: " + ", ".join(map(str, given)) + ")")
    if given:  # Snakemake makes it absolute; jobs on other hosts find it relative to the working directory
        return os.path.relpath(given[0])
    # relative to the working directory, so no absolute path of this host is baked into a job
    return os.path.relpath(os.path.join(workflow.basedir, "configs", "default.yaml"))


def _read_raw(path):
    import yaml

    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def load_sweep_config():
    """specbench's own validation (schema + files + vocabularies): one line naming file and key, exit 2."""
    path = sweep_config_file()
    try:
        # Jobs on cluster hosts re-read the Snakefile: only the submitting process checks every
        # pair's model folders, so a checkpoint missing on one host fails only that pair's jobs.
        loaded = load_config(path, check_models=workflow.is_main_process)
    except SpecbenchError as error:
        sys.stderr.write(f"specbench: config error: {error}\n")
        sys.exit(2)
    # Snakemake's `config` holds the --configfile as read plus any `--config key=value`; such
    # overrides would bypass this validation and the stored config, so they are refused.
    as_written = _read_raw(path) if workflow.overwrite_configfiles else {}
    if dict(config) != as_written:
        changed = sorted(key for key in set(config) | set(as_written) if config.get(key) != as_written.get(key))
        sys.stderr.write(f"specbench: config error: --config overrides are not supported ({', '.join(changed)}); edit {path}\n")
        sys.exit(2)
    return path, loaded


CONFIG_FILE, SWEEP = load_sweep_config()
RESULTS = str(results_dir(SWEEP))
LOGS = str(logs_dir(SWEEP))
REPORTS = str(reports_dir(SWEEP))
MODELS = SWEEP["paths"]["models"]

PAIRS = [pair["name"] for pair in SWEEP["pairs"]]
TOY_PAIRS = [pair["name"] for pair in SWEEP["pairs"] if "toy" in pair]
BACKENDS = list(SWEEP["backends"])
TASKS = [task["name"] for task in SWEEP["tasks"]]
JOBS = [(pair, backend, task) for pair in PAIRS for backend in BACKENDS for task in TASKS]
SAMPLING = SWEEP["equivalence"]["sampling_test"]

# GPU jobs ask the scheduler for one GPU each (and a few cores). CPU jobs take
# resources.run.threads cores, or else every core given to Snakemake, and use exactly that many
# threads (`specbench run --threads`), so jobs side by side never fight over a core.
GPUS = 0 if SWEEP["device"] == "cpu" else 1


def local_cores(default):
    """Cores given to Snakemake (--cores); cluster executors run without it, so `default` there."""
    try:
        return workflow.cores
    except Exception:  # WorkflowError: "requires a total number of cores" under remote executors
        return default


RUN_THREADS = SWEEP["resources"]["run"].get("threads") or (local_cores(2) if SWEEP["device"] == "cpu" else 4)
PREPARE_THREADS = SWEEP["resources"]["prepare"].get("threads") or local_cores(2)


def _alternatives(names):
    return "|".join(re.escape(name) for name in names)


wildcard_constraints:
    pair=_alternatives(PAIRS),
    backend=_alternatives(BACKENDS),
    task=_alternatives(TASKS),


def rule_resources(stage, key):
    return SWEEP["resources"][stage][key]


def toy_pair_arguments(wildcards):
    settings = next(pair["toy"] for pair in SWEEP["pairs"] if pair["name"] == wildcards.pair)
    flags = {"seed": "--seed", "steps_scale": "--steps-scale", "eval_problems": "--eval-problems"}
    return " ".join(f"{flags[key]} {value}" for key, value in sorted(settings.items()))


def pair_inputs(wildcards):
    """A toy pair is trained first; hub and local pairs need nothing from another rule."""
    if wildcards.pair in TOY_PAIRS:
        return [f"{MODELS}/{wildcards.pair}/toy"]
    return []


def job_manifests(pair=None, task=None):
    return [
        f"{RESULTS}/jobs/{p}__{b}__{t}.json"
        for p, b, t in JOBS
        if pair in (None, p) and task in (None, t)
    ]


def quality_manifests(wildcards):
    return job_manifests(pair=wildcards.pair, task=wildcards.task)


def equivalence_files():
    return [f"{RESULTS}/equivalence/{p}__{b}__{t}.json" for p, b, t in JOBS]


def quality_files():
    return [f"{RESULTS}/quality/{pair}__{task}.json" for pair in PAIRS for task in TASKS]


def sampling_files():
    if not SAMPLING["enabled"]:
        return []
    return [f"{RESULTS}/sampling/{SAMPLING['pair']}__{SAMPLING['backend']}.json"]


def final_targets():
    return [f"{REPORTS}/index.html", *equivalence_files(), *quality_files(), *sampling_files()]


# Folder arguments derived from a rule's own files (not hard-coded), so a rule stays correct
# wherever its files are staged.
def results_of_output(wildcards, output):
    """RESULTS from an output at RESULTS/<stage>/<file>."""
    return os.path.dirname(os.path.dirname(output[0]))


def results_of_input(wildcards, input):
    """RESULTS from a first input at RESULTS/<stage>/<file>."""
    return os.path.dirname(os.path.dirname(input[0]))


def folder_of_output(wildcards, output):
    return os.path.dirname(output[0])
