"""Score a toy pair on held-out problems: exact match of each model, greedy acceptance at k=4.

Exact match: each model decodes every held-out prompt greedily (batched, through
transformers' `generate`, which also proves the saved folders load as ordinary
checkpoints); a problem counts when the number after the first `####` equals the
reference's.

Acceptance. With greedy decoding the speculative loop keeps the target's greedy
output, and a draft token is accepted exactly when it equals the target's token at
that position. Every accepted draft token therefore sits on the target's greedy path,
so the draft's proposals that matter are its argmax predictions given prefixes of
that path, which one teacher-forced draft forward over the target's output gives for
all positions at once. With match[j] = (draft argmax after target[:j] == target[j]),
and following `specbench.engine`'s conventions (the first token comes from prefill;
iterations go on until the output holds <eos> or max_new_tokens tokens; draft tokens
accepted past that end still count), greedy speculative decoding at k does:

    p = 1; while p < L: a = leading matches in match[p : p+k]; accepted += a; drafted += k; p += a + 1

where L is the output's length (through <eos>), and the target's output is decoded k
tokens past L so that match[] covers the last window. acceptance rate = accepted / drafted.

When the `torch` backend is installed, the first few problems are also decoded
speculatively through it, as a cross-check of both the acceptance figure and of the
claim that speculative output equals the target's greedy output.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from specbench.toy.corpus import extract_answer, format_prompt, held_out_problems

K = 4
MAX_NEW_TOKENS = 128  # the longest worked solution of the generator is about 80 tokens
BATCH_SIZE = 50


def output_length(tokens: list[int], eos_id: int) -> int:
    """Tokens the engine would keep: through the first <eos>, at most MAX_NEW_TOKENS."""
    return min(tokens.index(eos_id) + 1 if eos_id in tokens else len(tokens), MAX_NEW_TOKENS)


def greedy_outputs(model, prompts: list[list[int]], eos_id: int, pad_id: int, past_end: int = 0) -> list[list[int]]:
    """Greedy continuations of each prompt: `output_length` tokens plus `past_end` more.

    A plain batched decode loop over a transformers model and its KV cache (left padding, with
    position ids counted from each row's first real token), rather than `generate`, which ends
    rows at <eos> where the acceptance count needs tokens past it.
    """
    import torch
    from transformers import DynamicCache

    from specbench.backends.hf_backend import cache_keyword

    def finished(row: list[int]) -> bool:
        return len(row) >= MAX_NEW_TOKENS + past_end or (eos_id in row and len(row) > row.index(eos_id) + past_end)

    outputs: list[list[int]] = []
    for start in range(0, len(prompts), BATCH_SIZE):
        chunk = prompts[start : start + BATCH_SIZE]
        width = max(len(p) for p in chunk)
        input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in chunk])
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        cache = {cache_keyword(model): DynamicCache()}
        rows: list[list[int]] = [[] for _ in chunk]
        with torch.no_grad():
            while not all(finished(row) for row in rows):
                logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               use_cache=True, **cache).logits
                next_tokens = logits[:, -1].argmax(-1)
                for row, token in zip(rows, next_tokens.tolist()):
                    row.append(token)
                input_ids = next_tokens[:, None]
                attention_mask = torch.cat([attention_mask, torch.ones_like(input_ids)], dim=1)
                position_ids = position_ids[:, -1:] + 1
        outputs += [row[: output_length(row, eos_id) + past_end] for row in rows]
    return outputs


def draft_matches(draft, prompts: list[list[int]], continuations: list[list[int]], pad_id: int) -> list[list[bool]]:
    """match[j] for each continuation: does the draft's argmax after prompt + continuation[:j] equal continuation[j]?"""
    import torch

    matches: list[list[bool]] = []
    for start in range(0, len(prompts), BATCH_SIZE):
        chunk = list(zip(prompts[start : start + BATCH_SIZE], continuations[start : start + BATCH_SIZE]))
        rows = [prompt + continuation for prompt, continuation in chunk]
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows])  # right padding: causal, harmless
        with torch.no_grad():
            predicted = draft(input_ids=input_ids).logits.argmax(-1).tolist()
        for guesses_row, (prompt, continuation) in zip(predicted, chunk):
            first = len(prompt) - 1  # logits at position i predict token i + 1
            guesses = guesses_row[first : first + len(continuation)]
            matches.append([g == t for g, t in zip(guesses, continuation)])
    return matches


def greedy_acceptance(match: list[bool], length: int, k: int) -> tuple[int, int, int]:
    """(accepted, drafted, iterations) of greedy speculative decoding of an output of `length`
    tokens, given match[] over at least length + k - 1 tokens (module docstring)."""
    accepted = drafted = iterations = 0
    position = 1  # token 0 comes from prefill
    while position < length:
        run = 0
        while run < k and match[position + run]:
            run += 1
        accepted += run
        drafted += k
        iterations += 1
        position += run + 1
    return accepted, drafted, iterations


def exact_match(outputs: list[list[int]], problems: list[dict[str, str]], tokenizer) -> float:
    """Share of outputs whose first `####` answer equals the reference's."""
    extracted = [extract_answer(tokenizer.decode(tokens, skip_special_tokens=True)) for tokens in outputs]
    correct = [e is not None and e == extract_answer(p["answer"]) for e, p in zip(extracted, problems)]
    return sum(correct) / len(problems)


def backend_cross_check(pair_dir: Path, prompts: list[list[int]], target_outputs: list[list[int]],
                        counts: list[tuple[int, int, int]]) -> dict[str, Any]:
    """Decode `prompts` speculatively (k=4, greedy) through the torch backend and compare, prompt by
    prompt, its tokens with the target's batched greedy output and its (accepted, drafted, iterations)
    with the teacher-forced counts. Near-ties between the two implementations' float rounding can
    make a few differ; a systematic difference would show in every prompt."""
    from specbench.backends import load_backend

    backend = load_backend("torch", target=str(pair_dir / "target"), draft=str(pair_dir / "draft"),
                           dtype="float32", device="cpu", max_seq_len=max(map(len, prompts)) + MAX_NEW_TOKENS)
    accepted = drafted = same_tokens = same_counts = 0
    for prompt, reference, expected in zip(prompts, target_outputs, counts):
        result = backend.generate(prompt, max_new_tokens=MAX_NEW_TOKENS, k=K)
        accepted, drafted = accepted + result.accepted, drafted + result.drafted
        same_tokens += result.tokens == reference
        same_counts += (result.accepted, result.drafted, result.iterations) == expected
    return {
        "problems": len(prompts),
        "acceptance_rate_k4": round(accepted / drafted, 4) if drafted else None,
        "outputs_equal_target_greedy": same_tokens,
        "counts_equal_teacher_forced": same_counts,
    }


def evaluate_toy_pair(pair_dir: str | Path, n_problems: int = 200, backend_problems: int = 10) -> dict[str, Any]:
    """Exact match of target and draft and greedy acceptance at k=4 on the first `n_problems` held-out problems."""
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    pair_dir = Path(pair_dir)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(pair_dir / "target")
    target = AutoModelForCausalLM.from_pretrained(pair_dir / "target").eval()
    draft = AutoModelForCausalLM.from_pretrained(pair_dir / "draft").eval()
    problems = held_out_problems(n_problems)
    prompts = [tokenizer.encode(format_prompt(p["question"])) for p in problems]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id

    target_extended = greedy_outputs(target, prompts, eos, pad, past_end=K)
    lengths = [output_length(tokens, eos) for tokens in target_extended]
    target_outputs = [tokens[:length] for tokens, length in zip(target_extended, lengths)]
    draft_outputs = greedy_outputs(draft, prompts, eos, pad)
    target_em = exact_match(target_outputs, problems, tokenizer)
    draft_em = exact_match(draft_outputs, problems, tokenizer)

    matches = draft_matches(draft, prompts, target_extended, pad)
    counts = [greedy_acceptance(match, length, K) for match, length in zip(matches, lengths)]
    accepted, drafted, iterations = (sum(column) for column in zip(*counts))
    report: dict[str, Any] = {
        "problems": n_problems,
        "problem_seed": "held_out_problems (corpus.HELD_OUT_SEED)",
        "max_new_tokens": MAX_NEW_TOKENS,
        "target_exact_match": round(target_em, 4),
        "draft_exact_match": round(draft_em, 4),
        "acceptance_rate_k4": round(accepted / drafted, 4) if drafted else None,
        "mean_accepted_length_k4": round((accepted + iterations) / iterations, 4) if iterations else None,
        "target_mean_new_tokens": round(sum(lengths) / n_problems, 2),
        "target_stopped_at_eos": sum(1 for o in target_outputs if o[-1] == eos),
        "acceptance_method": "teacher-forced draft argmax along the target's greedy output (see evaluate.py)",
    }
    if backend_problems and importlib.util.find_spec("specbench.backends.torch_backend") is not None:
        n = min(backend_problems, n_problems)
        report["torch_backend_check"] = backend_cross_check(pair_dir, prompts[:n], target_outputs[:n], counts[:n])
    report["eval_seconds"] = round(time.perf_counter() - start, 2)
    return report
