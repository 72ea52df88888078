"""Hand-made results directories for the analysis tests (metrics, claims, report, compare, history).

`make_results_dir` writes cells/<pair>/<backend>/<task>/<cell_id>.json exactly as the workflow
does, with timings chosen so that every metric can be checked by hand:

  baseline, per prompt: 33 new tokens (32 decoded), 32 iterations, decode 0.32 s -> 100 tokens/s,
      one target step = 10 ms.
  speculative k=2: 16 iterations, 16 accepted of 32 drafted, draft 1 ms per draft step (c = 0.1),
      verification 11 ms (v = 1.1), decode_s = draft_s + verify_s = 0.208 s
      -> mean accepted length 2, speedup 0.32 / 0.208 = 1.538 = predicted 2 / (2 * 0.1 + 1.1).
  speculative k=4: 12 iterations, 20 accepted of 48 drafted, decode_s = 0.048 + 0.132 = 0.180 s
      -> mean accepted length 32/12 = 2.667, speedup 0.32 / 0.18 = 1.778 = predicted 2.667 / 1.5.

Per-prompt decode times carry a small deterministic jitter (+-2%, the same in both arms' sums)
so that bootstrap intervals have width without moving the point values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BASE_STEP_S = 0.010
DRAFT_STEP_S = 0.001
VERIFY_STEP_S = 0.011
# k -> (iterations, accepted, accepted_per_position) per prompt, 32 decoded tokens each
SPECULATIVE_PLAN = {
    2: (16, 16, [10, 6]),
    4: (12, 20, [8, 6, 4, 2]),
}
JITTER = (-0.02, 0.0, 0.02)  # sums to zero over every 3 prompts


def _environment(device: str, device_name: str) -> dict[str, Any]:
    return {
        "device_name": device_name, "device_count": 1, "driver": None, "platform": "Linux-x86_64",
        "python": "3.11.2", "torch": "2.13.0", "jax": None, "transformers": "5.2.0",
        "specbench_version": "0.1.0", "git_commit": "abc1234", "hostname": "testhost",
    }


def _cell_fields(pair: str, backend: str, task: str, mode: str, k: int, *, temperature: float, dtype: str,
                 device: str, target: str, target_params: float, draft_params: float) -> dict[str, Any]:
    cell_id = f"baseline-t{temperature:g}-{dtype}" if k == 0 else f"k{k}-t{temperature:g}-{dtype}"  # as the store names them
    return {
        "config_name": "test", "config_hash": "cfg0001", "pair": pair, "target": target, "draft": f"{target}-draft",
        "target_params": target_params, "draft_params": draft_params, "backend": backend, "task": task,
        "cell_id": cell_id, "mode": mode, "k": k, "temperature": temperature,
        "top_k": 0, "top_p": 1.0, "dtype": dtype, "device": device, "seed": 0, "max_new_tokens": 33,
    }


def _row(index: int, *, k: int, score: float | None, tokens: list[int], time_scale: float) -> dict[str, Any]:
    jitter = 1.0 + JITTER[(index + k) % 3]  # arms jitter differently per prompt, identically in sum
    if k == 0:
        iterations, accepted, per_position = 32, 0, []
        draft_s, verify_s, decode_s = 0.0, 0.0, 32 * BASE_STEP_S * jitter * time_scale
    else:
        iterations, accepted, per_position = SPECULATIVE_PLAN[k]
        draft_s = iterations * k * DRAFT_STEP_S * jitter * time_scale
        verify_s = iterations * VERIFY_STEP_S * jitter * time_scale
        decode_s = draft_s + verify_s
    return {
        "prompt_index": index, "doc_id": f"doc-{index}", "prompt_tokens": 20, "new_tokens": 33,
        "iterations": iterations, "drafted": iterations * k, "accepted": accepted,
        "accepted_per_position": list(per_position), "prefill_s": 0.05 * time_scale, "decode_s": decode_s,
        "draft_s": draft_s, "verify_s": verify_s, "stop_reason": "max_new_tokens", "tokens": tokens,
        "margins": [1.0 + 0.01 * j for j in range(len(tokens))], "text": "x", "score": score,
        "target": "1" if score is not None else None, "extracted": "1" if score else None,
    }


def make_results_dir(
    root: Path,
    *,
    n_prompts: int = 12,
    k_values: tuple[int, ...] = (2, 4),
    tasks: tuple[str, ...] = ("synthetic-arith",),
    backend: str = "torch",
    pair: str = "toy",
    target: str = "toy-target",
    target_params: float = 3.0e6,
    draft_params: float = 0.5e6,
    device: str = "cpu",
    device_name: str = "cpu",
    dtype: str = "float32",
    temperature: float = 0.0,
    scores: bool = True,
    divergent_prompts: tuple[int, ...] = (),
    oom_k: int | None = None,
    slow_cells: dict[int, float] | None = None,
) -> Path:
    """Write a results directory; returns it. `slow_cells` maps k -> a factor on that cell's times."""
    slow_cells = slow_cells or {}
    for task in tasks:
        for k in (0, *k_values):
            mode = "baseline" if k == 0 else "speculative"
            fields = _cell_fields(pair, backend, task, mode, k, temperature=temperature, dtype=dtype, device=device,
                                  target=target, target_params=target_params, draft_params=draft_params)
            rows = []
            for index in range(n_prompts):
                tokens = [100 + index + j for j in range(33)]
                if k and index in divergent_prompts:
                    tokens[5] += 1  # the speculative output departs from the baseline's at position 5
                score = float(index % 2 == 0) if scores else None
                rows.append(_row(index, k=k, score=score, tokens=tokens, time_scale=slow_cells.get(k, 1.0)))
            status, error = "ok", None
            if oom_k is not None and k == oom_k:
                status, error, rows = "oom", "CUDA out of memory. Tried to allocate 2.00 GiB", []
            document = {"cell": fields, "environment": _environment(device, device_name), "status": status,
                        "error": error, "rows": rows}
            path = root / "cells" / pair / backend / task / f"{fields['cell_id']}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(document))
    return root
