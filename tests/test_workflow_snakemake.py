"""The Snakemake workflow: dry-runs of every shipped config, lint, and the full default run."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from specbench.workflow import store

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "configs").glob("*.yaml"))

# Snakemake's lint also asks for a conda environment or container per rule. specbench's rules all
# run one installed package (`specbench ...`), so the environment is the installation, and the
# cluster profiles name the container image; that one lint is expected, any other fails.
EXPECTED_LINT = "Specify a conda environment or container for each rule."


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args],
        capture_output=True, text=True, timeout=300, env=env,
    )


@pytest.mark.parametrize("config", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_dry_run_plans_every_job_of_a_shipped_config(config, tmp_path):
    # hub configs are checked against the cache only when offline; their models are not cached here
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    result = snakemake(tmp_path, "-n", "--configfile", str(config), env=env)
    assert result.returncode == 0, result.stderr[-2000:]

    data = yaml.safe_load(config.read_text())
    jobs = len(data["pairs"]) * len(data["backends"]) * len(data["tasks"])
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.MULTILINE))
    assert int(counts["run_job"]) == jobs and int(counts["check_equivalence"]) == jobs
    assert int(counts["aggregate"]) == 1 and int(counts["report"]) == 1
    # jobs that travel: no file of a job is named by an absolute path of this host
    files = re.findall(r"^    (?:input|output|log): (.*)$", result.stdout, flags=re.MULTILINE)
    assert files and not [line for line in files if any(name.startswith("/") for name in line.split(", "))]


def test_lint_finds_nothing_but_the_environment_lint(tmp_path):
    result = snakemake(tmp_path, "--lint", "--configfile", str(REPO / "configs" / "default.yaml"))
    output = result.stdout + result.stderr
    lints = {line.strip()[2:].rstrip(":") for line in output.splitlines() if line.strip().startswith("* ")}
    assert "Lints for rule" in output, output[-2000:]  # the lint ran (it exits 1 when it reports any)
    assert lints <= {EXPECTED_LINT}, lints


@pytest.mark.slow
def test_default_run_produces_tables_reports_and_exact_fp32_greedy_equivalence(default_workflow_run):
    import pandas as pd

    results = default_workflow_run
    workdir = results.parents[1]
    cells = pd.read_parquet(results / "tables" / "cells.parquet")
    samples = pd.read_parquet(results / "tables" / "samples.parquet")
    assert set(cells["status"]) == {"ok"}
    assert set(cells["backend"]) == {"torch", "hf"} and set(cells["task"]) == {"synthetic-arith", "gsm8k", "humaneval"}
    assert len(samples) == sum(len(store.read_cell(p)["rows"]) for p in store.iter_cell_files(results))
    assert samples["env_torch"].notna().all() and samples["config_hash"].nunique() == 1

    equivalence_files = sorted((results / "equivalence").glob("*.json"))
    assert len(equivalence_files) == 6
    for path in equivalence_files:
        report = json.loads(path.read_text())
        assert report["passed"], report["problems"]
        assert report["summary"]["compared"] > 0
        assert report["summary"]["exact"] == report["summary"]["compared"]  # fp32 on CPU: 100% exact

    sampling = json.loads((results / "sampling" / "toy__torch.json").read_text())
    assert sampling["passed"] and sampling["samples"] > 0
    for task in ("synthetic-arith", "gsm8k", "humaneval"):
        assert json.loads((results / "quality" / f"toy__{task}.json").read_text())["cells"]
    assert (workdir / "reports" / "default" / "index.html").is_file()
    assert len(list((workdir / "logs" / "default" / "run").glob("*.log"))) == 6
    assert "specbench summary" in (workdir / "snakemake.out").read_text() + (workdir / "snakemake.err").read_text()
    print(f"default workflow wall time: {json.loads((workdir / 'run_time.json').read_text())['seconds']:.0f} s")


@pytest.mark.slow
def test_finished_default_run_has_nothing_left_to_do(default_workflow_workdir):
    from tests.workflow_fixtures import snakemake_command

    result = subprocess.run(snakemake_command(default_workflow_workdir, "-n"), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.slow
def test_killed_snakemake_run_resumes_its_cells(tmp_path, tiny_checkpoint_factory):
    """Kill the whole workflow (Snakemake and its job) mid-job; the re-run redoes no finished cell."""
    import signal
    import time

    target, draft = tiny_checkpoint_factory("llama", seed=0), tiny_checkpoint_factory("llama", seed=1)
    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump({
        "name": "killed", "device": "cpu",
        "pairs": [{"name": "tiny", "target": {"path": str(target)}, "draft": {"path": str(draft)}}],
        "backends": ["torch"], "tasks": [{"name": "synthetic-arith", "limit": 2, "max_new_tokens": 8}],
        "sweep": {"k": [1, 2, 3], "temperatures": [0.0], "dtypes": ["float32"]},
    }))
    workdir = tmp_path / "work"
    workdir.mkdir()
    results = workdir / "results" / "killed"
    manifest = "results/killed/jobs/tiny__torch__synthetic-arith.json"
    command = ["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(config),
               "--cores", "2", manifest]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list(store.iter_cell_files(results)) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)  # Snakemake and the job together, like a lost node
    run.wait()
    survivors = {path: path.stat().st_mtime_ns for path in store.iter_cell_files(results)}
    assert 1 <= len(survivors) < 4 and not (workdir / manifest).exists()

    # a hard kill leaves Snakemake's lock behind; a user clears it with --unlock and runs again
    unlock = subprocess.run(command + ["--unlock"], capture_output=True, text=True, timeout=300)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {path: path.stat().st_mtime_ns for path in survivors} == survivors
    log = (workdir / "logs" / "killed" / "run" / "tiny__torch__synthetic-arith.log").read_text()
    assert f"{len(survivors)} already complete" in log
    assert set(json.loads((workdir / manifest).read_text())["cells"].values()) == {"ok"}


@pytest.mark.slow
def test_sampling_test_catches_a_planted_lossy_sampler_on_the_toy_pair(default_workflow_workdir, tmp_path):
    """The default run's sampling test passed; with acceptance forced (SPECBENCH_PLANT_BUG=always-accept)
    the same test on the same pair must fail."""
    from specbench.workflow.config import input_path, load_config

    data = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    data["name"] = "planted-sampling"
    data["paths"]["data_dir"] = str(input_path(load_config(REPO / "configs" / "default.yaml"), data["paths"]["data_dir"]))
    config = tmp_path / "planted-sampling.yaml"
    config.write_text(yaml.safe_dump(data))
    env = {**os.environ, "SPECBENCH_PLANT_BUG": "always-accept"}
    result = subprocess.run(
        ["python", "-m", "specbench.workflow.sampling", "--config", str(config), "--threads", "1"],
        cwd=default_workflow_workdir, capture_output=True, text=True, timeout=900, env=env,
    )
    assert result.returncode == 1, result.stdout + result.stderr[-2000:]
    assert "lossless sampling test FAILED" in result.stdout
    written = json.loads((default_workflow_workdir / "results" / "planted-sampling" / "sampling" / "toy__torch.json")
                         .read_text())
    assert written["p_value"] < 1e-3 and written["environment"]["planted_bug"] == "always-accept"
