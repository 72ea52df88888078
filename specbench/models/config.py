"""One framework-neutral description of a decoder, read from a Hugging Face config.json.

Both the PyTorch and the JAX decoders are built from `ModelConfig`, so a family's
quirks (Gemma's (1+w) norms and soft-capping, Qwen2's qkv bias, llama3 rope
scaling, sliding windows) are decided here once, from the checkpoint's own config.
Old (`rope_theta`/`rope_scaling`) and new (`rope_parameters`) config layouts are both read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from specbench.errors import SpecbenchError

# model_type in config.json -> family
FAMILIES: dict[str, str] = {
    "llama": "llama",
    "mistral": "mistral",
    "qwen2": "qwen2",
    "gemma2": "gemma2",
    "gemma3_text": "gemma3",
    "gemma3": "gemma3",  # multimodal checkpoint: the text model is read from text_config
}
SUPPORTED = "Llama (llama), Mistral (mistral), Qwen2 (qwen2), Gemma 2 (gemma2), Gemma 3 (gemma3, gemma3_text)"


@dataclass(frozen=True)
class RopeSpec:
    """Rotary embedding for one kind of layer: base, scaling type and its parameters."""

    theta: float
    rope_type: str = "default"  # "default" | "linear" | "llama3"
    params: dict[str, float] = field(default_factory=dict)

    def inv_freq(self, head_dim: int) -> np.ndarray:
        """Per-pair rotation frequencies, float64, with the scaling applied."""
        inv = 1.0 / (self.theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
        if self.rope_type == "default":
            return inv
        if self.rope_type == "linear":
            return inv / self.params["factor"]
        if self.rope_type == "llama3":
            # Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, and the band
            # in between interpolated smoothly (Meta's reference rope scaling).
            factor = self.params["factor"]
            low, high = self.params["low_freq_factor"], self.params["high_freq_factor"]
            old_context = self.params["original_max_position_embeddings"]
            low_wavelen, high_wavelen = old_context / low, old_context / high
            wavelen = 2 * math.pi / inv
            scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
            smooth = (old_context / wavelen - low) / (high - low)
            middle = (1 - smooth) * scaled / factor + smooth * scaled
            is_middle = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
            return np.where(is_middle, middle, scaled)
        raise SpecbenchError(f"unsupported rope scaling type {self.rope_type!r} (supported: default, linear, llama3)")


@dataclass(frozen=True)
class ModelConfig:
    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool  # Qwen2 (and Llama/Mistral with attention_bias)
    mlp_activation: str  # "silu" | "gelu_tanh"
    norm_plus_one: bool  # Gemma: y = x_normed * (1 + w)
    embed_scale: float  # Gemma multiplies embeddings by sqrt(hidden_size)
    query_scale: float  # 1/sqrt(head_dim), or Gemma's 1/sqrt(query_pre_attn_scalar)
    attn_softcap: float | None  # Gemma 2: scores = cap * tanh(scores / cap)
    final_softcap: float | None  # Gemma 2: logits = cap * tanh(logits / cap)
    sandwich_norms: bool  # Gemma 2/3: extra norms after attention and after the MLP
    qk_norm: bool  # Gemma 3: RMSNorm on q and k per head before rope
    layer_types: tuple[str, ...]  # per layer: "full_attention" | "sliding_attention"
    sliding_window: int | None  # keys j visible from query i iff i - window < j <= i
    rope: dict[str, RopeSpec]  # layer type -> rope for that kind of layer
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    weight_prefix: str = "model."  # where the decoder's tensors sit in the checkpoint

    @property
    def num_params(self) -> int:
        """Parameter count (embeddings counted once when tied)."""
        d, f, h = self.hidden_size, self.intermediate_size, self.head_dim
        attn = d * h * (self.num_heads * 2 + self.num_kv_heads * 2)
        if self.qkv_bias:
            attn += h * (self.num_heads + 2 * self.num_kv_heads)
        norms = d * (4 if self.sandwich_norms else 2) + (2 * h if self.qk_norm else 0)
        per_layer = attn + 3 * d * f + norms
        head = 0 if self.tie_word_embeddings else self.vocab_size * d
        return self.vocab_size * d + self.num_layers * per_layer + d + head

    @classmethod
    def from_hf(cls, raw: dict[str, Any], source: str = "config.json") -> "ModelConfig":
        """Build from a config.json dict; unknown architectures get a one-line error."""
        model_type = raw.get("model_type")
        if model_type not in FAMILIES:
            arch = ",".join(raw.get("architectures") or []) or "?"
            raise SpecbenchError(f"{source}: unsupported architecture {model_type!r} ({arch}); supported: {SUPPORTED}")
        family = FAMILIES[model_type]
        prefix = "model."
        if model_type == "gemma3":
            raw = {**raw["text_config"], "tie_word_embeddings": raw.get("tie_word_embeddings", True)}
            prefix = "model.language_model."
        try:
            return cls._from_text_config(family, raw, prefix)
        except KeyError as missing:
            raise SpecbenchError(f"{source}: missing key {missing.args[0]!r} for a {family} config") from None

    @classmethod
    def _from_text_config(cls, family: str, raw: dict[str, Any], prefix: str) -> "ModelConfig":
        gemma = family in ("gemma2", "gemma3")
        hidden, heads = raw["hidden_size"], raw["num_attention_heads"]
        head_dim = raw.get("head_dim") or hidden // heads
        layers = raw["num_hidden_layers"]
        window = raw.get("sliding_window")
        layer_types = tuple(raw.get("layer_types") or _default_layer_types(family, raw, layers))
        if "sliding_attention" not in layer_types:
            window = None
        activation = raw.get("hidden_activation") or raw.get("hidden_act") or "silu"
        if activation not in ("silu", "gelu_pytorch_tanh", "gelu_tanh"):
            raise SpecbenchError(f"config.json: unsupported activation {activation!r} (supported: silu, gelu_pytorch_tanh)")
        eos = raw.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
        return cls(
            family=family,
            vocab_size=raw["vocab_size"],
            hidden_size=hidden,
            intermediate_size=raw["intermediate_size"],
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=raw.get("num_key_value_heads") or heads,
            head_dim=head_dim,
            rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
            max_position_embeddings=raw.get("max_position_embeddings", 4096),
            tie_word_embeddings=raw.get("tie_word_embeddings", gemma or family == "qwen2"),
            qkv_bias=family == "qwen2" or bool(raw.get("attention_bias", False)),
            mlp_activation="silu" if activation == "silu" else "gelu_tanh",
            norm_plus_one=gemma,
            embed_scale=math.sqrt(hidden) if gemma else 1.0,
            query_scale=(raw["query_pre_attn_scalar"] if gemma else head_dim) ** -0.5,
            attn_softcap=raw.get("attn_logit_softcapping") if gemma else None,
            final_softcap=raw.get("final_logit_softcapping") if gemma else None,
            sandwich_norms=gemma,
            qk_norm=family == "gemma3",
            layer_types=layer_types,
            sliding_window=window,
            rope=_rope_specs(family, raw),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_ids=eos_ids,
            weight_prefix=prefix,
        )


def _default_layer_types(family: str, raw: dict[str, Any], layers: int) -> list[str]:
    """Layer kinds for configs written before `layer_types` existed."""
    if family == "gemma2":  # alternating, starting with a sliding layer
        return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]
    if family == "gemma3":  # every `pattern`-th layer is global
        pattern = raw.get("sliding_window_pattern", 6)
        return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(layers)]
    if family == "mistral" and raw.get("sliding_window"):
        return ["sliding_attention"] * layers
    if family == "qwen2" and raw.get("use_sliding_window"):
        first = raw.get("max_window_layers", layers)
        return ["sliding_attention" if i >= first else "full_attention" for i in range(layers)]
    return ["full_attention"] * layers


def _rope_from(entry: dict[str, Any], fallback_theta: float) -> RopeSpec:
    rope_type = entry.get("rope_type") or entry.get("type") or "default"
    theta = entry.get("rope_theta", fallback_theta)
    params = {k: v for k, v in entry.items() if k not in ("rope_type", "type", "rope_theta")}
    return RopeSpec(theta=float(theta), rope_type=rope_type, params=params)


def _rope_specs(family: str, raw: dict[str, Any]) -> dict[str, RopeSpec]:
    """Rope per layer kind, from `rope_parameters` (new) or `rope_theta`/`rope_scaling` (old)."""
    params = raw.get("rope_parameters")
    theta = raw.get("rope_theta", 10000.0)
    if params and "full_attention" in params:  # per layer kind (Gemma 3, new layout)
        specs = {kind: _rope_from(entry, theta) for kind, entry in params.items()}
    elif params:
        spec = _rope_from(params, theta)
        specs = {"full_attention": spec, "sliding_attention": spec}
    else:
        spec = _rope_from(raw.get("rope_scaling") or {}, theta)
        specs = {"full_attention": spec, "sliding_attention": spec}
        if family == "gemma3":  # old layout: local layers use their own base, no scaling
            specs["sliding_attention"] = RopeSpec(theta=float(raw.get("rope_local_base_freq", 10000.0)))
    for spec in specs.values():
        spec.inv_freq(2)  # reject unsupported scaling types now, not mid-run
    return specs


def read_config(checkpoint_dir: Path) -> ModelConfig:
    """ModelConfig of a checkpoint folder (its config.json)."""
    path = Path(checkpoint_dir) / "config.json"
    if not path.is_file():
        raise SpecbenchError(f"{checkpoint_dir}: not a checkpoint folder (no config.json)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SpecbenchError(f"{path}: invalid JSON at line {error.lineno}: {error.msg}") from None
    return ModelConfig.from_hf(raw, source=str(path))
