"""`--model specbench` in lm-eval: offline GSM8K/HumanEval runs, per-request statistics, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from specbench.errors import SpecbenchError  # noqa: E402
from specbench.tasks.lm_eval_model import SpecbenchLM  # noqa: E402
from specbench.tasks.lm_eval_offline import write_offline_tasks  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GSM8K_TEST = DATA / "gsm8k" / "test.jsonl"
HUMANEVAL = DATA / "humaneval" / "HumanEval.jsonl.gz"
REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not GSM8K_TEST.is_file(), reason="shared data directory not present")

# Zero-shot GSM8K prompts are a few hundred tokens with the tests' byte-level tokenizer.
SEQ = 1024


@pytest.fixture(scope="module")
def pair(tiny_checkpoint_factory):
    target = tiny_checkpoint_factory("llama", seed=0, max_position_embeddings=SEQ)
    draft = tiny_checkpoint_factory("llama", seed=1, max_position_embeddings=SEQ)
    return target, draft


def offline_task_manager(tmp_path, **metadata):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(write_offline_tasks(tmp_path / "tasks")), include_defaults=False,
                       metadata=metadata)


def test_model_is_registered_under_specbench():
    from lm_eval.api.registry import get_model

    assert get_model("specbench") is SpecbenchLM
    assert get_model("dummy").__name__ == "DummyLM"  # lm-eval's own models still resolve


def test_loglikelihood_requests_are_refused(pair):
    model = SpecbenchLM(target=str(pair[0]), max_seq_len=SEQ)
    for method in (model.loglikelihood, model.loglikelihood_rolling):
        with pytest.raises(SpecbenchError, match="generation-only"):
            method([])


def test_bad_model_args_are_refused(pair):
    with pytest.raises(SpecbenchError, match="unknown model_args.*pretrained"):
        SpecbenchLM(target=str(pair[0]), pretrained="gpt2")
    with pytest.raises(SpecbenchError, match="needs a draft"):
        SpecbenchLM(target=str(pair[0]), k=4)


def test_gsm8k_offline_through_lm_eval_records_statistics(pair, tmp_path):
    from lm_eval import simple_evaluate

    stats = tmp_path / "stats.jsonl"
    results = simple_evaluate(
        model="specbench",
        model_args={"target": str(pair[0]), "draft": str(pair[1]), "k": 2, "max_seq_len": SEQ,
                    "stats_file": str(stats)},
        tasks=["gsm8k_offline"], num_fewshot=0, limit=3, gen_kwargs={"max_gen_toks": 4},
        task_manager=offline_task_manager(tmp_path, gsm8k_test=str(GSM8K_TEST)), device="cpu",
    )
    scores = results["results"]["gsm8k_offline"]
    assert "exact_match,strict-match" in scores and "exact_match,flexible-extract" in scores
    assert results["versions"]["gsm8k_offline"] == 3.0
    records = [json.loads(line) for line in stats.read_text().splitlines()]
    assert [r["doc_id"] for r in records] == [0, 1, 2]
    for record in records:
        assert record["mode"] == "speculative" and record["k"] == 2
        assert 1 <= record["new_tokens"] <= 4 and record["prompt_tokens"] > 0
        assert record["drafted"] == 2 * record["iterations"]
        assert record["decode_s"] > 0 and len(record["accepted_per_position"]) == 2
    summary = results["config"]["specbench"]["summary"]
    assert summary["requests"] == 3 and summary["drafted"] == sum(r["drafted"] for r in records)
    assert results["config"]["specbench"]["environment"]


def test_no_draft_runs_the_matched_baseline(pair, tmp_path):
    from lm_eval import simple_evaluate

    results = simple_evaluate(
        model="specbench", model_args={"target": str(pair[0]), "max_seq_len": SEQ},
        tasks=["gsm8k_offline"], num_fewshot=0, limit=1, gen_kwargs={"max_gen_toks": 3},
        task_manager=offline_task_manager(tmp_path, gsm8k_test=str(GSM8K_TEST)), device="cpu",
    )
    summary = results["config"]["specbench"]
    assert summary["mode"] == "baseline" and summary["summary"]["drafted"] == 0


def canned_solutions(broken: bool = False):
    """An lm-eval model answering each HumanEval request with its canonical (or a broken) solution."""
    from lm_eval.api.model import LM

    class CannedSolutions(LM):
        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            return ["    return None\n" if broken else request.doc["canonical_solution"] for request in requests]

    return CannedSolutions()


@pytest.mark.parametrize("broken, expected", [(False, 1.0), (True, 0.0)])
def test_humaneval_offline_scores_canonical_one_and_broken_zero(tmp_path, broken, expected):
    from lm_eval import simple_evaluate

    results = simple_evaluate(
        model=canned_solutions(broken), tasks=["humaneval_offline"], limit=10, confirm_run_unsafe_code=True,
        task_manager=offline_task_manager(tmp_path, humaneval_file=str(HUMANEVAL)),
    )
    assert results["results"]["humaneval_offline"]["pass@1,create_test"] == expected
    assert results["versions"]["humaneval_offline"] == 1.0


def test_humaneval_offline_needs_the_unsafe_code_opt_in(tmp_path):
    from lm_eval import simple_evaluate

    with pytest.raises(ValueError, match="confirm_run_unsafe_code"):
        simple_evaluate(model=canned_solutions(), tasks=["humaneval_offline"], limit=1,
                        task_manager=offline_task_manager(tmp_path, humaneval_file=str(HUMANEVAL)))


def test_offline_task_without_its_data_file_says_which_metadata_to_pass(tmp_path):
    with pytest.raises(SpecbenchError, match='"gsm8k_test"'):
        offline_task_manager(tmp_path).load(["gsm8k_offline"])


def _lm_eval_command(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "specbench.tasks.lm_eval_cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_lm_eval_command_runs_gsm8k_offline_on_ten_problems(pair, tmp_path):
    """The issue's acceptance run: lm-eval's CLI, --model specbench, 10 local GSM8K problems, offline."""
    stats = tmp_path / "stats.jsonl"
    run = _lm_eval_command(
        "--model", "specbench",
        "--model_args", f"target={pair[0]},draft={pair[1]},k=2,max_seq_len={SEQ},stats_file={stats}",
        "--tasks", "gsm8k_offline", "--metadata", json.dumps({"gsm8k_test": str(GSM8K_TEST)}),
        "--num_fewshot", "0", "--limit", "10", "--gen_kwargs", "max_gen_toks=4", "--device", "cpu",
        "--output_path", str(tmp_path / "out"),
        env_extra={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    results = json.loads(results_file.read_text())
    scores = results["results"]["gsm8k_offline"]
    assert {"exact_match,strict-match", "exact_match,flexible-extract"} <= set(scores)
    assert results["n-samples"]["gsm8k_offline"]["effective"] == 10
    assert results["config"]["specbench"]["summary"]["requests"] == 10
    assert len(stats.read_text().splitlines()) == 10


@pytest.mark.slow
def test_lm_eval_command_reports_a_missing_data_file_in_one_line(pair, tmp_path):
    run = _lm_eval_command("--model", "specbench", "--model_args", f"target={pair[0]},max_seq_len={SEQ}",
                           "--tasks", "gsm8k_offline", "--device", "cpu", "--limit", "1")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("specbench-lm-eval: error: gsm8k_offline needs its data file")


@pytest.mark.slow
def test_humaneval_offline_scores_a_real_model_in_the_sandbox(pair, tmp_path):
    """A tiny random model's completions go through generate_until and the sandboxed pass@1 (expected 0)."""
    from lm_eval import simple_evaluate

    results = simple_evaluate(
        model="specbench", model_args={"target": str(pair[0]), "draft": str(pair[1]), "k": 2, "max_seq_len": SEQ},
        tasks=["humaneval_offline"], limit=2, gen_kwargs={"max_gen_toks": 8}, confirm_run_unsafe_code=True,
        task_manager=offline_task_manager(tmp_path, humaneval_file=str(HUMANEVAL)), device="cpu",
    )
    assert results["results"]["humaneval_offline"]["pass@1,create_test"] == 0.0
    assert results["config"]["specbench"]["summary"]["requests"] == 2
