"""The `jax` backend: specbench's JAX decoder and compiled decode loop (specbench.jax_engine).

The same checkpoints, tokenizer, counting conventions and acceptance rule as the `torch`
backend, so the two can be compared token for token; no PyTorch is imported on this path.
Runs on whatever JAX sees: CPU here, GPU with jax[cuda12], TPU with jax[tpu].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from specbench.backends.base import Backend, GenerationResult, SamplingConfig
from specbench.backends.common import MAX_K, check_request, check_same_vocabulary, stop_at_strings
from specbench.environment import cpu_name, software
from specbench.errors import SpecbenchError
from specbench.models.checkpoint import load_tokenizer, resolve_checkpoint
from specbench.plant import planted_bug

PLATFORM_ALIASES = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}


def describe_devices(devices: Sequence[Any]) -> str:
    return ", ".join(f"{d.platform}:{d.id} ({d.device_kind})" for d in devices) or "none"


def resolve_device(name: str):
    """The jax.Device for "cpu", "gpu", "cuda", "tpu", "gpu:1", ...; a clear error naming what JAX does see."""
    import jax

    platform_name, _, index_text = name.lower().partition(":")
    platform = PLATFORM_ALIASES.get(platform_name)
    if platform is None or (index_text and not index_text.isdigit()):
        raise SpecbenchError(f"unknown device {name!r} for the jax backend; use cpu, gpu (or cuda), tpu, with an optional :N")
    try:
        devices = jax.devices(platform)
    except RuntimeError:  # JAX has no backend for this platform here
        devices = []
    index = int(index_text or 0)
    if index >= len(devices):
        raise SpecbenchError(f"device {name!r} is not available to JAX; JAX sees: {describe_devices(jax.devices())}")
    return devices[index]


class JaxBackend(Backend):
    """Target (and optional draft) as JAX decoders on one device, decoded by `JaxEngine`.

    Extra keyword: `fused` (default False) runs each speculative iteration as a single
    compiled program; faster, but draft and verification time are then not separable and
    are reported as NaN. Compiled programs are cached per (configs, dtype, cache capacity):
    the first prompt of each length bucket and the first iteration of each k compile, and
    that time is excluded from every reported timing.
    """

    name = "jax"

    def __init__(self, target: str, draft: str | None = None, *, dtype: str = "float32", device: str = "cpu",
                 max_seq_len: int = 2048, fused: bool = False, **_ignored):
        from specbench.jax_engine.engine import JaxEngine
        from specbench.jax_engine.model import load_decoder, resolve_dtype

        resolve_dtype(dtype)
        self.device = resolve_device(device)
        target_dir = resolve_checkpoint(str(target))
        self.tokenizer = load_tokenizer(target_dir)
        self.target = load_decoder(target_dir, dtype, self.device)
        self.draft = None
        if draft is not None:
            draft_dir = resolve_checkpoint(str(draft))
            check_same_vocabulary(self.tokenizer, load_tokenizer(draft_dir), str(target), str(draft))
            self.draft = load_decoder(draft_dir, dtype, self.device)
        # Embedding tables may be padded differently (e.g. Qwen2.5 0.5B vs 7B): compare the shared part.
        vocab = min(m.config.vocab_size for m in (self.target, self.draft) if m is not None)
        self.max_seq_len, self.dtype, self.fused = max_seq_len, dtype, fused
        self.planted_bug = planted_bug()  # read now: the compiled programs bake it in
        # Capacity for prompt + max_new_tokens plus a full verification window past it, rounded to 8.
        capacity = (max_seq_len + MAX_K + 1 + 7) // 8 * 8
        self.engine = JaxEngine(self.target, self.draft, capacity=capacity, vocab=vocab, fused=fused,
                                planted_bug=self.planted_bug)
        eos = set(self.target.config.eos_token_ids)
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_ids = tuple(sorted(eos))

    def generate(self, prompt_ids: Sequence[int], *, max_new_tokens: int, k: int | None = None,
                 sampling: SamplingConfig = SamplingConfig(), seed: int = 0,
                 stop_strings: Sequence[str] = ()) -> GenerationResult:
        check_request(prompt_ids, max_new_tokens, k, self.max_seq_len, self.draft is not None)
        return self.engine.generate(
            list(prompt_ids), max_new_tokens=max_new_tokens, k=k, sampling=sampling, seed=seed, eos_ids=self.eos_ids,
            stop=stop_at_strings(self.tokenizer, stop_strings),
        )

    def next_token_logits(self, prefix_ids: Sequence[int]):
        if len(prefix_ids) > self.max_seq_len:
            raise SpecbenchError(f"prefix of {len(prefix_ids)} tokens exceeds max_seq_len {self.max_seq_len}")
        return self.engine.next_token_logits(list(prefix_ids))

    def compile_counts(self) -> dict[str, int]:
        """Program name -> compilations so far (shared by backends with the same model configs)."""
        return dict(self.engine.trace_counts)

    def environment(self) -> dict[str, object]:
        import jax

        device = self.device
        on_cpu = device.platform == "cpu"
        return {
            "framework": "jax",
            "device": f"{device.platform}:{device.id}",
            "device_name": cpu_name() if on_cpu else device.device_kind,
            "device_kind": device.device_kind,
            "device_count": len(jax.devices(device.platform)),
            "jax_platform": device.platform,
            "driver": None if on_cpu else getattr(device.client, "platform_version", None),
            **software(),
            "dtype": self.dtype,
            "backend": self.name,
            "jax_fused_iteration": self.fused,
        }


__all__ = ["JaxBackend", "resolve_device"]
