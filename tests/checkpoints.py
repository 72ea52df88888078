"""Tiny random Hugging Face checkpoints for tests, built locally (no hub).

Each family gets a config small enough to run in milliseconds but with every
feature the loader must honour switched on: llama3 rope scaling, qkv bias,
Gemma's soft-capping, sliding windows shorter than the test sequences,
Gemma 3's q/k norms and local rope base.
"""

from __future__ import annotations

from pathlib import Path

import pytest

VOCAB_SIZE = 96  # tokenizer below is trained to exactly this size

_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "Question: Tom has 3 apples and buys 4 more. How many apples does he have?",
    "Answer: 3 + 4 = 7 #### 7",
    "def add(a, b):\n    return a + b\n",
    "speculative decoding drafts tokens and the target verifies them",
] * 20


def train_tokenizer(out_dir: Path, vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE tokenizer trained on a few sentences, saved as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()[:0],
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    fast.add_bos_token = True
    fast.save_pretrained(out_dir)
    return fast


def family_config(family: str, *, vocab_size: int, seed_variant: int = 0, **overrides):
    """A tiny transformers config of `family` with its distinctive features enabled."""
    import transformers

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    if family == "llama":
        cfg = transformers.LlamaConfig(
            **common,
            tie_word_embeddings=False,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        )
    elif family == "llama-tied":
        cfg = transformers.LlamaConfig(**common, tie_word_embeddings=True)
    elif family == "mistral":
        cfg = transformers.MistralConfig(**common, sliding_window=None)
    elif family == "qwen2":
        cfg = transformers.Qwen2Config(**common, tie_word_embeddings=True)
    elif family == "gemma2":
        cfg = transformers.Gemma2Config(
            **common,
            query_pre_attn_scalar=16,
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
            sliding_window=6,
            hidden_activation="gelu_pytorch_tanh",
        )
    elif family == "gemma3":
        cfg = transformers.Gemma3TextConfig(
            **{**common, "num_hidden_layers": 4},
            query_pre_attn_scalar=16,
            sliding_window=6,
            sliding_window_pattern=2,
            rope_local_base_freq=10000.0,
            rope_theta=1000000.0,
        )
    else:
        raise ValueError(f"unknown test family {family!r}")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def build_checkpoint(out_dir: Path, family: str, *, seed: int = 0, tokenizer_dir: Path | None = None, **overrides) -> Path:
    """Write a random-weight checkpoint of `family` (config, safetensors, tokenizer) to `out_dir`."""
    import shutil

    import torch
    import transformers

    out_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        tokenizer = train_tokenizer(out_dir)
    else:
        for f in tokenizer_dir.iterdir():
            if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
                shutil.copy(f, out_dir / f.name)
        tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir)
    config = family_config(family, vocab_size=len(tokenizer), **overrides)
    torch.manual_seed(seed)
    model_class = transformers.Gemma3ForCausalLM if family == "gemma3" else transformers.AutoModelForCausalLM
    model = model_class.from_config(config) if model_class is transformers.AutoModelForCausalLM else model_class(config)
    # Random init is small; widen the logit spread so greedy decisions are not near-ties everywhere.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.05 if "embed" in name else 0.3)
    model.save_pretrained(out_dir)
    return out_dir


# Prompts and draft lengths every backend's greedy-equivalence test runs (issue 2: >= 20 prompts).
PROMPTS = [
    "the quick brown fox", "Question: Tom has 3 apples", "def add(a, b):", "speculative decoding drafts",
    "the lazy dog", "Answer: 3 + 4 = 7", "return a + b", "the target verifies them", "How many apples",
    "jumps over the", "quick brown", "Tom buys 4 more", "decoding", "fox jumps", "dog and fox",
    "brown fox jumps over the lazy", "Question:", "apples does he have?", "the", "tokens and the target",
]
K_VALUES = [1, 2, 4, 8]


FAMILIES = ["llama", "llama-tied", "mistral", "qwen2", "gemma2", "gemma3"]


@pytest.fixture(scope="session")
def tiny_checkpoint_factory(tmp_path_factory):
    """Build (and cache per session) tiny checkpoints: factory(family, seed=0, **overrides) -> Path.

    Checkpoints of one session share one tokenizer, so any two of them form a valid target/draft pair.
    """
    root = tmp_path_factory.mktemp("tiny-checkpoints")
    tokenizer_dir = root / "tokenizer"
    train_tokenizer(tokenizer_dir)
    cache: dict[tuple, Path] = {}

    def factory(family: str = "llama", seed: int = 0, **overrides) -> Path:
        key = (family, seed, tuple(sorted(overrides.items())))
        if key not in cache:
            name = f"{family}-s{seed}" + "".join(f"-{k}{v}" for k, v in sorted(overrides.items()))
            cache[key] = build_checkpoint(root / name, family, seed=seed, tokenizer_dir=tokenizer_dir, **overrides)
        return cache[key]

    return factory


def build_small_vocab_checkpoint(out_dir: Path, *, letters: str = "abcd", seed: int = 0) -> Path:
    """A Llama checkpoint over a vocabulary of a few letters and no special tokens.

    Small enough that the exact distribution of the first three generated tokens can be
    enumerated (len(letters)**3 sequences), for the lossless-sampling test.
    """
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(letters)}, unk_token=letters[0]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(out_dir)
    config = transformers.LlamaConfig(
        vocab_size=len(letters), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.5)
    model.save_pretrained(out_dir)
    return out_dir


def perturbed_copy(source: Path, out_dir: Path, noise: float, seed: int = 0) -> Path:
    """A copy of checkpoint `source` with Gaussian noise of relative size `noise` on every weight:
    a draft that agrees with its target often but not always."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, out_dir)
    generator = torch.Generator().manual_seed(seed)
    for file in out_dir.glob("*.safetensors"):
        tensors = load_file(file)
        noisy = {name: t + noise * t.std() * torch.randn(t.shape, generator=generator) if t.dim() >= 2 else t
                 for name, t in tensors.items()}
        save_file(noisy, file, metadata={"format": "pt"})
    return out_dir
