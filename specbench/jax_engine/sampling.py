"""Next-token choice and speculative acceptance in JAX, the same rules as `specbench.engine` (PyTorch).

Sampling settings travel as arrays (`SamplingArrays`), so changing temperature, top-k or
top-p never recompiles; only greedy-or-not is static, because greedy skips the sort and
the random draws entirely.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from specbench.backends.base import SamplingConfig


class SamplingArrays(NamedTuple):
    """`SamplingConfig` as traced scalars: temperature f32[], top_k i32[] (0 = off), top_p f32[] (1 = off)."""

    temperature: jax.Array
    top_k: jax.Array
    top_p: jax.Array

    @classmethod
    def of(cls, sampling: SamplingConfig) -> "SamplingArrays":
        temperature = sampling.temperature if sampling.temperature > 0 else 1.0  # unused when greedy
        # numpy scalars: they travel with the call instead of each costing a device transfer
        return cls(np.float32(temperature), np.int32(sampling.top_k), np.float32(sampling.top_p))


def next_token_distribution(logits: jax.Array, sampling: SamplingArrays) -> jax.Array:
    """Probabilities [..., V] the next token is drawn from (sampling only; greedy takes the argmax).

    softmax(logits / T) restricted to the top-k logits (ties at the k-th kept) and then to the
    smallest prefix of the sorted distribution whose mass reaches top_p: a token is kept iff the
    mass strictly before it is < top_p, so the token crossing top_p stays. Draft and target go
    through this same function, so both are warped identically (the PyTorch engine's rule).
    """
    vocab = logits.shape[-1]
    logits = logits / sampling.temperature
    descending = -jnp.sort(-logits, axis=-1)
    kth_index = jnp.clip(sampling.top_k - 1, 0, vocab - 1)
    kth_largest = jnp.take(descending, kth_index, axis=-1)[..., None]
    logits = jnp.where((sampling.top_k > 0) & (logits < kth_largest), -jnp.inf, logits)

    descending = -jnp.sort(-logits, axis=-1)
    sorted_probs = jax.nn.softmax(descending, axis=-1)
    mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    kept = jnp.sum(mass_before < sampling.top_p, axis=-1, keepdims=True)  # a prefix of the sorted order
    smallest_kept = jnp.take_along_axis(descending, jnp.maximum(kept - 1, 0), axis=-1)
    logits = jnp.where((sampling.top_p < 1.0) & (logits < smallest_kept), -jnp.inf, logits)
    return jax.nn.softmax(logits, axis=-1)


def sample(key: jax.Array, probs: jax.Array) -> jax.Array:
    """One token per row of `probs` [..., V] (rows need not be normalised)."""
    return jax.random.categorical(key, jnp.log(probs), axis=-1).astype(jnp.int32)


def top2_margin(logits: jax.Array) -> jax.Array:
    """Top-1 minus top-2 logit per row: how close the greedy choice was to a tie."""
    top = jax.lax.top_k(logits, 2)[0]
    return top[..., 0] - top[..., 1]


def choose(key: jax.Array, logits: jax.Array, sampling: SamplingArrays, greedy: bool) -> tuple[jax.Array, jax.Array | None]:
    """(token, distribution it was drawn from) for one row of logits; greedy returns no distribution."""
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), None
    probs = next_token_distribution(logits, sampling)
    return sample(key, probs), probs


def accept_drafts(
    key: jax.Array, target_logits: jax.Array, drafted: jax.Array, draft_probs: jax.Array | None,
    sampling: SamplingArrays, greedy: bool, always_accept: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Speculative acceptance of k drafts against the target's k+1 verification rows.

    Returns (n accepted, emitted [k+1]): emitted[:n] are the accepted drafts, emitted[n] the
    token the target adds, and entries past n are padding. Maths (Leviathan et al. 2023;
    Chen et al. 2023), with q_i the draft's and p_i the target's distribution at draft position i:
      - d_i is accepted with probability min(1, p_i(d_i) / q_i(d_i)): always when q <= p, with
        probability p/q when the draft was over-confident (tested as r * q < p, r ~ U[0, 1));
      - at the first rejection the token is resampled from norm(max(0, p_i - q_i)), which
        makes the emitted token exactly p_i-distributed;
      - if all k are accepted, a bonus token comes from p_k.
    Greedy is the one-hot case of the same rule: accept iff d_i == argmax p_i, and the token
    after the accepted run is the target's argmax there.
    """
    k = drafted.shape[0]
    if greedy:
        target_choice = jnp.argmax(target_logits, axis=-1).astype(jnp.int32)  # [k+1]
        accepted = drafted == target_choice[:k]
        candidates = target_choice
    else:
        accept_key, resample_key = jax.random.split(key)
        p = next_token_distribution(target_logits, sampling)  # [k+1, V]
        rows = jnp.arange(k)
        r = jax.random.uniform(accept_key, (k,))
        accepted = r * draft_probs[rows, drafted] < p[rows, drafted]
        residual = jnp.maximum(p[:k] - draft_probs, 0.0)
        residual = jnp.where(residual.sum(-1, keepdims=True) > 0, residual, p[:k])  # p == q: nothing to correct
        candidates = sample(resample_key, jnp.concatenate([residual, p[k:]]))  # one per row, picked below
    if always_accept:  # planted bug for tests (SPECBENCH_PLANT_BUG=always-accept): breaks losslessness
        accepted = jnp.ones_like(accepted)
    n_accepted = jnp.sum(jnp.cumprod(accepted.astype(jnp.int32)))
    padded_drafts = jnp.concatenate([drafted, jnp.zeros((1,), jnp.int32)])
    emitted = jnp.where(jnp.arange(k + 1) < n_accepted, padded_drafts, candidates[n_accepted])
    return n_accepted, emitted


__all__ = ["SamplingArrays", "accept_drafts", "choose", "next_token_distribution", "sample", "top2_margin"]
