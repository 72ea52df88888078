"""The toy pair's tokenizer: byte-level BPE trained locally on the synthetic corpus.

Digits are split one per token before BPE runs, so "36" is always "3", "6": the
models then learn arithmetic over a handful of digit tokens instead of one
embedding per number seen. Byte-level means any text (a real GSM8K or HumanEval
prompt too) encodes without unknown tokens. `encode` prepends `<bos>` (the
post-processor does it, so it holds for every loader of tokenizer.json);
documents end with `<eos>`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = [PAD, BOS, EOS]  # ids 0, 1, 2
VOCAB_SIZE = 512
MODEL_MAX_LENGTH = 4096  # RoPE has no learned positions; long (few-shot) prompts still encode


def train_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE):
    """A `transformers.PreTrainedTokenizerFast` trained on `texts` (deterministic for the same texts)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever unknown
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=MODEL_MAX_LENGTH,
    )


def save_tokenizer(tokenizer, out_dir: str | Path) -> None:
    """Write the tokenizer files that `AutoTokenizer.from_pretrained(out_dir)` reads."""
    tokenizer.save_pretrained(str(out_dir))
