"""Statistical check that speculative sampling is lossless, for any backend.

Speculative sampling promises that emitted tokens are distributed exactly as the
target model's (warped) distribution. This check compares the empirical distribution
of the first few sampled tokens with the exact one, computed by enumerating prefixes
with full forward passes of the target (`Backend.next_token_logits`), using a G-test.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from specbench.backends.base import Backend, SamplingConfig
from specbench.engine import next_token_distribution

OTHER = ("other",)  # the pooled cell: rare sequences and everything not enumerated


def exact_sequence_distribution(
    backend: Backend, prompt: Sequence[int], n_tokens: int, sampling: SamplingConfig,
    eos_ids: Sequence[int] = (), min_probability: float = 1e-4,
) -> dict[tuple, float]:
    """P(first `n_tokens` generated tokens = s) for every sequence s with P >= `min_probability`.

    A sequence ending in EOS stops there. Prefixes below the threshold are not expanded;
    their mass goes to the OTHER cell, so the probabilities always sum to 1.
    """
    frontier: dict[tuple, float] = {(): 1.0}
    complete: dict[tuple, float] = {}
    for _ in range(n_tokens):
        next_frontier: dict[tuple, float] = {}
        for prefix, mass in frontier.items():
            logits = torch.as_tensor(backend.next_token_logits(list(prompt) + list(prefix)), dtype=torch.float64)
            probs = next_token_distribution(logits, sampling).tolist()
            for token, p in enumerate(probs):
                if mass * p < min_probability:
                    continue
                sequence = prefix + (token,)
                target = complete if token in eos_ids else next_frontier
                target[sequence] = mass * p
        frontier = next_frontier
    complete.update(frontier)
    complete[OTHER] = max(0.0, 1.0 - sum(complete.values()))
    return complete


@dataclass
class LosslessTestResult:
    statistic: float  # G = 2 * sum(observed * ln(observed / expected))
    degrees_of_freedom: int
    p_value: float
    samples: int
    cells: int

    @property
    def passed(self) -> bool:
        return self.p_value > 0.001


def g_test(observed: Counter, exact: dict[tuple, float], samples: int, min_expected: float = 5.0) -> LosslessTestResult:
    """G-test of observed counts against exact probabilities; cells expected < 5 are pooled."""
    pooled_observed, pooled_expected = 0.0, 0.0
    cells: list[tuple[float, float]] = []
    for sequence, probability in exact.items():
        expected, seen = probability * samples, observed.get(sequence, 0)
        if expected < min_expected or sequence == OTHER:
            pooled_observed, pooled_expected = pooled_observed + seen, pooled_expected + expected
        else:
            cells.append((seen, expected))
    pooled_observed += sum(count for seq, count in observed.items() if seq not in exact)  # never enumerated
    if pooled_expected > 0 or pooled_observed > 0:
        cells.append((pooled_observed, max(pooled_expected, 1e-12)))
    statistic = 2.0 * sum(o * math.log(o / e) for o, e in cells if o > 0)
    dof = max(len(cells) - 1, 1)
    # chi-square survival function: regularized upper incomplete gamma Q(dof/2, G/2)
    p_value = float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(statistic / 2, dtype=torch.float64)))
    return LosslessTestResult(statistic, dof, p_value, samples, len(cells))


def lossless_sampling_test(
    backend: Backend, prompt: Sequence[int], *, k: int, sampling: SamplingConfig, samples: int,
    n_tokens: int = 3, eos_ids: Sequence[int] = (), seed: int = 0, min_probability: float = 1e-4,
) -> LosslessTestResult:
    """Sample the first `n_tokens` tokens `samples` times with speculative decoding (seeds
    seed, seed+1, ...) and G-test them against the target's exact distribution."""
    exact = exact_sequence_distribution(backend, prompt, n_tokens, sampling, eos_ids, min_probability)
    observed: Counter = Counter()
    for i in range(samples):
        result = backend.generate(prompt, max_new_tokens=n_tokens, k=k, sampling=sampling, seed=seed + i)
        observed[tuple(result.tokens)] += 1
    return g_test(observed, exact, samples)
