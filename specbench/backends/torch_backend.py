"""The `torch` backend: specbench's own decoder and static KV cache, driven by `specbench.engine`.

On a GPU the decode steps after prefill replay CUDA graphs (`step_mode="graphs"`, the
default on cuda/ROCm): one per q, captured before the timed decode of the first call that
needs it and reported as `GenerationResult.compile_s`. On CPU the plain forward runs
(`step_mode="static"` runs the graph path's static-shape code eagerly, for tests).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from specbench import engine
from specbench.backends.base import Backend, GenerationResult, SamplingConfig
from specbench.backends.common import MAX_K, check_request, check_same_vocabulary, stop_at_strings
from specbench.environment import torch_environment
from specbench.errors import SpecbenchError
from specbench.models.checkpoint import load_tokenizer, resolve_checkpoint
from specbench.models.torch_model import STEP_MODES, Decoder, StepRunner, load_decoder, resolve_device, resolve_dtype
from specbench.plant import planted_bug


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, target: str, draft: str | None = None, *, dtype: str = "float32", device: str = "cpu",
                 max_seq_len: int = 2048, step_mode: str | None = None, **_ignored):
        self.device = resolve_device(device)
        resolve_dtype(dtype)
        target_dir = resolve_checkpoint(str(target))
        target_model = load_decoder(target_dir, dtype, device)
        tokenizer = load_tokenizer(target_dir)
        draft_model = None
        if draft is not None:
            draft_dir = resolve_checkpoint(str(draft))
            check_same_vocabulary(tokenizer, load_tokenizer(draft_dir), str(target), str(draft))
            draft_model = load_decoder(draft_dir, dtype, device)
        self._setup(target_model, draft_model, tokenizer, dtype, max_seq_len, step_mode)

    @classmethod
    def from_decoders(cls, target: Decoder, draft: Decoder | None = None, *, tokenizer=None, dtype: str = "float32",
                      max_seq_len: int = 2048, step_mode: str | None = None) -> "TorchBackend":
        """A backend over decoders built in memory (e.g. `specbench.shapes.controlled_pair`).

        Without a tokenizer, prompts are token ids and stop strings are not available.
        """
        backend = cls.__new__(cls)
        backend.device = target.embed.weight.device
        backend._setup(target, draft, tokenizer, dtype, max_seq_len, step_mode)
        return backend

    def _setup(self, target: Decoder, draft: Decoder | None, tokenizer, dtype: str, max_seq_len: int,
               step_mode: str | None) -> None:
        self.target, self.draft, self.tokenizer = target, draft, tokenizer
        # Embedding tables may be padded differently (e.g. Qwen2.5 0.5B vs 7B): compare the shared part.
        self.vocab = min(m.config.vocab_size for m in (target, draft) if m is not None)
        self.max_seq_len = max_seq_len
        self.dtype = dtype
        self.planted_bug = planted_bug()
        self.step_mode = step_mode or ("graphs" if self.device.type == "cuda" else "plain")
        if self.step_mode not in STEP_MODES:
            raise SpecbenchError(f"unknown step mode {self.step_mode!r}; choose from {', '.join(STEP_MODES)}")
        # Capacity for prompt + max_new_tokens plus a full verification window past it.
        for model in (target, draft):
            if model is not None:
                model.setup_cache(max_seq_len + MAX_K + 1)
        self.target_runner = StepRunner(target, self.vocab, self.step_mode)
        self.draft_runner = StepRunner(draft, self.vocab, self.step_mode) if draft is not None else None
        eos = set(target.config.eos_token_ids)
        if tokenizer is not None and tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        self.eos_ids = tuple(sorted(eos))

    def generate(self, prompt_ids: Sequence[int], *, max_new_tokens: int, k: int | None = None,
                 sampling: SamplingConfig = SamplingConfig(), seed: int = 0,
                 stop_strings: Sequence[str] = ()) -> GenerationResult:
        check_request(prompt_ids, max_new_tokens, k, self.max_seq_len, self.draft is not None)
        if stop_strings and self.tokenizer is None:
            raise SpecbenchError("stop strings need a tokenizer, and this backend was built from decoders without one")
        # Capture every step shape this call can use before the clock starts: the target decodes
        # q=1 (baseline) or verifies k+1; the draft steps 1 token, or 2 after a fully accepted round.
        captured_before = self.target_runner.capture_s + (self.draft_runner.capture_s if self.draft_runner else 0.0)
        self.target_runner.prepare([1] if k is None else [k + 1])
        if k is not None:
            self.draft_runner.prepare([1, 2])
        generator = torch.Generator(device=self.device).manual_seed(seed)
        result = engine.generate(
            self.target_runner, list(prompt_ids), max_new_tokens=max_new_tokens,
            draft=self.draft_runner if k is not None else None, k=k, sampling=sampling,
            generator=generator, eos_ids=self.eos_ids, stop=stop_at_strings(self.tokenizer, stop_strings),
            device=self.device, planted_bug=self.planted_bug,
        )
        captured_after = self.target_runner.capture_s + (self.draft_runner.capture_s if self.draft_runner else 0.0)
        result.compile_s = captured_after - captured_before
        return result

    def warmup(self, k_values: Sequence[int | None] = (None,)) -> None:
        """Untimed decodes for each k (capturing its graphs); token-id prompts when there is no tokenizer."""
        if self.tokenizer is not None:
            return super().warmup(k_values)
        for k in k_values:
            self.generate([1, 2, 3, 4], max_new_tokens=8, k=k)

    @torch.no_grad()
    def next_token_logits(self, prefix_ids: Sequence[int]):
        tokens = torch.tensor([list(prefix_ids)], device=self.device)
        return self.target(tokens, 0)[0, -1, : self.vocab].double().cpu().numpy()

    def environment(self) -> dict[str, object]:
        return {**torch_environment(self.device), "dtype": self.dtype, "backend": self.name}
