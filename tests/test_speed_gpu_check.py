"""The GPU check script's --small mode: the same code path as on a GPU, tiny shapes on the CPU."""

import json

import pytest

from benchmarks.gpu_check import main


@pytest.mark.slow
def test_gpu_check_small_mode_writes_profiles_sweep_equivalence_and_targets(tmp_path, capsys):
    assert main(["--small", "--out", str(tmp_path)]) == 0
    [report] = tmp_path.glob("gpu-check-small-cpu-*.json")
    result = json.loads(report.read_text())
    assert set(result["profiles"]) == {"small", "tiny", "small@2"}
    assert all(step["ms"] > 0 for prof in result["profiles"].values() for step in prof["steps"])
    rows = {(row["backend"], row["epsilon"], row["k"]): row for row in result["sweep"]}
    assert set(rows) == {(b, e, k) for b in ("torch", "hf-assisted") for e in (0.0, 0.3) for k in (2, 4)}
    # epsilon 0: the target computes its draft's logits, so every draft is accepted.
    assert rows[("torch", 0.0, 4)]["acceptance"] == 1.0
    assert rows[("hf-assisted", 0.0, 4)]["acceptance"] > 0.9  # its last round may draft past max_new_tokens
    assert rows[("torch", 0.3, 4)]["acceptance"] < 1.0
    # float32 on the CPU: greedy speculative output is the baseline's, exactly.
    assert all(row["equivalence"]["exact"] == 2 for row in result["sweep"] if row["backend"] == "torch")
    assert len(result["targets"]) == 3 + 2 * 4 and all(isinstance(t["met"], bool) for t in result["targets"])
    assert (tmp_path / report.name.replace(".json", ".md")).read_text().startswith("# GPU check")
