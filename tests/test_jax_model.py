"""The JAX decoder computes the same logits as the reference decoders, family by family.

Each family's tiny checkpoint switches on that family's quirks (llama3 rope scaling, qkv
bias, Gemma norms and soft-capping, sliding windows shorter than the sequence, Gemma 3
q/k norms and local rope). The JAX side runs the way the engine does: a prefill into the
static cache, then single-token steps, so cache writes and position masking are covered.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.checkpoints import FAMILIES

jax = pytest.importorskip("jax")
jnp = jax.numpy

SEQUENCE_LENGTH = 20  # longer than the sliding windows (6) of the Gemma checkpoints
PREFILL_LENGTH = 12
TOLERANCE = 1e-4  # fp32, max abs difference


def token_sequence(vocab_size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(3, vocab_size, size=SEQUENCE_LENGTH)


def jax_logits(decoder, tokens: np.ndarray, config=None) -> np.ndarray:
    """Prefill PREFILL_LENGTH tokens, then feed the rest one at a time; logits of every position."""
    from specbench.jax_engine.model import forward

    config = config or decoder.config
    step = jax.jit(lambda params, cache, toks, start: forward(config, params, cache, toks, start))
    cache = decoder.new_cache(32)
    logits, cache = step(decoder.params, cache, jnp.asarray(tokens[:PREFILL_LENGTH], jnp.int32), jnp.int32(0))
    rows = [np.asarray(logits)]
    for position in range(PREFILL_LENGTH, len(tokens)):
        logits, cache = step(decoder.params, cache, jnp.asarray(tokens[position:position + 1], jnp.int32), jnp.int32(position))
        rows.append(np.asarray(logits))
    return np.concatenate(rows)


@pytest.fixture(scope="module")
def jax_logits_of(tiny_checkpoint_factory):
    """family -> (checkpoint path, token sequence, JAX logits), computed once per module (compiles are slow)."""
    from specbench.jax_engine.model import load_decoder

    computed: dict[str, tuple] = {}

    def of(family: str):
        if family not in computed:
            path = tiny_checkpoint_factory(family)
            decoder = load_decoder(path, "float32")
            tokens = token_sequence(decoder.config.vocab_size)
            computed[family] = (path, tokens, jax_logits(decoder, tokens))
        return computed[family]

    return of


def transformers_logits(path, tokens: np.ndarray) -> np.ndarray:
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor(tokens)[None]).logits[0].numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_jax_logits_match_transformers(jax_logits_of, family):
    path, tokens, logits = jax_logits_of(family)
    difference = np.abs(logits - transformers_logits(path, tokens)).max()
    assert difference <= TOLERANCE, f"{family}: max abs logit difference {difference:.2e}"


@pytest.mark.parametrize("family", FAMILIES)
def test_jax_logits_match_torch_decoder(jax_logits_of, family):
    import torch

    from specbench.models import torch_model

    path, tokens, logits = jax_logits_of(family)
    reference = torch_model.load_decoder(path, "float32", "cpu")
    reference.setup_cache(32)
    with torch.no_grad():
        rows = [reference.forward(torch.tensor(tokens[:PREFILL_LENGTH])[None], 0)[0]]
        for position in range(PREFILL_LENGTH, len(tokens)):
            rows.append(reference.forward(torch.tensor(tokens[position:position + 1])[None], position)[0])
    expected = torch.cat(rows).float().numpy()
    difference = np.abs(logits - expected).max()
    assert difference <= TOLERANCE, f"{family}: max abs logit difference {difference:.2e}"


def test_parity_check_catches_a_missing_sliding_window(tiny_checkpoint_factory):
    """The comparison above is sharp enough to see a dropped feature: ignoring Gemma 2's window fails it."""
    from specbench.jax_engine.model import load_decoder

    path = tiny_checkpoint_factory("gemma2")
    decoder = load_decoder(path, "float32")
    tokens = token_sequence(decoder.config.vocab_size)
    broken = dataclasses.replace(decoder.config, sliding_window=None)
    difference = np.abs(jax_logits(decoder, tokens, broken) - transformers_logits(path, tokens)).max()
    assert difference > 100 * TOLERANCE


def test_checkpoint_with_a_wrong_shape_is_refused(tiny_checkpoint_factory, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    from specbench.errors import SpecbenchError
    from specbench.jax_engine.model import load_decoder

    source = tiny_checkpoint_factory("llama")
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    tensors = load_file(broken / "model.safetensors")
    tensors["model.layers.1.mlp.up_proj.weight"] = tensors["model.layers.1.mlp.up_proj.weight"][:-1]
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(SpecbenchError, match="up_proj.weight.*shape"):
        load_decoder(broken, "float32")


def test_unknown_dtype_is_refused(tiny_checkpoint_factory):
    from specbench.errors import SpecbenchError
    from specbench.jax_engine.model import load_decoder

    with pytest.raises(SpecbenchError, match="dtype 'float8'"):
        load_decoder(tiny_checkpoint_factory("llama"), "float8")
