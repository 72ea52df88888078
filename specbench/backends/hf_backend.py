"""Backends that run the transformers model object itself.

`hf`: any `AutoModelForCausalLM`, baseline and speculative through specbench's own
engine loop on a transformers `DynamicCache` (rolled back with `crop`), so any
architecture transformers knows can be measured with the same decoding code.

`hf-assisted`: transformers' own `generate(assistant_model=...)`, with a constant k
and the confidence threshold off, as users would run it: the peer to compare against.
Target forward calls are counted with a hook, so its tokens per target forward is known.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence

import torch

from specbench import engine
from specbench.backends.base import Backend, GenerationResult, SamplingConfig
from specbench.backends.common import check_request, check_same_vocabulary, stop_at_strings
from specbench.environment import torch_environment
from specbench.errors import SpecbenchError
from specbench.models.checkpoint import load_tokenizer, resolve_checkpoint
from specbench.models.torch_model import resolve_device, resolve_dtype
from specbench.plant import planted_bug


def load_hf_model(path, dtype: str, device: torch.device):
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=resolve_dtype(dtype))
    except (ValueError, KeyError, OSError) as error:
        raise SpecbenchError(f"{path}: transformers cannot load this checkpoint ({error})".splitlines()[0]) from None
    return model.to(device).eval().requires_grad_(False)


def cache_keyword(model) -> str:
    """The keyword `model.forward` takes its KV cache by: transformers 5.2x renamed
    `past_key_values` to `cache`; use whichever this release takes."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class CachedHFModel:
    """`model(tokens, start_pos)` over a transformers model and its DynamicCache.

    A call at `start_pos` first crops the cache to `start_pos` tokens: that is the rollback.
    The cache is built without the model config, so every layer keeps all its keys; a
    sliding-window layer that dropped old keys could not be rolled back.
    """

    def __init__(self, model, vocab: int):
        from transformers import DynamicCache

        self.model, self.vocab, self.new_cache = model, vocab, DynamicCache
        self.cache = DynamicCache()
        self.cache_keyword = cache_keyword(model)

    def __call__(self, tokens: torch.Tensor, start_pos: int) -> torch.Tensor:
        if start_pos == 0:
            self.cache = self.new_cache()
        cached = self.cache.get_seq_length()
        if cached > start_pos:
            # A negative argument removes that many tokens in every 4.x and 5.x release
            # (the meaning of a positive one changed between releases).
            self.cache.crop(-(cached - start_pos))
        positions = torch.arange(start_pos, start_pos + tokens.shape[1], device=tokens.device)
        out = self.model(input_ids=tokens, **{self.cache_keyword: self.cache}, use_cache=True,
                         cache_position=positions, position_ids=positions[None])
        return out.logits[..., : self.vocab].float()


class HFBackend(Backend):
    name = "hf"

    def __init__(self, target: str, draft: str | None = None, *, dtype: str = "float32", device: str = "cpu",
                 max_seq_len: int = 2048, **_ignored):
        target_dir = resolve_checkpoint(str(target))
        tokenizer = load_tokenizer(target_dir)
        device_ = resolve_device(device)
        target_model = load_hf_model(target_dir, dtype, device_)
        draft_model = None
        if draft is not None:
            draft_dir = resolve_checkpoint(str(draft))
            check_same_vocabulary(tokenizer, load_tokenizer(draft_dir), str(target), str(draft))
            draft_model = load_hf_model(draft_dir, dtype, device_)
        self._setup(target_model, draft_model, tokenizer, dtype, device_, max_seq_len)

    @classmethod
    def from_models(cls, target_model, draft_model=None, *, tokenizer=None, dtype: str = "float32",
                    max_seq_len: int = 2048) -> "HFBackend":
        """A backend over transformers models already in memory (e.g. `specbench.shapes.hf_model`).

        Without a tokenizer, prompts are token ids and stop strings are not available.
        """
        backend = cls.__new__(cls)
        backend._setup(target_model, draft_model, tokenizer, dtype, target_model.device, max_seq_len)
        return backend

    def _setup(self, target_model, draft_model, tokenizer, dtype: str, device: torch.device, max_seq_len: int) -> None:
        self.device, self.dtype, self.tokenizer = device, dtype, tokenizer
        self.target_model, self.draft_model = target_model, draft_model
        sizes = [m.get_output_embeddings().weight.shape[0] for m in (target_model, draft_model) if m is not None]
        self.vocab = min(sizes)
        self.max_seq_len = max_seq_len
        self.planted_bug = planted_bug()
        eos = target_model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        if tokenizer is not None and tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        self.eos_ids = tuple(sorted(eos))

    def generate(self, prompt_ids: Sequence[int], *, max_new_tokens: int, k: int | None = None,
                 sampling: SamplingConfig = SamplingConfig(), seed: int = 0,
                 stop_strings: Sequence[str] = ()) -> GenerationResult:
        check_request(prompt_ids, max_new_tokens, k, self.max_seq_len, self.draft_model is not None)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        return engine.generate(
            CachedHFModel(self.target_model, self.vocab), list(prompt_ids), max_new_tokens=max_new_tokens,
            draft=CachedHFModel(self.draft_model, self.vocab) if k is not None else None, k=k, sampling=sampling,
            generator=generator, eos_ids=self.eos_ids, stop=stop_at_strings(self.tokenizer, stop_strings),
            device=self.device, planted_bug=self.planted_bug,
        )

    @torch.no_grad()
    def next_token_logits(self, prefix_ids: Sequence[int]):
        tokens = torch.tensor([list(prefix_ids)], device=self.device)
        return self.target_model(input_ids=tokens).logits[0, -1, : self.vocab].double().cpu().numpy()

    def environment(self) -> dict[str, object]:
        return {**torch_environment(self.device), "dtype": self.dtype, "backend": self.name}


class HFAssistedBackend(HFBackend):
    """transformers' assisted generation, k constant, as the peer to compare against.

    Counting: transformers verifies the prompt and the first drafts in one call, so there
    is no separate prefill; `iterations` is the number of target forward calls and every
    token is attributed to one of them (accepted = new tokens - iterations). Timing covers
    the whole `generate` call (`prefill_s` = 0), for the baseline too, so speedups within
    this backend compare like with like.
    """

    name = "hf-assisted"

    def generate(self, prompt_ids: Sequence[int], *, max_new_tokens: int, k: int | None = None,
                 sampling: SamplingConfig = SamplingConfig(), seed: int = 0,
                 stop_strings: Sequence[str] = ()) -> GenerationResult:
        check_request(prompt_ids, max_new_tokens, k, self.max_seq_len, self.draft_model is not None)
        calls = [0]
        hook = self.target_model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        options = dict(max_new_tokens=max_new_tokens, do_sample=not sampling.greedy, pad_token_id=self.eos_ids[0] if self.eos_ids else None,
                       eos_token_id=list(self.eos_ids) or None)
        if not sampling.greedy:
            options.update(temperature=sampling.temperature, top_k=sampling.top_k or None, top_p=sampling.top_p)
        if stop_strings:
            options.update(stop_strings=list(stop_strings), tokenizer=self.tokenizer)
        if k is not None:
            self.draft_model.generation_config.num_assistant_tokens = k
            self.draft_model.generation_config.num_assistant_tokens_schedule = "constant"
            self.draft_model.generation_config.assistant_confidence_threshold = 0.0
            options.update(assistant_model=self.draft_model)
        torch.manual_seed(seed)
        try:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            start = time.perf_counter()
            output = self.target_model.generate(torch.tensor([list(prompt_ids)], device=self.device), **options)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            elapsed = time.perf_counter() - start
        finally:
            hook.remove()
        tokens = output[0, len(prompt_ids):].tolist()
        stop_reason = "eos" if tokens and tokens[-1] in self.eos_ids else "max_new_tokens"
        if stop_strings and len(tokens) < max_new_tokens and stop_reason != "eos":
            stop_reason = "stop_string"
        iterations = calls[0]
        accepted = max(len(tokens) - iterations, 0) if k is not None else 0
        return GenerationResult(
            tokens=tokens, prompt_tokens=len(prompt_ids), iterations=iterations,
            drafted=k * iterations if k is not None else 0, accepted=accepted,
            accepted_per_position=[], prefill_s=0.0, decode_s=elapsed, stop_reason=stop_reason,
        )
