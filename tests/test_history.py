"""`specbench history`: one summary line per run, trend drawn by the report."""

from __future__ import annotations

import json

import pytest

from specbench.cli import main
from specbench.errors import SpecbenchError
from specbench.report.history import read_history
from tests.analysis_fixtures import make_results_dir


def test_append_records_date_commit_hardware_config_and_headlines(tmp_path, capsys):
    results = make_results_dir(tmp_path / "results")
    history = tmp_path / "history.jsonl"
    assert main(["history", "append", str(results), "--file", str(history), "--date", "2026-01-01"]) == 0
    slower = make_results_dir(tmp_path / "slower", slow_cells={4: 1.25})
    assert main(["history", "append", str(slower), "--file", str(history)]) == 0
    entries = read_history(history)
    assert len(entries) == 2 and len(history.read_text().splitlines()) == 2
    first = entries[0]
    assert first["date"] == "2026-01-01" and first["git_commit"] == "abc1234"
    assert first["hardware"] == ["cpu"] and first["config_hash"] == "cfg0001"
    headline = first["headlines"][0]
    assert headline["pair"] == "toy" and headline["best_k"] == 4
    assert headline["best_speedup"] == pytest.approx(0.32 / 0.18)
    assert headline["baseline_tokens_per_s"] == pytest.approx(100.0)
    assert first["verdicts"]["gemma4.token-identical-output"] == "reproduced"
    # The second run's k=4 is 20% slower (1.42x), so k=2 (1.54x) is now its best.
    assert entries[1]["headlines"][0]["best_k"] == 2
    assert main(["history", "show", "--file", str(history)]) == 0
    assert "best speedup 1.78x" in capsys.readouterr().out


def test_corrupt_history_is_refused_with_its_line(tmp_path):
    history = tmp_path / "history.jsonl"
    history.write_text(json.dumps({"date": "x", "headlines": []}) + "\n{oops\n")
    with pytest.raises(SpecbenchError, match="history.jsonl: line 2: not valid JSON"):
        read_history(history)
    before = history.read_text()
    assert main(["history", "append", str(make_results_dir(tmp_path / "r")), "--file", str(history)]) == 2
    assert history.read_text() == before  # nothing appended to a corrupt file
