"""What a running sweep shows: a progress bar per job, and a one-screen summary at the end.

The bar goes to stderr, which the workflow redirects into the job's log, so it updates
rarely (every few seconds) when stderr is a file rather than a terminal.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


class JobProgress:
    """Prompts done across all cells of one job, with cells done and decode tokens/s so far.

    On a terminal: a tqdm bar. Into a log file (the workflow's case) a bar's carriage returns
    would make one endless line, so instead one plain line per finished cell.
    """

    def __init__(self, *, job: str, cells: int, prompts_per_cell: int, enabled: bool = True):
        self.job = job
        self.cells_total = cells
        self.prompts_total = cells * prompts_per_cell
        self.prompts_done = 0
        self.cells_done = 0
        self.tokens = 0
        self.seconds = 0.0
        self.enabled = enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.prompts_total, desc=job, unit="prompt", file=sys.stderr, dynamic_ncols=True)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def prompt_done(self, new_tokens: int, decode_s: float) -> None:
        # decode throughput counts tokens after the first (that one comes from prefill)
        self.tokens += max(new_tokens - 1, 0)
        self.seconds += decode_s
        self.prompts_done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"cells {self.cells_done}/{self.cells_total}, {self.tokens_per_s:.1f} tok/s",
                                     refresh=False)
            self.bar.update(1)

    def cell_done(self, cell_id: str = "", status: str = "ok", *, skipped_prompts: int = 0) -> None:
        self.cells_done += 1
        self.prompts_done += skipped_prompts
        if self.bar is not None:
            self.bar.update(skipped_prompts)
            self.bar.set_postfix_str(f"cells {self.cells_done}/{self.cells_total}", refresh=False)
        elif self.enabled and cell_id:
            print(
                f"[{self.job}] cell {cell_id}: {status}; cells {self.cells_done}/{self.cells_total}, "
                f"prompts {self.prompts_done}/{self.prompts_total}, decode {self.tokens_per_s:.1f} tok/s so far",
                file=sys.stderr, flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _pooled_tokens_per_s(rows: list[dict[str, Any]]) -> float:
    from specbench.metrics import decode_tokens_per_s

    return decode_tokens_per_s(sum(r["new_tokens"] for r in rows) - len(rows) + 1, sum(r["decode_s"] for r in rows))


def summary_table(results_dir: str | os.PathLike) -> str:
    """One line per (pair, backend, task, dtype): cells by status, greedy baseline tokens/s,
    the best greedy k with its pooled speedup and acceptance, and the equivalence verdict.

    A quick look only; the report has the paired speedups with confidence intervals.
    """
    from specbench.metrics import acceptance_rate
    from specbench.workflow.store import equivalence_path, iter_cell_files, read_cell, read_json

    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for path in iter_cell_files(results_dir):
        data = read_cell(path)
        cell = data["cell"]
        groups[(cell["pair"], cell["backend"], cell["task"], cell["dtype"])].append(data)
    if not groups:
        return f"no cells under {results_dir}"

    header = f"{'pair/backend/task':<34} {'dtype':<8} {'cells':>9} {'base tok/s':>10} {'best k':>6} {'speedup':>7} {'accept':>6}  equivalence"
    lines = [header, "-" * len(header)]
    for (pair, backend, task, dtype), cells in sorted(groups.items()):
        statuses = defaultdict(int)
        for data in cells:
            statuses[data["status"]] += 1
        counts = "/".join(f"{statuses[s]}{s[0]}" for s in ("ok", "oom", "error") if statuses[s]) or "0"
        greedy = [d for d in cells if d["status"] == "ok" and d["cell"]["temperature"] == 0.0 and d["rows"]]
        baseline = next((d for d in greedy if d["cell"]["k"] == 0), None)
        base_rate = _pooled_tokens_per_s(baseline["rows"]) if baseline else float("nan")
        best_k, best_speedup, best_accept = "-", float("nan"), float("nan")
        for data in greedy:
            if data["cell"]["k"] == 0:
                continue
            speedup = _pooled_tokens_per_s(data["rows"]) / base_rate if base_rate == base_rate else float("nan")
            if speedup == speedup and not (best_speedup >= speedup):
                rows = data["rows"]
                best_k, best_speedup = str(data["cell"]["k"]), speedup
                best_accept = acceptance_rate(sum(r["accepted"] for r in rows), sum(r["drafted"] for r in rows))
        equivalence = "-"
        eq_file = equivalence_path(results_dir, pair, backend, task)
        if eq_file.is_file():
            summary = read_json(eq_file).get("summary", {})
            equivalence = f"{summary.get('exact', 0)}/{summary.get('compared', 0)} exact"
            if summary.get("mismatch"):
                equivalence += f", {summary['mismatch']} MISMATCH"
            if summary.get("near_tie"):
                equivalence += f", {summary['near_tie']} near-tie"
        name = f"{pair}/{backend}/{task}"
        lines.append(
            f"{name:<34} {dtype:<8} {counts:>9} {base_rate:>10.1f} {best_k:>6} {best_speedup:>6.2f}x {best_accept:>6.2f}  {equivalence}"
        )
    return "\n".join(lines)


def print_summary(results_dir: str | os.PathLike, *, file=None) -> None:
    """Print the summary table (used by the workflow's onsuccess handler)."""
    out = file or sys.stdout
    print(f"\nspecbench summary: {Path(results_dir)}", file=out)
    print(summary_table(results_dir), file=out)
