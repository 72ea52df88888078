"""Equivalence classification and the results store, on hand-made cells (no model needed)."""

from __future__ import annotations

import json
import os

import pytest

from specbench.errors import SpecbenchError
from specbench.workflow import store
from specbench.workflow.equivalence import check_job, first_divergence
from specbench.workflow.equivalence import run as check_equivalence_command


def test_identical_outputs_are_exact():
    assert first_divergence([1, 2, 3], [1, 2, 3], [5.0] * 3, [5.0] * 3, 1e-4)["classification"] == "exact"


def test_divergence_where_both_margins_are_tiny_is_a_near_tie():
    verdict = first_divergence([1, 2, 3], [1, 7, 3], [5.0, 2e-5, 5.0], [5.0, 3e-5, 5.0], 1e-4)
    assert verdict["classification"] == "near-tie"
    assert (verdict["position"], verdict["baseline_token"], verdict["speculative_token"]) == (1, 2, 7)
    assert (verdict["baseline_margin"], verdict["speculative_margin"]) == (2e-5, 3e-5)


def test_divergence_against_a_confident_baseline_is_a_mismatch():
    # the speculative computation was unsure, but the baseline was not: no rounding explains that
    verdict = first_divergence([1, 2, 3], [1, 7, 3], [5.0, 0.8, 5.0], [5.0, 1e-6, 5.0], 1e-4)
    assert verdict["classification"] == "mismatch"
    assert "0.8 above the near-tie bound" in verdict["reason"]


def test_bound_is_per_dtype_scale():
    margins = [0.1]
    assert first_divergence([1], [2], margins, margins, 1e-4)["classification"] == "mismatch"  # fp32 bound
    assert first_divergence([1], [2], margins, margins, 0.25)["classification"] == "near-tie"  # bf16 bound


def test_unknown_margins_cannot_excuse_a_divergence():
    verdict = first_divergence([1, 2], [1, 3], None, None, 1.0)
    assert verdict["classification"] == "mismatch" and "margins unavailable" in verdict["reason"]


def test_one_output_stopping_early_is_a_mismatch():
    verdict = first_divergence([1, 2, 3], [1, 2], [9.0] * 3, [9.0] * 2, 1.0)
    assert verdict["classification"] == "mismatch"
    assert (verdict["position"], verdict["baseline_token"], verdict["speculative_token"]) == (2, 3, None)


# --- whole jobs from stored cells ---------------------------------------------------


def _row(index: int, tokens: list[int], margins: list[float]) -> dict:
    return {"prompt_index": index, "doc_id": index, "tokens": tokens, "margins": margins, "new_tokens": len(tokens)}


def _write_cell(results, *, k: int, dtype: str, rows: list[dict], temperature: float = 0.0, device: str = "cpu",
                status: str = "ok") -> None:
    cell_id = store.cell_id(k=k, temperature=temperature, dtype=dtype)
    cell = {"pair": "p", "backend": "torch", "task": "t", "cell_id": cell_id, "k": k, "temperature": temperature,
            "dtype": dtype, "device": device, "mode": "speculative" if k else "baseline"}
    store.atomic_write_json(store.cell_path(results, "p", "torch", "t", cell_id),
                            {"cell": cell, "environment": {}, "status": status, "error": None, "rows": rows})


def test_job_report_counts_and_explains(tmp_path):
    _write_cell(tmp_path, k=0, dtype="bfloat16", rows=[_row(0, [1, 2, 3], [3.0, 0.1, 3.0]), _row(1, [4, 5], [2.0, 2.0])])
    _write_cell(tmp_path, k=2, dtype="bfloat16", rows=[_row(0, [1, 9, 3], [3.0, 0.05, 3.0]), _row(1, [4, 5], [2.0, 2.0])])
    _write_cell(tmp_path, k=2, dtype="bfloat16", temperature=0.7, rows=[_row(0, [8], [1.0])])  # sampled: not compared
    report = check_job(tmp_path, "p", "torch", "t")
    assert report["summary"] == {"compared": 2, "exact": 1, "near_tie": 1, "mismatch": 0, "exact_rate": 0.5,
                                 "skipped_cells": 0}
    assert report["passed"] and report["problems"] == []
    [cell] = report["cells"]
    assert cell["near_tie_bound"] == 0.25 and cell["prompts"][0]["position"] == 1


def test_fp32_on_cpu_must_be_exact_even_for_a_near_tie(tmp_path):
    _write_cell(tmp_path, k=0, dtype="float32", rows=[_row(0, [1, 2], [3.0, 1e-6])])
    _write_cell(tmp_path, k=1, dtype="float32", rows=[_row(0, [1, 5], [3.0, 2e-6])])
    report = check_job(tmp_path, "p", "torch", "t")
    assert report["summary"]["near_tie"] == 1 and not report["passed"]
    assert "must match exactly" in report["problems"][0]
    relaxed = check_job(tmp_path, "p", "torch", "t", exact_dtypes=[])
    assert relaxed["passed"]


def test_fp32_on_gpu_may_have_near_ties(tmp_path):
    _write_cell(tmp_path, k=0, dtype="float32", device="cuda", rows=[_row(0, [1, 2], [3.0, 1e-6])])
    _write_cell(tmp_path, k=1, dtype="float32", device="cuda", rows=[_row(0, [1, 5], [3.0, 2e-6])])
    assert check_job(tmp_path, "p", "torch", "t")["passed"]


def test_cell_without_baseline_is_skipped_not_passed_silently(tmp_path):
    _write_cell(tmp_path, k=0, dtype="float32", rows=[], status="oom")
    _write_cell(tmp_path, k=1, dtype="float32", rows=[_row(0, [1], [1.0])])
    report = check_job(tmp_path, "p", "torch", "t")
    assert report["summary"]["skipped_cells"] == 1 and report["summary"]["compared"] == 0
    assert report["cells"][0]["skipped"] == "no usable baseline cell"


def test_command_exits_1_on_a_mismatch_and_writes_the_report(tmp_path, capsys):
    import argparse

    _write_cell(tmp_path, k=0, dtype="float32", rows=[_row(0, [1, 2], [3.0, 4.0])])
    _write_cell(tmp_path, k=1, dtype="float32", rows=[_row(0, [1, 5], [3.0, 4.0])])
    args = argparse.Namespace(results_dir=str(tmp_path), config=None, pair=None, backend=None, task=None)
    assert check_equivalence_command(args) == 1
    assert "FAIL k1-t0-float32 prompt 0 (doc 0): mismatch at token 1: baseline 2 vs speculative 5" in capsys.readouterr().out
    written = json.loads(store.equivalence_path(tmp_path, "p", "torch", "t").read_text())
    assert written["summary"]["mismatch"] == 1 and written["passed"] is False


def test_command_reads_only_the_equivalence_settings_of_its_config(tmp_path):
    """A job on a cluster host may not see other pairs' checkpoints; the config's missing model
    folders must not fail the check (they did, on SLURM, before the job read it with
    check_models=False). The config's own settings still apply: fp32 is not exact here."""
    import argparse

    import yaml

    _write_cell(tmp_path, k=0, dtype="float32", rows=[_row(0, [1, 2], [3.0, 1e-6])])
    _write_cell(tmp_path, k=1, dtype="float32", rows=[_row(0, [1, 5], [3.0, 2e-6])])
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({
        "name": "elsewhere", "device": "cpu",
        "pairs": [{"name": "p", "target": {"path": str(tmp_path / "not-here" / "target")},
                   "draft": {"path": str(tmp_path / "not-here" / "draft")}}],
        "backends": ["torch"], "tasks": [{"name": "synthetic-arith", "limit": 2, "max_new_tokens": 4}],
        "sweep": {"k": [1], "temperatures": [0.0], "dtypes": ["float32"]},
        "equivalence": {"exact_dtypes": []},
    }))
    args = argparse.Namespace(results_dir=str(tmp_path), config=str(config), pair="p", backend="torch", task="t")
    assert check_equivalence_command(args) == 0
    config.write_text(config.read_text().replace("exact_dtypes: []", "exact_dtypes: [float32]"))
    assert check_equivalence_command(args) == 1


def test_command_rejects_a_folder_without_cells(tmp_path):
    import argparse

    args = argparse.Namespace(results_dir=str(tmp_path), config=None, pair=None, backend=None, task=None)
    with pytest.raises(SpecbenchError, match="no cells/ folder"):
        check_equivalence_command(args)


# --- store ------------------------------------------------------------------------


def test_cell_ids_are_readable_and_distinct():
    assert store.cell_id(k=0, temperature=0.0, dtype="float32") == "baseline-t0-float32"
    assert store.cell_id(k=4, temperature=0.8, dtype="bfloat16") == "k4-t0.8-bfloat16"
    assert store.cell_id(k=2, temperature=1.0, dtype="float16", top_k=50, top_p=0.9) == "k2-t1-topk50-topp0.9-float16"


def test_atomic_write_leaves_old_file_and_no_temporary_when_interrupted(tmp_path):
    path = tmp_path / "cell.json"
    store.atomic_write_json(path, {"version": 1})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        store.atomic_write_json(path, {"version": 2, "bad": Unserialisable()})
    assert json.loads(path.read_text()) == {"version": 1}
    assert os.listdir(tmp_path) == ["cell.json"]


def test_written_files_have_ordinary_permissions(tmp_path):
    store.atomic_write_json(tmp_path / "x.json", {})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_non_finite_numbers_are_stored_as_null(tmp_path):
    store.atomic_write_json(tmp_path / "x.json", {"rate": float("nan"), "rows": [float("inf"), 1.0]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"rate": None, "rows": [None, 1.0]}


def test_completed_cell_requires_ok_status_and_same_inputs(tmp_path):
    path = tmp_path / "c.json"
    assert store.completed_cell(path, "key") is None
    store.atomic_write_json(path, {"cell": {"cell_key": "key"}, "environment": {}, "status": "ok", "rows": []})
    assert store.completed_cell(path, "key") is not None
    assert store.completed_cell(path, "other-key") is None
    store.atomic_write_json(path, {"cell": {"cell_key": "key"}, "environment": {}, "status": "oom", "rows": []})
    assert store.completed_cell(path, "key") is None
    path.write_text('{"cell": {"cell_key": "key"}, "status": "o')  # torn by something other than us
    assert store.completed_cell(path, "key") is None
    with pytest.raises(SpecbenchError, match="not valid JSON"):
        store.read_cell(path)
