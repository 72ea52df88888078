"""`specbench compare BASELINE_RESULTS CANDIDATE_RESULTS [--threshold 0.05]`: flag regressions.

Cells are matched by pair/backend/task/cell_id. A throughput or speedup regression needs both:
  - a relative drop (baseline - candidate) / baseline above the threshold, and
  - a drop beyond the noise: larger than the sum of the two 95% CI half-widths (the intervals do
    not overlap); without intervals (a single prompt) the threshold alone decides.
Also flagged: any drop in the greedy exact-match rate, an accuracy drop (same two-part rule),
a cell that was ok and now failed (oom/error), and any claim whose verdict changed.
Cells present on one side only are listed but are not regressions.
Exit status: 0 nothing regressed, 1 something did, 2 unusable input.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from specbench.errors import SpecbenchError

# (column, label) compared for every common cell; speedup only exists for speculative cells.
NOISY_METRICS = (("tokens_per_s", "decode tokens/s"), ("speedup", "speedup"), ("accuracy", "accuracy"))


@dataclass
class Comparison:
    cell: str
    metric: str
    baseline: float
    baseline_ci: tuple[float, float]
    candidate: float
    candidate_ci: tuple[float, float]
    change: float  # relative, (candidate - baseline) / baseline
    regressed: bool
    why: str = ""


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _half_width(row: dict[str, Any], column: str) -> float:
    low, high = row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    return (float(high) - float(low)) / 2 if _finite(low) and _finite(high) else 0.0


def compare_metric(cell: str, column: str, label: str, base: dict[str, Any], cand: dict[str, Any],
                   threshold: float) -> Comparison | None:
    """One metric of one cell; None when either side lacks it."""
    b, c = base.get(column), cand.get(column)
    if not (_finite(b) and _finite(c)):
        return None
    b, c = float(b), float(c)
    change = (c - b) / b if b else 0.0
    drop = b - c
    noise = _half_width(base, column) + _half_width(cand, column)
    regressed = b > 0 and -change > threshold and drop > noise
    why = ""
    if regressed:
        why = (f"{label} fell {-change:.1%} (threshold {threshold:.0%}), beyond the noise "
               f"(drop {drop:.4g} > CI half-widths {noise:.4g})")
    elif b > 0 and -change > threshold:
        why = f"{label} fell {-change:.1%} but within the noise (CI half-widths {noise:.4g})"
    ci = lambda row: (row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high"))  # noqa: E731
    return Comparison(cell, label, b, ci(base), c, ci(cand), change, regressed, why)


def compare(baseline_dir: str | Path, candidate_dir: str | Path, threshold: float = 0.05) -> dict[str, Any]:
    """Everything `specbench compare` prints, as data."""
    from specbench.workflow.aggregate import load_tables

    for directory in (baseline_dir, candidate_dir):
        if not Path(directory).is_dir():
            raise SpecbenchError(f"{directory}: results directory not found")
    if not 0 <= threshold < 1:
        raise SpecbenchError(f"--threshold {threshold}: must be a fraction in [0, 1), e.g. 0.05 for 5%")
    base_tables, cand_tables = load_tables(baseline_dir), load_tables(candidate_dir)
    base_cells = {r["cell_ref"]: r for r in base_tables["cells"].to_dict("records")}
    cand_cells = {r["cell_ref"]: r for r in cand_tables["cells"].to_dict("records")}
    common = sorted(set(base_cells) & set(cand_cells))
    comparisons: list[Comparison] = []
    problems: list[str] = []
    for ref in common:
        base, cand = base_cells[ref], cand_cells[ref]
        if base["status"] == "ok" and cand["status"] != "ok":
            problems.append(f"{ref}: was ok, now {cand['status']} ({cand.get('error')})")
            continue
        if base.get("config_hash") != cand.get("config_hash"):
            problems_note = f"{ref}: config hash differs ({base.get('config_hash')} vs {cand.get('config_hash')})"
            comparisons.append(Comparison(ref, "config", math.nan, (None, None), math.nan, (None, None), 0.0, False,
                                          problems_note))
        for column, label in NOISY_METRICS:
            result = compare_metric(ref, column, label, base, cand, threshold)
            if result is not None:
                comparisons.append(result)
        b, c = base.get("exact_match_rate"), cand.get("exact_match_rate")
        if _finite(b) and _finite(c):
            dropped = float(c) < float(b)
            comparisons.append(Comparison(
                ref, "exact match rate", float(b), (None, None), float(c), (None, None),
                (float(c) - float(b)) / float(b) if float(b) else 0.0, dropped,
                f"exact-match rate fell from {float(b):.3f} to {float(c):.3f}" if dropped else "",
            ))
    base_verdicts = _verdicts(base_tables)
    cand_verdicts = _verdicts(cand_tables)
    verdict_changes = [f"{claim}: {base_verdicts[claim]} -> {cand_verdicts[claim]}"
                       for claim in sorted(set(base_verdicts) & set(cand_verdicts))
                       if base_verdicts[claim] != cand_verdicts[claim]]
    regressions = [f"{c.cell}: {c.why}" for c in comparisons if c.regressed] + problems + \
                  [f"verdict changed: {change}" for change in verdict_changes]
    return {
        "threshold": threshold,
        "comparisons": comparisons,
        "only_in_baseline": sorted(set(base_cells) - set(cand_cells)),
        "only_in_candidate": sorted(set(cand_cells) - set(base_cells)),
        "verdict_changes": verdict_changes,
        "regressions": regressions,
    }


def _verdicts(tables) -> dict[str, str]:
    frame = tables.get("verdicts")
    if frame is None or not len(frame):
        return {}
    return dict(zip(frame["claim_id"], frame["verdict"]))


def _fmt(value: Any) -> str:
    return f"{float(value):.4g}" if _finite(value) else "-"


def format_table(result: dict[str, Any]) -> str:
    """The comparison as a fixed-width text table followed by the lists of findings."""
    rows = [("cell", "metric", "baseline [95% CI]", "candidate [95% CI]", "change", "flag")]
    for c in result["comparisons"]:
        if c.metric == "config":
            continue
        with_ci = lambda v, ci: f"{_fmt(v)} [{_fmt(ci[0])}, {_fmt(ci[1])}]" if _finite(ci[0]) else _fmt(v)  # noqa: E731
        rows.append((c.cell, c.metric, with_ci(c.baseline, c.baseline_ci), with_ci(c.candidate, c.candidate_ci),
                     f"{c.change:+.1%}", "REGRESSED" if c.regressed else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in rows]
    notes = [c.why for c in result["comparisons"] if c.metric == "config"]
    for title, items in (("notes", notes), ("only in baseline", result["only_in_baseline"]),
                         ("only in candidate", result["only_in_candidate"]),
                         ("verdict changes", result["verdict_changes"]), ("REGRESSIONS", result["regressions"])):
        if items:
            lines.append("")
            lines.append(f"{title} ({len(items)}):")
            lines += [f"  {item}" for item in items]
    if not result["regressions"]:
        lines += ["", f"no regressions (threshold {result['threshold']:.0%})"]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", metavar="BASELINE_RESULTS", help="the accepted results directory")
    parser.add_argument("candidate", metavar="CANDIDATE_RESULTS", help="the new results directory")
    parser.add_argument("--threshold", type=float, default=0.05,
                        help="relative drop that counts as a regression when also beyond the CIs (default 0.05)")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the findings as JSON")


def run(args: argparse.Namespace) -> int:
    result = compare(args.baseline, args.candidate, args.threshold)
    print(format_table(result))
    if args.json:
        document = {**result, "comparisons": [asdict(c) for c in result["comparisons"]]}
        Path(args.json).write_text(json.dumps(document, indent=2, default=str) + "\n")
    return 1 if result["regressions"] else 0
