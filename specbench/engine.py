"""The PyTorch decode loop: one `generate` for baseline and speculative decoding.

Both strategies call the same model objects through one tiny interface,
`model(tokens[1, q], start_pos) -> float32 logits[1, q, vocab]`, where the model keeps
its own KV cache and a call at `start_pos` forgets whatever was cached from that
position on. Rolling back rejected drafts is therefore just passing an earlier
`start_pos` next time. `draft=None` is the baseline.

Greedy decoding is treated as sampling from the one-hot distribution of the argmax,
so the speculative acceptance rule below needs no separate greedy branch: with
one-hot p and q it accepts exactly when the draft token is the target's argmax and
otherwise emits the target's argmax.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F

from specbench.backends.base import GenerationResult, SamplingConfig
from specbench.backends.common import stopping_point


class CausalLM(Protocol):
    def __call__(self, tokens: torch.Tensor, start_pos: int) -> torch.Tensor: ...


def next_token_distribution(logits: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """Probabilities the next token is drawn from, for each row of `logits` [..., vocab].

    Greedy: one-hot of the argmax. Otherwise softmax(logits / T) restricted to the top-k
    tokens and to the smallest set whose mass reaches top-p (the token crossing p is kept).
    Draft and target go through this same function, so both are warped identically.
    """
    if sampling.greedy:
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    logits = logits / sampling.temperature
    if sampling.top_k:
        kth_largest = torch.topk(logits, min(sampling.top_k, logits.shape[-1])).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        sorted_probs = sorted_logits.softmax(-1)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs
        sorted_logits = sorted_logits.masked_fill(mass_before >= sampling.top_p, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits.softmax(-1)


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of `probs` [rows, vocab]: argmax_i p_i / E_i with E_i ~ Exponential(1).

    The exponential race: P(argmax = i) = p_i exactly, the same draw `torch.multinomial` makes
    for one sample, but without multinomial's validity check that reads a value back to
    the host (a synchronisation per drafted token on a GPU). E is clamped away from 0 so a
    zero-probability token scores 0, never NaN; a one-hot row returns its argmax.
    """
    race = torch.empty_like(probs).exponential_(generator=generator).clamp_(min=torch.finfo(probs.dtype).tiny)
    return (probs / race).argmax(-1)


def to_device(ids: list[int], device: torch.device) -> torch.Tensor:
    """Token ids as a long tensor on `device`, without waiting for queued device work.

    A plain host-to-device copy from pageable memory synchronises the stream; from pinned
    memory with non_blocking it is queued like a kernel.
    """
    tokens = torch.tensor(ids, dtype=torch.long)
    if device.type != "cuda":
        return tokens
    return tokens.pin_memory().to(device, non_blocking=True)


def is_out_of_memory(error: BaseException) -> bool:
    """True when `error` is the device (or host) running out of memory, on CUDA, ROCm or CPU.

    torch raises `torch.cuda.OutOfMemoryError` on CUDA; ROCm builds raise the same class or a
    RuntimeError mentioning "HIP out of memory"; CPU allocations fail with "DefaultCPUAllocator:
    can't allocate memory"; a plain MemoryError comes from Python itself.
    """
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and any(
        marker in message for marker in ("out of memory", "can't allocate memory", "hiperroroutofmemory")
    )


def top2_margin(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 logit per row: how close the greedy choice was to a tie."""
    top = torch.topk(logits, 2, dim=-1).values
    return top[..., 0] - top[..., 1]


class Stopwatch:
    """Sums named intervals of device work without synchronising inside the loop.

    `lap(name)` closes the interval that began at the previous lap. On CUDA (and ROCm)
    the marks are events read once at the end; on CPU, where kernels run synchronously,
    they are host clock readings.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[str, object]] = [("start", self._now())]

    def _now(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def lap(self, name: str) -> None:
        self.marks.append((name, self._now()))

    def totals(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
        totals: dict[str, float] = {}
        for (_, start), (name, end) in zip(self.marks, self.marks[1:]):
            seconds = start.elapsed_time(end) / 1000 if self.cuda else end - start
            totals[name] = totals.get(name, 0.0) + seconds
        return totals


@torch.no_grad()
def speculative_step(
    target: CausalLM, draft: CausalLM, target_input: list[int], target_pos: int, draft_input: list[int],
    draft_pos: int, k: int, sampling: SamplingConfig, generator, device, clock: Stopwatch, always_accept: bool = False,
) -> tuple[list[int], int, list[float]]:
    """One iteration: draft k tokens, verify them in one target forward, accept a prefix.

    Returns (new tokens, number of drafts accepted, target margin per new token).
    Maths (Leviathan et al. 2023; Chen et al. 2023), with q the draft's and p the
    target's next-token distributions after the same prefix:
      - draft token d_i ~ q_i is accepted with probability min(1, p_i(d_i) / q_i(d_i)):
        always when q <= p, with probability p/q when the draft was over-confident;
      - at the first rejection the token is resampled from norm(max(0, p_i - q_i)),
        which makes the emitted token exactly p_i-distributed;
      - if all k are accepted, a bonus token comes from p_k for free.
    """
    # 1. Draft: k autoregressive steps of the small model (its first input may be 2 tokens
    #    when the previous iteration accepted everything and the draft never saw d_k).
    drafted, draft_probs = [], []
    inputs = to_device(draft_input, device)[None]
    for _ in range(k):
        q = next_token_distribution(draft(inputs, draft_pos)[0, -1], sampling)
        draft_pos += inputs.shape[1]
        token = sample(q[None], generator)
        drafted.append(token)
        draft_probs.append(q)
        inputs = token[None]
    drafted_tokens, q = torch.cat(drafted), torch.stack(draft_probs)  # [k], [k, V]
    clock.lap("draft")

    # 2. Verify: one target forward over the last committed token(s) and the k drafts.
    logits = target(torch.cat([to_device(target_input, device), drafted_tokens])[None], target_pos)[0]
    logits = logits[-(k + 1):]  # p_0 .. p_k
    p = next_token_distribution(logits, sampling)
    clock.lap("verify")

    # 3. Accept: r_i < p_i(d_i) / q_i(d_i), written without the division; keep the leading run.
    rows = torch.arange(k, device=device)
    r = torch.rand(k, device=device, generator=generator)
    accepted_mask = r * q[rows, drafted_tokens] < p[rows, drafted_tokens]
    if always_accept:  # planted bug for tests: breaks losslessness
        accepted_mask = torch.ones_like(accepted_mask)
    n_accepted = accepted_mask.int().cumprod(0).sum()
    # The token after the accepted run: residual norm(max(0, p_n - q_n)) if d_{n+1} was
    # rejected, the bonus p_k if all were accepted. Sampled for every row, picked on device,
    # so the only host sync of the iteration is the read below.
    residual = (p[:k] - q).clamp(min=0)
    residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p[:k])
    candidates = sample(torch.cat([residual, p[k:]]), generator)
    summary = torch.cat([n_accepted[None].double(), drafted_tokens.double(), candidates.double(), top2_margin(logits).double()])
    values = summary.tolist()
    clock.lap("accept")
    n = int(values[0])
    tokens = [int(t) for t in values[1 : 1 + n]] + [int(values[1 + k + n])]
    margins = values[2 + 2 * k : 2 + 2 * k + n + 1]
    return tokens, n, margins


@torch.no_grad()
def generate(
    target: CausalLM,
    prompt: Sequence[int],
    *,
    max_new_tokens: int,
    draft: CausalLM | None = None,
    k: int | None = None,
    sampling: SamplingConfig = SamplingConfig(),
    generator: torch.Generator | None = None,
    eos_ids: Sequence[int] = (),
    stop: Callable[[list[int]], int | None] | None = None,
    device: torch.device = torch.device("cpu"),
    planted_bug: str | None = None,
) -> GenerationResult:
    """Decode up to `max_new_tokens` after `prompt`; speculative when `draft` and `k` are given.

    `stop(tokens)` may return how many generated tokens to keep (a stop string was hit).
    """
    speculative = draft is not None and k is not None
    clock = Stopwatch(device)
    prompt_tensor = torch.tensor([list(prompt)], device=device)
    logits = target(prompt_tensor, 0)[0, -1]
    if speculative:
        draft(prompt_tensor, 0)
    first = sample(next_token_distribution(logits, sampling)[None], generator)
    tokens, margins = [int(first)], [float(top2_margin(logits))]
    clock.lap("prefill")

    sequence = list(prompt) + tokens
    target_cached = draft_cached = len(prompt)  # how much of `sequence` each KV cache holds
    position_skew = 0  # stays 0 unless the rollback bug is planted
    result = GenerationResult(tokens=tokens, prompt_tokens=len(prompt), accepted_per_position=[0] * (k or 0))
    keep, reason = stopping_point(tokens, eos_ids, max_new_tokens)
    while reason is None:
        committed = len(sequence)
        if speculative:
            new, n, new_margins = speculative_step(
                target, draft, sequence[target_cached:], target_cached - position_skew, sequence[draft_cached:],
                draft_cached, k, sampling, generator, device, clock, always_accept=planted_bug == "always-accept",
            )
            result.drafted += k
            result.accepted += n
            for position in range(n):
                result.accepted_per_position[position] += 1
            # Roll back by bookkeeping alone: the draft cache holds the committed sequence plus
            # d_1..d_(k-1), of which d_1..d_n are now committed too.
            draft_cached = committed + min(n, k - 1)
            if planted_bug == "rollback-off-by-one" and n < k:
                position_skew += 1  # planted bug for tests: positions drift one too far back
        else:
            logits = target(to_device(sequence[target_cached:], device)[None], target_cached)[0, -1]
            clock.lap("verify")
            token = sample(next_token_distribution(logits, sampling)[None], generator)
            token, margin = torch.cat([token.double(), top2_margin(logits)[None].double()]).tolist()  # the one sync
            new, new_margins = [int(token)], [margin]
            clock.lap("accept")
        result.iterations += 1
        tokens += new
        margins += new_margins
        sequence += new
        target_cached = len(sequence) - 1  # every token but the newest, which is the next input
        keep, reason = stopping_point(tokens, eos_ids, max_new_tokens)
        if reason is None and stop is not None and (kept := stop(tokens)) is not None:
            keep, reason = kept, "stop_string"

    del tokens[keep:]
    result.stop_reason = reason
    result.margins = margins[:keep]
    totals = clock.totals()
    result.prefill_s = totals.get("prefill", 0.0)
    result.draft_s = totals.get("draft", 0.0)
    result.verify_s = totals.get("verify", 0.0)
    result.decode_s = result.draft_s + result.verify_s + totals.get("accept", 0.0)
    return result
