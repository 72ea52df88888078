"""Task quality per (pair, task), baseline against every speculative setting (`specbench score-quality`).

For each (backend, dtype, temperature, k) cell this reports the task's own metrics (lm-eval's
names, e.g. `exact_match,strict-match` and `exact_match,flexible-extract` for GSM8K, `pass@1`
for HumanEval) with 95% confidence intervals from `task.aggregate`, and, sample by sample
against the matched baseline (same backend, dtype, temperature), how many samples gained or
lost their score. Greedy speculative decoding emits the baseline's tokens, so there the
changed count must be 0; sampled cells draw other random streams and may differ per
sample while agreeing in distribution.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from specbench.workflow import config as cfg
from specbench.workflow import store


def _scores(rows: list[dict[str, Any]], metric_name: str):
    """SampleScores back from stored rows (rows without per-sample metrics carry the headline score)."""
    from specbench.tasks.base import SampleScore

    return [
        SampleScore(doc_id=row["doc_id"], score=row["score"], extracted=row["extracted"], target=row["target"],
                    metrics=row.get("metrics") or {metric_name: row["score"]})
        for row in rows
        if row.get("score") is not None
    ]


def quality_report(config: dict[str, Any], pair: str, task_name: str) -> dict[str, Any]:
    """Metrics with CIs per cell of (pair, task), and per-sample changes against the baseline."""
    from specbench.workflow.run import Job

    results = cfg.results_dir(config)
    task = Job(config, pair, config["backends"][0], task_name).load_task()
    cells = [store.read_cell(path) for path in store.iter_cell_files(results, pair, "*", task_name)]
    baselines = {
        (c["cell"]["backend"], c["cell"]["dtype"], c["cell"]["temperature"]): c
        for c in cells if c["cell"]["k"] == 0 and c["status"] == "ok"
    }
    entries = []
    for data in cells:
        cell = data["cell"]
        entry: dict[str, Any] = {key: cell[key] for key in ("backend", "cell_id", "mode", "k", "temperature", "dtype")}
        entry["status"] = data["status"]
        if data["status"] == "ok":
            entry["metrics"] = task.aggregate(_scores(data["rows"], task.metric_name))
            baseline = baselines.get((cell["backend"], cell["dtype"], cell["temperature"]))
            if cell["k"] and baseline is not None:
                base_scores = {row["prompt_index"]: row["score"] for row in baseline["rows"]}
                pairs = [(base_scores.get(row["prompt_index"]), row["score"]) for row in data["rows"]]
                entry["vs_baseline"] = {
                    "baseline_cell_id": baseline["cell"]["cell_id"],
                    "samples": len(pairs),
                    "gained": sum(1 for b, s in pairs if b is not None and s is not None and s > b),
                    "lost": sum(1 for b, s in pairs if b is not None and s is not None and s < b),
                }
        entries.append(entry)
    return {"pair": pair, "task": task.describe(), "metric": task.metric_name, "cells": entries}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="sweep config (YAML)")
    parser.add_argument("--pair", required=True, help="pair name from the config")
    parser.add_argument("--task", required=True, help="task name from the config")


def run(args: argparse.Namespace) -> int:
    config = cfg.load_config(args.config, check_models=False)  # the job loads its own pair
    report = quality_report(config, args.pair, args.task)
    out = cfg.results_dir(config) / "quality" / f"{args.pair}__{args.task}.json"
    store.atomic_write_json(out, report)
    for entry in report["cells"]:
        headline = entry.get("metrics", {}).get(report["metric"])
        text = f"{headline['value']:.3f} [{headline['ci_low']:.3f}, {headline['ci_high']:.3f}] n={headline['n']}" if headline else entry["status"]
        change = entry.get("vs_baseline")
        delta = f"  vs baseline: +{change['gained']} -{change['lost']} of {change['samples']}" if change else ""
        print(f"{entry['backend']:<12} {entry['cell_id']:<24} {report['metric']} {text}{delta}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    from specbench.workflow import standalone_main

    sys.exit(standalone_main(sys.modules[__name__], "specbench score-quality"))
