"""The contract every backend implements.

A backend holds one target model and, optionally, one draft model, loaded once.
`generate(k=None)` is the matched baseline; `generate(k=K)` is speculative decoding
with K drafted tokens per iteration. Both go through the same model objects,
weights, dtype and KV cache, so only the decoding strategy differs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen from the target's distribution.

    temperature 0 is greedy decoding; top_k 0 and top_p 1.0 switch those filters off.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class GenerationResult:
    """Generated tokens of one prompt and what it cost.

    Counting conventions (shared by every backend, relied on by `specbench.metrics`):
      - `tokens`: generated ids only, prompt excluded, truncated at EOS (kept), a stop
        string, or `max_new_tokens`.
      - `iterations`: target forward passes after prefill. Baseline: one per token.
        Speculative: one verification of k+1 positions per iteration.
      - `drafted` / `accepted`: draft tokens proposed / accepted by the target, summed
        over iterations (tokens past a stop are still counted: they were computed).
      - `accepted_per_position[i]`: iterations in which draft position i (0-based) was
        accepted; non-increasing in i because acceptance stops at the first rejection.
      - `margins[j]`: the target's top-1 minus top-2 logit for generated token j, from
        the forward that produced it (decode step or verification); None where the
        backend cannot see logits.
      - times in seconds, measured with device synchronisation; `draft_s + verify_s`
        is the speculative part of `decode_s` (the rest is acceptance/bookkeeping).
    """

    tokens: list[int]
    prompt_tokens: int
    iterations: int = 0
    drafted: int = 0
    accepted: int = 0
    accepted_per_position: list[int] = field(default_factory=list)
    prefill_s: float = 0.0
    decode_s: float = 0.0
    draft_s: float = 0.0
    verify_s: float = 0.0
    margins: list[float] | None = None
    stop_reason: str = "max_new_tokens"  # "eos" | "stop_string" | "max_new_tokens"
    compile_s: float = 0.0  # graph capture / compilation during this call, in no time above

    @property
    def acceptance_rate(self) -> float:
        """accepted / drafted (NaN for the baseline, which drafts nothing)."""
        return self.accepted / self.drafted if self.drafted else float("nan")

    @property
    def mean_accepted_length(self) -> float:
        """Tokens emitted per target forward in the decode phase: (accepted + iterations) / iterations."""
        return (self.accepted + self.iterations) / self.iterations if self.iterations else float("nan")

    def stats(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "accepted_per_position": list(self.accepted_per_position),
            "acceptance_rate": self.acceptance_rate,
            "mean_accepted_length": self.mean_accepted_length,
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(acceptance_rate=self.acceptance_rate, mean_accepted_length=self.mean_accepted_length)
        return out


class Backend(ABC):
    """A target (and optional draft) model loaded once, decoding prompts on demand.

    Constructor keywords shared by all backends:
      target, draft: checkpoint folder or hub id (draft may be None: baseline only);
      dtype: "float32" | "bfloat16" | "float16"; device: "cpu", "cuda", "cuda:1", ...;
      max_seq_len: the KV-cache capacity (prompt + max_new_tokens must fit).
    """

    name: ClassVar[str]

    tokenizer: Any  # a transformers tokenizer (encode/decode, eos_token_id)

    @abstractmethod
    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        k: int | None = None,
        sampling: SamplingConfig = SamplingConfig(),
        seed: int = 0,
        stop_strings: Sequence[str] = (),
    ) -> GenerationResult:
        """Decode after `prompt_ids`; k=None is the matched baseline, k>=1 speculative."""

    @abstractmethod
    def next_token_logits(self, prefix_ids: Sequence[int]) -> Any:
        """The target's next-token logits after `prefix_ids`, from a fresh full forward
        (no cache reuse): ground truth for checks. A float numpy array [vocab]."""

    @abstractmethod
    def environment(self) -> dict[str, Any]:
        """Where the figures come from: device name/count, driver, framework versions."""

    def warmup(self, k_values: Sequence[int | None] = (None,)) -> None:
        """Run untimed decodes so that lazy initialisation and compilation never land in a timing."""
        prompt = self.tokenizer.encode("warm up", add_special_tokens=True)
        for k in k_values:
            self.generate(prompt, max_new_tokens=8, k=k)
