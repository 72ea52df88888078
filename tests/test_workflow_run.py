"""The job runner on a tiny random pair: cells and rows as the results layout says, resume after a
kill without redoing cells, out-of-memory cells recorded, and a planted engine bug caught."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from specbench.errors import SpecbenchError
from specbench.workflow import store
from specbench.workflow.config import load_config
from specbench.workflow.equivalence import check_job
from specbench.workflow.prepare import prepare_pair
from specbench.workflow.run import plan_cells, run_job

REPO = Path(__file__).resolve().parents[1]

CELL_FIELDS = {
    "config_name", "config_hash", "pair", "target", "draft", "target_params", "draft_params", "backend", "task",
    "cell_id", "mode", "k", "temperature", "top_k", "top_p", "dtype", "device", "seed", "max_new_tokens",
}
ROW_FIELDS = {
    "prompt_index", "doc_id", "prompt_tokens", "new_tokens", "iterations", "drafted", "accepted",
    "accepted_per_position", "prefill_s", "decode_s", "draft_s", "verify_s", "stop_reason", "tokens", "margins",
    "text", "score", "target", "extracted", "metrics",
}
ENVIRONMENT_FIELDS = {
    "device_name", "device_count", "driver", "platform", "python", "torch", "jax", "transformers",
    "specbench_version", "git_commit", "hostname",
}


@pytest.fixture(scope="module")
def tiny_pair(tiny_checkpoint_factory):
    return tiny_checkpoint_factory("llama", seed=0), tiny_checkpoint_factory("llama", seed=1)


def make_config(folder: Path, tiny_pair, *, name: str = "tiny", limit: int = 2, max_new_tokens: int = 10,
                k=(1, 2), temperatures=(0.0, 0.8), backends=("torch",)) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    target, draft = tiny_pair
    data = {
        "name": name,
        "device": "cpu",
        "pairs": [{"name": "tiny", "target": {"path": str(target)}, "draft": {"path": str(draft)}}],
        "backends": list(backends),
        "tasks": [{"name": "synthetic-arith", "limit": limit, "max_new_tokens": max_new_tokens}],
        "sweep": {"k": list(k), "temperatures": list(temperatures), "dtypes": ["float32"]},
        "paths": {key: str(folder / key) for key in ("results", "models", "logs", "reports")},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    prepare_pair(config, "tiny")
    return config


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory, tiny_pair):
    config = make_config(tmp_path_factory.mktemp("job"), tiny_pair)
    manifest = run_job(config, "tiny", "torch", "synthetic-arith", progress=False)
    return config, manifest


def results_of(config) -> Path:
    return Path(config["paths"]["results"]) / config["name"]


def test_every_cell_is_stored_with_the_layout_fields(finished_job):
    config, manifest = finished_job
    results = results_of(config)
    assert manifest["cells"] == {plan.cell_id: "ok" for plan in plan_cells(config)}
    assert set(manifest["cells"]) == {"baseline-t0-float32", "k1-t0-float32", "k2-t0-float32",
                                      "baseline-t0.8-float32", "k1-t0.8-float32", "k2-t0.8-float32"}
    for path in store.iter_cell_files(results):
        data = store.read_cell(path)
        assert data["status"] == "ok" and data["error"] is None
        assert CELL_FIELDS <= set(data["cell"]), CELL_FIELDS - set(data["cell"])
        assert ENVIRONMENT_FIELDS <= set(data["environment"]), ENVIRONMENT_FIELDS - set(data["environment"])
        assert data["cell"]["target_params"] > 0 and data["cell"]["config_name"] == "tiny"
        assert [row["prompt_index"] for row in data["rows"]] == [0, 1]
        for row in data["rows"]:
            assert set(row) == ROW_FIELDS
            assert row["new_tokens"] == len(row["tokens"]) <= 10
            assert len(row["accepted_per_position"]) == data["cell"]["k"]
            assert row["score"] in (0.0, 1.0) and row["target"] is not None
            if data["cell"]["temperature"] == 0.0:
                assert len(row["margins"]) == row["new_tokens"]


def test_greedy_speculative_cells_match_the_baseline_exactly(finished_job):
    config, _ = finished_job
    report = check_job(results_of(config), "tiny", "torch", "synthetic-arith")
    assert report["passed"] and report["summary"]["compared"] == 4 and report["summary"]["exact"] == 4


def test_rerun_skips_finished_cells(finished_job):
    config, _ = finished_job
    files = list(store.iter_cell_files(results_of(config)))
    before = {path: path.stat().st_mtime_ns for path in files}
    manifest = run_job(config, "tiny", "torch", "synthetic-arith", progress=False)
    assert manifest["resumed_cells"] == len(files) == 6
    assert {path: path.stat().st_mtime_ns for path in files} == before


def test_killed_job_resumes_without_redoing_cells_or_leaving_corrupt_files(tmp_path, tiny_pair):
    config = make_config(tmp_path, tiny_pair, limit=2, max_new_tokens=8, k=(1, 2), temperatures=(0.0,))
    results = results_of(config)
    command = [sys.executable, "-m", "specbench.cli", "run", "--no-progress", "--config", config["_path"],
               "--pair", "tiny", "--backend", "torch", "--task", "synthetic-arith"]
    job = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list(store.iter_cell_files(results)) and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    stderr = job.stderr.read().decode()
    job.stderr.close()
    survivors = list(store.iter_cell_files(results))
    assert 1 <= len(survivors) < 3, f"kill landed outside the job's cells: {len(survivors)} cells\n{stderr}"
    assert not store.job_manifest_path(results, "tiny", "torch", "synthetic-arith").exists()
    for path in survivors:
        store.read_cell(path)  # every file a reader can see is complete
    before = {path: path.stat().st_mtime_ns for path in survivors}

    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(survivors)} already complete" in resumed.stderr
    assert {path: path.stat().st_mtime_ns for path in survivors} == before
    manifest = json.loads(store.job_manifest_path(results, "tiny", "torch", "synthetic-arith").read_text())
    assert manifest["resumed_cells"] == len(survivors) and set(manifest["cells"].values()) == {"ok"}
    leftovers = [p.name for p in results.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert all(name.endswith(".tmp") for name in leftovers)  # at most the killed write's temporary
    assert check_job(results, "tiny", "torch", "synthetic-arith")["passed"]


def test_changed_inputs_redo_a_cell(tmp_path, tiny_pair):
    config = make_config(tmp_path, tiny_pair, limit=1, max_new_tokens=4, k=(1,), temperatures=(0.0,))
    run_job(config, "tiny", "torch", "synthetic-arith", progress=False)
    longer = make_config(tmp_path, tiny_pair, limit=1, max_new_tokens=6, k=(1,), temperatures=(0.0,))
    manifest = run_job(longer, "tiny", "torch", "synthetic-arith", progress=False)
    assert manifest["resumed_cells"] == 0
    cell = store.read_cell(store.cell_path(results_of(longer), "tiny", "torch", "synthetic-arith", "k1-t0-float32"))
    assert cell["cell"]["max_new_tokens"] == 6


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which the runner recognises by name."""


def _wrap_backend(monkeypatch, failing_k: int, error: Exception) -> None:
    import specbench.backends as backends

    real_load = backends.load_backend

    def load(name, **kwargs):
        backend = real_load(name, **kwargs)
        real_generate = backend.generate

        def generate(prompt_ids, **options):
            if options.get("k") == failing_k:
                raise error
            return real_generate(prompt_ids, **options)

        backend.generate = generate
        return backend

    monkeypatch.setattr(backends, "load_backend", load)


def test_out_of_memory_cell_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_pair, monkeypatch):
    config = make_config(tmp_path, tiny_pair, limit=1, max_new_tokens=4, temperatures=(0.0,))
    _wrap_backend(monkeypatch, 2, OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    manifest = run_job(config, "tiny", "torch", "synthetic-arith", progress=False)
    assert manifest["cells"] == {"baseline-t0-float32": "ok", "k1-t0-float32": "ok", "k2-t0-float32": "oom"}
    oom = store.read_cell(store.cell_path(results_of(config), "tiny", "torch", "synthetic-arith", "k2-t0-float32"))
    assert oom["rows"] == [] and oom["error"].startswith("OutOfMemoryError: CUDA out of memory")


def test_a_failing_cell_fails_the_job_but_keeps_the_others(tmp_path, tiny_pair, monkeypatch):
    config = make_config(tmp_path, tiny_pair, limit=1, max_new_tokens=4, temperatures=(0.0,))
    _wrap_backend(monkeypatch, 1, ValueError("engine exploded"))
    with pytest.raises(SpecbenchError, match=r"1 cell\(s\) failed \(k1-t0-float32\)"):
        run_job(config, "tiny", "torch", "synthetic-arith", progress=False)
    results = results_of(config)
    statuses = {p.stem: store.read_cell(p)["status"] for p in store.iter_cell_files(results)}
    assert statuses == {"baseline-t0-float32": "ok", "k1-t0-float32": "error", "k2-t0-float32": "ok"}
    assert not store.job_manifest_path(results, "tiny", "torch", "synthetic-arith").exists()


def test_prompt_that_does_not_fit_the_model_is_a_clear_error(tmp_path, tiny_pair):
    config = make_config(tmp_path, tiny_pair, limit=1, max_new_tokens=250, k=(1,), temperatures=(0.0,))
    with pytest.raises(SpecbenchError, match=r"task 'synthetic-arith': prompt of doc 0 has \d+ tokens; .* positions"):
        run_job(config, "tiny", "torch", "synthetic-arith", progress=False)
    assert not list(store.iter_cell_files(results_of(config)))


def test_planted_rollback_bug_is_caught_as_a_real_mismatch(tmp_path, tiny_pair, monkeypatch):
    config = make_config(tmp_path, tiny_pair, name="planted", limit=2, max_new_tokens=12, k=(3,), temperatures=(0.0,))
    monkeypatch.setenv("SPECBENCH_PLANT_BUG", "rollback-off-by-one")
    run_job(config, "tiny", "torch", "synthetic-arith", progress=False)
    report = check_job(results_of(config), "tiny", "torch", "synthetic-arith")
    assert not report["passed"]
    assert report["summary"]["mismatch"] >= 1 and report["summary"]["near_tie"] == 0
    cell = store.read_cell(store.cell_path(results_of(config), "tiny", "torch", "synthetic-arith", "k3-t0-float32"))
    assert cell["environment"]["planted_bug"] == "rollback-off-by-one"


def test_summary_table_shows_each_job_on_one_line(finished_job):
    from specbench.workflow.progress import summary_table

    config, _ = finished_job
    results = results_of(config)
    store.atomic_write_json(store.equivalence_path(results, "tiny", "torch", "synthetic-arith"),
                            check_job(results, "tiny", "torch", "synthetic-arith"))
    lines = summary_table(results).splitlines()
    assert len(lines) == 3  # header, rule, one job
    assert lines[2].startswith("tiny/torch/synthetic-arith") and "6o" in lines[2] and "4/4 exact" in lines[2]


def test_compilation_in_a_cells_first_decode_is_never_timed(tmp_path, tiny_pair, monkeypatch):
    """A backend whose first decode per setting is slow (as when JAX compiles): no stored timing shows it."""
    import specbench.backends as backends

    real_load = backends.load_backend
    seen: set = set()

    def load(name, **kwargs):
        backend = real_load(name, **kwargs)
        real_generate = backend.generate

        def generate(prompt_ids, **options):
            result = real_generate(prompt_ids, **options)
            setting = (options.get("k"), options.get("sampling"), len(prompt_ids))
            if setting not in seen:  # "compiling": a first call with these static shapes
                seen.add(setting)
                result.prefill_s += 100.0
            return result

        backend.generate = generate
        return backend

    monkeypatch.setattr(backends, "load_backend", load)
    config = make_config(tmp_path, tiny_pair, limit=1, max_new_tokens=4)
    run_job(config, "tiny", "torch", "synthetic-arith", progress=False)
    rows = [row for path in store.iter_cell_files(results_of(config)) for row in store.read_cell(path)["rows"]]
    assert len(rows) == 6 and max(row["prefill_s"] for row in rows) < 100.0


@pytest.mark.parametrize("module", ["specbench.workflow.run", "specbench.workflow.sampling"])
def test_a_thread_count_below_one_is_a_one_line_error(module, tmp_path, capsys):
    """Both job commands that take --threads refuse 0 before loading any model."""
    import importlib

    from specbench.workflow import standalone_main

    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({
        "name": "threads", "device": "cpu",
        "pairs": [{"name": "p", "target": {"path": str(tmp_path / "target")}, "draft": {"path": str(tmp_path / "draft")}}],
        "backends": ["torch"], "tasks": [{"name": "synthetic-arith", "limit": 1, "max_new_tokens": 4}],
        "sweep": {"k": [1], "temperatures": [0.0], "dtypes": ["float32"]},
    }))
    arguments = ["--config", str(config), "--threads", "0"]
    if module.endswith(".run"):
        arguments += ["--pair", "p", "--backend", "torch", "--task", "synthetic-arith"]
    assert standalone_main(importlib.import_module(module), "job", arguments) == 2
    assert capsys.readouterr().err.strip() == "job: error: --threads must be at least 1, got 0"
