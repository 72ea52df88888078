"""specbench's own PyTorch decoder: Llama, Mistral, Qwen2, Gemma 2 and Gemma 3 in one short file.

The model owns a static KV cache. A forward call writes the keys and values of its
tokens at absolute positions `start_pos .. start_pos + q - 1` and attends to positions
`< start_pos + q`; nothing beyond is read. So rolling back rejected draft tokens is just
calling the next forward at an earlier `start_pos`: no copy, no truncation.

Two forwards share every layer: `forward(tokens, start_pos)` slices the cache to the
positions in use (prefill, CPU decoding), and `forward_static(tokens, start)` takes the
start position as a device tensor and attends over the whole cache with a mask, so its
shapes depend on q alone and one CUDA graph per q replays it (`StepRunner`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from specbench.errors import SpecbenchError
from specbench.models.checkpoint import collect_tensors, resolve_checkpoint
from specbench.models.config import ModelConfig, read_config

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, plus_one: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps, self.plus_one = eps, plus_one

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        if self.plus_one:  # Gemma: scale by (1 + w) in float32, then cast
            return (normed * (1.0 + self.weight.float())).type_as(x)
        return self.weight * normed.type_as(x)  # Llama: cast first, then scale


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class Block(nn.Module):
    """One transformer layer; parameter names are those of `checkpoint.tensor_map`."""

    def __init__(self, c: ModelConfig, layer_type: str):
        super().__init__()
        d, hd = c.hidden_size, c.head_dim
        self.c, self.sliding = c, layer_type == "sliding_attention"
        self.rope_kind = layer_type
        self.attn_norm = RMSNorm(d, c.rms_norm_eps, c.norm_plus_one)
        self.wq = nn.Linear(d, c.num_heads * hd, bias=c.qkv_bias)
        self.wk = nn.Linear(d, c.num_kv_heads * hd, bias=c.qkv_bias)
        self.wv = nn.Linear(d, c.num_kv_heads * hd, bias=c.qkv_bias)
        self.wo = nn.Linear(c.num_heads * hd, d, bias=False)
        if c.qk_norm:
            self.q_norm = RMSNorm(hd, c.rms_norm_eps, c.norm_plus_one)
            self.k_norm = RMSNorm(hd, c.rms_norm_eps, c.norm_plus_one)
        if c.sandwich_norms:
            self.post_attn_norm = RMSNorm(d, c.rms_norm_eps, c.norm_plus_one)
            self.post_mlp_norm = RMSNorm(d, c.rms_norm_eps, c.norm_plus_one)
        self.mlp_norm = RMSNorm(d, c.rms_norm_eps, c.norm_plus_one)
        self.w_gate = nn.Linear(d, c.intermediate_size, bias=False)
        self.w_up = nn.Linear(d, c.intermediate_size, bias=False)
        self.w_down = nn.Linear(c.intermediate_size, d, bias=False)
        self.k_cache: torch.Tensor | None = None  # [batch, kv_heads, max_len, head_dim]
        self.v_cache: torch.Tensor | None = None

    def attention(self, x: torch.Tensor, pos: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  kv_len: int | None) -> torch.Tensor:
        """Attention of the q tokens at positions `pos` over the cache prefix `kv_len` (None: the whole cache)."""
        c = self.c
        batch, q_len, _ = x.shape
        q = self.wq(x).view(batch, q_len, c.num_heads, c.head_dim).transpose(1, 2)
        k = self.wk(x).view(batch, q_len, c.num_kv_heads, c.head_dim).transpose(1, 2)
        v = self.wv(x).view(batch, q_len, c.num_kv_heads, c.head_dim).transpose(1, 2)
        if c.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # Write this step's keys/values at their absolute positions, then read the prefix.
        self.k_cache.index_copy_(2, pos, k)
        self.v_cache.index_copy_(2, pos, v)
        keys, values = self.k_cache, self.v_cache
        if kv_len is not None:
            keys, values = keys[:, :, :kv_len], values[:, :, :kv_len]
        # Key j is visible from query i iff j <= i (and i - window < j on sliding layers);
        # the mask also hides stale entries past the query, so the whole cache can be read.
        key_pos = torch.arange(keys.shape[2], device=x.device)
        visible = key_pos[None, :] <= pos[:, None]
        if self.sliding:
            visible &= key_pos[None, :] > pos[:, None] - c.sliding_window
        if c.attn_softcap is None:
            out = F.scaled_dot_product_attention(
                q, keys, values, attn_mask=visible, scale=c.query_scale, enable_gqa=c.num_heads != c.num_kv_heads
            )
        else:  # Gemma 2: soft-cap the scores before the mask, softmax in float32
            groups = c.num_heads // c.num_kv_heads
            keys, values = keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1)
            scores = (q @ keys.transpose(-1, -2)) * c.query_scale
            scores = torch.tanh(scores / c.attn_softcap) * c.attn_softcap
            scores = scores.masked_fill(~visible, float("-inf"))
            out = torch.softmax(scores.float(), dim=-1).type_as(q) @ values
        return self.wo(out.transpose(1, 2).reshape(batch, q_len, -1))

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.w_gate(x)
        gate = F.silu(gate) if self.c.mlp_activation == "silu" else F.gelu(gate, approximate="tanh")
        return self.w_down(gate * self.w_up(x))

    def forward(self, x, pos, cos, sin, kv_len):
        attn = self.attention(self.attn_norm(x), pos, cos, sin, kv_len)
        if self.c.sandwich_norms:
            x = x + self.post_attn_norm(attn)
            return x + self.post_mlp_norm(self.mlp(self.mlp_norm(x)))
        x = x + attn
        return x + self.mlp(self.mlp_norm(x))


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, kind) for kind in config.layer_types)
        self.final_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, config.norm_plus_one)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.max_len = 0
        self.cache_version = 0

    def setup_cache(self, max_len: int, batch: int = 1) -> None:
        """Allocate the static KV cache and rope tables for `max_len` positions (rounded up to 8)."""
        max_len = (max_len + 7) // 8 * 8
        c, device, dtype = self.config, self.embed.weight.device, self.embed.weight.dtype
        for layer in self.layers:
            shape = (batch, c.num_kv_heads, max_len, c.head_dim)
            layer.k_cache = torch.zeros(shape, dtype=dtype, device=device)
            layer.v_cache = torch.zeros(shape, dtype=dtype, device=device)
        positions = torch.arange(max_len, dtype=torch.float64)
        self.rope_tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for kind, spec in c.rope.items():
            angles = torch.outer(positions, torch.from_numpy(spec.inv_freq(c.head_dim))).float()
            angles = torch.cat([angles, angles], dim=-1)
            self.rope_tables[kind] = (angles.cos().to(device, dtype), angles.sin().to(device, dtype))
        # A Python float holding the dtype-rounded scale (no host tensor inside a captured graph).
        self.embed_scale = float(torch.tensor(c.embed_scale, dtype=dtype))
        self.max_len = max_len
        self.cache_version += 1  # graphs captured over the old cache tensors are now stale

    def forward(self, tokens: torch.Tensor, start_pos: int) -> torch.Tensor:
        """Logits (float32, [batch, q, vocab]) for `tokens` [batch, q] at positions start_pos...

        Attends only to cache positions < start_pos + q, so stale entries from rejected
        drafts beyond that are never read (they are overwritten by the next tokens).
        """
        q_len = tokens.shape[1]
        kv_len = start_pos + q_len
        if kv_len > self.max_len:
            raise SpecbenchError(f"sequence of {kv_len} tokens exceeds the KV cache of {self.max_len}")
        pos = torch.arange(start_pos, kv_len, device=tokens.device)
        rope = {}
        for layer_kind, (cos, sin) in self.rope_tables.items():
            rope[layer_kind] = cos[start_pos:kv_len], sin[start_pos:kv_len]
        return self._layers_and_head(tokens, pos, rope, kv_len)

    def forward_static(self, tokens: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """`forward` with the start position as a device tensor [1] and the whole cache read.

        Shapes depend only on q = tokens.shape[1], nothing is read back to the host, and
        no tensor is allocated outside the graph's memory pool: the step CUDA graphs capture.
        Same maths as `forward`: masked keys add exp(-inf) = 0 to the softmax.
        """
        pos = start + torch.arange(tokens.shape[1], device=tokens.device)
        rope = {kind: (cos.index_select(0, pos), sin.index_select(0, pos)) for kind, (cos, sin) in self.rope_tables.items()}
        return self._layers_and_head(tokens, pos, rope, None)

    def _layers_and_head(self, tokens, pos, rope, kv_len: int | None) -> torch.Tensor:
        x = self.embed(tokens)
        if self.config.embed_scale != 1.0:  # Gemma: the scale is rounded to the activation dtype first
            x = x * self.embed_scale
        for layer in self.layers:
            cos, sin = rope[layer.rope_kind]
            x = layer(x, pos, cos, sin, kv_len)
        x = self.final_norm(x)
        head = self.embed.weight if self.config.tie_word_embeddings else self.lm_head.weight
        logits = (x @ head.T).float()
        if self.config.final_softcap is not None:
            logits = torch.tanh(logits / self.config.final_softcap) * self.config.final_softcap
        return logits


STEP_MODES = ("plain", "static", "graphs")


class StepRunner:
    """`runner(tokens[1, q], start_pos) -> float32 logits[1, q, vocab]` over a Decoder, for the engine.

    Calls at `start_pos` 0 (prefill) always run the plain `forward`. Later calls depend on `mode`:
      - "plain": `forward`, slicing the cache to the positions in use (CPU default);
      - "static": `forward_static` run eagerly from fixed input buffers, the same code and
        shapes the graphs capture, so CPU tests exercise the graph path's maths;
      - "graphs": one CUDA graph per q (1 for decoding, 2 for the draft catching up, k+1 for
        verification) replaying `forward_static`; inputs are copied into the captured
        buffers on the device, so a step launches one graph and never waits for the host.
    The returned logits of a graphed step live in the graph's output buffer: valid until the
    next call with the same q (the engine reads them before that). `capture_s` sums the
    seconds spent capturing, which callers report apart from decoding.
    """

    def __init__(self, decoder: Decoder, vocab: int | None = None, mode: str = "plain"):
        if mode not in STEP_MODES:
            raise SpecbenchError(f"unknown step mode {mode!r}; choose from {', '.join(STEP_MODES)}")
        device = decoder.embed.weight.device
        if mode == "graphs" and device.type != "cuda":
            raise SpecbenchError(f"CUDA graphs need a cuda (or ROCm) device, not {device}")
        self.decoder, self.vocab, self.mode = decoder, vocab or decoder.config.vocab_size, mode
        self.capture_s = 0.0
        self._steps: dict[int, _Step] = {}
        self._cache_version = decoder.cache_version

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, start_pos: int) -> torch.Tensor:
        q = tokens.shape[1]
        if start_pos + q > self.decoder.max_len:
            raise SpecbenchError(f"sequence of {start_pos + q} tokens exceeds the KV cache of {self.decoder.max_len}")
        if self.mode == "plain" or start_pos == 0:
            return self.decoder(tokens, start_pos)[..., : self.vocab]
        step = self._step(q)
        step.tokens.copy_(tokens)  # device to device: no host sync
        step.start.fill_(start_pos)
        if self.mode == "static":
            return self.decoder.forward_static(step.tokens, step.start)[..., : self.vocab]
        if step.graph is None:
            # Captured on this call's real inputs: the warm-up runs compute this very step.
            self._capture(step)
        step.graph.replay()
        return step.logits

    @torch.no_grad()
    def prepare(self, qs) -> None:
        """Capture the graphs for these q now. Call it between generations only: the capture
        writes junk at cache positions 0..q-1, which the next prefill overwrites before reading."""
        if self.mode != "graphs":
            return
        for q in sorted(set(qs)):
            step = self._step(q)
            if step.graph is None:
                self._capture(step)

    def _step(self, q: int) -> "_Step":
        if self._cache_version != self.decoder.cache_version:  # the cache was reallocated
            self._steps.clear()
            self._cache_version = self.decoder.cache_version
        if q not in self._steps:
            device = self.decoder.embed.weight.device
            self._steps[q] = _Step(torch.zeros((1, q), dtype=torch.long, device=device),
                                   torch.zeros(1, dtype=torch.long, device=device))
        return self._steps[q]

    def _capture(self, step: "_Step") -> None:
        began = time.perf_counter()
        with torch.cuda.device(step.tokens.device):
            torch.cuda.synchronize()
            # Warm up on a side stream (lazy kernel setup must not be captured), then capture.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.decoder.forward_static(step.tokens, step.start)
            torch.cuda.current_stream().wait_stream(side)
            step.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(step.graph):
                step.logits = self.decoder.forward_static(step.tokens, step.start)[..., : self.vocab]
            torch.cuda.synchronize()
        self.capture_s += time.perf_counter() - began


@dataclass
class _Step:
    """Input buffers of one q, and its graph and output buffer once captured."""

    tokens: torch.Tensor
    start: torch.Tensor
    graph: object = None
    logits: torch.Tensor | None = None


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise SpecbenchError(f"unknown dtype {name!r}; choose from {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve_device(name: str) -> torch.device:
    """A torch device that exists here, or a clear error naming what does."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise SpecbenchError(f"unknown device {name!r}; use cpu, cuda, cuda:N (ROCm builds also use cuda)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0 or (device.index or 0) >= count:
            raise SpecbenchError(f"device {name!r} is not available here (torch sees {count} CUDA/ROCm device(s))")
    elif device.type not in ("cpu", "mps", "xpu"):
        raise SpecbenchError(f"unsupported device {name!r}; use cpu or cuda[:N]")
    return device


def load_decoder(name_or_path: str | Path, dtype: str = "float32", device: str = "cpu") -> Decoder:
    """Load a Hugging Face checkpoint into specbench's Decoder (strict name and shape checks)."""
    checkpoint_dir = resolve_checkpoint(str(name_or_path))
    config = read_config(checkpoint_dir)
    torch_dtype, torch_device = resolve_dtype(dtype), resolve_device(device)
    tensors = collect_tensors(checkpoint_dir, config, framework="pt")
    state = {}
    for name, tensor in tensors.items():
        # biases are listed as bq/bk/bv in the map and live on the wq/wk/wv linears here
        key = f"{name[:-3]}.w{name[-1]}.bias" if name.endswith((".bq", ".bk", ".bv")) else f"{name}.weight"
        state[key] = tensor.to(torch_device, torch_dtype)
    with torch.device("meta"):
        model = Decoder(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)
