"""A decoder-only transformer in plain JAX, for every family `ModelConfig` describes.

The maths mirrors the PyTorch decoder (specbench/models/torch_model.py) flag for flag,
so that both frameworks give the same logits from the same checkpoint:

    x_0     = embed[tokens] * embed_scale                      (scale cast to dtype, as HF does)
    per layer, pre-norm residual blocks:
      h     = norm(x);  q, k, v = h Wq^T (+bq), h Wk^T (+bk), h Wv^T (+bv)
      q, k  = qk_norm(q), qk_norm(k)                           (Gemma 3)
      q, k  = rope(q, pos), rope(k, pos)                       (per-layer-kind frequencies)
      s_ij  = cap * tanh((q_i . k_j * query_scale) / cap)      (Gemma 2 soft-capping)
      a_i   = sum_j softmax_j(s_ij | visible(i, j)) v_j
      x     = x + post_attn_norm(a Wo^T)                       (post norm on Gemma only)
      x     = x + post_mlp_norm(W_down(act(W_gate h') * W_up h')), h' = mlp_norm(x)
    logits  = cap * tanh((norm(x) W_head^T) / cap)             (Gemma 2 final soft-capping)

    norm(x) = x / sqrt(mean(x^2) + eps) * w        (Llama; weight applied in the model dtype)
            = x / sqrt(mean(x^2) + eps) * (1 + w)  (Gemma; all in float32, then cast)
    visible(i, j) = j <= i, and additionally i - window < j on sliding-window layers.

Layers are unrolled in Python (one weight set each), not scanned over stacked weights:
on an H200 the unrolled step was 2x faster for a 27B shape (shared/bench/README.md).

The KV cache is a static buffer per layer, [capacity, kv_heads, head_dim], written with
`lax.dynamic_update_slice` at the step's start position. Attention always reads the whole
buffer and masks by position, so entries past the current length (a padded prompt's tail,
rejected draft tokens) are never seen: every position is overwritten before any query at
or after it attends. Rolling back a rejected draft is therefore just moving the length index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from specbench.errors import SpecbenchError
from specbench.models.checkpoint import collect_tensors, resolve_checkpoint
from specbench.models.config import ModelConfig, read_config

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

Params = dict[str, Any]  # "embed", "final_norm", optional "lm_head", "layers": list of per-layer dicts


@jax.tree_util.register_dataclass
@dataclass
class KVCache:
    """Keys and values of every layer, each [capacity, num_kv_heads, head_dim]."""

    keys: list[jax.Array]
    values: list[jax.Array]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[0]


def init_cache(config: ModelConfig, capacity: int, dtype: Any, device: jax.Device | None = None) -> KVCache:
    """An all-zero cache for `capacity` positions; its size is static (changing it recompiles)."""
    shape = (capacity, config.num_kv_heads, config.head_dim)

    def zeros() -> jax.Array:
        array = jnp.zeros(shape, dtype)
        return jax.device_put(array, device) if device is not None else array

    return KVCache(keys=[zeros() for _ in range(config.num_layers)], values=[zeros() for _ in range(config.num_layers)])


def resolve_dtype(name: str) -> Any:
    if name not in DTYPES:
        raise SpecbenchError(f"unsupported dtype {name!r}; supported: {', '.join(DTYPES)}")
    return DTYPES[name]


def load_params(checkpoint_dir: Path, config: ModelConfig, dtype: Any, device: jax.Device) -> Params:
    """The checkpoint's weights as a params pytree on `device`, cast to `dtype`.

    Tensors go through `collect_tensors` (the explicit name map with strict shape checks)
    and keep the checkpoint's [out, in] layout; `linear` contracts over the last axis.
    """
    with jax.default_device(device):
        flat = collect_tensors(checkpoint_dir, config, framework="flax")
        flat = {name: jax.device_put(jnp.asarray(tensor, dtype=dtype), device) for name, tensor in flat.items()}
    layers = []
    for i in range(config.num_layers):
        prefix = f"layers.{i}."
        layers.append({name[len(prefix):]: value for name, value in flat.items() if name.startswith(prefix)})
    params: Params = {"embed": flat["embed"], "final_norm": flat["final_norm"], "layers": layers}
    if "lm_head" in flat:
        params["lm_head"] = flat["lm_head"]
    return params


def rms_norm(config: ModelConfig, x: jax.Array, weight: jax.Array) -> jax.Array:
    """RMSNorm over the last axis; Gemma's (1 + w) form is computed entirely in float32."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + config.rms_norm_eps)
    if config.norm_plus_one:
        return (normed * (1.0 + weight.astype(jnp.float32))).astype(x.dtype)
    return weight * normed.astype(x.dtype)


def linear(x: jax.Array, weight: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """x W^T (+ b), with W in the checkpoint's [out, in] layout."""
    y = jnp.einsum("...i,oi->...o", x, weight)
    return y if bias is None else y + bias


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
    """Rotate the two halves of each head by position * inv_freq (HF's rotate_half layout).

    x: [q, heads, head_dim]; angles are computed in float32, the rotation in x's dtype.
    """
    angles = positions.astype(jnp.float32)[:, None] * jnp.asarray(inv_freq, jnp.float32)[None, :]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, None, :]  # [q, 1, head_dim]
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def softcap(x: jax.Array, cap: float | None) -> jax.Array:
    """cap * tanh(x / cap): bounds scores smoothly to (-cap, cap) (Gemma 2)."""
    return x if cap is None else jnp.tanh(x / cap) * cap


def attention_mask(config: ModelConfig, layer_type: str, query_pos: jax.Array, capacity: int) -> jax.Array:
    """[q, capacity] bool: key j visible from query i iff j <= i (and i - window < j when sliding)."""
    key_pos = jnp.arange(capacity)[None, :]
    visible = key_pos <= query_pos[:, None]
    if layer_type == "sliding_attention" and config.sliding_window is not None:
        visible &= key_pos > query_pos[:, None] - config.sliding_window
    return visible


def attention(
    config: ModelConfig, layer: Params, layer_type: str, h: jax.Array, keys: jax.Array, values: jax.Array,
    positions: jax.Array, start: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Self-attention of q new tokens over the cache; returns (output, keys, values) with the new entries written."""
    c, q_len = config, h.shape[0]
    q = linear(h, layer["wq"], layer.get("bq")).reshape(q_len, c.num_heads, c.head_dim)
    k = linear(h, layer["wk"], layer.get("bk")).reshape(q_len, c.num_kv_heads, c.head_dim)
    v = linear(h, layer["wv"], layer.get("bv")).reshape(q_len, c.num_kv_heads, c.head_dim)
    if c.qk_norm:
        q, k = rms_norm(c, q, layer["q_norm"]), rms_norm(c, k, layer["k_norm"])
    inv_freq = c.rope[layer_type].inv_freq(c.head_dim)
    q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)

    keys = jax.lax.dynamic_update_slice(keys, k.astype(keys.dtype), (start, 0, 0))
    values = jax.lax.dynamic_update_slice(values, v.astype(values.dtype), (start, 0, 0))

    # Grouped-query attention: query head g * group + r reads kv head g.
    group = c.num_heads // c.num_kv_heads
    q = q.reshape(q_len, c.num_kv_heads, group, c.head_dim)
    scores = jnp.einsum("qkgd,tkd->kgqt", q, keys) * jnp.asarray(c.query_scale, q.dtype)
    scores = softcap(scores, c.attn_softcap).astype(jnp.float32)
    mask = attention_mask(c, layer_type, positions, keys.shape[0])
    scores = jnp.where(mask[None, None], scores, -jnp.inf)
    probs = jax.nn.softmax(scores, axis=-1).astype(values.dtype)
    out = jnp.einsum("kgqt,tkd->qkgd", probs, values).reshape(q_len, c.num_heads * c.head_dim)
    return linear(out, layer["wo"]), keys, values


def mlp(config: ModelConfig, layer: Params, h: jax.Array) -> jax.Array:
    """Gated MLP: W_down(act(W_gate h) * W_up h), act = SiLU or GELU-tanh."""
    gate = linear(h, layer["w_gate"])
    gate = jax.nn.silu(gate) if config.mlp_activation == "silu" else jax.nn.gelu(gate, approximate=True)
    return linear(gate * linear(h, layer["w_up"]), layer["w_down"])


def hidden_states(
    config: ModelConfig, params: Params, cache: KVCache, tokens: jax.Array, start: jax.Array
) -> tuple[jax.Array, KVCache]:
    """Final-normed hidden states ([q, hidden]) of `tokens` ([q] int32) at positions start..start+q-1.

    The tokens' keys and values are written into the returned cache; nothing past
    start + q - 1 is read. `config` is static (close over it before jitting).
    """
    positions = start + jnp.arange(tokens.shape[0])
    x = params["embed"][tokens]
    if config.embed_scale != 1.0:
        x = x * jnp.asarray(config.embed_scale, x.dtype)
    keys, values = list(cache.keys), list(cache.values)
    for i, layer in enumerate(params["layers"]):
        layer_type = config.layer_types[i]
        attn_out, keys[i], values[i] = attention(
            config, layer, layer_type, rms_norm(config, x, layer["attn_norm"]), keys[i], values[i], positions, start
        )
        if config.sandwich_norms:
            attn_out = rms_norm(config, attn_out, layer["post_attn_norm"])
        x = x + attn_out
        mlp_out = mlp(config, layer, rms_norm(config, x, layer["mlp_norm"]))
        if config.sandwich_norms:
            mlp_out = rms_norm(config, mlp_out, layer["post_mlp_norm"])
        x = x + mlp_out
    return rms_norm(config, x, params["final_norm"]), KVCache(keys=keys, values=values)


def project_logits(config: ModelConfig, params: Params, x: jax.Array) -> jax.Array:
    """float32 logits of final hidden states: the (tied or own) head, then final soft-capping."""
    logits = linear(x, params.get("lm_head", params["embed"])).astype(jnp.float32)
    return softcap(logits, config.final_softcap)


def forward(
    config: ModelConfig, params: Params, cache: KVCache, tokens: jax.Array, start: jax.Array
) -> tuple[jax.Array, KVCache]:
    """Logits (float32, [q, vocab]) of `tokens` at positions start..start+q-1, and the updated cache."""
    x, cache = hidden_states(config, params, cache, tokens, start)
    return project_logits(config, params, x), cache


@dataclass
class JaxDecoder:
    """A loaded checkpoint: its config, its weights on one device, and the dtype they are in."""

    config: ModelConfig
    params: Params
    dtype: Any
    device: jax.Device
    path: Path

    def new_cache(self, capacity: int) -> KVCache:
        return init_cache(self.config, capacity, self.dtype, self.device)

    def forward(self, params: Params, cache: KVCache, tokens: jax.Array, start: jax.Array) -> tuple[jax.Array, KVCache]:
        """`forward` with this decoder's config bound (pure: jit it or call it inside a jitted function)."""
        return forward(self.config, params, cache, tokens, start)

    def hidden_states(self, params: Params, cache: KVCache, tokens: jax.Array, start: jax.Array) -> tuple[jax.Array, KVCache]:
        return hidden_states(self.config, params, cache, tokens, start)

    def project_logits(self, params: Params, x: jax.Array) -> jax.Array:
        return project_logits(self.config, params, x)


def load_decoder(path: str | Path, dtype: str = "float32", device: jax.Device | None = None) -> JaxDecoder:
    """Read a Hugging Face checkpoint folder (config.json + safetensors) into a JaxDecoder."""
    checkpoint_dir = resolve_checkpoint(str(path))
    config = read_config(checkpoint_dir)
    jax_dtype = resolve_dtype(dtype)
    device = device if device is not None else jax.devices()[0]
    params = load_params(checkpoint_dir, config, jax_dtype, device)
    return JaxDecoder(config=config, params=params, dtype=jax_dtype, device=device, path=checkpoint_dir)


__all__ = [
    "JaxDecoder", "KVCache", "forward", "hidden_states", "init_cache", "load_decoder", "load_params", "project_logits",
    "resolve_dtype",
]
