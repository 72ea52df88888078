"""The JAX decode loop: baseline and speculative decoding on compiled, static-shape steps.

What is static (changing it compiles a new program) and what is not, on purpose:
  - static: the KV-cache capacity (fixed when the engine is built), the prompt bucket
    (prompts are right-padded to a power of two >= 16, capped at the capacity), k, and
    greedy-or-sampling;
  - dynamic (arrays): positions, tokens, temperature/top-k/top-p, random keys. So a sweep
    compiles at most: prefill per bucket (target, and draft when speculative), one decode
    step, and per k one draft phase and one verify phase (or one fused iteration), each
    once for greedy and once for sampling. `JaxEngine.trace_counts` counts them.

The host loop mirrors `specbench.engine.generate` (PyTorch) step for step, so both engines
emit the same tokens and count iterations, drafts and acceptances the same way:
  - state between iterations: `position` = index of the newest token, which is not yet in
    the target cache; both caches hold valid entries for every position before it (the
    draft may lack the one just before, see `draft_phase`);
  - a speculative iteration drafts d_1..d_k, verifies [newest, d_1..d_k] at positions
    position..position+k in one target forward, accepts n, emits n+1 tokens, and rolls
    back by moving `position` to position+n+1: stale cache entries past it are never read.
Compilation never lands in a timing: the first call of each program is run once untimed
and its time is reported as `compile_s`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from specbench.backends.base import GenerationResult, SamplingConfig
from specbench.backends.common import stopping_point
from specbench.models.config import ModelConfig
from specbench.jax_engine.model import JaxDecoder, forward, hidden_states, init_cache, project_logits
from specbench.jax_engine.sampling import SamplingArrays, accept_drafts, choose, top2_margin

SMALLEST_BUCKET = 16


def prompt_bucket(length: int, capacity: int) -> int:
    """Padded prompt length: the next power of two >= max(length, 16), capped at the cache capacity."""
    bucket = SMALLEST_BUCKET
    while bucket < length:
        bucket *= 2
    return min(bucket, capacity)


class Programs:
    """The compiled programs for one static description: target and draft configs, shared
    vocabulary, planted bug. Engines with the same description share them (and their trace
    counts), so a sweep over drafts of one architecture, or a rebuilt backend, compiles once.
    """

    def __init__(self, target: ModelConfig, draft: ModelConfig | None, vocab: int, always_accept: bool):
        self.target, self.draft, self.vocab, self.always_accept = target, draft, vocab, always_accept
        self.trace_counts: Counter[str] = Counter()  # program name -> times traced (= compiled)
        self.ran_once: set[tuple] = set()  # (program, static signature, shapes) compiled and run untimed
        # The caches are donated: XLA updates them in place instead of copying them every step.
        jit = partial(jax.jit, donate_argnums=(1,))
        self.prefill_target = jit(self._prefill_target, static_argnames=("greedy",))
        self.decode_step = jit(self._decode_step, static_argnames=("greedy",))
        self.full_forward_logits = jax.jit(self._full_forward_logits)
        if draft is not None:
            self.prefill_draft = jit(self._prefill_draft)
            self.draft_phase = jit(self._draft_phase, static_argnames=("k", "greedy"))
            self.verify_phase = jit(self._verify_phase, static_argnames=("greedy",))
            self.iteration = jax.jit(self._iteration, static_argnames=("k", "greedy"), donate_argnums=(2, 3))

    # Bodies run only when traced; the counter records each trace.

    def _prefill_target(self, params, cache, tokens, length, seed, sampling, *, greedy):
        """First token from the prompt (right-padded to its bucket; `length` real tokens).

        The random key of the whole generation is made here from `seed` and threaded through
        every later program, so a generation's randomness is a function of its seed alone.
        """
        self.trace_counts["prefill_target"] += 1
        key = jax.random.key(seed)
        x, cache = hidden_states(self.target, params, cache, tokens, jnp.int32(0))
        last = jax.lax.dynamic_slice_in_dim(x, length - 1, 1)  # only the last real row needs logits
        logits = project_logits(self.target, params, last)[0, : self.vocab]
        key, choice_key = jax.random.split(key)
        token, _ = choose(choice_key, logits, sampling, greedy)
        return cache, (token, top2_margin(logits), key)

    def _prefill_draft(self, params, cache, tokens):
        self.trace_counts["prefill_draft"] += 1
        _, cache = hidden_states(self.draft, params, cache, tokens, jnp.int32(0))
        return cache

    def _full_forward_logits(self, params, tokens, length):
        """Next-token logits after tokens[:length], from a fresh cache of the bucket's size (checks only)."""
        self.trace_counts["full_forward_logits"] += 1
        cache = init_cache(self.target, tokens.shape[0], params["embed"].dtype)
        x, _ = hidden_states(self.target, params, cache, tokens, jnp.int32(0))
        return project_logits(self.target, params, jax.lax.dynamic_slice_in_dim(x, length - 1, 1))[0, : self.vocab]

    def _decode_step(self, params, cache, token, position, key, sampling, *, greedy):
        """Baseline: one target forward on the newest token, then the next token from its logits."""
        self.trace_counts["decode_step"] += 1
        logits, cache = forward(self.target, params, cache, token[None], position)
        logits = logits[0, : self.vocab]
        key, choice_key = jax.random.split(key)
        token, _ = choose(choice_key, logits, sampling, greedy)
        return cache, (token, top2_margin(logits), key)

    def _draft_phase(self, params, cache, newest_two, position, key, sampling, *, k, greedy):
        """k autoregressive draft tokens d_1..d_k (at positions position+1..position+k).

        The first draft forward always takes the two newest tokens (positions position-1 and
        position): after an iteration that accepted all k drafts the draft never saw d_k, and
        re-writing an entry it already holds is harmless, so one static shape covers both cases.
        Returns the drafts and (sampling only) the distributions q_1..q_k they were drawn from.
        """
        self.trace_counts["draft_phase"] += 1
        keys = jax.random.split(key, k + 1)
        key, first_key, later_keys = keys[0], keys[1], keys[2:]
        logits, cache = forward(self.draft, params, cache, newest_two, position - 1)
        first, first_probs = choose(first_key, logits[-1, : self.vocab], sampling, greedy)

        def draft_one(carry, step_key):
            cache, token, token_position = carry
            logits, cache = forward(self.draft, params, cache, token[None], token_position)
            following, probs = choose(step_key, logits[0, : self.vocab], sampling, greedy)
            return (cache, following, token_position + 1), (following, probs)

        (cache, _, _), (rest, rest_probs) = jax.lax.scan(draft_one, (cache, first, position + 1), later_keys)
        drafted = jnp.concatenate([first[None], rest])
        draft_probs = None if greedy else jnp.concatenate([first_probs[None], rest_probs])
        return cache, (drafted, draft_probs, key)

    def _verify_phase(self, params, cache, newest, drafted, draft_probs, start, key, sampling, *, greedy):
        """One target forward over [newest, d_1..d_k] at start..start+k, then acceptance.

        Returns (n accepted, emitted [k+1] (first n+1 valid), target margin per emitted row).
        """
        self.trace_counts["verify_phase"] += 1
        logits, cache = forward(self.target, params, cache, jnp.concatenate([newest[None], drafted]), start)
        logits = logits[:, : self.vocab]
        key, accept_key = jax.random.split(key)
        n_accepted, emitted = accept_drafts(accept_key, logits, drafted, draft_probs, sampling, greedy, self.always_accept)
        return cache, (n_accepted, emitted, top2_margin(logits), key)

    def _iteration(self, target_params, draft_params, target_cache, draft_cache, newest_two, position, start,
                   key, sampling, *, k, greedy):
        """Draft phase and verify phase as one program (fused mode)."""
        self.trace_counts["speculative_iteration"] += 1
        draft_cache, (drafted, draft_probs, key) = self._draft_phase(
            draft_params, draft_cache, newest_two, position, key, sampling, k=k, greedy=greedy)
        target_cache, outputs = self._verify_phase(
            target_params, target_cache, newest_two[1], drafted, draft_probs, start, key, sampling, greedy=greedy)
        return target_cache, draft_cache, outputs


_PROGRAMS: dict[tuple, Programs] = {}


def programs_for(target: ModelConfig, draft: ModelConfig | None, vocab: int, always_accept: bool) -> Programs:
    """The shared `Programs` of this static description (configs are compared by value)."""
    description = (repr(target), repr(draft), vocab, always_accept)
    if description not in _PROGRAMS:
        _PROGRAMS[description] = Programs(target, draft, vocab, always_accept)
    return _PROGRAMS[description]


class JaxEngine:
    """A target and optional draft with their KV caches, decoding prompts on shared compiled programs.

    `vocab` is the shared vocabulary (embedding tables may be padded differently); logits are
    cut to it. `fused=True` runs the whole speculative iteration as one program per k
    (fastest: one dispatch and one host sync per iteration) but then draft and verification
    time cannot be told apart: `draft_s` and `verify_s` are reported as NaN. The default runs
    the draft phase and the verify phase as two programs with a sync between them, so both
    are measured (the cost ratio c and verify ratio v of the metrics need them).
    """

    def __init__(self, target: JaxDecoder, draft: JaxDecoder | None, *, capacity: int, vocab: int,
                 fused: bool = False, planted_bug: str | None = None):
        self.target, self.draft = target, draft
        self.capacity, self.vocab, self.fused = capacity, vocab, fused
        self.rollback_off_by_one = planted_bug == "rollback-off-by-one"
        self.programs = programs_for(target.config, draft.config if draft else None, vocab, planted_bug == "always-accept")
        self.target_cache = target.new_cache(capacity)
        self.draft_cache = draft.new_cache(capacity) if draft is not None else None

    @property
    def trace_counts(self) -> Counter[str]:
        """Program name -> compilations so far (shared with engines of the same description)."""
        return self.programs.trace_counts

    def next_token_logits(self, prefix: Sequence[int]) -> np.ndarray:
        """The target's next-token logits after `prefix` from a fresh full forward (float64 numpy [vocab])."""
        bucket = prompt_bucket(len(prefix), max(self.capacity, len(prefix)))
        padded = np.zeros(bucket, np.int32)
        padded[: len(prefix)] = prefix
        logits = self.programs.full_forward_logits(self.target.params, padded, np.int32(len(prefix)))
        return np.asarray(logits, np.float64)

    # ---- host loop ----

    def _first_run_untimed(self, signature: tuple, run: Callable[[], object]) -> float:
        """Compile (and run once, discarding the outputs) a program before its first timed call.

        Returns the seconds spent, which the caller leaves out of its timings. `run` must leave
        the caches in a state from which the timed call gives the same result: every program
        here only writes cache positions that the timed call then re-writes identically.
        """
        signature = (*signature, self.capacity, str(self.target.dtype))
        if signature in self.programs.ran_once:
            return 0.0
        started = time.perf_counter()
        jax.block_until_ready(run())
        self.programs.ran_once.add(signature)
        return time.perf_counter() - started

    def generate(
        self, prompt: Sequence[int], *, max_new_tokens: int, k: int | None, sampling: SamplingConfig, seed: int,
        eos_ids: Sequence[int], stop: Callable[[list[int]], int | None] | None = None,
    ) -> GenerationResult:
        """Decode after `prompt` (baseline when k is None); same contract as `specbench.engine.generate`."""
        speculative = k is not None
        greedy = sampling.greedy
        sampling_arrays = SamplingArrays.of(sampling)
        bucket = prompt_bucket(len(prompt), self.capacity)
        padded = np.zeros(bucket, np.int32)
        padded[: len(prompt)] = prompt

        def prefill():
            self.target_cache, out = self.programs.prefill_target(
                self.target.params, self.target_cache, padded, np.int32(len(prompt)), np.uint32(seed % 2**32), sampling_arrays,
                greedy=greedy)
            if speculative:
                self.draft_cache = self.programs.prefill_draft(self.draft.params, self.draft_cache, padded)
            return out

        compile_s = self._first_run_untimed(("prefill", bucket, greedy, speculative), prefill)
        started = time.perf_counter()
        first, margin, key = prefill()
        first, margin = jax.device_get((first, margin))
        jax.block_until_ready(self.draft_cache)
        result = GenerationResult(tokens=[int(first)], prompt_tokens=len(prompt), accepted_per_position=[0] * (k or 0))
        result.prefill_s = time.perf_counter() - started
        tokens, margins = result.tokens, [float(margin)]
        sequence = list(prompt) + tokens

        times = Counter()  # "draft", "verify", "untimed" seconds over the loop
        position_skew = 0  # stays 0 unless the rollback bug is planted
        loop_started = time.perf_counter()
        keep, reason = stopping_point(tokens, eos_ids, max_new_tokens)
        while reason is None:
            position = len(sequence) - 1  # the newest token's position; not yet in the target cache
            if speculative:
                n, new, new_margins, key = self._speculative_iteration(
                    sequence[-2:], position, position - position_skew, key, sampling_arrays, k, greedy, times)
                result.drafted += k
                result.accepted += n
                for draft_position in range(n):
                    result.accepted_per_position[draft_position] += 1
                if self.rollback_off_by_one and n < k:
                    position_skew += 1  # planted bug for tests: the target's positions drift one too far back
            else:
                new, new_margins, key = self._baseline_step(sequence[-1], position, key, sampling_arrays, greedy, times)
            result.iterations += 1
            tokens += new
            margins += new_margins
            sequence += new
            keep, reason = stopping_point(tokens, eos_ids, max_new_tokens)
            if reason is None and stop is not None and (kept := stop(tokens)) is not None:
                keep, reason = kept, "stop_string"

        result.decode_s = time.perf_counter() - loop_started - times["untimed"]
        result.compile_s = compile_s + times["untimed"]
        result.draft_s, result.verify_s = times["draft"], times["verify"]
        if speculative and self.fused:
            result.draft_s = result.verify_s = float("nan")  # one program: the phases cannot be told apart
        del tokens[keep:]
        result.stop_reason = reason
        result.margins = margins[:keep]
        return result

    def _speculative_iteration(self, newest_two: list[int], position: int, start: int, key: jax.Array,
                               sampling: SamplingArrays, k: int, greedy: bool, times: Counter):
        """Draft k, verify at `start` (= `position` unless the rollback bug is planted), accept.

        Returns (n accepted, the n+1 new tokens, their target margins, the next random key).
        """
        tp, dp = self.target.params, self.draft.params
        newest_two, position, start = np.asarray(newest_two, np.int32), np.int32(position), np.int32(start)

        def draft_phase(key):
            self.draft_cache, out = self.programs.draft_phase(
                dp, self.draft_cache, newest_two, position, key, sampling, k=k, greedy=greedy)
            return out

        def verify_phase(drafted, draft_probs, key):
            self.target_cache, out = self.programs.verify_phase(
                tp, self.target_cache, newest_two[1], drafted, draft_probs, start, key, sampling, greedy=greedy)
            return out

        def both_phases(key):
            if self.fused:
                self.target_cache, self.draft_cache, out = self.programs.iteration(
                    tp, dp, self.target_cache, self.draft_cache, newest_two, position, start, key, sampling,
                    k=k, greedy=greedy)
                return out
            return verify_phase(*draft_phase(key))

        times["untimed"] += self._first_run_untimed(("iteration" if self.fused else "draft+verify", k, greedy),
                                                    lambda: both_phases(key))
        started = time.perf_counter()
        if self.fused:
            n, emitted, row_margins, key = both_phases(key)
        else:
            drafted, draft_probs, key = jax.block_until_ready(draft_phase(key))
            times["draft"] += time.perf_counter() - started
            started = time.perf_counter()
            n, emitted, row_margins, key = verify_phase(drafted, draft_probs, key)
        n, emitted, row_margins = jax.device_get((n, emitted, row_margins))
        times["verify"] += time.perf_counter() - started
        n = int(n)
        return n, [int(t) for t in emitted[: n + 1]], [float(m) for m in row_margins[: n + 1]], key

    def _baseline_step(self, newest: int, position: int, key: jax.Array, sampling: SamplingArrays, greedy: bool,
                       times: Counter):
        """One target forward and the next token. Returns ([token], [margin], the next random key)."""

        def step():
            self.target_cache, out = self.programs.decode_step(
                self.target.params, self.target_cache, np.int32(newest), np.int32(position), key, sampling,
                greedy=greedy)
            return out

        times["untimed"] += self._first_run_untimed(("decode", greedy), step)
        started = time.perf_counter()
        token, margin, key = step()
        token, margin = jax.device_get((token, margin))
        times["verify"] += time.perf_counter() - started
        return [int(token)], [float(margin)], key


