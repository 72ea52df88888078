"""Request rules every backend shares, free of any framework import.

Baseline and speculative decoding, in every backend, stop and refuse input by these same
functions, so their outputs and error messages stay comparable.
"""

from __future__ import annotations

from collections.abc import Sequence

from specbench.errors import SpecbenchError

MAX_K = 32  # the largest draft length; caches keep room for one verification window past max_seq_len


def check_request(prompt_ids: Sequence[int], max_new_tokens: int, k: int | None, max_seq_len: int, has_draft: bool) -> None:
    """The checks every backend makes before decoding, with one-line messages."""
    if k is not None:
        if not has_draft:
            raise SpecbenchError("k was given but no draft model was loaded")
        if not 1 <= k <= MAX_K:
            raise SpecbenchError(f"k must be between 1 and {MAX_K}, got {k}")
    if max_new_tokens < 1:
        raise SpecbenchError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not prompt_ids:
        raise SpecbenchError("the prompt is empty")
    if len(prompt_ids) + max_new_tokens > max_seq_len:
        raise SpecbenchError(
            f"prompt of {len(prompt_ids)} tokens + max_new_tokens {max_new_tokens} exceeds max_seq_len {max_seq_len}"
        )


def check_same_vocabulary(target_tokenizer, draft_tokenizer, target_name: str, draft_name: str) -> None:
    """Draft and target must tokenize identically, or their distributions cannot be compared."""
    if target_tokenizer.get_vocab() != draft_tokenizer.get_vocab():
        raise SpecbenchError(
            f"draft {draft_name} and target {target_name} have different vocabularies "
            f"({len(draft_tokenizer)} vs {len(target_tokenizer)} tokens); a draft must share the target's tokenizer"
        )


def stop_at_strings(tokenizer, stop_strings: Sequence[str]):
    """A `stop(tokens)` callback for the engine: once the decoded text contains a stop
    string, the length of the shortest token prefix that already contains it.

    Baseline and speculative decoding use the same rule, so their outputs stay comparable;
    callers cut the text at the stop string itself.
    """
    if not stop_strings:
        return None

    def contains_stop(tokens: list[int]) -> bool:
        text = tokenizer.decode(tokens)
        return any(s in text for s in stop_strings)

    def stop(tokens: list[int]) -> int | None:
        if not contains_stop(tokens):
            return None
        keep = len(tokens)
        while keep > 1 and contains_stop(tokens[: keep - 1]):
            keep -= 1
        return keep

    return stop


def stopping_point(tokens: list[int], eos_ids: Sequence[int], max_new_tokens: int) -> tuple[int, str | None]:
    """(tokens to keep, why decoding stops) -- or (len, None) to go on. EOS is kept."""
    for i, token in enumerate(tokens[:max_new_tokens]):
        if token in eos_ids:
            return i + 1, "eos"
    if len(tokens) >= max_new_tokens:
        return max_new_tokens, "max_new_tokens"
    return len(tokens), None
