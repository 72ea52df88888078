"""Token-for-token equivalence of greedy speculative decoding (`specbench check-equivalence`).

Greedy speculative decoding must emit exactly the target's own greedy tokens. For every
greedy speculative cell and prompt this compares its tokens with the matched baseline
cell's (same pair, backend, task, dtype, device; k = 0) and reports either an exact
match or the first divergence: its position, both tokens, and the target's top-1 minus
top-2 logit margin there as each computation saw it (`GenerationResult.margins`).

A divergence is a *near-tie* when both margins are at most the dtype's bound
(`config.DEFAULT_NEAR_TIE_BOUNDS`, overridable per config): verification runs the target
over k+1 positions with other kernels than one-token decoding, a perturbation d of the
logits can only swap two logits closer than 2d, and then both computations see a small
margin. Anything else is a *mismatch*, a bug: the baseline was confident and the
speculative path chose otherwise (or margins are unknown, or one output simply stopped
earlier). Cells whose dtype is listed in `equivalence.exact_dtypes` and that ran on the
CPU must match exactly: there even a near-tie fails the check.

Exit status: 0 when every compared prompt passes, 1 when any does not (the workflow's
check rule then fails), 2 for unusable input.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from specbench.errors import SpecbenchError
from specbench.workflow import store
from specbench.workflow.config import DEFAULT_NEAR_TIE_BOUNDS, load_config

EXACT, NEAR_TIE, MISMATCH = "exact", "near-tie", "mismatch"


def first_divergence(
    baseline_tokens: list[int],
    speculative_tokens: list[int],
    baseline_margins: list[float] | None,
    speculative_margins: list[float] | None,
    bound: float,
) -> dict[str, Any]:
    """Compare one prompt's two outputs; classify the first divergence (see module docstring)."""
    shorter = min(len(baseline_tokens), len(speculative_tokens))
    position = next((i for i in range(shorter) if baseline_tokens[i] != speculative_tokens[i]), None)
    if position is None and len(baseline_tokens) == len(speculative_tokens):
        return {"classification": EXACT, "position": None}

    def at(values: list | None, index: int):
        return values[index] if values is not None and index < len(values) else None

    if position is None:  # same tokens, but one output stopped earlier: not a numerical effect
        return {
            "classification": MISMATCH,
            "position": shorter,
            "baseline_token": at(baseline_tokens, shorter),
            "speculative_token": at(speculative_tokens, shorter),
            "baseline_margin": at(baseline_margins, shorter),
            "speculative_margin": at(speculative_margins, shorter),
            "reason": f"outputs agree but have {len(baseline_tokens)} vs {len(speculative_tokens)} tokens",
        }
    baseline_margin, speculative_margin = at(baseline_margins, position), at(speculative_margins, position)
    if baseline_margin is None or speculative_margin is None:
        classification, reason = MISMATCH, "logit margins unavailable, so the divergence cannot be explained"
    elif baseline_margin <= bound and speculative_margin <= bound:
        classification, reason = NEAR_TIE, f"both margins at most the near-tie bound {bound:g}"
    else:
        classification = MISMATCH
        reason = f"margin {max(baseline_margin, speculative_margin):.4g} above the near-tie bound {bound:g}"
    return {
        "classification": classification,
        "position": position,
        "baseline_token": baseline_tokens[position],
        "speculative_token": speculative_tokens[position],
        "baseline_margin": baseline_margin,
        "speculative_margin": speculative_margin,
        "reason": reason,
    }


def _is_greedy(cell: dict[str, Any]) -> bool:
    return float(cell["temperature"]) == 0.0


def check_job(
    results_dir: str | Path,
    pair: str,
    backend: str,
    task: str,
    *,
    near_tie_bounds: dict[str, float] | None = None,
    exact_dtypes: list[str] = ("float32",),
) -> dict[str, Any]:
    """Compare every greedy speculative cell of one job with its baseline; return the report."""
    bounds = {**DEFAULT_NEAR_TIE_BOUNDS, **(near_tie_bounds or {})}
    cells = [store.read_cell(path) for path in store.iter_cell_files(results_dir, pair, backend, task)]
    if not cells:
        raise SpecbenchError(f"{results_dir}: no cells for {store.job_name(pair, backend, task)}")
    baselines = {
        (c["cell"]["dtype"], c["cell"]["device"]): c for c in cells if _is_greedy(c["cell"]) and c["cell"]["k"] == 0
    }
    summary = defaultdict(int)
    reports, problems = [], []
    for data in cells:
        cell = data["cell"]
        if not _is_greedy(cell) or cell["k"] == 0:
            continue
        key = (cell["dtype"], cell["device"])
        bound = bounds[cell["dtype"]]
        exact_required = cell["dtype"] in exact_dtypes and str(cell["device"]).startswith("cpu")
        report: dict[str, Any] = {
            "cell_id": cell["cell_id"],
            "k": cell["k"],
            "dtype": cell["dtype"],
            "device": cell["device"],
            "near_tie_bound": bound,
            "exact_required": exact_required,
            "prompts": [],
        }
        reports.append(report)
        baseline = baselines.get(key)
        if data["status"] != "ok" or baseline is None or baseline["status"] != "ok":
            why = f"speculative cell {data['status']}" if data["status"] != "ok" else "no usable baseline cell"
            report["skipped"] = why
            summary["skipped_cells"] += 1
            continue
        baseline_rows = {row["prompt_index"]: row for row in baseline["rows"]}
        for row in data["rows"]:
            reference = baseline_rows.get(row["prompt_index"])
            if reference is None:
                raise SpecbenchError(f"{cell['cell_id']}: prompt {row['prompt_index']} has no baseline row")
            verdict = first_divergence(reference["tokens"], row["tokens"], reference["margins"], row["margins"], bound)
            verdict = {"prompt_index": row["prompt_index"], "doc_id": row["doc_id"], **verdict}
            report["prompts"].append(verdict)
            summary["compared"] += 1
            summary[verdict["classification"].replace("-", "_")] += 1
            failed = verdict["classification"] == MISMATCH or (exact_required and verdict["classification"] != EXACT)
            if failed:
                problems.append(
                    f"{cell['cell_id']} prompt {row['prompt_index']} (doc {row['doc_id']}): {verdict['classification']} "
                    f"at token {verdict['position']}: baseline {verdict['baseline_token']} vs speculative "
                    f"{verdict['speculative_token']}; {verdict['reason']}"
                    + ("; this dtype on CPU must match exactly" if exact_required and verdict["classification"] == NEAR_TIE else "")
                )
        report.update({name: sum(p["classification"] == name for p in report["prompts"]) for name in (EXACT, NEAR_TIE, MISMATCH)})
    compared = summary["compared"]
    result = {
        "pair": pair,
        "backend": backend,
        "task": task,
        "near_tie_bounds": bounds,
        "exact_dtypes": list(exact_dtypes),
        "summary": {
            "compared": compared,
            "exact": summary["exact"],
            "near_tie": summary["near_tie"],
            "mismatch": summary["mismatch"],
            "exact_rate": summary["exact"] / compared if compared else math.nan,
            "skipped_cells": summary["skipped_cells"],
        },
        "passed": not problems,
        "problems": problems,
        "cells": reports,
    }
    return result


def job_keys(results_dir: str | Path) -> list[tuple[str, str, str]]:
    """(pair, backend, task) of every job with cells under `results_dir`."""
    return sorted({tuple(path.parts[-4:-1]) for path in store.iter_cell_files(results_dir)})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", help="results directory (contains cells/)")
    parser.add_argument("--config", help="sweep config whose `equivalence` settings apply (default: built-in bounds)")
    parser.add_argument("--pair", help="only this pair (with --backend and --task: one job)")
    parser.add_argument("--backend", help="only this backend")
    parser.add_argument("--task", help="only this task")


def run(args: argparse.Namespace) -> int:
    results_dir = Path(args.results_dir)
    if not (results_dir / "cells").is_dir():
        raise SpecbenchError(f"{results_dir}: no cells/ folder, not a results directory")
    bounds, exact_dtypes = None, ["float32"]
    if args.config:
        # Only the `equivalence` settings are read: no checkpoint is needed (on a cluster host
        # another pair's checkpoint may be out of sight, and that must not fail this job).
        settings = load_config(args.config, check_models=False)["equivalence"]
        bounds, exact_dtypes = settings["near_tie_bounds"], settings["exact_dtypes"]
    jobs = [
        key for key in job_keys(results_dir)
        if (args.pair in (None, key[0])) and (args.backend in (None, key[1])) and (args.task in (None, key[2]))
    ]
    if not jobs:
        raise SpecbenchError(f"{results_dir}: no cells match the given --pair/--backend/--task")
    failed = False
    for pair, backend, task in jobs:
        result = check_job(results_dir, pair, backend, task, near_tie_bounds=bounds, exact_dtypes=exact_dtypes)
        store.atomic_write_json(store.equivalence_path(results_dir, pair, backend, task), result)
        s = result["summary"]
        print(
            f"{store.job_name(pair, backend, task)}: {s['exact']}/{s['compared']} exact, {s['near_tie']} near-tie, "
            f"{s['mismatch']} mismatch" + (f", {s['skipped_cells']} cell(s) skipped" if s["skipped_cells"] else "")
        )
        for problem in result["problems"]:
            print(f"  FAIL {problem}")
        failed = failed or not result["passed"]
    if failed:
        print("equivalence check failed: speculative greedy output differs from the baseline's", file=sys.stderr)
        return 1
    return 0
