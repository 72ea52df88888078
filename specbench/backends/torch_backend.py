"""The `torch` backend: specbench's own decoder and static KV cache, driven by `specbench.engine`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from specbench import engine
from specbench.backends.base import Backend, GenerationResult, SamplingConfig
from specbench.environment import torch_environment
from specbench.errors import SpecbenchError
from specbench.models.checkpoint import load_tokenizer, resolve_checkpoint
from specbench.models.torch_model import load_decoder, resolve_device, resolve_dtype
from specbench.plant import planted_bug

MAX_K = 32


def check_request(prompt_ids: Sequence[int], max_new_tokens: int, k: int | None, max_seq_len: int, has_draft: bool) -> None:
    """The checks every backend makes before decoding, with one-line messages."""
    if k is not None:
        if not has_draft:
            raise SpecbenchError("k was given but no draft model was loaded")
        if not 1 <= k <= MAX_K:
            raise SpecbenchError(f"k must be between 1 and {MAX_K}, got {k}")
    if max_new_tokens < 1:
        raise SpecbenchError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not prompt_ids:
        raise SpecbenchError("the prompt is empty")
    if len(prompt_ids) + max_new_tokens > max_seq_len:
        raise SpecbenchError(
            f"prompt of {len(prompt_ids)} tokens + max_new_tokens {max_new_tokens} exceeds max_seq_len {max_seq_len}"
        )


def check_same_vocabulary(target_tokenizer, draft_tokenizer, target_name: str, draft_name: str) -> None:
    """Draft and target must tokenize identically, or their distributions cannot be compared."""
    if target_tokenizer.get_vocab() != draft_tokenizer.get_vocab():
        raise SpecbenchError(
            f"draft {draft_name} and target {target_name} have different vocabularies "
            f"({len(draft_tokenizer)} vs {len(target_tokenizer)} tokens); a draft must share the target's tokenizer"
        )


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, target: str, draft: str | None = None, *, dtype: str = "float32", device: str = "cpu",
                 max_seq_len: int = 2048, **_ignored):
        self.device = resolve_device(device)
        resolve_dtype(dtype)
        target_dir = resolve_checkpoint(str(target))
        self.target = load_decoder(target_dir, dtype, device)
        self.tokenizer = load_tokenizer(target_dir)
        self.draft = None
        if draft is not None:
            draft_dir = resolve_checkpoint(str(draft))
            check_same_vocabulary(self.tokenizer, load_tokenizer(draft_dir), str(target), str(draft))
            self.draft = load_decoder(draft_dir, dtype, device)
        # Embedding tables may be padded differently (e.g. Qwen2.5 0.5B vs 7B): compare the shared part.
        self.vocab = min(m.config.vocab_size for m in (self.target, self.draft) if m is not None)
        self.max_seq_len = max_seq_len
        self.dtype = dtype
        self.planted_bug = planted_bug()
        # Capacity for prompt + max_new_tokens plus a full verification window past it.
        for model in (self.target, self.draft):
            if model is not None:
                model.setup_cache(max_seq_len + MAX_K + 1)
        eos = set(self.target.config.eos_token_ids)
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_ids = tuple(sorted(eos))

    def _as_causal_lm(self, model):
        vocab = self.vocab
        return lambda tokens, start_pos: model(tokens, start_pos)[..., :vocab]

    def generate(self, prompt_ids: Sequence[int], *, max_new_tokens: int, k: int | None = None,
                 sampling: SamplingConfig = SamplingConfig(), seed: int = 0,
                 stop_strings: Sequence[str] = ()) -> GenerationResult:
        check_request(prompt_ids, max_new_tokens, k, self.max_seq_len, self.draft is not None)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        return engine.generate(
            self._as_causal_lm(self.target), list(prompt_ids), max_new_tokens=max_new_tokens,
            draft=self._as_causal_lm(self.draft) if k is not None else None, k=k, sampling=sampling,
            generator=generator, eos_ids=self.eos_ids, stop=stop_at_strings(self.tokenizer, stop_strings),
            device=self.device, planted_bug=self.planted_bug,
        )

    @torch.no_grad()
    def next_token_logits(self, prefix_ids: Sequence[int]):
        tokens = torch.tensor([list(prefix_ids)], device=self.device)
        return self.target(tokens, 0)[0, -1, : self.vocab].double().cpu().numpy()

    def environment(self) -> dict[str, object]:
        return {**torch_environment(self.device), "dtype": self.dtype, "backend": self.name}


def stop_at_strings(tokenizer, stop_strings: Sequence[str]):
    """A `stop(tokens)` callback for the engine: once the decoded text contains a stop
    string, the length of the shortest token prefix that already contains it.

    Baseline and speculative decoding use the same rule, so their outputs stay comparable;
    callers cut the text at the stop string itself.
    """
    if not stop_strings:
        return None

    def contains_stop(tokens: list[int]) -> bool:
        text = tokenizer.decode(tokens)
        return any(s in text for s in stop_strings)

    def stop(tokens: list[int]) -> int | None:
        if not contains_stop(tokens):
            return None
        keep = len(tokens)
        while keep > 1 and contains_stop(tokens[: keep - 1]):
            keep -= 1
        return keep

    return stop
