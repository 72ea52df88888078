"""Claims registry (schema + semantic checks) and verdicts for each outcome."""

from __future__ import annotations

import copy

import pytest
import yaml

from specbench.claims import (
    INCONCLUSIVE,
    METRICS,
    NOT_APPLICABLE,
    NOT_REPRODUCED,
    REPRODUCED,
    evaluate_claims,
    judge,
    load_claims,
    load_claims_file,
)
from specbench.errors import SpecbenchError
from specbench.workflow.aggregate import build_tables
from tests.analysis_fixtures import make_results_dir

GOOD_FILE = {
    "source": {"id": "paper", "title": "A paper", "url": "https://example.org/paper", "date": "2024"},
    "claims": [{
        "id": "paper.speedup",
        "quote": "we get 2x",
        "metric": "speedup",
        "comparator": ">=",
        "value": 2.0,
        "tolerance": 0.1,
        "select": "best",
        "conditions": {"decoding": "greedy"},
    }],
}


def _write(tmp_path, document, name="paper.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document))
    return path


def _claim(tmp_path, **changes):
    document = copy.deepcopy(GOOD_FILE)
    document["claims"][0].update(changes)
    return load_claims_file(_write(tmp_path, document))[0]


def test_shipped_claims_load_and_cover_the_three_sources():
    claims = load_claims()
    sources = {claim.source["id"] for claim in claims}
    assert sources == {"gemma4-announcement", "leviathan2023", "chen2023"}
    assert all(claim.metric in METRICS and claim.quote for claim in claims)
    gemma = [c for c in claims if c.source["id"] == "gemma4-announcement"]
    assert {c.metric for c in gemma} >= {"speedup", "tokens_per_s_ratio", "acceptance_rate", "exact_match_rate",
                                         "draft_size_ratio", "verify_ratio", "quality_delta", "portability"}
    leviathan = next(c for c in claims if c.id == "leviathan2023.t5xxl-2x-3x")
    assert leviathan.range == (2.0, 3.0) and "T5-XXL" in leviathan.quote


@pytest.mark.parametrize("change, field", [
    ({"metric": "happiness"}, "metric"),
    ({"quote": None}, "quote"),
    ({"comparator": "between", "range": [3.0, 2.0]}, "range"),
    ({"comparator": "between"}, "range"),
    ({"conditions": {"hardware": {"kind": "quantum"}}}, "conditions.hardware.kind"),
    ({"conditions": {"colour": "red"}}, "conditions.colour"),
    ({"select": "pooled"}, "select"),
])
def test_malformed_claim_names_file_claim_and_field(tmp_path, change, field):
    document = copy.deepcopy(GOOD_FILE)
    document["claims"][0].update(change)
    if change.get("quote", "") is None:
        del document["claims"][0]["quote"]
    path = _write(tmp_path, document)
    with pytest.raises(SpecbenchError) as error:
        load_claims_file(path)
    message = str(error.value)
    assert str(path) in message and "claim paper.speedup" in message and f"field {field}" in message
    assert "\n" not in message


def test_duplicate_claim_ids_across_files_are_rejected(tmp_path):
    _write(tmp_path, GOOD_FILE, "a.yaml")
    _write(tmp_path, GOOD_FILE, "b.yaml")
    with pytest.raises(SpecbenchError, match="claim paper.speedup: field id: also defined"):
        load_claims(tmp_path)


def _row(value, low, high, n=20, **extra):
    row = {"cell_ref": "p/torch/t/k4", "cell_id": "k4", "pair": "p", "backend": "torch", "task": "t", "k": 4,
           "temperature": 0.0, "dtype": "float32", "device": "cpu", "env_device_name": "cpu", "n_prompts": n,
           "speedup": value, "speedup_ci_low": low, "speedup_ci_high": high,
           "per_token_acceptance": 0.8, "cost_ratio": 0.1, "verify_ratio": 1.0}
    row.update(extra)
    return row


@pytest.mark.parametrize("interval, expected", [
    ((2.5, 2.3, 2.7), REPRODUCED),       # whole CI above 2.0 - 0.1
    ((1.5, 1.4, 1.6), NOT_REPRODUCED),   # whole CI below
    ((2.0, 1.7, 2.3), INCONCLUSIVE),     # CI straddles the threshold 1.9
])
def test_speed_verdict_follows_the_confidence_interval(tmp_path, interval, expected):
    verdict = judge(_claim(tmp_path), [_row(*interval)])
    assert verdict.verdict == expected
    assert verdict.measured == interval[0] and (verdict.ci_low, verdict.ci_high) == interval[1:]
    assert verdict.cells == ["p/torch/t/k4"]
    if expected == INCONCLUSIVE:
        assert "straddles" in verdict.reason
    # Feasibility from Leviathan's bound: a = 0.8, c = 0.1, v = 1 -> (1 - 0.8^7) / (0.2 * 1.6) = 2.47x at k = 6.
    assert "best any k could give is 2.47x (k = 6)" in verdict.feasibility and "2x would need a >=" in verdict.feasibility


def test_too_few_samples_is_inconclusive(tmp_path):
    verdict = judge(_claim(tmp_path), [_row(2.5, 2.3, 2.7, n=3)])
    assert verdict.verdict == INCONCLUSIVE and "too few samples" in verdict.reason


def test_best_selects_the_best_cell_and_all_requires_every_cell(tmp_path):
    rows = [_row(1.5, 1.4, 1.6, cell_ref="a"), _row(2.5, 2.3, 2.7, cell_ref="b")]
    assert judge(_claim(tmp_path), rows).verdict == REPRODUCED
    every = judge(_claim(tmp_path, select="all"), rows)
    assert every.verdict == NOT_REPRODUCED and every.measured == 1.5


def test_unmet_conditions_give_not_applicable_with_the_closest_measurement(tmp_path):
    claim = _claim(tmp_path, conditions={"hardware": {"kind": "accelerator", "names": ["A100"]},
                                         "target_params": [2.0e10, 3.5e10]})
    verdict = judge(claim, [_row(1.2, 1.1, 1.3, target_params=3e6)])
    assert verdict.verdict == NOT_APPLICABLE
    assert "ran on CPU" in verdict.closest and "not A100" in verdict.closest and "20-35B" in verdict.closest
    assert verdict.measured == 1.2 and "feasibility" in verdict.feasibility


def test_out_of_reach_claim_says_so(tmp_path):
    verdict = judge(_claim(tmp_path, value=3.0), [_row(0.9, 0.85, 0.95, cost_ratio=0.92, per_token_acceptance=0.8)])
    assert verdict.verdict == NOT_REPRODUCED and "out of reach" in verdict.feasibility


def _verdicts(results):
    return {v.claim_id: v for v in evaluate_claims(load_claims(), build_tables(results))}


def test_cpu_toy_run_is_mostly_not_applicable_and_says_why(tmp_path):
    verdicts = _verdicts(make_results_dir(tmp_path / "r"))
    assert verdicts["gemma4.token-identical-output"].verdict == REPRODUCED
    assert verdicts["leviathan2023.identical-outputs"].verdict == REPRODUCED
    others = [v for cid, v in verdicts.items() if not cid.endswith(("identical-output", "identical-outputs"))]
    assert all(v.verdict == NOT_APPLICABLE for v in others)
    assert all(v.closest for v in others)
    assert "ran on CPU" in verdicts["gemma4.up-to-3x-faster"].closest
    assert "no runs on nvidia, amd, tpu" in verdicts["gemma4.portable-nvidia-amd-tpu"].reason


def test_planted_divergence_fails_the_identical_output_claim(tmp_path):
    verdicts = _verdicts(make_results_dir(tmp_path / "r", divergent_prompts=(4,)))
    verdict = verdicts["gemma4.token-identical-output"]
    assert verdict.verdict == NOT_REPRODUCED and verdict.measured == pytest.approx(22 / 24)
    assert "22 of 24 prompts over 2 cells" in verdict.reason and "toy/torch/synthetic-arith/k2-t0-float32" in verdict.reason


def test_a100_gemma_27b_run_is_judged(tmp_path):
    results = make_results_dir(
        tmp_path / "r", pair="gemma-2b-27b", target="google/gemma-2-27b-it", target_params=27.2e9,
        draft_params=2.6e9, device="cuda", device_name="NVIDIA A100-SXM4-80GB", dtype="bfloat16",
        tasks=("gsm8k",), n_prompts=24,
    )
    verdicts = _verdicts(results)
    # e2e tokens/s ratio of the fixture: (33 / 0.23) / (33 / 0.37) = 1.61, far from 2.7 +- 0.27.
    tokens = verdicts["gemma4.27b-a100-2.7x-tokens-per-s"]
    assert tokens.verdict == NOT_REPRODUCED and tokens.measured == pytest.approx(0.37 / 0.23)
    assert verdicts["gemma4.up-to-3x-faster"].verdict == NOT_REPRODUCED
    assert verdicts["gemma4.draft-10-20-percent"].verdict == NOT_REPRODUCED  # 2.6B / 27.2B = 0.096 < 0.10
    assert verdicts["gemma4.parallel-verification"].verdict == REPRODUCED  # v = 1.1 <= 1.25
    assert verdicts["gemma4.acceptance-70-85"].verdict == NOT_REPRODUCED  # 0.42 and 0.5
    quality = verdicts["gemma4.gsm8k-humaneval-quality-unchanged"]
    assert quality.verdict == REPRODUCED and quality.measured == 0.0
    portability = verdicts["gemma4.portable-nvidia-amd-tpu"]
    assert portability.verdict == NOT_APPLICABLE and "verified on nvidia" in portability.reason
