"""Pytest plugin: the default workflow, run once per test session, shared by every test that needs
real results (workflow, toy-pair bounds, report, SLURM comparison).

The run uses the repository's Snakefile and configs/default.yaml exactly as a user would
(`snakemake --cores all`), with a temporary working directory, so results/, models/, logs/
and reports/ land there and the checkout stays clean. The wall time and Snakemake's output
are kept beside the results (run_time.json, snakemake.out, snakemake.err).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "default.yaml"
TIME_LIMIT_S = 45 * 60  # far above the 10-minute target: a hang fails, a slow machine still finishes


def snakemake_command(workdir: Path, *args: str, config: Path = DEFAULT_CONFIG) -> list[str]:
    return ["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(config),
            "--cores", "all", *args]


def run_default_workflow(workdir: Path) -> subprocess.CompletedProcess:
    started = time.monotonic()
    result = subprocess.run(snakemake_command(workdir), capture_output=True, text=True, timeout=TIME_LIMIT_S)
    seconds = time.monotonic() - started
    (workdir / "snakemake.out").write_text(result.stdout)
    (workdir / "snakemake.err").write_text(result.stderr)
    (workdir / "run_time.json").write_text(json.dumps({"seconds": seconds, "cores": os.cpu_count()}) + "\n")
    return result


def _failure_details(workdir: Path, result: subprocess.CompletedProcess) -> str:
    logs = sorted((workdir / "logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)
    tails = [f"--- {log.relative_to(workdir)}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
             for log in logs[-3:]]
    return f"exit {result.returncode}\n{result.stderr[-3000:]}\n" + "\n".join(tails)


@pytest.fixture(scope="session")
def default_workflow_workdir(tmp_path_factory) -> Path:
    """Working directory of the session's default workflow run (results/, models/, logs/, reports/)."""
    workdir = tmp_path_factory.mktemp("default-workflow")
    result = run_default_workflow(workdir)
    if result.returncode != 0:
        pytest.fail("default workflow failed: " + _failure_details(workdir, result), pytrace=False)
    return workdir


@pytest.fixture(scope="session")
def default_workflow_run(default_workflow_workdir) -> Path:
    """results/default of the session's default workflow run."""
    return default_workflow_workdir / "results" / "default"


@pytest.fixture(scope="session")
def default_toy_pair(default_workflow_workdir) -> Path:
    """The full-budget toy pair the default run trained (target/, draft/, toy_pair.json)."""
    return default_workflow_workdir / "models" / "toy" / "toy"
