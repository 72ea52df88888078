"""One sweep job (`specbench run`): every cell of one (pair, backend, task), in one process.

A cell is one decoding setting: the baseline (k = 0) or speculative decoding with draft
length k, at one temperature and dtype. All cells of a job share the prompts, so the
speedup of each k is paired per prompt against the baseline computed by the same model
objects in the same process. Per dtype the backend is loaded once and warmed up, then
every cell of that dtype runs, each after one untimed decode with its own settings.

Resuming: each cell is written atomically as soon as it finishes; a cell already stored
as "ok" with the same inputs (`cell_key`) is not run again, so an interrupted job
continues where it stopped. A cell that runs out of device memory is stored with status
"oom" and the job goes on; any other failure of a cell is stored as "error" and, after
the remaining cells ran, fails the job. The job manifest (the workflow's output for the
job) is written last, only when every cell is "ok" or "oom".

Seeds: prompt i of every cell uses seed + i, so baseline and speculative cells of one
prompt draw from the same seed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specbench.errors import SpecbenchError
from specbench.workflow import config as cfg
from specbench.workflow import store
from specbench.workflow.prepare import manifest_path, model_fingerprint, model_folders


@dataclass(frozen=True)
class CellPlan:
    """One decoding setting of a job."""

    k: int  # 0 = baseline
    temperature: float
    dtype: str
    top_k: int
    top_p: float

    @property
    def mode(self) -> str:
        return "baseline" if self.k == 0 else "speculative"

    @property
    def cell_id(self) -> str:
        return store.cell_id(k=self.k, temperature=self.temperature, dtype=self.dtype, top_k=self.top_k, top_p=self.top_p)


def plan_cells(config: dict[str, Any]) -> list[CellPlan]:
    """Every cell of a job, grouped by dtype (one model load each), baseline first."""
    sweep = config["sweep"]
    return [
        CellPlan(k, temperature, dtype, sweep["top_k"], sweep["top_p"])
        for dtype in sweep["dtypes"]
        for temperature in sweep["temperatures"]
        for k in [0, *sorted(sweep["k"])]
    ]


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA/ROCm OOM (torch.cuda.OutOfMemoryError) or an XLA RESOURCE_EXHAUSTED, without importing either."""
    name = type(error).__name__
    text = str(error)
    return name == "OutOfMemoryError" or "CUDA out of memory" in text or "RESOURCE_EXHAUSTED" in text or (
        isinstance(error, MemoryError)
    )


def _release_device_memory() -> None:
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def git_commit() -> str | None:
    """The commit of the specbench source tree in use (None outside a git checkout)."""
    source = Path(__file__).resolve().parents[2]
    try:
        result = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    return result.stdout.strip() + ("-dirty" if dirty else "")


def run_environment(backend_environment: dict[str, Any]) -> dict[str, Any]:
    """The backend's own description of its device and frameworks, plus where and what ran."""
    from specbench import __version__

    env: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "specbench_version": __version__,
        "git_commit": git_commit(),
        "hostname": socket.gethostname(),
    }
    env.update(backend_environment)
    for key in ("device_name", "device_count", "driver", "torch", "jax", "transformers"):
        env.setdefault(key, None)
    planted = os.environ.get("SPECBENCH_PLANT_BUG")
    if planted:  # a test-only switch; recorded so a planted result can never pass as a real one
        env["planted_bug"] = planted
    return env


def _max_positions(folder: Path) -> int | None:
    data = json.loads((folder / "config.json").read_text())
    data = data.get("text_config", data)
    return data.get("max_position_embeddings")


def _cut_at_stop(text: str, stop_strings: list[str]) -> str:
    """The completion up to the first stop string (what the task scores, as lm-eval does)."""
    cut = len(text)
    for stop in stop_strings:
        position = text.find(stop)
        if position != -1:
            cut = min(cut, position)
    return text[:cut]


class Job:
    """Everything one (pair, backend, task) job needs, resolved once."""

    def __init__(self, config: dict[str, Any], pair: str, backend: str, task: str):
        self.config = config
        self.pair_name, self.backend_name, self.task_name = pair, backend, task
        if backend not in config["backends"]:
            raise SpecbenchError(f"{config['_path']}: backend {backend!r} is not in backends {config['backends']}")
        self.pair = cfg.find(config, "pairs", pair)
        self.task_config = cfg.find(config, "tasks", task)
        self.results_dir = cfg.results_dir(config)
        self.config_hash = cfg.config_hash(config)
        self.target_dir, self.draft_dir = model_folders(config, pair)
        pair_record_file = manifest_path(config, pair)
        self.pair_record = store.read_json(pair_record_file) if pair_record_file.is_file() else {}

    # --- task and prompts -------------------------------------------------------------

    def load_task(self):
        from specbench.tasks import load_task

        task_config = self.task_config
        return load_task(
            task_config["name"],
            data_files=cfg.task_data_files(self.config, task_config) or None,
            limit=task_config["limit"],
            num_fewshot=task_config["num_fewshot"],
            allow_code_execution=task_config["allow_code_execution"],
            seed=self.config["seed"],
            max_new_tokens=task_config["max_new_tokens"],
        )

    def model_description(self, role: str) -> str:
        spec = self.pair.get(role)
        if spec is None:  # toy pair
            return f"toy:{self.pair_name}/{role}"
        return f"{spec['id']}@{spec['revision']}" if "id" in spec else spec["path"]

    def params(self, role: str) -> int | None:
        record = self.pair_record.get(role) or {}
        if record.get("params") is not None:
            return record["params"]
        from specbench.workflow.prepare import safetensors_parameters

        return safetensors_parameters(self.target_dir if role == "target" else self.draft_dir)

    def cell_key(self, plan: CellPlan, task, max_new_tokens: int) -> str:
        """Hash of everything a cell's numbers depend on (resume only when all are equal)."""
        identity = {
            "target": self.model_description("target"),
            "draft": self.model_description("draft"),
            "target_files": model_fingerprint(self.target_dir),
            "draft_files": model_fingerprint(self.draft_dir),
            "backend": self.backend_name,
            "task": {**self.task_config, "version": getattr(task, "version", None)},
            "device": self.config["device"],
            "seed": self.config["seed"],
            "max_new_tokens": max_new_tokens,
            "plan": [plan.k, plan.temperature, plan.dtype, plan.top_k, plan.top_p],
            # a planted (test-only) bug changes the numbers: never resume across it
            "planted_bug": os.environ.get("SPECBENCH_PLANT_BUG") or None,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def cell_fields(self, plan: CellPlan, task, max_new_tokens: int) -> dict[str, Any]:
        return {
            "config_name": self.config["name"],
            "config_hash": self.config_hash,
            "pair": self.pair_name,
            "target": self.model_description("target"),
            "draft": self.model_description("draft"),
            "target_params": self.params("target"),
            "draft_params": self.params("draft"),
            "backend": self.backend_name,
            "task": self.task_name,
            "task_version": getattr(task, "version", None),
            "cell_id": plan.cell_id,
            "cell_key": self.cell_key(plan, task, max_new_tokens),
            "mode": plan.mode,
            "k": plan.k,
            "temperature": plan.temperature,
            "top_k": plan.top_k,
            "top_p": plan.top_p,
            "dtype": plan.dtype,
            "device": self.config["device"],
            "seed": self.config["seed"],
            "max_new_tokens": max_new_tokens,
        }


def limit_cpu_threads(threads: int | None) -> None:
    """Use `threads` CPU threads for tensor maths (None: the framework's default, all cores).

    The workflow passes the cores Snakemake gave the job: a framework spinning more threads
    than it has cores loses most of its time when the cores are shared (6x to 100x seen for
    the toy pair on a busy 2-core machine), and the timings would measure that.
    """
    if threads is None:
        return
    if threads < 1:
        raise SpecbenchError(f"--threads must be at least 1, got {threads}")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def run_job(config: dict[str, Any], pair: str, backend: str, task: str, *, progress: bool = True,
            threads: int | None = None) -> dict[str, Any]:
    """Run (or resume) every cell of the job; return the manifest written at the end."""
    from transformers import AutoTokenizer

    from specbench.backends import SamplingConfig, load_backend
    from specbench.workflow.progress import JobProgress

    limit_cpu_threads(threads)
    job = Job(config, pair, backend, task)
    name = store.job_name(pair, backend, task)
    log = lambda message: print(f"[{name}] {message}", file=sys.stderr, flush=True)  # noqa: E731

    task_obj = job.load_task()
    task_description = task_obj.describe()
    requests = task_obj.requests()
    if not requests:
        raise SpecbenchError(f"{config['_path']}: task {task!r} produced no prompts")
    max_new_tokens = job.task_config["max_new_tokens"]
    tokenizer = AutoTokenizer.from_pretrained(job.target_dir)
    prompt_ids = [tokenizer.encode(request.prompt) for request in requests]
    request_budget = [min(request.max_new_tokens or max_new_tokens, max_new_tokens) for request in requests]

    # KV-cache capacity: longest prompt + new tokens + one speculative overshoot (k drafted + 1).
    max_k = max(config["sweep"]["k"])
    max_seq_len = max(len(ids) + budget for ids, budget in zip(prompt_ids, request_budget)) + max_k + 1
    for folder in (job.target_dir, job.draft_dir):
        positions = _max_positions(folder)
        if positions is not None and max_seq_len > positions:
            longest = max(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
            raise SpecbenchError(
                f"{config['_path']}: task {task!r}: prompt of doc {requests[longest].doc_id} has "
                f"{len(prompt_ids[longest])} tokens; with max_new_tokens {max_new_tokens} and k {max_k} it needs "
                f"{max_seq_len} positions but {folder} has {positions} (lower tasks.num_fewshot, limit or max_new_tokens)"
            )

    plans = plan_cells(config)
    pending, statuses = [], {}
    for plan in plans:
        path = store.cell_path(job.results_dir, pair, backend, task, plan.cell_id)
        if store.completed_cell(path, job.cell_key(plan, task_obj, max_new_tokens)) is not None:
            statuses[plan.cell_id] = "ok"
        else:
            pending.append(plan)
    log(f"{len(plans)} cells x {len(requests)} prompts; {len(plans) - len(pending)} already complete, {len(pending)} to run")

    bar = JobProgress(job=name, cells=len(plans), prompts_per_cell=len(requests), enabled=progress)
    for _ in range(len(plans) - len(pending)):
        bar.cell_done(skipped_prompts=len(requests))
    try:
        for dtype in dict.fromkeys(plan.dtype for plan in pending):
            dtype_plans = [plan for plan in pending if plan.dtype == dtype]
            started = time.perf_counter()
            model = load_backend(
                backend,
                target=str(job.target_dir),
                draft=str(job.draft_dir),
                dtype=dtype,
                device=config["device"],
                max_seq_len=max_seq_len,
            )
            loaded = time.perf_counter()
            model.warmup(k_values=[None])
            log(f"{dtype}: loaded in {loaded - started:.1f}s, warm-up {time.perf_counter() - loaded:.1f}s (not timed)")
            environment = run_environment(model.environment())

            for plan in dtype_plans:
                fields = job.cell_fields(plan, task_obj, max_new_tokens)
                sampling = SamplingConfig(temperature=plan.temperature, top_k=plan.top_k, top_p=plan.top_p)
                rows, status, error = [], "ok", None
                try:
                    # Untimed: one decode with exactly this cell's settings on its first prompt. Each
                    # draft length, sampling mode and prompt length can compile or allocate its own
                    # shapes (JAX compiles per static shape), and none of that may land in a timing.
                    model.generate(prompt_ids[0], max_new_tokens=request_budget[0], k=plan.k or None,
                                   sampling=sampling, seed=config["seed"], stop_strings=list(requests[0].stop_strings))
                    for index, (request, ids, budget) in enumerate(zip(requests, prompt_ids, request_budget)):
                        result = model.generate(
                            ids,
                            max_new_tokens=budget,
                            k=plan.k or None,
                            sampling=sampling,
                            seed=config["seed"] + index,
                            stop_strings=list(request.stop_strings),
                        )
                        rows.append(_row(index, request, result, tokenizer, task_obj, plan.k))
                        bar.prompt_done(len(result.tokens), result.decode_s)
                except Exception as failure:  # noqa: BLE001 -- recorded in the cell, see the module docstring
                    status = "oom" if is_out_of_memory(failure) else "error"
                    error = f"{type(failure).__name__}: {' '.join(str(failure).split())}"[:2000]
                    rows = []
                    if status == "oom":
                        _release_device_memory()
                    log(f"cell {plan.cell_id}: {status}: {error}")
                    if status == "error":
                        import traceback

                        traceback.print_exc(file=sys.stderr)
                store.atomic_write_json(
                    store.cell_path(job.results_dir, pair, backend, task, plan.cell_id),
                    {"cell": fields, "environment": environment, "status": status, "error": error, "rows": rows,
                     "task_description": task_description},
                )
                statuses[plan.cell_id] = status
                bar.cell_done(plan.cell_id, status, skipped_prompts=len(requests) - len(rows) if status != "ok" else 0)
            del model
            _release_device_memory()
    finally:
        bar.close()

    failed = sorted(cell for cell, status in statuses.items() if status == "error")
    if failed:
        raise SpecbenchError(f"job {name}: {len(failed)} cell(s) failed ({', '.join(failed)}); see the log above")
    manifest = {
        "job": name,
        "config": config["_path"],
        "config_hash": job.config_hash,
        "cells": {plan.cell_id: statuses[plan.cell_id] for plan in plans},
        "prompts": len(requests),
        "resumed_cells": len(plans) - len(pending),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    store.atomic_write_json(store.job_manifest_path(job.results_dir, pair, backend, task), manifest)
    oom = sorted(cell for cell, status in statuses.items() if status == "oom")
    log(f"done: {len(plans) - len(oom)} cells ok" + (f", {len(oom)} out of memory ({', '.join(oom)})" if oom else ""))
    return manifest


def _row(index: int, request, result, tokenizer, task, k: int) -> dict[str, Any]:
    """One prompt's stored result (fields listed in the project brief's results layout)."""
    text = _cut_at_stop(tokenizer.decode(result.tokens, skip_special_tokens=True), list(request.stop_strings))
    scored = task.score(request.doc_id, text)
    per_position = list(result.accepted_per_position) if k else []
    return {
        "prompt_index": index,
        "doc_id": request.doc_id,
        "prompt_tokens": result.prompt_tokens,
        "new_tokens": len(result.tokens),
        "iterations": result.iterations,
        "drafted": result.drafted,
        "accepted": result.accepted,
        "accepted_per_position": per_position,
        "prefill_s": result.prefill_s,
        "decode_s": result.decode_s,
        "draft_s": result.draft_s,
        "verify_s": result.verify_s,
        "stop_reason": result.stop_reason,
        "tokens": list(result.tokens),
        "margins": list(result.margins) if result.margins is not None else None,
        "text": text,
        "score": scored.score,
        "target": scored.target,
        "extracted": scored.extracted,
        "metrics": dict(scored.metrics),  # every per-sample metric of the task (e.g. both GSM8K filters)
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="sweep config (YAML)")
    parser.add_argument("--pair", required=True, help="pair name from the config")
    parser.add_argument("--backend", required=True, help="backend name from the config")
    parser.add_argument("--task", required=True, help="task name from the config")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for tensor maths (default: all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    config = cfg.load_config(args.config, check_models=False)  # the job loads its own pair
    run_job(config, args.pair, args.backend, args.task, progress=not args.no_progress, threads=args.threads)
    return 0
