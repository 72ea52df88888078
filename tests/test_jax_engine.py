"""The JAX engine's promises: greedy speculative == greedy baseline == the PyTorch engine,
speculative sampling draws from exactly the target's distribution, programs compile once
per static shape, and a device JAX lacks is a clear error.

Compiles dominate the run time on a CPU, so backends are shared per module and the three
drafts of the equivalence test have the target's architecture: they share compiled programs.
"""

from __future__ import annotations

import math

import pytest

from specbench.backends import SamplingConfig, load_backend
from specbench.errors import SpecbenchError
from tests.checkpoints import K_VALUES, PROMPTS, build_small_vocab_checkpoint, perturbed_copy

pytest.importorskip("jax")

MAX_NEW = 16
MAX_SEQ_LEN = 64


@pytest.fixture(scope="module")
def pair_paths(tiny_checkpoint_factory, tmp_path_factory):
    target = tiny_checkpoint_factory("llama")
    return {
        "same": target,  # always right
        "unrelated": tiny_checkpoint_factory("llama", seed=7),  # nearly always wrong
        "perturbed": perturbed_copy(target, tmp_path_factory.mktemp("jax-drafts") / "perturbed", noise=0.05),
        "target": target,
    }


@pytest.fixture(scope="module")
def torch_baseline(pair_paths):
    """The PyTorch engine's greedy tokens on the target, per prompt."""
    backend = load_backend("torch", target=str(pair_paths["target"]), max_seq_len=MAX_SEQ_LEN)
    outputs = {}
    for prompt in PROMPTS:
        ids = backend.tokenizer.encode(prompt)
        outputs[prompt] = (ids, backend.generate(ids, max_new_tokens=MAX_NEW).tokens)
    return outputs


@pytest.fixture(scope="module")
def jax_backends(pair_paths):
    cache = {}

    def get(draft_kind: str, **options):
        key = (draft_kind, tuple(sorted(options.items())))
        if key not in cache:
            cache[key] = load_backend("jax", target=str(pair_paths["target"]), draft=str(pair_paths[draft_kind]),
                                      max_seq_len=MAX_SEQ_LEN, **options)
        return cache[key]

    return get


@pytest.mark.parametrize("draft_kind", ["same", "unrelated", "perturbed"])
def test_greedy_speculative_equals_baseline_equals_torch(draft_kind, jax_backends, torch_baseline):
    backend = jax_backends(draft_kind)
    acceptance = []
    for prompt in PROMPTS:
        ids, expected = torch_baseline[prompt]
        baseline = backend.generate(ids, max_new_tokens=MAX_NEW)
        assert baseline.tokens == expected, prompt
        assert baseline.iterations == len(expected) - 1 and baseline.drafted == 0
        for k in K_VALUES:
            result = backend.generate(ids, max_new_tokens=MAX_NEW, k=k)
            assert result.tokens == expected, (prompt, k)
            assert result.drafted == k * result.iterations
            per_position = result.accepted_per_position
            assert len(per_position) == k and sum(per_position) == result.accepted
            assert all(a >= b for a, b in zip(per_position, per_position[1:]))
            assert len(result.margins) == len(result.tokens) and min(result.margins) >= 0
            assert result.stop_reason == baseline.stop_reason
            assert result.draft_s > 0 and result.verify_s > 0 and result.decode_s >= result.draft_s + result.verify_s
            acceptance.append(result.acceptance_rate)
    mean_acceptance = sum(acceptance) / len(acceptance)
    # The three drafts really are always right / nearly always wrong / in between.
    expected_range = {"same": (1.0, 1.0), "unrelated": (0.0, 0.2), "perturbed": (0.2, 0.95)}[draft_kind]
    assert expected_range[0] <= mean_acceptance <= expected_range[1]


def test_margins_match_the_torch_engine(pair_paths, jax_backends):
    torch_backend = load_backend("torch", target=str(pair_paths["target"]), draft=str(pair_paths["perturbed"]),
                                 max_seq_len=MAX_SEQ_LEN)
    ids = torch_backend.tokenizer.encode(PROMPTS[0])
    expected = torch_backend.generate(ids, max_new_tokens=MAX_NEW, k=4)
    result = jax_backends("perturbed").generate(ids, max_new_tokens=MAX_NEW, k=4)
    assert result.tokens == expected.tokens
    assert max(abs(a - b) for a, b in zip(result.margins, expected.margins)) < 1e-4


def test_fused_iteration_gives_the_same_tokens_and_no_phase_times(jax_backends, torch_baseline):
    backend = jax_backends("perturbed", fused=True)
    for prompt in PROMPTS[:5]:
        ids, expected = torch_baseline[prompt]
        result = backend.generate(ids, max_new_tokens=MAX_NEW, k=4)
        assert result.tokens == expected
        assert math.isnan(result.draft_s) and math.isnan(result.verify_s) and result.decode_s > 0
    assert backend.compile_counts()["speculative_iteration"] == 1


def test_planted_rollback_bug_breaks_greedy_equivalence(pair_paths, torch_baseline, monkeypatch):
    """The equivalence test above would catch a cache rolled back one position too far."""
    monkeypatch.setenv("SPECBENCH_PLANT_BUG", "rollback-off-by-one")
    backend = load_backend("jax", target=str(pair_paths["target"]), draft=str(pair_paths["perturbed"]),
                           max_seq_len=MAX_SEQ_LEN)
    mismatches = sum(backend.generate(ids, max_new_tokens=MAX_NEW, k=2).tokens != expected
                     for ids, expected in (torch_baseline[p] for p in PROMPTS[:5]))
    assert mismatches >= 3


def test_stop_strings_and_eos_end_generation_identically(jax_backends, torch_baseline):
    backend = jax_backends("perturbed")
    ids, expected = torch_baseline[PROMPTS[0]]
    stop_text = backend.tokenizer.decode(expected[3:5])
    baseline = backend.generate(ids, max_new_tokens=MAX_NEW, stop_strings=[stop_text])
    speculative = backend.generate(ids, max_new_tokens=MAX_NEW, k=4, stop_strings=[stop_text])
    assert baseline.stop_reason == speculative.stop_reason == "stop_string"
    assert baseline.tokens == speculative.tokens and len(baseline.tokens) <= 5
    saved = backend.eos_ids
    backend.eos_ids = (expected[2],)  # pretend the third token is EOS
    try:
        baseline = backend.generate(ids, max_new_tokens=MAX_NEW)
        speculative = backend.generate(ids, max_new_tokens=MAX_NEW, k=8)
    finally:
        backend.eos_ids = saved
    assert baseline.tokens == speculative.tokens == expected[:3]
    assert baseline.stop_reason == speculative.stop_reason == "eos"


@pytest.fixture(scope="module")
def small_vocab_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("jax-small-vocab")
    return build_small_vocab_checkpoint(root / "target", seed=0), build_small_vocab_checkpoint(root / "draft", seed=3)


def test_compilations_are_bounded_by_buckets_and_k_values(small_vocab_pair, monkeypatch):
    """A sweep over prompts of two length buckets, two k values, greedy and two sampling
    settings, several seeds: each program compiles once per static shape, never per prompt,
    token, seed or sampling value; running the sweep again compiles nothing."""
    from specbench.jax_engine import engine

    monkeypatch.setattr(engine, "_PROGRAMS", {})  # fresh programs: count from zero
    target, draft = small_vocab_pair
    backend = load_backend("jax", target=str(target), draft=str(draft), max_seq_len=64)
    prompts = [backend.tokenizer.encode(text) for text in ("a b", "c d a b c", "a " * 20, "b c " * 10 + "d")]
    buckets = {16, 32}
    k_values = [1, 3]
    samplings = [SamplingConfig(), SamplingConfig(temperature=0.7, top_k=3), SamplingConfig(temperature=1.3, top_p=0.8)]

    def sweep() -> list[float]:
        compile_seconds = []
        for prompt in prompts:
            for sampling in samplings:
                for seed in (0, 1):
                    for k in [None, *k_values]:
                        result = backend.generate(prompt, max_new_tokens=12, k=k, sampling=sampling, seed=seed)
                        compile_seconds.append(result.compile_s)
        return compile_seconds

    first_compile_seconds = sweep()
    counts = backend.compile_counts()
    modes = 2  # greedy or sampling: the only sampling choice that is static
    assert counts["prefill_target"] == len(buckets) * modes
    assert counts["prefill_draft"] == len(buckets)
    assert counts["decode_step"] == modes
    assert counts["draft_phase"] == counts["verify_phase"] == len(k_values) * modes
    assert sum(counts.values()) <= len(buckets) * len(k_values) * modes + 3 * len(buckets) * modes
    assert first_compile_seconds[0] > 0  # the very first call compiled, and said so apart from its timings
    assert sweep() == [0.0] * len(first_compile_seconds)  # nothing compiles the second time
    assert backend.compile_counts() == counts


SAMPLING = SamplingConfig(temperature=1.0)
SAMPLES = 3000


def test_speculative_sampling_matches_the_exact_target_distribution(small_vocab_pair):
    from specbench.checks import lossless_sampling_test

    target, draft = small_vocab_pair
    backend = load_backend("jax", target=str(target), draft=str(draft), max_seq_len=32)
    prompt = backend.tokenizer.encode("a b c")
    result = lossless_sampling_test(backend, prompt, k=2, sampling=SAMPLING, samples=SAMPLES)
    assert result.cells >= 20
    assert result.passed, result


def test_lossless_check_catches_a_broken_acceptance_rule(small_vocab_pair, monkeypatch):
    from specbench.checks import lossless_sampling_test

    target, draft = small_vocab_pair
    monkeypatch.setenv("SPECBENCH_PLANT_BUG", "always-accept")
    backend = load_backend("jax", target=str(target), draft=str(draft), max_seq_len=32)
    prompt = backend.tokenizer.encode("a b c")
    # 500 samples suffice: the broken rule's G statistic is in the thousands (p ~ 1e-200).
    result = lossless_sampling_test(backend, prompt, k=2, sampling=SAMPLING, samples=500)
    assert not result.passed and result.p_value < 1e-6, result


def test_top_p_and_top_k_sampling_stay_lossless(small_vocab_pair):
    from specbench.checks import lossless_sampling_test

    target, draft = small_vocab_pair
    backend = load_backend("jax", target=str(target), draft=str(draft), max_seq_len=32)
    prompt = backend.tokenizer.encode("b a")
    sampling = SamplingConfig(temperature=0.8, top_k=3, top_p=0.9)
    result = lossless_sampling_test(backend, prompt, k=3, sampling=sampling, samples=1500, seed=10_000)
    assert result.passed, result


def test_sampling_warps_like_the_torch_engine():
    """Temperature, top-k and top-p give the PyTorch engine's distribution (same rule, same ties)."""
    import numpy as np
    import torch

    from specbench.engine import next_token_distribution as torch_distribution
    from specbench.jax_engine.sampling import SamplingArrays, next_token_distribution

    logits = np.random.default_rng(0).normal(size=(4, 50)).astype(np.float32) * 3
    for sampling in (SamplingConfig(temperature=1.0), SamplingConfig(temperature=0.5, top_k=5),
                     SamplingConfig(temperature=1.5, top_p=0.7), SamplingConfig(temperature=0.9, top_k=10, top_p=0.5)):
        expected = torch_distribution(torch.from_numpy(logits), sampling).numpy()
        got = np.asarray(next_token_distribution(logits, SamplingArrays.of(sampling)))
        assert np.abs(got - expected).max() < 1e-6, sampling


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:1", "cpu:3"])
def test_a_device_jax_does_not_have_is_a_clear_error(pair_paths, device):
    with pytest.raises(SpecbenchError, match=r"not available to JAX; JAX sees: cpu:0"):
        load_backend("jax", target=str(pair_paths["target"]), device=device)


def test_an_unknown_device_name_is_a_clear_error(pair_paths):
    with pytest.raises(SpecbenchError, match="unknown device 'quantum'"):
        load_backend("jax", target=str(pair_paths["target"]), device="quantum")


def test_environment_names_the_jax_device(jax_backends):
    environment = jax_backends("same").environment()
    assert environment["jax_platform"] == "cpu" and environment["device_count"] >= 1
    assert environment["jax"] and environment["jaxlib"] and environment["backend"] == "jax"
    assert environment["device_name"]


def test_bad_requests_are_refused(jax_backends):
    backend = jax_backends("same")
    with pytest.raises(SpecbenchError, match="k must be between 1 and 32"):
        backend.generate([1, 5], max_new_tokens=4, k=33)
    with pytest.raises(SpecbenchError, match="exceeds max_seq_len 64"):
        backend.generate([1] * 60, max_new_tokens=8)


def test_toy_pair_greedy_speculative_equals_baseline_equals_torch(toy_pair_quick):
    """The trained offline pair (a real draft/target relation, longer prompts) through both engines."""
    from specbench.toy import corpus

    paths = dict(target=str(toy_pair_quick / "target"), draft=str(toy_pair_quick / "draft"), max_seq_len=256)
    torch_backend, jax_backend = load_backend("torch", **paths), load_backend("jax", **paths)
    for problem in corpus.held_out_problems(3):
        prompt = jax_backend.tokenizer.encode(corpus.format_prompt(problem["question"]))
        expected = torch_backend.generate(prompt, max_new_tokens=24).tokens
        assert jax_backend.generate(prompt, max_new_tokens=24).tokens == expected
        for k in (1, 4):
            speculative = jax_backend.generate(prompt, max_new_tokens=24, k=k)
            assert speculative.tokens == expected, k
            assert speculative.drafted == k * speculative.iterations


def test_sliding_window_target_with_a_draft_of_another_family(tiny_checkpoint_factory):
    """Gemma 3 (sliding and global layers, window 6) verified over k+1 positions deep into the
    sequence, drafted by a Llama: still exactly the PyTorch engine's greedy tokens."""
    paths = dict(target=str(tiny_checkpoint_factory("gemma3")), draft=str(tiny_checkpoint_factory("llama")),
                 max_seq_len=MAX_SEQ_LEN)
    torch_backend, jax_backend = load_backend("torch", **paths), load_backend("jax", **paths)
    for prompt in PROMPTS[:5]:
        ids = jax_backend.tokenizer.encode(prompt)
        expected = torch_backend.generate(ids, max_new_tokens=24).tokens
        assert jax_backend.generate(ids, max_new_tokens=24, k=3).tokens == expected, prompt
