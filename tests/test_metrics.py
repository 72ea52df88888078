"""Metrics and aggregation: every figure checked against numbers worked out by hand."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from specbench import metrics
from specbench.errors import SpecbenchError
from specbench.workflow.aggregate import aggregate, build_tables, first_divergence, load_tables
from tests.analysis_fixtures import make_results_dir


def test_per_prompt_formulas():
    assert metrics.decode_tokens_per_s(33, 0.32) == pytest.approx(100.0)  # first token is prefill's
    assert metrics.time_per_output_token(33, 0.32) == pytest.approx(0.01)
    assert metrics.end_to_end_tokens_per_s(33, 0.05, 0.32) == pytest.approx(33 / 0.37)
    assert metrics.acceptance_rate(16, 32) == 0.5
    assert math.isnan(metrics.acceptance_rate(0, 0))
    assert metrics.mean_accepted_length(16, 16) == 2.0
    assert metrics.acceptance_by_position([10, 6], 16) == [0.625, 0.375]
    assert metrics.cost_ratio(0.032, 16, 2, 0.32, 32) == pytest.approx(0.1)
    assert metrics.verify_ratio(0.176, 16, 0.32, 32) == pytest.approx(1.1)
    assert metrics.predicted_speedup(2.0, 2, 0.1, 1.1) == pytest.approx(2 / 1.3)
    assert metrics.efficiency(1.5, 2.0) == 0.75


def test_leviathan_formula_and_its_inverses():
    # (1 - a^(k+1)) / ((1 - a)(k c + 1)) at a = 0.8, k = 4, c = 0.1
    assert metrics.leviathan_speedup(0.8, 4, 0.1) == pytest.approx((1 - 0.8**5) / (0.2 * 1.4))
    assert metrics.expected_tokens_per_iteration(1.0, 4) == 5.0
    # The worked example: at c = 0.1, 3x needs per-token acceptance of about 0.86.
    needed = metrics.acceptance_needed(3.0, 0.1)
    assert 0.855 < needed < 0.875
    assert metrics.best_speedup(needed, 0.1)[1] == pytest.approx(3.0, abs=1e-6)
    assert metrics.best_speedup(needed - 0.01, 0.1)[1] < 3.0
    # A draft as slow as the target (c ~ 1) can never give 2x, whatever the acceptance.
    assert math.isnan(metrics.acceptance_needed(2.5, 0.92))
    k, best = metrics.best_speedup(0.8, 0.92)
    assert k == 1 and best < 1.0
    a = metrics.per_token_acceptance(metrics.expected_tokens_per_iteration(0.7, 4), 4)
    assert a == pytest.approx(0.7, abs=1e-9)


def test_ratio_of_sums_interval_brackets_the_value_and_needs_two_prompts():
    estimate = metrics.ratio_of_sums([32, 32, 32, 32], [0.30, 0.32, 0.34, 0.32])
    assert estimate.value == pytest.approx(100.0)
    assert estimate.ci_low < 100.0 < estimate.ci_high
    single = metrics.ratio_of_sums([32], [0.32])
    assert single.value == pytest.approx(100.0) and math.isnan(single.ci_low)


def test_paired_speedup_pairs_prompts():
    # Prompt lengths vary wildly, but each prompt is exactly 2x faster speculatively: a paired
    # resample keeps the ratio at 2 in every draw, so the interval has no width.
    tokens = [10, 200, 50, 400]
    base_s = [t * 0.01 for t in tokens]
    spec_s = [t * 0.005 for t in tokens]
    estimate = metrics.paired_throughput_ratio(tokens, base_s, tokens, spec_s)
    assert estimate.value == pytest.approx(2.0)
    assert estimate.ci_low == pytest.approx(2.0) and estimate.ci_high == pytest.approx(2.0)
    noisy = metrics.paired_throughput_ratio(tokens, base_s, tokens, [0.05, 2.0, 0.1, 1.0])
    assert noisy.ci_high - noisy.ci_low > 0.1


def test_wilson_interval():
    estimate = metrics.wilson_interval(10, 10)
    assert estimate.value == 1.0 and estimate.ci_high == 1.0 and 0.65 < estimate.ci_low < 0.75
    assert metrics.wilson_interval(0, 10).ci_low == 0.0
    assert metrics.proportion([1, 0, 1, None]).n == 3


@pytest.fixture
def results(tmp_path):
    return make_results_dir(tmp_path / "results", divergent_prompts=(3,))


def _cell(cells: pd.DataFrame, ref_suffix: str) -> dict:
    match = cells[cells["cell_ref"].str.endswith(ref_suffix)]
    assert len(match) == 1, ref_suffix
    return match.iloc[0].to_dict()


def test_cells_table_matches_hand_computed_metrics(results):
    cells = build_tables(results)["cells"]
    base = _cell(cells, "/baseline-t0-float32")
    assert base["tokens_per_s"] == pytest.approx(100.0)
    assert base["tpot_ms"] == pytest.approx(10.0)
    assert base["mean_accepted_length"] == 1.0
    assert base["tokens_per_s_ci_low"] < 100.0 < base["tokens_per_s_ci_high"]
    k2 = _cell(cells, "/k2-t0-float32")
    assert k2["baseline_cell_ref"] == "toy/torch/synthetic-arith/baseline-t0-float32"
    assert k2["tokens_per_s"] == pytest.approx(32 / 0.208)
    assert k2["speedup"] == pytest.approx(0.32 / 0.208)
    assert k2["speedup_ci_low"] <= k2["speedup"] <= k2["speedup_ci_high"]
    assert k2["acceptance_rate"] == pytest.approx(0.5)
    assert k2["mean_accepted_length"] == pytest.approx(2.0)
    assert list(k2["acceptance_by_position"]) == pytest.approx([0.625, 0.375])
    assert k2["cost_ratio"] == pytest.approx(0.1)
    assert k2["verify_ratio"] == pytest.approx(1.1)
    assert k2["predicted_speedup"] == pytest.approx(2.0 / 1.3)
    assert k2["efficiency"] == pytest.approx(1.0)
    assert k2["exact_matches"] == 11 and k2["compared_prompts"] == 12
    k4 = _cell(cells, "/k4-t0-float32")
    assert k4["speedup"] == pytest.approx(0.32 / 0.18)
    assert k4["mean_accepted_length"] == pytest.approx(32 / 12)
    assert k4["acceptance_rate"] == pytest.approx(20 / 48)
    assert k4["env_device_name"] == "cpu" and k4["env_torch"] == "2.13.0"


def test_equivalence_table_locates_the_planted_divergence(results):
    equivalence = build_tables(results)["equivalence"]
    diverged = equivalence[~equivalence["exact"]]
    assert set(diverged["prompt_index"]) == {3} and set(diverged["k"]) == {2, 4}
    row = diverged.iloc[0]
    assert row["position"] == 5 and row["baseline_token"] == 108 and row["speculative_token"] == 109
    assert row["classification"] == "unclassified"  # no equivalence/*.json from the workflow here
    assert first_divergence([1, 2, 3], [1, 2]) == 2 and first_divergence([1], [1]) is None


def test_equivalence_classification_is_taken_from_the_workflow_file(results):
    (results / "equivalence").mkdir()
    (results / "equivalence" / "toy__torch__synthetic-arith.json").write_text(json.dumps({
        "cells": [{"cell_id": "k2-t0-float32", "prompts": [
            {"prompt_index": 3, "classification": "near-tie", "baseline_margin": 1e-6, "speculative_margin": 2e-6},
        ]}]}))
    equivalence = build_tables(results)["equivalence"]
    row = equivalence[(equivalence["prompt_index"] == 3) & (equivalence["k"] == 2)].iloc[0]
    assert row["classification"] == "near-tie" and row["baseline_margin"] == 1e-6


def test_quality_table_pairs_against_baseline(results):
    quality = build_tables(results)["quality"]
    spec = quality[quality["mode"] == "speculative"].iloc[0]
    assert spec["accuracy"] == 0.5 and spec["baseline_accuracy"] == 0.5 and spec["quality_delta"] == 0.0
    assert spec["accuracy_ci_low"] < 0.5 < spec["accuracy_ci_high"]


def test_oom_cell_is_listed_without_metrics(tmp_path):
    results = make_results_dir(tmp_path / "r", oom_k=4)
    cells = build_tables(results)["cells"]
    oom = _cell(cells, "/k4-t0-float32")
    assert oom["status"] == "oom" and "out of memory" in oom["error"]
    assert pd.isna(oom.get("speedup"))


def test_aggregate_writes_every_table_as_parquet_and_csv(results):
    aggregate(results)
    for name in ("samples", "cells", "quality", "equivalence"):
        assert (results / "tables" / f"{name}.parquet").is_file()
        csv = pd.read_csv(results / "tables" / f"{name}.csv")
        assert len(csv) == len(pd.read_parquet(results / "tables" / f"{name}.parquet"))
    samples = pd.read_parquet(results / "tables" / "samples.parquet")
    assert len(samples) == 3 * 12 and "env_device_name" in samples.columns
    assert json.loads((results / "tables" / "verdicts.json").read_text())
    assert not list((results / "tables").glob(".*"))  # no temporaries left behind
    assert set(load_tables(results)) >= {"cells", "verdicts"}


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_text("{not json"), "not valid JSON"),
    (lambda p: p.write_text(json.dumps({"cell": {"pair": "toy"}, "status": "ok", "rows": []})), "cell.backend"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "status": "finished"})), "status"),
])
def test_bad_cell_file_is_named(results, damage, message):
    victim = sorted((results / "cells").rglob("*.json"))[0]
    damage(victim)
    with pytest.raises(SpecbenchError, match=message) as error:
        build_tables(results)
    assert str(victim) in str(error.value) and "\n" not in str(error.value)
    assert not (results / "tables").exists()  # nothing half-written


def test_missing_results_dir_is_a_clear_error(tmp_path):
    with pytest.raises(SpecbenchError, match="results directory not found"):
        build_tables(tmp_path / "nope")


def test_aggregate_command(results, capsys):
    from specbench.cli import main

    assert main(["aggregate", str(results)]) == 0
    assert "aggregated 3 cells" in capsys.readouterr().out
    assert main(["aggregate", str(results.parent / "missing")]) == 2
