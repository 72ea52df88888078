"""Verdicts: does what was measured reproduce a claim?

  reproduced          the measurement (its whole 95% CI, for timed or sampled figures) lies inside
                      the claim's accepted region (its threshold or range widened by the tolerance)
  not reproduced      it lies wholly outside
  inconclusive        the CI straddles the boundary, there is no CI, or fewer prompts than the
                      claim's min_samples
  not applicable here no cell meets the claim's conditions (hardware, model, size, task, decoding);
                      the verdict then names the closest measurement made and why it does not apply

A claim selects its cells with `select`: `best` judges the best applicable cell (a source's
headline figure is its best configuration, e.g. "up to 3x"), `all` requires every applicable
cell to reproduce (unchanged quality, acceptance range), `pooled` adds up counts over all
applicable cells (exact-match: exact prompts over compared prompts, whatever the cell). Speed verdicts add a feasibility line
from Leviathan et al.'s bound using the measured per-token acceptance and cost ratios.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from specbench import metrics
from specbench.claims.registry import SPEED_METRICS, Claim

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
NOT_APPLICABLE = "not applicable here"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_APPLICABLE)

# Metrics read from a single value without an interval: structural facts of the run (parameter
# counts, vendors) or an observed count of exact prompts (a proportion over the prompts tried).
POINT_METRICS = ("draft_size_ratio", "exact_match_rate", "verify_ratio", "portability")


@dataclass
class Verdict:
    claim_id: str
    source_id: str
    source_title: str
    source_url: str | None
    quote: str
    metric: str
    expected: str
    verdict: str
    measured: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    n: int = 0
    cells: list[str] = field(default_factory=list)
    reason: str = ""
    closest: str = ""
    feasibility: str = ""
    conditions: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Measurement:
    value: float
    ci_low: float
    ci_high: float
    n: int
    row: dict[str, Any]


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def vendor_of(row: dict[str, Any]) -> str:
    """Hardware vendor of a cell: cpu, nvidia, amd or tpu, from its device and device_name."""
    device = str(row.get("device") or "").lower()
    name = str(row.get("env_device_name") or "").lower()
    if device.startswith("cpu"):
        return "cpu"
    if "tpu" in device or "tpu" in name:
        return "tpu"
    if any(word in name for word in ("amd", "instinct", "radeon", "mi250", "mi300")):
        return "amd"  # ROCm builds of torch also call the device "cuda"
    if device.startswith(("cuda", "gpu")):
        return "nvidia"
    return device or "unknown"


def _conditions_text(conditions: dict[str, Any]) -> str:
    parts = []
    hardware = conditions.get("hardware", {})
    if hardware.get("names"):
        parts.append("hardware " + "/".join(hardware["names"]))
    elif hardware.get("kind") == "accelerator":
        parts.append("an accelerator (GPU/TPU)")
    if conditions.get("models"):
        parts.append("model " + "/".join(conditions["models"]))
    if conditions.get("size_class"):
        parts.append(f"size {conditions['size_class']}")
    elif conditions.get("target_params"):
        low, high = conditions["target_params"]
        parts.append(f"target {low / 1e9:g}-{high / 1e9:g}B params")
    if conditions.get("tasks"):
        parts.append("tasks " + "/".join(conditions["tasks"]))
    if conditions.get("batch_size"):
        parts.append(f"batch {conditions['batch_size']}")
    if conditions.get("decoding", "any") != "any":
        parts.append(conditions["decoding"] + " decoding")
    if conditions.get("dtypes"):
        parts.append("dtype " + "/".join(conditions["dtypes"]))
    return ", ".join(parts) or "any"


def unmet_conditions(claim: Claim, row: dict[str, Any]) -> list[str]:
    """Why a cell does not meet the claim's conditions (empty when it does)."""
    conditions, reasons = claim.conditions, []
    hardware = conditions.get("hardware", {})
    device_name = str(row.get("env_device_name") or row.get("device") or "unknown device")
    if hardware.get("kind") == "accelerator" and vendor_of(row) == "cpu":
        reasons.append(f"ran on CPU ({device_name}), the claim is about GPU/TPU")
    if hardware.get("names") and not any(n.lower() in device_name.lower() for n in hardware["names"]):
        reasons.append(f"device {device_name} is not {'/'.join(hardware['names'])}")
    if conditions.get("models"):
        model_text = f"{row.get('target') or ''} {row.get('pair') or ''}".lower()
        if not any(m.lower() in model_text for m in conditions["models"]):
            reasons.append(f"target {row.get('target') or row.get('pair')} is not a {'/'.join(conditions['models'])} model")
    if conditions.get("target_params"):
        low, high = conditions["target_params"]
        params = row.get("target_params")
        if not _finite(params):
            reasons.append("target parameter count not recorded")
        elif not low <= float(params) <= high:
            reasons.append(f"target has {float(params) / 1e9:.3g}B params, the claim needs {low / 1e9:g}-{high / 1e9:g}B")
    if conditions.get("tasks") and str(row.get("task")) not in conditions["tasks"]:
        reasons.append(f"task {row.get('task')} is not {'/'.join(conditions['tasks'])}")
    batch = row.get("batch_size") if _finite(row.get("batch_size")) else 1  # the engines decode one sequence
    if conditions.get("batch_size") and int(batch) != conditions["batch_size"]:
        reasons.append(f"batch size {batch}, the claim is at {conditions['batch_size']}")
    decoding = conditions.get("decoding", "any")
    greedy = _finite(row.get("temperature")) and float(row["temperature"]) == 0.0
    if decoding == "greedy" and not greedy:
        reasons.append(f"sampled at temperature {row.get('temperature')}, the claim is about greedy decoding")
    if decoding == "sampled" and greedy:
        reasons.append("greedy decoding, the claim is about sampling")
    if conditions.get("dtypes") and row.get("dtype") not in conditions["dtypes"]:
        reasons.append(f"dtype {row.get('dtype')} is not {'/'.join(conditions['dtypes'])}")
    return reasons


def _measure(metric: str, row: dict[str, Any]) -> _Measurement | None:
    """The claim metric's value in one table row, or None where the row does not measure it."""
    if metric in ("speedup", "tokens_per_s_ratio", "acceptance_rate", "quality_delta"):
        n = row.get("n") if metric == "quality_delta" else row.get("n_prompts")
        value = row.get(metric)
        if not _finite(value):
            return None
        return _Measurement(float(value), float(row.get(f"{metric}_ci_low", math.nan)),
                            float(row.get(f"{metric}_ci_high", math.nan)), int(n or 0), row)
    if metric == "exact_match_rate":
        compared = row.get("compared_prompts")
        if not _finite(compared) or int(compared) == 0:
            return None
        interval = metrics.wilson_interval(float(row["exact_matches"]), int(compared))
        return _Measurement(interval.value, interval.ci_low, interval.ci_high, int(compared), row)
    if metric == "draft_size_ratio":
        if not (_finite(row.get("draft_params")) and _finite(row.get("target_params"))) or not row["target_params"]:
            return None
        ratio = float(row["draft_params"]) / float(row["target_params"])
        return _Measurement(ratio, ratio, ratio, int(row.get("n_prompts") or 0), row)
    if metric == "verify_ratio":
        value = row.get("verify_ratio")
        if not _finite(value):
            return None
        return _Measurement(float(value), math.nan, math.nan, int(row.get("n_prompts") or 0), row)
    return None


def _outcome(claim: Claim, m: _Measurement) -> tuple[str, str]:
    """Verdict and reason for one measurement against the claim's accepted region."""
    low, high = claim.accepted_region()
    if claim.metric not in ("draft_size_ratio",) and m.n < claim.min_samples:
        return INCONCLUSIVE, f"too few samples ({m.n} prompts, the claim asks for at least {claim.min_samples})"
    if claim.metric == "quality_delta" and _finite(m.row.get("baseline_accuracy")) and m.row["baseline_accuracy"] == 0:
        return INCONCLUSIVE, "the baseline scores 0 on this task, so a quality loss could not show"
    if claim.metric in POINT_METRICS:
        inside = low <= m.value <= high
        return (REPRODUCED, "measured value inside the claimed region") if inside else \
            (NOT_REPRODUCED, f"measured {m.value:.4g} outside [{low:.4g}, {high:.4g}]")
    if not (_finite(m.ci_low) and _finite(m.ci_high)):
        return INCONCLUSIVE, "no confidence interval (too few prompts to resample)"
    if low <= m.ci_low and m.ci_high <= high:
        return REPRODUCED, f"95% CI [{m.ci_low:.3g}, {m.ci_high:.3g}] inside [{low:.3g}, {high:.3g}]"
    if m.ci_high < low or m.ci_low > high:
        return NOT_REPRODUCED, f"95% CI [{m.ci_low:.3g}, {m.ci_high:.3g}] outside [{low:.3g}, {high:.3g}]"
    return INCONCLUSIVE, f"95% CI [{m.ci_low:.3g}, {m.ci_high:.3g}] straddles the claimed region [{low:.3g}, {high:.3g}]"


def _cell_label(row: dict[str, Any]) -> str:
    device = row.get("env_device_name") or row.get("device")
    return (f"{row.get('cell_ref')} ({row.get('pair')}, {row.get('backend')}, {row.get('task')}, "
            f"k={row.get('k')}, T={row.get('temperature')}, {row.get('dtype')}, {device})")


def feasibility_line(claim: Claim, row: dict[str, Any]) -> str:
    """What Leviathan et al.'s bound allows at the measured acceptance and costs, and what the claim needs."""
    a, c = row.get("per_token_acceptance"), row.get("cost_ratio")
    v = row.get("verify_ratio") if _finite(row.get("verify_ratio")) else 1.0
    if not (_finite(a) and _finite(c)):
        return "feasibility: no measured acceptance/cost ratio to apply Leviathan et al.'s bound to"
    best_k, best = metrics.best_speedup(float(a), float(c), float(v))
    target = claim.headline_value()
    needed = metrics.acceptance_needed(float(target), float(c), float(v))
    line = (f"feasibility (Leviathan et al. 2023, cell {row.get('cell_ref')}): at measured per-token acceptance "
            f"a = {a:.2f}, cost ratio c = {c:.3g}, verify ratio v = {v:.3g}, the best any k could give is "
            f"{best:.2f}x (k = {best_k}); ")
    if math.isnan(needed):
        ceiling = metrics.best_speedup(1.0, float(c), float(v))[1]
        return line + f"{target:g}x is out of reach at this c and v for any acceptance (ceiling {ceiling:.2f}x at a = 1)"
    return line + f"{target:g}x would need a >= {needed:.2f} at this c and v"


def _judge_portability(claim: Claim, rows: list[dict[str, Any]], verdict: Verdict) -> Verdict:
    greedy = [r for r in rows if _finite(r.get("compared_prompts")) and int(r["compared_prompts"]) > 0]
    by_vendor: dict[str, list[dict[str, Any]]] = {}
    for row in greedy:
        by_vendor.setdefault(vendor_of(row), []).append(row)
    verified = [v for v in claim.vendors if v in by_vendor and all(r["exact_match_rate"] == 1.0 for r in by_vendor[v])]
    failed = [v for v in claim.vendors if v in by_vendor and v not in verified]
    missing = [v for v in claim.vendors if v not in by_vendor]
    verdict.measured = len(verified) / len(claim.vendors)
    verdict.n = sum(len(by_vendor.get(v, [])) for v in claim.vendors)
    verdict.cells = [str(r["cell_ref"]) for v in claim.vendors for r in by_vendor.get(v, [])]
    ran_on = ", ".join(f"{v} ({len(rs)} greedy speculative cells)" for v, rs in sorted(by_vendor.items())) or "nothing"
    if failed:
        verdict.verdict = NOT_REPRODUCED
        verdict.reason = f"greedy outputs not identical on {', '.join(failed)}"
    elif missing:
        verdict.verdict = NOT_APPLICABLE
        verdict.reason = (f"verified on {', '.join(verified) or 'none of the claimed vendors'}; "
                          f"no runs on {', '.join(missing)} here")
        verdict.closest = f"ran on: {ran_on}"
    else:
        verdict.verdict = REPRODUCED
        verdict.reason = f"exact greedy speculative decoding on {', '.join(verified)}"
    return verdict


def judge(claim: Claim, rows: list[dict[str, Any]]) -> Verdict:
    """The verdict on one claim from the speculative rows of the cells (or quality) table."""
    verdict = Verdict(
        claim_id=claim.id, source_id=claim.source["id"], source_title=claim.source["title"],
        source_url=claim.source.get("url"), quote=claim.quote,
        metric=claim.metric, expected=claim.expected_text(), verdict=NOT_APPLICABLE,
        conditions=_conditions_text(claim.conditions),
    )
    if claim.metric == "portability":
        return _judge_portability(claim, rows, verdict)
    measured = [m for m in (_measure(claim.metric, row) for row in rows) if m is not None]
    applicable = [m for m in measured if not unmet_conditions(claim, m.row)]
    low, high = claim.accepted_region()
    if not applicable:
        verdict.reason = "no cell meets the claim's conditions (" + verdict.conditions + ")"
        if measured:
            closest = min(measured, key=lambda m: (len(unmet_conditions(claim, m.row)), -m.value))
            ci = f" [95% CI {closest.ci_low:.3g}, {closest.ci_high:.3g}]" if _finite(closest.ci_low) else ""
            verdict.closest = (f"closest: {_cell_label(closest.row)} measured {closest.value:.3g}{ci}; does not apply "
                               f"because {'; '.join(unmet_conditions(claim, closest.row))}")
            verdict.measured, verdict.ci_low, verdict.ci_high, verdict.n = closest.value, closest.ci_low, closest.ci_high, closest.n
            verdict.cells = [str(closest.row.get("cell_ref"))]
            verdict.reason = "conditions not met here: " + "; ".join(unmet_conditions(claim, closest.row))
            if claim.metric in SPEED_METRICS:
                verdict.feasibility = feasibility_line(claim, closest.row)
        else:
            verdict.closest = "closest: nothing measured this metric"
        return verdict

    if claim.select == "pooled":
        # Counts add up across cells: exact prompts over compared prompts, all applicable cells together.
        exact = sum(float(m.row["exact_matches"]) for m in applicable)
        compared = sum(int(m.row["compared_prompts"]) for m in applicable)
        interval = metrics.wilson_interval(exact, compared)
        pooled = _Measurement(interval.value, interval.ci_low, interval.ci_high, compared, {})
        verdict.verdict, reason = _outcome(claim, pooled)
        failing = [str(m.row.get("cell_ref")) for m in applicable if m.value < 1.0]
        verdict.reason = (f"{exact:.0f} of {compared} prompts over {len(applicable)} cells: {reason}"
                          + (f"; divergent cells: {', '.join(failing)}" if failing else ""))
        verdict.measured, verdict.ci_low, verdict.ci_high, verdict.n = pooled.value, pooled.ci_low, pooled.ci_high, compared
        verdict.cells = [str(m.row.get("cell_ref")) for m in applicable]
        return verdict
    if claim.select == "best":
        prefer_low = claim.comparator == "<="
        chosen = min(applicable, key=lambda m: m.value) if prefer_low else max(applicable, key=lambda m: m.value)
        verdict.verdict, verdict.reason = _outcome(claim, chosen)
        verdict.reason = f"best of {len(applicable)} applicable cells: " + verdict.reason
        decisive = chosen
    else:
        outcomes = [(m, *_outcome(claim, m)) for m in applicable]
        rank = {NOT_REPRODUCED: 0, INCONCLUSIVE: 1, REPRODUCED: 2}
        # The decisive cell is the one furthest toward failing: worst outcome, then furthest from the region.
        centre = (low + high) / 2 if math.isfinite(low) and math.isfinite(high) else (low if math.isfinite(low) else high)
        decisive, verdict.verdict, reason = min(outcomes, key=lambda o: (rank[o[1]], -abs(o[0].value - centre)))
        counts = {v: sum(1 for o in outcomes if o[1] == v) for v in rank}
        summary = ", ".join(f"{counts[v]} {v}" for v in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE) if counts[v])
        verdict.reason = f"all {len(applicable)} applicable cells must hold ({summary}); deciding cell: {reason}"
    verdict.measured, verdict.ci_low, verdict.ci_high, verdict.n = decisive.value, decisive.ci_low, decisive.ci_high, decisive.n
    verdict.cells = [str(m.row.get("cell_ref")) for m in applicable]
    if claim.metric in SPEED_METRICS:
        verdict.feasibility = feasibility_line(claim, decisive.row)
    return verdict


def evaluate_claims(claims: list[Claim], tables: dict[str, Any]) -> list[Verdict]:
    """A verdict per claim from the aggregate tables (cells, quality)."""
    cells = tables["cells"]
    cell_rows = cells.to_dict("records") if len(cells) else []
    speculative = [r for r in cell_rows if r.get("mode") == "speculative" and r.get("status") == "ok"]
    by_ref = {str(r["cell_ref"]): r for r in cell_rows}
    quality = tables.get("quality")
    quality_rows = []
    if quality is not None and len(quality):
        for row in quality.to_dict("records"):
            if row.get("mode") == "speculative":
                # Conditions look at the cell's environment, which the quality table does not repeat.
                quality_rows.append({**by_ref.get(str(row["cell_ref"]), {}), **row})
    return [judge(claim, quality_rows if claim.metric == "quality_delta" else speculative) for claim in claims]


def verdicts_frame(verdicts: list[Verdict]):
    """The verdicts as a DataFrame (cells joined with spaces for CSV)."""
    import pandas as pd

    columns = list(Verdict.__dataclass_fields__)
    frame = pd.DataFrame([v.to_dict() for v in verdicts], columns=columns)
    return frame
