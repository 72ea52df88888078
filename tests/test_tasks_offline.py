"""Tasks built from local files: same definitions as lm-eval's, scored the same way, bad input refused."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from specbench.errors import SpecbenchError
from specbench.tasks import TASKS, load_task
from specbench.tasks.lm_eval_offline import lm_eval_task_yaml, read_task_yaml

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GSM8K_TEST = DATA / "gsm8k" / "test.jsonl"
GSM8K_TRAIN = DATA / "gsm8k" / "train.jsonl"
HUMANEVAL = DATA / "humaneval" / "HumanEval.jsonl.gz"

pytestmark = pytest.mark.skipif(not GSM8K_TEST.is_file(), reason="shared data directory not present")


@pytest.fixture(scope="module")
def gsm8k():
    return load_task("gsm8k", data_files={"test": str(GSM8K_TEST), "train": str(GSM8K_TRAIN)}, limit=4)


@pytest.fixture(scope="module")
def humaneval():
    return load_task("humaneval", data_files={"test": str(HUMANEVAL)}, limit=10, allow_code_execution=True)


def upstream(relative: str) -> dict:
    return read_task_yaml(lm_eval_task_yaml(relative))


def first_records(path: Path, n: int) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(next(handle)) for _ in range(n)]


# ---------------------------------------------------------------- GSM8K


def test_gsm8k_prompts_follow_lm_eval_definition(gsm8k):
    definition = upstream("gsm8k/gsm8k.yaml")
    requests = gsm8k.requests()
    questions = [record["question"] for record in first_records(GSM8K_TEST, 4)]
    assert [r.doc_id for r in requests] == [0, 1, 2, 3]
    for request, question in zip(requests, questions):
        # five worked train examples, then the test question in lm-eval's template
        assert request.prompt.endswith(f"Question: {question}\nAnswer:")
        assert request.prompt.count("Question: ") == definition["num_fewshot"] + 1
        assert request.prompt.count("#### ") == definition["num_fewshot"]
        assert request.stop_strings == definition["generation_kwargs"]["until"]
    assert gsm8k.version == str(definition["metadata"]["version"])
    described = gsm8k.describe()
    assert described["source"] == "offline" and described["fewshot_seed"] == 1234
    assert described["data"]["test"]["sha256"] == "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"


def test_gsm8k_few_shot_examples_are_deterministic():
    first = load_task("gsm8k", data_files={"test": str(GSM8K_TEST)}, limit=2).requests()
    again = load_task("gsm8k", data_files={"test": str(GSM8K_TEST)}, limit=2).requests()
    assert [r.prompt for r in first] == [r.prompt for r in again]


def test_gsm8k_zero_shot_needs_no_train_file(tmp_path):
    test_copy = tmp_path / "test.jsonl"
    test_copy.write_text("\n".join(json.dumps(r) for r in first_records(GSM8K_TEST, 3)) + "\n")
    task = load_task("gsm8k", data_files={"test": str(test_copy)}, num_fewshot=0)
    prompt = task.requests()[0].prompt
    assert prompt.startswith("Question: ") and prompt.count("Question: ") == 1


def test_gsm8k_scores_both_filters_like_lm_eval(gsm8k):
    target = gsm8k.score(0, "").target
    assert target == "18"
    right = gsm8k.score(0, " 16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n#### 18")
    assert right.score == 1.0 and right.extracted == "18"
    assert right.metrics == {"exact_match,strict-match": 1.0, "exact_match,flexible-extract": 1.0}
    # no "#### ": strict-match fails, flexible-extract takes the last number
    loose = gsm8k.score(0, " She makes $18.")
    assert loose.metrics == {"exact_match,strict-match": 0.0, "exact_match,flexible-extract": 1.0}
    assert loose.extracted is None
    wrong = gsm8k.score(0, " #### 1,018")
    assert wrong.metrics == {"exact_match,strict-match": 0.0, "exact_match,flexible-extract": 0.0}


def test_aggregate_gives_wilson_intervals(gsm8k):
    scores = [gsm8k.score(0, "#### 18"), gsm8k.score(1, "#### 0"), gsm8k.score(2, "#### 0"), gsm8k.score(3, "#### 0")]
    summary = gsm8k.aggregate(scores)
    strict = summary["exact_match,strict-match"]
    assert strict["value"] == pytest.approx(0.25) and strict["n"] == 4
    # Wilson 95% for 1/4
    assert strict["ci_low"] == pytest.approx(0.0456, abs=1e-3)
    assert strict["ci_high"] == pytest.approx(0.6994, abs=1e-3)
    assert set(summary) == {"exact_match,strict-match", "exact_match,flexible-extract"}


# ---------------------------------------------------------------- HumanEval


def test_humaneval_definition_matches_lm_eval(humaneval):
    definition = upstream("humaneval/humaneval.yaml")
    records = first_records(HUMANEVAL, 10)
    requests = humaneval.requests()
    assert [r.prompt for r in requests] == [record["prompt"] for record in records]
    assert requests[0].stop_strings == definition["generation_kwargs"]["until"]
    assert requests[0].max_new_tokens == definition["generation_kwargs"]["max_gen_toks"]
    assert humaneval.version == str(definition["metadata"]["version"])


def test_humaneval_canonical_solutions_pass_and_broken_ones_fail(humaneval):
    records = first_records(HUMANEVAL, 10)
    canonical = [humaneval.score(i, record["canonical_solution"]) for i, record in enumerate(records)]
    assert humaneval.aggregate(canonical)["pass@1"]["value"] == 1.0
    broken = [humaneval.score(i, "    return None\n") for i in range(10)]
    assert humaneval.aggregate(broken)["pass@1"]["value"] == 0.0
    assert all(s.details["sandbox"]["own_process"] for s in canonical)


def test_humaneval_hostile_completion_scores_zero_and_run_goes_on(humaneval):
    hostile = humaneval.score(0, "    while True:\n        pass\n")
    assert hostile.score == 0.0 and hostile.details["status"] in ("timeout", "killed")
    assert humaneval.score(1, first_records(HUMANEVAL, 2)[1]["canonical_solution"]).score == 1.0


def test_humaneval_requires_opt_in():
    with pytest.raises(SpecbenchError, match="allow_code_execution=True"):
        load_task("humaneval", data_files={"test": str(HUMANEVAL)}, limit=1)


# ---------------------------------------------------------------- synthetic-arith


def test_synthetic_arith_is_seeded_and_exact_match():
    from specbench.toy import corpus

    task = load_task("synthetic-arith", limit=5)
    again = load_task("synthetic-arith", limit=5)
    assert [r.prompt for r in task.requests()] == [r.prompt for r in again.requests()]
    assert task.requests()[0].prompt == corpus.format_prompt(corpus.held_out_problems(1)[0]["question"])
    answer = task.problems[0]["answer"]
    assert task.score(0, " " + answer).score == 1.0
    assert task.score(0, " #### 999999").score == 0.0
    assert task.score(0, " no answer").extracted is None
    other = load_task("synthetic-arith", limit=5, seed=1)
    assert [r.prompt for r in other.requests()] != [r.prompt for r in task.requests()]
    assert task.describe()["version"] == task.version


# ---------------------------------------------------------------- bad input


def test_unknown_task_names_the_known_ones():
    with pytest.raises(SpecbenchError) as error:
        load_task("gsm9k")
    for name in TASKS:
        assert name in str(error.value)


def test_missing_data_file_is_named(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(SpecbenchError, match="data file not found.*nope.jsonl"):
        load_task("gsm8k", data_files={"test": str(missing)}, num_fewshot=0)
    with pytest.raises(SpecbenchError, match="nope.jsonl"):
        load_task("humaneval", data_files={"test": str(missing)}, allow_code_execution=True)


def test_malformed_jsonl_line_is_named_with_file_and_line(tmp_path):
    bad = tmp_path / "test.jsonl"
    good = json.dumps({"question": "q?", "answer": "a\n#### 1"})
    bad.write_text(f"{good}\n{good}\n{{not json\n")
    with pytest.raises(SpecbenchError, match=r"test.jsonl, line 3: not valid JSON"):
        load_task("gsm8k", data_files={"test": str(bad)}, num_fewshot=0)


def test_record_without_required_field_is_named(tmp_path):
    bad = tmp_path / "test.jsonl"
    bad.write_text(json.dumps({"question": "q?"}) + "\n")
    with pytest.raises(SpecbenchError, match=r"record 1: missing field\(s\) answer"):
        load_task("gsm8k", data_files={"test": str(bad)}, num_fewshot=0)


def test_few_shot_without_train_file_says_how_to_fix(tmp_path):
    test_copy = tmp_path / "test.jsonl"
    test_copy.write_text(json.dumps({"question": "q?", "answer": "a\n#### 1"}) + "\n")
    with pytest.raises(SpecbenchError, match="train split.*num_fewshot=0"):
        load_task("gsm8k", data_files={"test": str(test_copy)})


def test_bad_arguments_are_refused():
    with pytest.raises(SpecbenchError, match="limit"):
        load_task("synthetic-arith", limit=0)
    with pytest.raises(SpecbenchError, match="data_files"):
        load_task("gsm8k", data_files={"validation": str(GSM8K_TEST)})
    with pytest.raises(SpecbenchError, match="no data_files"):
        load_task("synthetic-arith", data_files={"test": str(GSM8K_TEST)})
