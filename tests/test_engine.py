"""The engine's promises: greedy speculative == greedy baseline == transformers, and
speculative sampling draws from exactly the target's distribution."""


import pytest
import torch
import transformers

from specbench.backends import SamplingConfig, load_backend
from specbench.checks import lossless_sampling_test
from tests.checkpoints import K_VALUES, PROMPTS, build_small_vocab_checkpoint, perturbed_copy

MAX_NEW = 16


@pytest.fixture(scope="module")
def pair_paths(tiny_checkpoint_factory, tmp_path_factory):
    target = tiny_checkpoint_factory("llama")
    return {
        "same": target,  # always right
        "unrelated": tiny_checkpoint_factory("llama", seed=7),  # nearly always wrong
        "perturbed": perturbed_copy(target, tmp_path_factory.mktemp("drafts") / "perturbed", noise=0.02),
        "target": target,
    }


@pytest.fixture(scope="module")
def reference_outputs(pair_paths):
    """transformers' own greedy generate on the target, per prompt."""
    model = transformers.AutoModelForCausalLM.from_pretrained(pair_paths["target"]).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(pair_paths["target"])
    outputs = {}
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)
        generated = model.generate(torch.tensor([ids]), max_new_tokens=MAX_NEW, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
        outputs[prompt] = (ids, generated)
    return outputs


@pytest.mark.parametrize("backend_name", ["torch", "hf"])
@pytest.mark.parametrize("draft_kind", ["same", "unrelated", "perturbed"])
def test_greedy_speculative_equals_baseline_equals_transformers(backend_name, draft_kind, pair_paths, reference_outputs):
    backend = load_backend(backend_name, target=str(pair_paths["target"]), draft=str(pair_paths[draft_kind]),
                           max_seq_len=64)
    acceptance = []
    for prompt in PROMPTS:
        ids, expected = reference_outputs[prompt]
        baseline = backend.generate(ids, max_new_tokens=MAX_NEW)
        assert baseline.tokens == expected, prompt
        for k in K_VALUES:
            result = backend.generate(ids, max_new_tokens=MAX_NEW, k=k)
            assert result.tokens == expected, (prompt, k)
            assert result.drafted == k * result.iterations
            per_position = result.accepted_per_position
            assert sum(per_position) == result.accepted
            assert all(a >= b for a, b in zip(per_position, per_position[1:]))
            acceptance.append(result.acceptance_rate)
    mean_acceptance = sum(acceptance) / len(acceptance)
    # The three drafts really are always right / nearly always wrong / in between.
    expected_range = {"same": (1.0, 1.0), "unrelated": (0.0, 0.2), "perturbed": (0.2, 0.95)}[draft_kind]
    assert expected_range[0] <= mean_acceptance <= expected_range[1]


def test_stop_strings_and_eos_end_generation_identically(pair_paths, reference_outputs):
    backend = load_backend("torch", target=str(pair_paths["target"]), draft=str(pair_paths["perturbed"]), max_seq_len=64)
    ids, expected = reference_outputs[PROMPTS[0]]
    stop_text = backend.tokenizer.decode(expected[3:5])
    baseline = backend.generate(ids, max_new_tokens=MAX_NEW, stop_strings=[stop_text])
    speculative = backend.generate(ids, max_new_tokens=MAX_NEW, k=4, stop_strings=[stop_text])
    assert baseline.stop_reason == speculative.stop_reason == "stop_string"
    assert baseline.tokens == speculative.tokens and len(baseline.tokens) <= 5
    backend.eos_ids = (expected[2],)  # pretend the third token is EOS
    baseline = backend.generate(ids, max_new_tokens=MAX_NEW)
    speculative = backend.generate(ids, max_new_tokens=MAX_NEW, k=8)
    assert baseline.tokens == speculative.tokens == expected[:3]
    assert baseline.stop_reason == speculative.stop_reason == "eos"


@pytest.fixture(scope="module")
def small_vocab_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("small-vocab")
    return build_small_vocab_checkpoint(root / "target", seed=0), build_small_vocab_checkpoint(root / "draft", seed=3)


SAMPLING = SamplingConfig(temperature=1.0)
SAMPLES = 3000


def test_speculative_sampling_matches_the_exact_target_distribution(small_vocab_pair):
    target, draft = small_vocab_pair
    backend = load_backend("torch", target=str(target), draft=str(draft), max_seq_len=32)
    prompt = backend.tokenizer.encode("a b c")
    result = lossless_sampling_test(backend, prompt, k=2, sampling=SAMPLING, samples=SAMPLES)
    assert result.cells >= 20  # enough cells that the test has power over the joint distribution
    assert result.passed, result


def test_lossless_check_catches_a_broken_acceptance_rule(small_vocab_pair, monkeypatch):
    target, draft = small_vocab_pair
    monkeypatch.setenv("SPECBENCH_PLANT_BUG", "always-accept")
    backend = load_backend("torch", target=str(target), draft=str(draft), max_seq_len=32)
    prompt = backend.tokenizer.encode("a b c")
    result = lossless_sampling_test(backend, prompt, k=2, sampling=SAMPLING, samples=SAMPLES)
    assert not result.passed and result.p_value < 1e-6, result


def test_top_p_and_top_k_sampling_stay_lossless(small_vocab_pair):
    target, draft = small_vocab_pair
    backend = load_backend("hf", target=str(target), draft=str(draft), max_seq_len=32)
    prompt = backend.tokenizer.encode("b a")
    sampling = SamplingConfig(temperature=0.8, top_k=3, top_p=0.9)
    result = lossless_sampling_test(backend, prompt, k=3, sampling=sampling, samples=1500, seed=10_000)
    assert result.passed, result
