"""Benchmark tasks: GSM8K and HumanEval (lm-eval's definitions, online or from local files)
and synthetic-arith, behind one small API the workflow calls directly:

    task = load_task("gsm8k", data_files={"test": ".../test.jsonl"}, limit=10)
    for request in task.requests(): ...decode request.prompt...
    scores = [task.score(request.doc_id, completion) for ...]
    task.aggregate(scores)  # {"exact_match,strict-match": {"value", "ci_low", "ci_high", "n"}, ...}

Task modules are imported only when their task is loaded (lm-eval is heavy).
"""

from __future__ import annotations

import importlib

from specbench.errors import SpecbenchError
from specbench.tasks.base import Request, SampleScore, Task

# name -> "module:Class"
TASKS: dict[str, str] = {
    "gsm8k": "specbench.tasks.gsm8k:GSM8KTask",
    "humaneval": "specbench.tasks.humaneval:HumanEvalTask",
    "synthetic-arith": "specbench.tasks.synthetic:SyntheticArithTask",
}


def load_task(
    name: str,
    *,
    data_files: dict[str, str] | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    allow_code_execution: bool = False,
    seed: int = 0,
    max_new_tokens: int | None = None,
) -> Task:
    """Build task `name`.

    data_files: local copies instead of the hub ({"test": path, "train": path} for gsm8k,
      {"test": path to HumanEval.jsonl.gz} for humaneval); limit: the first N documents;
      num_fewshot: override the task's default (gsm8k: 5); allow_code_execution: required
      for humaneval, whose scoring runs generated code (sandboxed); seed: which synthetic
      problem set; max_new_tokens: cap generation below the task's own limit.
    """
    if name not in TASKS:
        raise SpecbenchError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    if limit is not None and limit < 1:
        raise SpecbenchError(f"limit must be a positive number of documents, got {limit}")
    module_name, class_name = TASKS[name].split(":")
    task_class = getattr(importlib.import_module(module_name), class_name)
    if name == "synthetic-arith":
        if data_files is not None:
            raise SpecbenchError("synthetic-arith generates its problems; it takes no data_files")
        return task_class(limit=limit, num_fewshot=num_fewshot, seed=seed, max_new_tokens=max_new_tokens)
    if name == "humaneval":
        return task_class(data_files=data_files, limit=limit, num_fewshot=num_fewshot,
                          allow_code_execution=allow_code_execution, max_new_tokens=max_new_tokens)
    return task_class(data_files=data_files, limit=limit, num_fewshot=num_fewshot, max_new_tokens=max_new_tokens)


__all__ = ["TASKS", "Request", "SampleScore", "Task", "load_task"]
