"""The Snakemake executor profiles (profiles/local, profiles/slurm, profiles/kubernetes).

Each profile is dry-run by Snakemake itself, on the real workflow and on a two-rule workflow
written here, so that every key in it is one Snakemake and its executor plugin accept. How the
SLURM profile turns a rule's declared resources into `sbatch` options is checked against a stand-in
`sbatch` that records its arguments, so it needs no cluster; the real cluster run is in
tests/test_slurm.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "profiles"
PROFILE_FILE = "config.v8+.yaml"  # read by Snakemake >= 8 only; older ones, whose format differs, refuse it
EXECUTORS = {"local": "local", "slurm": "slurm", "kubernetes": "kubernetes"}

# Settings for the single-node CI cluster only (no accounting database, so no sacct and no
# accounts); they are given on the command line and leave the shipped profile as it is.
SLURM_WITHOUT_ACCOUNTING = [
    "--slurm-status-command", "squeue",
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks", "1",
]

TWO_RULE_WORKFLOW = """\
rule all:
    input: "out/a.txt", "out/b.txt"

rule make:
    output: "out/{name}.txt"
    log: "logs/make_{name}.log"
    resources: gpu=0, mem_mb=300, runtime=5
    shell: "echo {wildcards.name} > {output} 2> {log}"
"""


def snakemake(*args: str | os.PathLike, cwd: Path, env: dict[str, str] | None = None,
              timeout: int = 180) -> subprocess.CompletedProcess:
    """Runs `snakemake ARGS` in `cwd` (under `timeout`, as CI runs it), capturing its output."""
    command = ["timeout", "-k", "10", str(timeout), sys.executable, "-m", "snakemake", *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)


def output_of(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"


@pytest.fixture
def two_rule_workflow(tmp_path: Path) -> Path:
    (tmp_path / "Snakefile").write_text(TWO_RULE_WORKFLOW)
    return tmp_path


@pytest.mark.parametrize("name", sorted(EXECUTORS))
def test_profile_is_a_yaml_mapping_that_names_its_executor(name: str) -> None:
    settings = yaml.safe_load((PROFILES / name / PROFILE_FILE).read_text())
    assert isinstance(settings, dict)
    assert settings["executor"] == EXECUTORS[name]


@pytest.mark.parametrize("name", sorted(EXECUTORS))
def test_profile_dry_runs_a_workflow(name: str, two_rule_workflow: Path) -> None:
    result = snakemake("-n", "--profile", PROFILES / name, cwd=two_rule_workflow)
    assert result.returncode == 0, output_of(result)
    assert f"Using profile {PROFILES / name}" in result.stdout + result.stderr
    assert "make         2" in result.stdout, output_of(result)


@pytest.mark.parametrize("name", sorted(EXECUTORS))
def test_profile_dry_runs_the_default_workflow(name: str) -> None:
    """From the project checkout, as the README says: `snakemake -n --profile profiles/<name>`."""
    result = snakemake("-n", "--profile", f"profiles/{name}", cwd=REPO)
    assert result.returncode == 0, output_of(result)
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.MULTILINE))
    assert int(stats.get("run_job", 0)) >= 1 and int(stats["total"]) > int(stats["run_job"]), output_of(result)


def test_dry_run_rejects_a_profile_with_a_misspelled_setting(two_rule_workflow: Path, tmp_path: Path) -> None:
    """The dry-runs above are what catches a broken profile: plant a typo and see it refused."""
    broken = tmp_path / "broken-slurm"
    shutil.copytree(PROFILES / "slurm", broken)
    profile_file = broken / PROFILE_FILE
    profile_file.write_text(profile_file.read_text() + "slurm-keep-sucessful-logs: true\n")
    result = snakemake("-n", "--profile", broken, cwd=two_rule_workflow)
    assert result.returncode != 0
    assert "slurm-keep-sucessful-logs" in result.stderr, output_of(result)


def test_slurm_profile_maps_declared_resources_to_sbatch_options(tmp_path: Path) -> None:
    """gpu/gpu_model/mem_mb/runtime declared by a rule become --gpus/--mem/-t on the sbatch line,
    and the profile's defaults fill in what a rule leaves out."""
    (tmp_path / "Snakefile").write_text(
        'rule all:\n    input: "big.txt", "small.txt"\n'
        'rule big:\n    output: "big.txt"\n'
        '    resources: gpu=2, gpu_model="h100", mem_mb=64000, runtime=240\n'
        '    shell: "touch {output}"\n'
        'rule small:\n    output: "small.txt"\n    shell: "touch {output}"\n'
    )
    # A stand-in sbatch on PATH: it records each call's arguments and refuses the job.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_sbatch = bin_dir / "sbatch"
    fake_sbatch.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$@" > "$RECORD_DIR/$(mktemp -u XXXXXX).args"\n'
        'echo "sbatch: error: recorded by the test, not submitted" >&2\nexit 1\n'
    )
    fake_sbatch.chmod(0o755)
    # The plugin asks sinfo for the default partition before it submits; answer without a cluster.
    fake_sinfo = bin_dir / "sinfo"
    fake_sinfo.write_text('#!/bin/sh\nprintf "PARTITION\\ndebug*\\n"\n')
    fake_sinfo.chmod(0o755)
    records = tmp_path / "records"
    records.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RECORD_DIR": str(records)}

    result = snakemake("--profile", PROFILES / "slurm", *SLURM_WITHOUT_ACCOUNTING, cwd=tmp_path, env=env)

    assert result.returncode != 0  # every submission was refused
    calls = {}
    for record in records.glob("*.args"):
        args = record.read_text().splitlines()
        calls[args[args.index("--comment") + 1]] = args
    assert sorted(calls) == ["rule_big", "rule_small"], output_of(result)
    big, small = calls["rule_big"], calls["rule_small"]
    assert "--gpus=h100:2" in big
    assert big[big.index("--mem") + 1] == "64000" and big[big.index("-t") + 1] == "240"
    # profile defaults: runtime 60 min, 4000 MB, no GPU
    assert small[small.index("--mem") + 1] == "4000" and small[small.index("-t") + 1] == "60"
    assert not any(arg.startswith("--gpus") for arg in small)
    # the job runs in the workflow's folder on the shared filesystem
    assert big[big.index("-D") + 1] == str(tmp_path)
