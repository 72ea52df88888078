"""Finding a checkpoint and mapping its tensors onto specbench's own parameter names.

The map is explicit and shared by every framework: `tensor_map(config)` lists each
parameter specbench's decoders own, the checkpoint tensor it comes from, and its shape.
Loading is strict (nanoGPT style): a missing tensor, a wrong shape or a tensor nobody
asked for is an error naming it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from specbench.errors import SpecbenchError
from specbench.models.config import ModelConfig, read_config

# Checkpoint tensors that carry nothing the decoder needs (rope caches, other modalities).
IGNORED_PREFIXES = ("model.vision_tower.", "model.multi_modal_projector.", "vision_tower.", "multi_modal_projector.")
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def resolve_checkpoint(name_or_path: str, revision: str | None = None) -> Path:
    """A local checkpoint folder for a path or a hub id.

    A path that exists is used as is. Otherwise the name is treated as a hub id and
    fetched (or found in the local cache when HF_HUB_OFFLINE=1).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    looks_like_hub_id = name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise SpecbenchError(f"checkpoint not found: {name_or_path} (no such folder)")
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        local = snapshot_download(
            name_or_path,
            revision=revision,
            allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"],
            local_files_only=offline,
        )
    except Exception as error:  # hub errors come in many classes; the message is what matters
        mode = "offline (HF_HUB_OFFLINE=1) and not in the local cache" if offline else type(error).__name__
        raise SpecbenchError(f"checkpoint not found: {name_or_path} is not a folder and not a usable hub id ({mode})") from None
    return Path(local)


@dataclass(frozen=True)
class TensorSpec:
    name: str  # specbench's parameter name
    source: str  # tensor name in the checkpoint
    shape: tuple[int, ...]


def tensor_map(config: ModelConfig) -> list[TensorSpec]:
    """Every decoder parameter, where it comes from, and the shape it must have."""
    c, p = config, config.weight_prefix
    d, hd = c.hidden_size, c.head_dim
    specs = [TensorSpec("embed", f"{p}embed_tokens.weight", (c.vocab_size, d))]
    for i in range(c.num_layers):
        src, dst = f"{p}layers.{i}.", f"layers.{i}."

        def add(name: str, source: str, shape: tuple[int, ...]) -> None:
            specs.append(TensorSpec(dst + name, src + source, shape))

        add("attn_norm", "input_layernorm.weight", (d,))
        add("wq", "self_attn.q_proj.weight", (c.num_heads * hd, d))
        add("wk", "self_attn.k_proj.weight", (c.num_kv_heads * hd, d))
        add("wv", "self_attn.v_proj.weight", (c.num_kv_heads * hd, d))
        add("wo", "self_attn.o_proj.weight", (d, c.num_heads * hd))
        if c.qkv_bias:
            add("bq", "self_attn.q_proj.bias", (c.num_heads * hd,))
            add("bk", "self_attn.k_proj.bias", (c.num_kv_heads * hd,))
            add("bv", "self_attn.v_proj.bias", (c.num_kv_heads * hd,))
        if c.qk_norm:
            add("q_norm", "self_attn.q_norm.weight", (hd,))
            add("k_norm", "self_attn.k_norm.weight", (hd,))
        if c.sandwich_norms:
            # Gemma: "post_attention_layernorm" really is after attention; the MLP has its own pre/post norms.
            add("post_attn_norm", "post_attention_layernorm.weight", (d,))
            add("mlp_norm", "pre_feedforward_layernorm.weight", (d,))
            add("post_mlp_norm", "post_feedforward_layernorm.weight", (d,))
        else:
            # Llama: "post_attention_layernorm" is the norm in front of the MLP.
            add("mlp_norm", "post_attention_layernorm.weight", (d,))
        add("w_gate", "mlp.gate_proj.weight", (c.intermediate_size, d))
        add("w_up", "mlp.up_proj.weight", (c.intermediate_size, d))
        add("w_down", "mlp.down_proj.weight", (d, c.intermediate_size))
    specs.append(TensorSpec("final_norm", f"{p}norm.weight", (d,)))
    if not c.tie_word_embeddings:
        head = "lm_head.weight"
        specs.append(TensorSpec("lm_head", head, (c.vocab_size, d)))
    return specs


def safetensors_files(checkpoint_dir: Path) -> list[Path]:
    """The checkpoint's safetensors shards (single file or indexed)."""
    index = checkpoint_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [checkpoint_dir / s for s in shards]
    files = sorted(checkpoint_dir.glob("*.safetensors"))
    if not files:
        raise SpecbenchError(f"{checkpoint_dir}: no *.safetensors weights (other formats are not supported)")
    return files


def iter_checkpoint_tensors(checkpoint_dir: Path, framework: str) -> Iterator[tuple[str, object]]:
    """(name, tensor) for every tensor in the checkpoint, in `framework` ("pt" or "flax"/"numpy")."""
    from safetensors import safe_open

    for file in safetensors_files(checkpoint_dir):
        with safe_open(str(file), framework=framework) as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)


def collect_tensors(checkpoint_dir: Path, config: ModelConfig, framework: str) -> dict[str, object]:
    """specbench name -> tensor, strictly checked against `tensor_map(config)`."""
    wanted = {spec.source: spec for spec in tensor_map(config)}
    found: dict[str, object] = {}
    for source, tensor in iter_checkpoint_tensors(checkpoint_dir, framework):
        if source not in wanted:
            if source.startswith(IGNORED_PREFIXES) or source.endswith(IGNORED_SUFFIXES):
                continue
            if source == "lm_head.weight" and config.tie_word_embeddings:
                continue  # some tied checkpoints store the head too; the embedding is what is used
            raise SpecbenchError(f"{checkpoint_dir}: unexpected tensor {source!r} for a {config.family} checkpoint")
        spec = wanted[source]
        if tuple(tensor.shape) != spec.shape:
            raise SpecbenchError(
                f"{checkpoint_dir}: tensor {source!r} has shape {tuple(tensor.shape)}, expected {spec.shape}"
            )
        found[spec.name] = tensor
    missing = [spec.source for spec in wanted.values() if spec.name not in found]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise SpecbenchError(f"{checkpoint_dir}: missing tensor {missing[0]!r}{more}")
    return found


def load_tokenizer(checkpoint_dir: Path):
    """The checkpoint's own tokenizer (transformers), with its special-token rules."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(checkpoint_dir))
    except Exception as error:
        raise SpecbenchError(f"{checkpoint_dir}: cannot load tokenizer ({type(error).__name__}: {error})") from None


__all__ = ["TensorSpec", "collect_tensors", "load_tokenizer", "read_config", "resolve_checkpoint", "tensor_map"]
