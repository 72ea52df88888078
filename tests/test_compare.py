"""`specbench compare`: regressions beyond threshold and noise, exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import shutil

import pytest

from specbench.cli import main
from tests.analysis_fixtures import make_results_dir

K4_CELL = "toy/torch/synthetic-arith/k4-t0-float32"


@pytest.fixture
def accepted(tmp_path):
    return make_results_dir(tmp_path / "accepted")


def test_identical_runs_do_not_regress(accepted, tmp_path, capsys):
    again = make_results_dir(tmp_path / "again")  # a second run of the same config
    assert main(["compare", str(accepted), str(again)]) == 0
    output = capsys.readouterr().out
    assert K4_CELL in output and "no regressions" in output


def test_planted_20_percent_throughput_drop_is_named(accepted, tmp_path, capsys):
    slower = make_results_dir(tmp_path / "slower", slow_cells={4: 1.25})  # k=4 cell takes 25% longer: -20% tokens/s
    report = tmp_path / "compare.json"
    assert main(["compare", str(accepted), str(slower), "--json", str(report)]) == 1
    output = capsys.readouterr().out
    regressions = output.split("REGRESSIONS")[1]
    assert f"{K4_CELL}: decode tokens/s fell 20.0%" in regressions
    assert f"{K4_CELL}: speedup fell 20.0%" in regressions
    assert "k2-t0-float32" not in regressions
    assert len(json.loads(report.read_text())["regressions"]) == 2


def test_drop_within_threshold_or_noise_is_not_a_regression(accepted, tmp_path):
    slightly = make_results_dir(tmp_path / "slightly", slow_cells={4: 1.03})  # -3%, under the 5% threshold
    assert main(["compare", str(accepted), str(slightly)]) == 0
    assert main(["compare", str(accepted), str(slightly), "--threshold", "0.02"]) == 1
    # The same 3% drop is noise when prompts vary more than that: widen the baseline's interval.
    noisy = tmp_path / "noisy"
    shutil.copytree(accepted, noisy)
    shutil.rmtree(noisy / "tables", ignore_errors=True)
    for path in (noisy / "cells").rglob("k4-*.json"):
        document = json.loads(path.read_text())
        for row in document["rows"]:
            factor = 0.7 if row["prompt_index"] % 2 else 1.3
            for key in ("decode_s", "draft_s", "verify_s"):
                row[key] *= factor
        path.write_text(json.dumps(document))
    assert main(["compare", str(noisy), str(slightly), "--threshold", "0.02"]) == 0


def test_exact_match_drop_failure_and_missing_cells(accepted, tmp_path, capsys):
    broken = make_results_dir(tmp_path / "broken", divergent_prompts=(2,), oom_k=2)  # k=2 failed, k=4 diverges
    make_results_dir(tmp_path / "broken", backend="hf")  # cells the accepted run does not have
    assert main(["compare", str(accepted), str(broken)]) == 1
    output = capsys.readouterr().out
    assert "exact-match rate fell from 1.000 to 0.917" in output
    assert "toy/torch/synthetic-arith/k2-t0-float32: was ok, now oom" in output
    assert "only in candidate (3)" in output and "toy/hf/synthetic-arith/baseline-t0-float32" in output
    assert "verdict changed: gemma4.token-identical-output: reproduced -> not reproduced" in output


def test_unusable_input_exits_2(accepted, tmp_path, capsys):
    assert main(["compare", str(accepted), str(tmp_path / "missing")]) == 2
    assert "missing: results directory not found" in capsys.readouterr().err
    (tmp_path / "empty" / "cells").mkdir(parents=True)
    assert main(["compare", str(accepted), str(tmp_path / "empty")]) == 2
    assert main(["compare", str(accepted), str(accepted), "--threshold", "5"]) == 2
