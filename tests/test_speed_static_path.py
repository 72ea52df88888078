"""The graph path's static-shape code gives the plain path's results, checked on CPU.

CUDA graphs replay `Decoder.forward_static` (start position on the device, the whole cache
read under a mask); on CPU the same code runs eagerly with `step_mode="static"`. If it is
right here, the graphs capture a right computation; capture itself needs a GPU
(benchmarks/gpu_check.py checks it there).
"""

import pytest
import torch

from specbench.backends import load_backend
from specbench.backends.torch_backend import TorchBackend
from specbench.engine import is_out_of_memory, sample
from specbench.errors import SpecbenchError
from specbench.models.torch_model import StepRunner, load_decoder
from tests.checkpoints import FAMILIES, perturbed_copy

PROMPTS = ["the quick brown fox", "def add(a, b):", "Question: Tom has 3 apples", "speculative decoding drafts"]


@pytest.mark.parametrize("family", FAMILIES)
def test_static_forward_matches_plain_forward_over_stale_cache_entries(tiny_checkpoint_factory, family):
    model = load_decoder(tiny_checkpoint_factory(family))
    model.setup_cache(48)
    torch.manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (1, 20))
    with torch.no_grad():
        model(ids[:, :8], 0)
        plain = [model(ids[:, i : i + q], i) for i, q in ((8, 1), (9, 4), (13, 1), (14, 3))]
        # Rebuild the prefix, then fill everything past it with junk: rejected drafts leave
        # stale entries there, and the static path reads the whole cache, so only its mask
        # keeps them out.
        model(ids[:, :8], 0)
        for layer in model.layers:
            layer.k_cache[:, :, 8:].normal_(0, 100)
            layer.v_cache[:, :, 8:].normal_(0, 100)
        static = [model.forward_static(ids[:, i : i + q], torch.tensor([i])) for i, q in ((8, 1), (9, 4), (13, 1), (14, 3))]
    for expected, got in zip(plain, static):
        assert (expected - got).abs().max().item() <= 1e-4


def test_static_forward_without_its_mask_would_be_caught(tiny_checkpoint_factory, monkeypatch):
    """The comparison above has power: attending to the stale entries changes the logits."""
    model = load_decoder(tiny_checkpoint_factory("llama"))
    model.setup_cache(48)
    ids = torch.randint(3, model.config.vocab_size, (1, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(ids[:, :8], 0)
        expected = model(ids[:, 8:9], 8)
        for layer in model.layers:
            layer.k_cache[:, :, 9:].normal_(0, 100)
            layer.v_cache[:, :, 9:].normal_(0, 100)
        original = torch.nn.functional.scaled_dot_product_attention
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                            lambda q, k, v, attn_mask=None, **kw: original(q, k, v, **kw))
        broken = model.forward_static(ids[:, 8:9], torch.tensor([8]))
    assert (expected - broken).abs().max().item() > 1e-2


@pytest.fixture(scope="module")
def pair(tiny_checkpoint_factory, tmp_path_factory):
    target = tiny_checkpoint_factory("gemma2")  # sliding window 6 < sequence, soft-capping
    return target, perturbed_copy(target, tmp_path_factory.mktemp("static-drafts") / "perturbed", noise=0.4)


def test_static_step_mode_decodes_the_plain_modes_tokens(pair):
    target, draft = pair
    plain = load_backend("torch", target=str(target), draft=str(draft), max_seq_len=64, step_mode="plain")
    static = load_backend("torch", target=str(target), draft=str(draft), max_seq_len=64, step_mode="static")
    accepted = 0
    for prompt in PROMPTS:
        ids = plain.tokenizer.encode(prompt)
        expected = plain.generate(ids, max_new_tokens=20).tokens
        assert static.generate(ids, max_new_tokens=20).tokens == expected, prompt
        for k in (1, 3, 5):
            result = static.generate(ids, max_new_tokens=20, k=k)
            assert result.tokens == expected, (prompt, k)
            assert result.compile_s == 0.0  # nothing is captured off the GPU
            accepted += result.accepted
    assert accepted > 0  # some rounds accepted everything, so the 2-token draft step ran too


def test_from_decoders_takes_token_ids_without_a_tokenizer(pair):
    target, draft = pair
    backend = TorchBackend.from_decoders(load_decoder(target), load_decoder(draft), max_seq_len=64, step_mode="static")
    reference = load_backend("torch", target=str(target), max_seq_len=64)
    ids = [5, 17, 33, 8]
    assert backend.generate(ids, max_new_tokens=12, k=3).tokens == reference.generate(ids, max_new_tokens=12).tokens
    backend.warmup([None, 2])
    with pytest.raises(SpecbenchError, match="stop strings need a tokenizer"):
        backend.generate(ids, max_new_tokens=4, stop_strings=["x"])


def test_graph_mode_off_the_gpu_is_a_clear_error(tiny_checkpoint_factory):
    model = load_decoder(tiny_checkpoint_factory("llama"))
    with pytest.raises(SpecbenchError, match="CUDA graphs need a cuda"):
        StepRunner(model, mode="graphs")
    with pytest.raises(SpecbenchError, match="unknown step mode"):
        StepRunner(model, mode="fast")


def test_exponential_race_samples_each_token_with_its_probability():
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0]]).repeat(20000, 1)
    draws = sample(probs, torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=4).double()
    expected = probs[0].double() * len(draws)
    assert counts[3] == 0  # zero probability is never drawn
    chi2 = (((counts[:3] - expected[:3]) ** 2) / expected[:3]).sum().item()
    assert chi2 < 13.8  # 2 degrees of freedom, p = 0.001
    one_hot = torch.zeros(5, 7)
    one_hot[torch.arange(5), torch.tensor([6, 0, 3, 3, 1])] = 1.0
    assert sample(one_hot, None).tolist() == [6, 0, 3, 3, 1]


def test_exponential_race_catches_a_biased_sampler():
    """The chi-square bound above rejects a sampler that is off by a few points."""
    probs = torch.tensor([0.5, 0.3, 0.2])
    biased = torch.tensor([0.53, 0.3, 0.17])
    draws = torch.multinomial(biased, 20000, replacement=True, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=3).double()
    expected = probs.double() * 20000
    assert (((counts - expected) ** 2) / expected).sum().item() > 13.8


def test_out_of_memory_is_recognised_on_cuda_rocm_and_cpu():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("HIP out of memory. Tried to allocate 1.5 GiB"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only allocation failures, not any message

