"""The offline toy pair: corpus, tokenizer, training build, evaluation figures, CLI errors."""

from __future__ import annotations

import json
import re

import pytest

from specbench.cli import main
from specbench.errors import SpecbenchError
from specbench.toy import corpus
from specbench.toy.evaluate import greedy_acceptance
from specbench.toy.train import BUDGETS, REPORT_NAME, build_toy_pair, check_toy_pair_bounds
from tests.toy_fixtures import QUICK_STEPS_SCALE

ANNOTATION = re.compile(r"<<([0-9+\-*/]+)=([0-9]+)>>([0-9]+)")


# --- corpus -------------------------------------------------------------------------------------


def test_problems_are_deterministic_per_seed_and_differ_between_seeds():
    assert corpus.generate_problems(50, seed=3) == corpus.generate_problems(50, seed=3)
    assert corpus.generate_problems(50, seed=3) != corpus.generate_problems(50, seed=4)
    assert corpus.generate_problems(20, seed=3) == corpus.generate_problems(50, seed=3)[:20]


def test_every_worked_solution_is_correct_arithmetic_ending_in_the_final_answer():
    problems = corpus.generate_problems(500, seed=0) + corpus.held_out_problems(100)
    for problem in problems:
        lines = problem["answer"].split("\n")
        assert lines[-1].startswith("#### ")
        final = corpus.extract_answer(problem["answer"])
        assert final is not None and int(final) >= 0
        results = []
        for expression, value, shown in ANNOTATION.findall(problem["answer"]):
            assert eval(expression) == int(value) == int(shown), (expression, value, problem)  # digits and + - * / only
            results.append(value)
        assert results and results[-1] == final, problem
        assert 1 <= len(lines) - 1 <= 3
    assert {p["question"].split(".")[0] for p in problems}  # non-empty questions
    templates_seen = {"packs of" in p["question"] or "shares them" in p["question"] or "rows of" in p["question"]
                      or "years old" in p["question"] or "$" in p["question"] for p in problems}
    assert templates_seen == {True}


def test_held_out_problems_never_occur_in_any_training_corpus():
    held_out = corpus.held_out_problems(300)
    assert all(corpus.is_held_out(p["question"]) for p in held_out)
    training_questions = {p["question"] for seed in (0, 1) for p in corpus.generate_problems(5000, seed)}
    assert not training_questions & {p["question"] for p in held_out}
    # The split is what keeps them apart: without it, the same generator repeats short problems.
    assert any(corpus.is_held_out(q) is False for q in training_questions)


def test_prompt_matches_lm_eval_gsm8k_zero_shot_format():
    assert corpus.format_prompt("What is 2 + 2?") == "Question: What is 2 + 2?\nAnswer:"
    problem = corpus.generate_problems(1, seed=0)[0]
    assert corpus.format_example(problem) == f"Question: {problem['question']}\nAnswer: {problem['answer']}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so 3 + 4 = 7\n#### 7", "7"),
        ("#### 1,234", "1234"),
        ("####-5", "-5"),
        ("#### 2.5 apples", "2.5"),
        ("#### 12\nQuestion: more\n#### 99", "12"),  # the first answer counts
        ("the answer is 7", None),
        ("#### seven", None),
    ],
)
def test_extract_answer(text, expected):
    assert corpus.extract_answer(text) == expected


def test_generate_problems_rejects_negative_arguments():
    with pytest.raises(ValueError, match="number of problems"):
        corpus.generate_problems(-1, seed=0)
    with pytest.raises(ValueError, match="seed"):
        corpus.generate_problems(1, seed=-1)


# --- tokenizer ----------------------------------------------------------------------------------


def test_tokenizer_splits_digits_prepends_bos_and_round_trips_any_text(tmp_path):
    from transformers import AutoTokenizer

    from specbench.toy.tokenizer import save_tokenizer, train_tokenizer

    texts = [corpus.format_example(p) for p in corpus.generate_problems(300, seed=0)]
    save_tokenizer(train_tokenizer(texts, vocab_size=300), tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    ids = tokenizer.encode("He has 1234 apples.")
    assert ids[0] == tokenizer.bos_token_id
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert [p for p in pieces if any(c.isdigit() for c in p)] == ["1", "2", "3", "4"]
    for text in ["def f(x):\n    return x ** 2\n", "Janet’s ducks lay 16 eggs — café ✓"]:
        assert tokenizer.decode(tokenizer.encode(text), skip_special_tokens=True) == text
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<bos>", "<eos>", "<pad>")


# --- acceptance and bounds arithmetic -----------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "length", "expected"),
    [
        # Token 0 comes from prefill. p=1 accepts 4, the target adds 1 -> p=6 accepts 4 -> p=11: done.
        ([True] * 14, 10, (8, 8, 2)),
        # Every iteration rejects the first draft token and the target adds one: p=1, 2, 3.
        ([False] * 8, 4, (0, 12, 3)),
        # p=1 accepts 1 and the target emits token 2; p=3 accepts 4 (3..6), the target emits 7; p=8: done.
        ([False, True, False, True, True, True, True, False, False, False, False], 8, (5, 8, 2)),
        # Draft tokens accepted past the end of the output (after <eos>) still count, as in the engine.
        ([False, True, True, True, True, False], 3, (4, 4, 1)),
        ([True] * 5, 1, (0, 0, 0)),  # the prefill token was the whole output
    ],
)
def test_greedy_acceptance_follows_the_engine_counting(match, length, expected):
    assert greedy_acceptance(match, length, k=4) == expected


def _good_report() -> dict:
    return {
        "total_seconds": 250.0,
        "draft_share": 0.17,
        "evaluation": {"acceptance_rate_k4": 0.7, "target_exact_match": 0.35, "draft_exact_match": 0.2},
    }


def test_bounds_check_passes_a_report_within_bounds():
    assert check_toy_pair_bounds(_good_report()) == []


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"total_seconds": 301.0}, "took 301 s"),
        ({"draft_share": 0.25}, "draft share"),
        ({"draft_share": 0.05}, "draft share"),
        ({"evaluation": None}, "no evaluation"),
        ({"evaluation": {"acceptance_rate_k4": 0.97, "target_exact_match": 0.3, "draft_exact_match": 0.2}}, "acceptance"),
        ({"evaluation": {"acceptance_rate_k4": 0.4, "target_exact_match": 0.3, "draft_exact_match": 0.2}}, "acceptance"),
        ({"evaluation": {"acceptance_rate_k4": 0.7, "target_exact_match": 0.2, "draft_exact_match": 0.2}}, "not above"),
    ],
)
def test_bounds_check_names_each_violation(change, complaint):
    problems = check_toy_pair_bounds({**_good_report(), **change})
    assert len(problems) == 1 and complaint in problems[0]


# --- the quick pair -----------------------------------------------------------------------------


def test_quick_pair_folders_load_through_transformers_and_generate(toy_pair_quick):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompt = corpus.format_prompt(corpus.held_out_problems(1)[0]["question"])
    vocabularies = []
    for role in ("target", "draft"):
        folder = toy_pair_quick / role
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
        assert json.loads((folder / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder)
        ids = torch.tensor([tokenizer.encode(prompt)])
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
        assert out.shape[1] > ids.shape[1]
        vocabularies.append(tokenizer.get_vocab())
    assert vocabularies[0] == vocabularies[1]


def test_quick_pair_report_describes_what_was_built(toy_pair_quick):
    report = json.loads((toy_pair_quick / REPORT_NAME).read_text())
    assert report["draft_share"] == pytest.approx(report["draft"]["parameters"] / report["target"]["parameters"], abs=1e-4)
    assert 0.10 <= report["draft_share"] <= 0.20
    assert report["target"]["steps"] == round(BUDGETS["target"].steps * QUICK_STEPS_SCALE)
    assert report["draft"]["steps"] == round(BUDGETS["draft"].steps * QUICK_STEPS_SCALE)
    assert report["target"]["final_loss"] < report["target"]["first_loss"]  # it did learn something
    assert report["tokenizer_vocab_size"] == 512
    evaluation = report["evaluation"]
    assert evaluation["problems"] == 5
    for key in ("target_exact_match", "draft_exact_match", "acceptance_rate_k4"):
        assert 0.0 <= evaluation[key] <= 1.0
    assert [p.name for p in toy_pair_quick.iterdir() if p.name.startswith(".tmp-")] == []


def test_quick_pair_runs_through_the_torch_backend_speculatively(toy_pair_quick):
    from specbench.backends import load_backend

    backend = load_backend("torch", target=str(toy_pair_quick / "target"), draft=str(toy_pair_quick / "draft"),
                           dtype="float32", device="cpu", max_seq_len=256)
    prompt = backend.tokenizer.encode(corpus.format_prompt(corpus.held_out_problems(1)[0]["question"]))
    baseline = backend.generate(prompt, max_new_tokens=24)
    speculative = backend.generate(prompt, max_new_tokens=24, k=4)
    assert speculative.tokens == baseline.tokens
    assert speculative.drafted > 0


def test_teacher_forced_acceptance_equals_the_engine_prompt_by_prompt(toy_pair_quick):
    check = json.loads((toy_pair_quick / REPORT_NAME).read_text())["evaluation"]["torch_backend_check"]
    assert check["counts_equal_teacher_forced"] == check["outputs_equal_target_greedy"] == check["problems"] > 0


def test_cross_check_catches_an_engine_that_accepts_every_draft_token(toy_pair_quick, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specbench.toy.evaluate import K, backend_cross_check, draft_matches, greedy_outputs, output_length

    tokenizer = AutoTokenizer.from_pretrained(toy_pair_quick / "target")
    target = AutoModelForCausalLM.from_pretrained(toy_pair_quick / "target")
    draft = AutoModelForCausalLM.from_pretrained(toy_pair_quick / "draft")
    prompts = [tokenizer.encode(corpus.format_prompt(p["question"])) for p in corpus.held_out_problems(3)]
    extended = greedy_outputs(target, prompts, tokenizer.eos_token_id, tokenizer.pad_token_id, past_end=K)
    lengths = [output_length(tokens, tokenizer.eos_token_id) for tokens in extended]
    matches = draft_matches(draft, prompts, extended, tokenizer.pad_token_id)
    counts = [greedy_acceptance(m, n, K) for m, n in zip(matches, lengths)]
    outputs = [tokens[:n] for tokens, n in zip(extended, lengths)]

    honest = backend_cross_check(toy_pair_quick, prompts, outputs, counts)
    assert honest["counts_equal_teacher_forced"] == honest["outputs_equal_target_greedy"] == 3
    monkeypatch.setenv("SPECBENCH_PLANT_BUG", "always-accept")
    broken = backend_cross_check(toy_pair_quick, prompts, outputs, counts)
    assert broken["counts_equal_teacher_forced"] < 3 and broken["acceptance_rate_k4"] == 1.0


# --- bad input ----------------------------------------------------------------------------------


def _cli_error(capsys, *argv: str) -> str:
    assert main(["toy-pair", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("specbench toy-pair: error:")
    return err


def test_out_folder_with_other_content_is_refused_and_left_alone(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    err = _cli_error(capsys, "--out", str(tmp_path), "--steps-scale", "0.01")
    assert str(tmp_path) in err and "not empty" in err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_out_path_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert "not a directory" in _cli_error(capsys, "--out", str(tmp_path / "file"))


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--steps-scale", "-0.5"], "--steps-scale must be a positive number"),
        (["--steps-scale", "0"], "--steps-scale must be a positive number"),
        (["--steps-scale", "nan"], "--steps-scale must be a positive number"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--seed", str(corpus.HELD_OUT_SEED)], "held-out"),
        (["--eval-problems", "-3"], "--eval-problems must be >= 0"),
    ],
)
def test_bad_arguments_get_one_line_errors_and_write_nothing(tmp_path, capsys, argv, complaint):
    out = tmp_path / "pair"
    assert complaint in _cli_error(capsys, "--out", str(out), *argv)
    assert not out.exists()


def test_a_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    from specbench.toy import train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train_model", interrupted)
    out = tmp_path / "pair"
    with pytest.raises(KeyboardInterrupt):
        build_toy_pair(out, steps_scale=0.001)
    assert not out.exists()


def test_rebuilding_replaces_an_older_pair_and_same_seed_gives_same_weights(tmp_path):
    out = tmp_path / "pair"
    first = build_toy_pair(out, steps_scale=0.002, seed=5)
    weights = (out / "target" / "model.safetensors").read_bytes()
    (out / "draft" / "stale-file").write_text("from the older build")
    second = build_toy_pair(out, steps_scale=0.002, seed=5)
    assert (out / "target" / "model.safetensors").read_bytes() == weights
    assert not (out / "draft" / "stale-file").exists()
    assert first["target"]["final_loss"] == second["target"]["final_loss"]
    assert {p.name for p in out.iterdir()} == {"draft", REPORT_NAME, "target"}


def test_build_refuses_bad_arguments_directly(tmp_path):
    with pytest.raises(SpecbenchError, match="steps-scale"):
        build_toy_pair(tmp_path / "x", steps_scale=-1)


# --- the full budget (minutes): issue 3's bounds ------------------------------------------------


@pytest.mark.slow
def test_full_budget_pair_meets_acceptance_and_accuracy_bounds(default_toy_pair):
    """The pair the default workflow trained (`specbench toy-pair`, full budget, 200 held-out problems).

    The 5-minute bound is a speed target: its figure (`total_seconds`) is in toy_pair.json and the
    run's report, and is not asserted here, where the CI machine's load decides it.
    """
    report = json.loads((default_toy_pair / REPORT_NAME).read_text())
    assert report["steps_scale"] == 1.0 and report["evaluation"]["problems"] >= 200
    assert report["total_seconds"] > 0
    assert check_toy_pair_bounds(report, include_time=False) == [], json.dumps(report, indent=2)
