"""Named model shapes with random weights, and the controlled-acceptance pair built from them.

Step latency depends on a model's shape, not its weight values, so a random-weight model
of a real model's shape costs what the real one costs: the step profiler and the GPU
check measure 2B/7B/27B-class models with nothing downloaded. Shapes are Gemma-like
sizes on the Llama block (the block every supported family shares, minus Gemma's extra
norms and soft-capping), as in the reference H200 figures of /work/shared/bench.

`NAME@N` is shape NAME cut to its first N layers (e.g. `gemma-27b-like@4`, the self-draft).

The controlled-acceptance pair (`controlled_pair`): the draft is the target's first N
layers (the same weight tensors, the same head). The target's layers past N keep their
weights but have their output projections (wo, w_down) multiplied by epsilon, so each
adds only an epsilon-sized update to the residual stream:

    h_L = h_N + eps * sum_{l > N} f_l(h_{l-1})

At eps = 0 the target computes the draft's logits exactly (h_L = h_N), so greedy
acceptance is 1 up to kernel rounding; growing eps moves the target's logits away from
the draft's and lowers acceptance. Verification is the usual exact one, so the output is
always the target's own.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import torch

from specbench.errors import SpecbenchError
from specbench.models.config import ModelConfig
from specbench.models.torch_model import Decoder, resolve_device, resolve_dtype

# name -> (hidden, intermediate, layers, heads, kv_heads, head_dim, vocab)
SHAPES: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "gemma-27b-like": (4608, 36864, 46, 32, 16, 128, 256000),
    "gemma-7b-like": (3072, 24576, 28, 16, 16, 256, 256000),
    "gemma-2b-like": (2304, 9216, 26, 8, 4, 256, 256000),
    "gemma-1b-like": (1152, 6912, 26, 4, 1, 256, 256000),
    # CPU-sized shapes for tests and the GPU check's --small mode
    "small": (256, 1024, 8, 4, 2, 64, 4096),
    "tiny": (64, 128, 4, 4, 2, 16, 512),
}

# Initial weight scale. Projections W ~ N(0, 1/fan_in) keep each layer's update about as large
# as the residual stream at every size, so one epsilon means the same at every shape.
# Logits = norm(h) @ head^T with head std 3/sqrt(hidden) have a std of about 3: wide enough
# that the greedy choice is rarely decided by rounding alone.
HEAD_LOGIT_STD = 3.0


def llama_config_dict(shape: str) -> dict:
    """The Hugging Face `config.json` (Llama) of a named shape, `NAME` or `NAME@LAYERS`."""
    name, _, layers = shape.partition("@")
    if name not in SHAPES:
        raise SpecbenchError(f"unknown model shape {name!r}; known shapes: {', '.join(SHAPES)} (NAME@N keeps N layers)")
    hidden, intermediate, num_layers, heads, kv_heads, head_dim, vocab = SHAPES[name]
    if layers:
        if not layers.isdigit() or not 1 <= int(layers) <= num_layers:
            raise SpecbenchError(f"shape {shape!r}: the layer count after @ must be 1..{num_layers}")
        num_layers = int(layers)
    return {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
        "intermediate_size": intermediate, "num_hidden_layers": num_layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "head_dim": head_dim, "vocab_size": vocab, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "max_position_embeddings": 8192, "tie_word_embeddings": False,
        "hidden_act": "silu", "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
    }


def is_shape(name: str) -> bool:
    return name.partition("@")[0] in SHAPES


def shape_config(shape: str) -> ModelConfig:
    return ModelConfig.from_hf(llama_config_dict(shape), source=f"shape {shape}")


@torch.no_grad()
def build_decoder(shape: str, *, seed: int = 0, dtype: str = "bfloat16", device: str = "cpu") -> Decoder:
    """A random-weight Decoder of a named shape, allocated once on `device` in `dtype` (no checkpoint).

    Weights: embeddings ~ N(0, 1), projections ~ N(0, 1/fan_in), head ~ N(0, 9/hidden),
    norms 1; drawn from one seeded generator on the device, so a shape and seed give the
    same model every time on that device.
    """
    config = shape_config(shape)
    torch_dtype, torch_device = resolve_dtype(dtype), resolve_device(device)
    with torch.device("meta"):
        model = Decoder(config).to(torch_dtype)
    model = model.to_empty(device=torch_device)
    generator = torch.Generator(device=torch_device).manual_seed(seed)
    for name, param in model.named_parameters():
        if "norm" in name:
            param.fill_(1.0)
        elif name == "embed.weight":
            param.normal_(0.0, 1.0, generator=generator)
        elif name == "lm_head.weight":
            param.normal_(0.0, HEAD_LOGIT_STD / math.sqrt(config.hidden_size), generator=generator)
        else:
            param.normal_(0.0, param.shape[1] ** -0.5, generator=generator)
    return model.eval().requires_grad_(False)


class ControlledPair(NamedTuple):
    target: Decoder
    draft: Decoder
    vocab_size: int


@torch.no_grad()
def controlled_pair(shape: str, draft_layers: int, epsilon: float, seed: int = 0, dtype: str = "bfloat16",
                    device: str = "cpu") -> ControlledPair:
    """(target, draft, vocab size): the draft is the target's first `draft_layers` layers, sharing
    their weight tensors and the head; the target's later layers have wo and w_down scaled by
    `epsilon` (module docstring). The draft costs no extra weight memory."""
    target = build_decoder(shape, seed=seed, dtype=dtype, device=device)
    layers = target.config.num_layers
    if not 1 <= draft_layers < layers:
        raise SpecbenchError(f"draft_layers must be between 1 and {layers - 1} for shape {shape!r}, got {draft_layers}")
    if not (epsilon >= 0 and math.isfinite(epsilon)):
        raise SpecbenchError(f"epsilon must be a finite number >= 0, got {epsilon}")
    for layer in target.layers[draft_layers:]:
        layer.wo.weight.mul_(epsilon)
        layer.w_down.weight.mul_(epsilon)
    draft = first_layers(target, draft_layers)
    return ControlledPair(target, draft, target.config.vocab_size)


def first_layers(model: Decoder, count: int) -> Decoder:
    """A Decoder made of `model`'s embedding, first `count` layers, final norm and head: the
    same tensors (no copy), but its own Block objects and so its own KV cache."""
    import dataclasses

    config = dataclasses.replace(model.config, num_layers=count, layer_types=model.config.layer_types[:count])
    with torch.device("meta"):
        draft = Decoder(config)
    prefixes = tuple(f"layers.{i}." for i in range(count))
    shared = {name: tensor for name, tensor in model.state_dict().items()
              if not name.startswith("layers.") or name.startswith(prefixes)}
    draft.load_state_dict(shared, strict=True, assign=True)
    return draft.eval().requires_grad_(False)


def hf_state_dict(model: Decoder) -> dict[str, torch.Tensor]:
    """`model`'s tensors under transformers' Llama names (the same tensors, not copies)."""
    from specbench.models.checkpoint import tensor_map

    ours = model.state_dict()
    return {spec.source: ours[f"{spec.name}.weight"] for spec in tensor_map(model.config)}


def hf_model(model: Decoder, config: dict):
    """A transformers LlamaForCausalLM over `model`'s own weight tensors (no extra memory), for
    running the same pair through `hf`/`hf-assisted` without writing a checkpoint."""
    import transformers

    hf_config = transformers.LlamaConfig(**{k: v for k, v in config.items() if k not in ("model_type", "architectures")})
    with torch.device("meta"):
        out = transformers.LlamaForCausalLM(hf_config)
    out.load_state_dict(hf_state_dict(model), strict=False, assign=True)
    missing = [name for name, p in out.named_parameters() if p.is_meta]
    if missing:
        raise SpecbenchError(f"transformers' Llama wants tensors specbench's decoder does not have: {missing[:3]}")
    with torch.device(model.embed.weight.device):  # its inv_freq buffer was made on meta
        out.model.rotary_emb = type(out.model.rotary_emb)(config=hf_config)
    out.generation_config.eos_token_id = None
    out.generation_config.pad_token_id = None
    return out.to(model.embed.weight.device).eval().requires_grad_(False)


def trivial_tokenizer(vocab_size: int):
    """A transformers tokenizer whose token i is the word `t<i>` (split on spaces), no specials:
    prompts for a random-weight pair are token ids, this only makes them printable."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def write_controlled_pair(out_dir: str | Path, shape: str, draft_layers: int, epsilon: float, seed: int = 0,
                          dtype: str = "float32") -> tuple[Path, Path]:
    """Save the controlled pair as two Hugging Face checkpoint folders, OUT/target and OUT/draft,
    with one trivial tokenizer, so `torch`, `hf` and `hf-assisted` can all load the same pair.
    Returns (target folder, draft folder)."""
    out_dir = Path(out_dir)
    pair = controlled_pair(shape, draft_layers, epsilon, seed=seed, dtype=dtype, device="cpu")
    tokenizer = trivial_tokenizer(pair.vocab_size)
    folders = []
    for role, model, layers_shape in (("target", pair.target, shape),
                                      ("draft", pair.draft, f"{shape.partition('@')[0]}@{draft_layers}")):
        folder = out_dir / role
        hf_model(model, llama_config_dict(layers_shape)).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(folder)
    (out_dir / "controlled_pair.json").write_text(json.dumps(
        {"shape": shape, "draft_layers": draft_layers, "epsilon": epsilon, "seed": seed, "dtype": dtype}, indent=2) + "\n")
    return folders[0], folders[1]


def random_prompts(vocab_size: int, count: int, length: int, seed: int = 0) -> list[list[int]]:
    """`count` prompts of `length` token ids drawn uniformly from 1..vocab_size-1 (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab_size, (count, length), generator=generator).tolist()


def decode_weight_bytes(model: Decoder) -> int:
    """Bytes of weights one decode step reads: every parameter except the embedding table, of
    which a step reads only its own rows (unless the head is tied to it)."""
    total = sum(p.numel() * p.element_size() for name, p in model.named_parameters() if name != "embed.weight")
    if model.config.tie_word_embeddings:
        total += model.embed.weight.numel() * model.embed.weight.element_size()
    return total
