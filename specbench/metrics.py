"""Every figure specbench reports, defined once, with its formula.

Notation for one prompt: n = new_tokens (generated tokens, the first from prefill), T = decode_s,
I = iterations (target forwards after prefill), D = drafted, A = accepted, k = draft length.
Cell-level figures pool prompts as ratios of sums (sum of tokens over sum of seconds), which is
what a user running the whole prompt set experiences; a mean of per-prompt ratios would weight a
prompt that stopped after three tokens as much as one that ran to max_new_tokens.

Confidence intervals are percentile bootstraps over prompts (95%, a fixed seed so that a report
regenerated from the same results shows the same intervals). Speedups resample prompts *paired*:
one draw of prompt indices is applied to both the baseline and the speculative cell, so the
interval reflects timing noise and prompt mix, not which prompts happened to land in which arm.

The speculative-decoding model is Leviathan et al. 2023 ("Fast Inference from Transformers via
Speculative Decoding", section 3): with i.i.d. per-token acceptance a, draft step cost c (relative
to one target decode step) and verification cost v (one target forward over k+1 tokens, relative to
one over 1 token), the expected tokens per iteration are (1 - a^(k+1)) / (1 - a) and the expected
speedup is (1 - a^(k+1)) / ((1 - a)(k c + v)). The paper takes v = 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20230218  # fixed: a regenerated report shows the same intervals
MAX_DRAFT_LENGTH = 64  # largest k searched by best_speedup / acceptance_needed


@dataclass(frozen=True)
class Estimate:
    """A point value with its 95% confidence interval and the number of prompts behind it."""

    value: float
    ci_low: float
    ci_high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2.0


NAN_ESTIMATE = Estimate(math.nan, math.nan, math.nan, 0)


# ---------------------------------------------------------------- per-prompt figures


def decode_tokens_per_s(new_tokens: float, decode_s: float) -> float:
    """Decode throughput: (n - 1) / T. The first token comes from prefill, so it is not in T."""
    return (new_tokens - 1) / decode_s if decode_s > 0 and new_tokens > 1 else math.nan


def time_per_output_token(new_tokens: float, decode_s: float) -> float:
    """TPOT in seconds: T / (n - 1), the inverse of `decode_tokens_per_s`."""
    return decode_s / (new_tokens - 1) if new_tokens > 1 else math.nan


def end_to_end_tokens_per_s(new_tokens: float, prefill_s: float, decode_s: float) -> float:
    """Generation throughput including prefill: n / (prefill_s + T)."""
    total = prefill_s + decode_s
    return new_tokens / total if total > 0 else math.nan


def acceptance_rate(accepted: float, drafted: float) -> float:
    """Fraction of drafted tokens the target accepted: A / D."""
    return accepted / drafted if drafted > 0 else math.nan


def mean_accepted_length(accepted: float, iterations: float) -> float:
    """Tokens emitted per target forward in the decode phase: (A + I) / I.

    Each verification emits the accepted draft tokens plus one token of its own (the correction
    or the bonus token), so this is 1 for the baseline and at most k + 1.
    """
    return (accepted + iterations) / iterations if iterations > 0 else math.nan


def acceptance_by_position(accepted_per_position: Sequence[float], iterations: float) -> list[float]:
    """Share of iterations in which draft position i (0-based) was accepted: accepted_per_position[i] / I.

    Non-increasing in i, because acceptance stops at the first rejected position.
    """
    if iterations <= 0:
        return [math.nan] * len(accepted_per_position)
    return [count / iterations for count in accepted_per_position]


def cost_ratio(draft_s: float, iterations: float, k: int, baseline_decode_s: float, baseline_iterations: float) -> float:
    """c = (draft_s / (I k)) / (T_baseline / I_baseline): one draft step over one target decode step."""
    if iterations <= 0 or k <= 0 or baseline_iterations <= 0 or baseline_decode_s <= 0:
        return math.nan
    return (draft_s / (iterations * k)) / (baseline_decode_s / baseline_iterations)


def verify_ratio(verify_s: float, iterations: float, baseline_decode_s: float, baseline_iterations: float) -> float:
    """v = (verify_s / I) / (T_baseline / I_baseline): a k+1-token verification over a 1-token decode step."""
    if iterations <= 0 or baseline_iterations <= 0 or baseline_decode_s <= 0:
        return math.nan
    return (verify_s / iterations) / (baseline_decode_s / baseline_iterations)


# ---------------------------------------------------------------- Leviathan et al. 2023


def expected_tokens_per_iteration(a: float, k: int) -> float:
    """E[tokens per iteration] = (1 - a^(k+1)) / (1 - a) = 1 + a + ... + a^k (k + 1 when a = 1)."""
    if a >= 1.0:
        return float(k + 1)
    return (1.0 - a ** (k + 1)) / (1.0 - a)


def leviathan_speedup(a: float, k: int, c: float, v: float = 1.0) -> float:
    """Expected walltime speedup (1 - a^(k+1)) / ((1 - a)(k c + v)) (Leviathan et al. 2023, Theorem 3.8 with v)."""
    return expected_tokens_per_iteration(a, k) / (k * c + v)


def predicted_speedup(mean_length: float, k: int, c: float, v: float = 1.0) -> float:
    """Speedup predicted from the *measured* tokens per iteration L: L / (k c + v).

    This drops the i.i.d. assumption: L is observed, only the cost model is Leviathan's.
    """
    denominator = k * c + v
    return mean_length / denominator if denominator > 0 else math.nan


def efficiency(measured: float, predicted: float) -> float:
    """measured speedup / predicted speedup: the share of the cost model's promise the implementation delivers."""
    return measured / predicted if predicted and predicted > 0 else math.nan


def best_speedup(a: float, c: float, v: float = 1.0, max_k: int = MAX_DRAFT_LENGTH) -> tuple[int, float]:
    """The draft length k in 1..max_k maximising `leviathan_speedup`, and that speedup."""
    if any(math.isnan(x) for x in (a, c, v)):
        return 0, math.nan
    speedups = [leviathan_speedup(a, k, c, v) for k in range(1, max_k + 1)]
    best = int(np.argmax(speedups))
    return best + 1, speedups[best]


def acceptance_needed(target_speedup: float, c: float, v: float = 1.0, max_k: int = MAX_DRAFT_LENGTH) -> float:
    """The smallest per-token acceptance a for which some k reaches `target_speedup`.

    Solved by bisection, since the best speedup over k grows with a. Returns NaN when even a = 1
    cannot reach it at this c, v (the ceiling is max_k (k + 1) / (k c + v)).
    Example: c = 0.1, v = 1, 3x needs a of about 0.86.
    """
    if any(math.isnan(x) for x in (target_speedup, c, v)):
        return math.nan
    if best_speedup(1.0, c, v, max_k)[1] < target_speedup:
        return math.nan
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if best_speedup(middle, c, v, max_k)[1] >= target_speedup:
            high = middle
        else:
            low = middle
    return high


def per_token_acceptance(mean_length: float, k: int) -> float:
    """Invert E[tokens per iteration]: the i.i.d. acceptance a with (1 - a^(k+1)) / (1 - a) = L.

    This is the a of Leviathan's model that matches what was measured; it differs from A / D
    (which counts every drafted token, including those after a rejection that were never checked).
    """
    if math.isnan(mean_length) or k <= 0:
        return math.nan
    if mean_length <= 1.0:
        return 0.0
    if mean_length >= k + 1:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if expected_tokens_per_iteration(middle, k) < mean_length:
            low = middle
        else:
            high = middle
    return (low + high) / 2


# ---------------------------------------------------------------- confidence intervals


def _percentile_interval(samples: np.ndarray) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return math.nan, math.nan
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def _resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def ratio_of_sums(
    numerator: Sequence[float],
    denominator: Sequence[float],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Estimate:
    """sum(numerator) / sum(denominator) over prompts, with a bootstrap CI resampling prompts.

    Used for tokens/s (tokens over seconds) and acceptance (accepted over drafted).
    Fewer than 2 prompts give no interval (NaN).
    """
    num, den = np.asarray(numerator, float), np.asarray(denominator, float)
    n = num.size
    if n == 0 or den.sum() <= 0:
        return Estimate(math.nan, math.nan, math.nan, n)
    value = float(num.sum() / den.sum())
    if n < 2:
        return Estimate(value, math.nan, math.nan, n)
    idx = _resample_indices(n, resamples, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    return Estimate(value, *_percentile_interval(boot), n)


def paired_throughput_ratio(
    baseline_tokens: Sequence[float],
    baseline_seconds: Sequence[float],
    speculative_tokens: Sequence[float],
    speculative_seconds: Sequence[float],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Estimate:
    """Speedup = (sum n_s / sum T_s) / (sum n_b / sum T_b), prompts paired by position in the lists.

    The ratio of pooled throughputs equals the ratio of pooled baseline to speculative time per
    output token. The bootstrap draws one set of prompt indices per resample and applies it to
    both arms (paired), so prompt-to-prompt variation in output length cancels out.
    """
    arrays = [np.asarray(x, float) for x in (baseline_tokens, baseline_seconds, speculative_tokens, speculative_seconds)]
    n = arrays[0].size
    if n == 0 or any(a.size != n for a in arrays):
        return Estimate(math.nan, math.nan, math.nan, n)
    bt, bs, st, ss = arrays

    def ratio(rows: np.ndarray | slice) -> np.ndarray | float:
        axis = 1 if isinstance(rows, np.ndarray) else None
        with np.errstate(divide="ignore", invalid="ignore"):
            return (st[rows].sum(axis=axis) / ss[rows].sum(axis=axis)) / (bt[rows].sum(axis=axis) / bs[rows].sum(axis=axis))

    value = float(ratio(slice(None)))
    if n < 2:
        return Estimate(value, math.nan, math.nan, n)
    boot = np.asarray(ratio(_resample_indices(n, resamples, seed)))
    return Estimate(value, *_percentile_interval(boot), n)


def paired_mean_difference(
    baseline: Sequence[float],
    speculative: Sequence[float],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Estimate:
    """mean(speculative) - mean(baseline) over paired prompts (quality delta), paired bootstrap CI."""
    b, s = np.asarray(baseline, float), np.asarray(speculative, float)
    n = b.size
    if n == 0 or s.size != n:
        return Estimate(math.nan, math.nan, math.nan, n)
    diff = s - b
    value = float(diff.mean())
    if n < 2:
        return Estimate(value, math.nan, math.nan, n)
    boot = diff[_resample_indices(n, resamples, seed)].mean(axis=1)
    return Estimate(value, *_percentile_interval(boot), n)


def wilson_interval(successes: float, n: int) -> Estimate:
    """Proportion p = successes / n with the Wilson score 95% interval.

    p_hat +- z sqrt(p_hat(1 - p_hat)/n + z^2/4n^2), centred at (p_hat + z^2/2n) / (1 + z^2/n), all over
    (1 + z^2/n). Unlike the normal approximation it stays inside [0, 1] and is not zero-width at 0 or n.
    """
    if n <= 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    z = 1.959963984540054  # two-sided 95%
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if successes <= 0 else max(0.0, centre - half)  # exact ends: no rounding off 0 or 1
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return Estimate(p, low, high, n)


def bootstrap_mean(values: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Estimate:
    """Mean with a percentile bootstrap CI (for scores that are not 0/1)."""
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return NAN_ESTIMATE
    if x.size < 2:
        return Estimate(float(x.mean()), math.nan, math.nan, 1)
    boot = x[_resample_indices(x.size, resamples, seed)].mean(axis=1)
    return Estimate(float(x.mean()), *_percentile_interval(boot), int(x.size))


def proportion(values: Sequence[float]) -> Estimate:
    """Mean of scores: Wilson interval when every score is 0 or 1, else a bootstrap."""
    x = np.asarray([v for v in values if v is not None], float)
    x = x[np.isfinite(x)]
    if x.size and np.all((x == 0) | (x == 1)):
        return wilson_interval(float(x.sum()), int(x.size))
    return bootstrap_mean(x)

