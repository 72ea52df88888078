"""The workflow on a real SLURM cluster: a single node on this machine, started by .ci/slurm-up.

Jobs go through `sbatch` (Snakemake's SLURM executor plugin, profiles/slurm); that they did is
read from the scheduler's own record, the job-completion file (this cluster has no accounting
database, so no sacct). Then:

- the default workflow run through SLURM gives the same tokens and the same claim verdicts as the
  local run of the same config (the `default_workflow_run` fixture), starting from the toy pair
  that run trained;
- a job that fails on the cluster (its checkpoint is missing on the compute host) fails with a
  clear message, and the rest of the sweep finishes and stays intact.

Starting SLURM needs root: outside CI (CI=true) a non-root session skips these tests; in CI
they always run, and a cluster that does not start fails them with slurm-up's message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.test_profiles import PROFILES, SLURM_WITHOUT_ACCOUNTING, output_of, snakemake

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = (REPO.parent / "shared" / "data").resolve()
# Snakemake finishes running jobs when told to stop, so a hung run is killed 10 s after its limit.
WORKFLOW_TIMEOUT_S = 40 * 60
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


@dataclass(frozen=True)
class SlurmCluster:
    jobcomp: Path  # one line per finished job: "JobId=.. Name=.. JobState=COMPLETED ..."

    def finished_jobs(self) -> dict[str, dict[str, str]]:
        """Finished jobs by SLURM job id, each as its jobcomp fields."""
        if not self.jobcomp.is_file():
            return {}
        jobs = {}
        for line in self.jobcomp.read_text().splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            if "JobId" in fields:
                jobs[fields["JobId"]] = fields
        return jobs


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """A running single-node cluster; stopped at the end if this session started it."""
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("starting SLURM needs root (CI runs these tests as root)")
    up = subprocess.run([REPO / ".ci" / "slurm-up"], capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        pytest.fail((up.stderr.strip() or up.stdout.strip() or f".ci/slurm-up exited {up.returncode}"), pytrace=False)
    started_here = "already running" not in up.stdout
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    jobcomp = re.search(r"^JobCompLoc\s*=\s*(\S+)", config, re.MULTILINE)
    assert jobcomp, "slurm.conf names no JobCompLoc"
    yield SlurmCluster(jobcomp=Path(jobcomp.group(1)))
    if started_here:
        subprocess.run([REPO / ".ci" / "slurm-down"], capture_output=True, text=True, timeout=120)


def run_through_slurm(workdir: Path, *args: str, command_prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """The workflow at REPO, run in `workdir` through profiles/slurm (with this cluster's settings)."""
    arguments = ["--snakefile", REPO / "Snakefile", "--directory", workdir, "--profile", PROFILES / "slurm",
                 *SLURM_WITHOUT_ACCOUNTING, *args]
    if command_prefix is None:
        return snakemake(*arguments, cwd=workdir, timeout=WORKFLOW_TIMEOUT_S)
    command = [*command_prefix, "timeout", "-k", "10", str(WORKFLOW_TIMEOUT_S), sys.executable, "-m", "snakemake",
               *map(str, arguments)]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True)


@dataclass(frozen=True)
class SubmittedJob:
    rule: str
    wildcards: str  # as the plugin names the job's log folder, e.g. "shared" or "" for none


def submitted_jobs(result: subprocess.CompletedProcess) -> dict[str, SubmittedJob]:
    """SLURM job id -> job, for every job Snakemake submitted with sbatch in this run. The plugin
    logs each job to .snakemake/slurm_logs/rule_<rule>/<wildcards>/<job id>.log."""
    submitted = {}
    for job_id, log in SUBMITTED.findall(result.stdout + result.stderr):
        parts = Path(log).parts
        rule_index = max(i for i, part in enumerate(parts) if part.startswith("rule_"))
        submitted[job_id] = SubmittedJob(parts[rule_index].removeprefix("rule_"), "/".join(parts[rule_index + 1:-1]))
    return submitted


def assert_ran_through_sbatch(cluster: SlurmCluster, submitted: dict[str, SubmittedJob], result,
                              failed: set[str] = frozenset()) -> None:
    """Each submitted job is in the scheduler's completion record, COMPLETED (or FAILED if its id
    is in `failed`), all under the one job name the plugin gives a run (its run id)."""
    assert submitted, "no job was submitted with sbatch\n" + output_of(result)
    finished = cluster.finished_jobs()
    missing = sorted(set(submitted) - set(finished))
    assert not missing, f"SLURM jobs {missing} are not in {cluster.jobcomp}\n" + output_of(result)
    states = {job_id: finished[job_id]["JobState"] for job_id in submitted}
    expected = {job_id: "FAILED" if job_id in failed else "COMPLETED" for job_id in submitted}
    assert states == expected
    assert len({finished[job_id]["Name"] for job_id in submitted}) == 1


def cell_tokens(results: Path) -> dict[tuple[str, int], list[int]]:
    """(cell file relative to the results folder, prompt index) -> generated tokens."""
    tokens = {}
    for cell_file in sorted((results / "cells").rglob("*.json")):
        cell = json.loads(cell_file.read_text())
        for row in cell["rows"]:
            tokens[(str(cell_file.relative_to(results)), row["prompt_index"])] = row["tokens"]
    return tokens


def test_default_workflow_through_slurm_matches_the_local_run(slurm_cluster, default_workflow_run, tmp_path):
    """The default config, every job an sbatch job, against the local run of the same config."""
    local_results = Path(default_workflow_run)  # <workdir>/results/default, by the default config's paths
    workdir = tmp_path / "slurm-run"
    # The toy pair the local run trained is reused: training it again on the cluster would take
    # most of the CI budget (a one-CPU job), and weights trained with another thread count may
    # differ in the last bits, which would make a token comparison test the trainer, not the cluster.
    toy_pair = Path("models") / "toy" / "toy"
    shutil.copytree(local_results.parent.parent / toy_pair, workdir / toy_pair)

    result = run_through_slurm(workdir)

    assert result.returncode == 0, output_of(result)
    submitted = submitted_jobs(result)
    assert_ran_through_sbatch(slurm_cluster, submitted, result)
    # Every rule but the final `all` (and the toy training, reused) ran as a SLURM job.
    rules = {job.rule for job in submitted.values()}
    assert {"prepare_pair", "run_job", "check_equivalence", "quality", "aggregate", "report"} <= rules
    # Each job left its SLURM log (profiles/slurm keeps them), beside the rule's own log.
    for job_id, job in submitted.items():
        assert (workdir / ".snakemake" / "slurm_logs" / f"rule_{job.rule}" / job.wildcards / f"{job_id}.log").is_file()

    slurm_results = workdir / "results" / local_results.name  # the default config's paths.results
    local_tokens, slurm_tokens = cell_tokens(local_results), cell_tokens(slurm_results)
    assert local_tokens and slurm_tokens.keys() == local_tokens.keys()
    differing = [key for key in local_tokens if slurm_tokens[key] != local_tokens[key]]
    assert not differing, f"{len(differing)} prompts differ between the local and the SLURM run, e.g. {differing[:3]}"
    local_verdicts = json.loads((local_results / "tables" / "verdicts.json").read_text())
    slurm_verdicts = json.loads((slurm_results / "tables" / "verdicts.json").read_text())
    assert verdict_labels(slurm_verdicts) == verdict_labels(local_verdicts)


def verdict_labels(verdicts: list[dict]) -> list[tuple[str, str, str]]:
    """Each claim's verdict, without the measured figures (timings differ between any two runs;
    the verdicts drawn from them must not)."""
    return sorted((v["claim_id"], v["metric"], v["verdict"]) for v in verdicts)


def test_a_job_failing_on_the_cluster_leaves_the_rest_of_the_sweep_intact(slurm_cluster, tiny_checkpoint_factory, tmp_path):
    """Pair `remote` has its checkpoint on a disk only the submitting host sees (a private mount
    namespace): its job fails on the compute host; pair `shared` finishes and its cells stay."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to give the submitting host a disk of its own")
    target, draft = tiny_checkpoint_factory("llama", seed=1), tiny_checkpoint_factory("llama", seed=2)
    private_disk = tmp_path / "submit-host-disk"  # seen only inside the namespace below
    private_disk.mkdir()
    config_file = tmp_path / "cluster-failure.yaml"
    config_file.write_text(yaml.safe_dump({
        "name": "cluster-failure",
        "device": "cpu",
        "paths": {"data_dir": str(DATA_DIR)},
        "pairs": [
            {"name": "shared", "target": {"path": str(target)}, "draft": {"path": str(draft)}},
            {"name": "remote", "target": {"path": str(private_disk / "target")},
             "draft": {"path": str(private_disk / "draft")}},
        ],
        "backends": ["torch"],
        "tasks": [{"name": "synthetic-arith", "limit": 2, "max_new_tokens": 8}],
        "sweep": {"k": [2], "temperatures": [0.0], "dtypes": ["float32"]},
    }))
    workdir = tmp_path / "work"
    workdir.mkdir()
    # The submitting Snakemake runs in its own mount namespace, with the checkpoints copied onto a
    # tmpfs at private_disk; slurmd, and so every job, sees the empty folder underneath.
    namespace = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                 f'mount -t tmpfs submit-host-disk "{private_disk}" && cp -r "{target}" "{private_disk}/target" && '
                 f'cp -r "{draft}" "{private_disk}/draft" && exec "$@"', "namespace"]

    result = run_through_slurm(workdir, "--configfile", str(config_file), command_prefix=namespace)

    assert result.returncode != 0, output_of(result)
    output = result.stdout + result.stderr
    # The failed job is named with its logs (the rule's and SLURM's), and one of them says in one
    # line what is missing where.
    # (Snakemake's own error blocks; the failed job's log, printed after them, has its own.)
    failures = [block for block in output.split("Error in rule ")[1:]
                if "message: SLURM-job" in block and "remote" in block.split("shell:")[0]]
    assert len(failures) == 1, output_of(result)
    failed_rule = failures[0].split(":")[0]
    log_line = re.search(r"^\s+log: (.*?)(?: \(check log file)", failures[0], re.MULTILINE)
    logs = [workdir / log.strip() for log in log_line.group(1).split(",")]
    log_text = "".join(log.read_text() for log in logs if log.is_file())
    assert f"{private_disk}/target" in log_text and "Traceback" not in log_text, log_text
    # Only that job failed; the other pair's jobs ran through sbatch to the end.
    submitted = submitted_jobs(result)
    failed = {job_id for job_id, job in submitted.items() if job.rule == failed_rule and "remote" in job.wildcards}
    assert len(failed) == 1, submitted
    assert_ran_through_sbatch(slurm_cluster, submitted, result, failed=failed)
    assert not [job for job in submitted.values() if "remote" in job.wildcards and job.rule != failed_rule]
    results = workdir / "results" / "cluster-failure"
    shared_cells = sorted((results / "cells" / "shared").rglob("*.json"))
    assert len(shared_cells) == 2  # baseline and k=2
    for cell_file in shared_cells:
        cell = json.loads(cell_file.read_text())
        assert cell["status"] == "ok" and len(cell["rows"]) == 2
    assert (results / "jobs" / "shared__torch__synthetic-arith.json").is_file()
    assert (results / "equivalence" / "shared__torch__synthetic-arith.json").is_file()
    # The failed pair left nothing half-written.
    assert not (results / "cells" / "remote").exists()
    assert not list(results.rglob("*.tmp*"))
