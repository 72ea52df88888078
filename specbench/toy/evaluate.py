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
each iteration starting at position p accepts a = the number of leading matches in
match[p : p+k], drafts k tokens, and moves to p + a + 1 (the target's own token follows
the accepted ones). acceptance rate = sum(a) / sum(k). This equals what
`specbench.engine` counts except in the last iteration, where the engine may also
count draft tokens proposed past the end of the output.

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


def greedy_outputs(model, prompts: list[list[int]], eos_id: int, pad_id: int) -> list[list[int]]:
    """Greedy continuations of each prompt, up to and including the first <eos> (left-padded batches)."""
    import torch

    outputs: list[list[int]] = []
    for start in range(0, len(prompts), BATCH_SIZE):
        chunk = prompts[start : start + BATCH_SIZE]
        width = max(len(p) for p in chunk)
        input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in chunk])
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        with torch.no_grad():
            generated = model.generate(
                input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False, eos_token_id=eos_id, pad_token_id=pad_id,
            )
        for row in generated[:, width:].tolist():
            outputs.append(row[: row.index(eos_id) + 1] if eos_id in row else row)
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


def greedy_acceptance(match: list[bool], k: int) -> tuple[int, int, int]:
    """(accepted, drafted, iterations) of greedy speculative decoding over one output (module docstring)."""
    accepted = drafted = iterations = 0
    position = 0
    while position < len(match):
        run = 0
        while run < k and position + run < len(match) and match[position + run]:
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


def backend_cross_check(pair_dir: Path, prompts: list[list[int]], target_outputs: list[list[int]]) -> dict[str, Any]:
    """Decode `prompts` speculatively (k=4, greedy) with the torch backend; compare with the batched figures."""
    from specbench.backends import load_backend

    backend = load_backend("torch", target=str(pair_dir / "target"), draft=str(pair_dir / "draft"),
                           dtype="float32", device="cpu", max_seq_len=max(map(len, prompts)) + MAX_NEW_TOKENS)
    accepted = drafted = same = 0
    for prompt, reference in zip(prompts, target_outputs):
        result = backend.generate(prompt, max_new_tokens=MAX_NEW_TOKENS, k=K)
        accepted, drafted = accepted + result.accepted, drafted + result.drafted
        same += result.tokens == reference
    return {
        "problems": len(prompts),
        "acceptance_rate_k4": round(accepted / drafted, 4) if drafted else None,
        "outputs_equal_target_greedy": same,
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

    target_outputs = greedy_outputs(target, prompts, eos, pad)
    draft_outputs = greedy_outputs(draft, prompts, eos, pad)
    target_em = exact_match(target_outputs, problems, tokenizer)
    draft_em = exact_match(draft_outputs, problems, tokenizer)

    totals = [0, 0, 0]
    for match in draft_matches(draft, prompts, target_outputs, pad):
        for i, value in enumerate(greedy_acceptance(match, K)):
            totals[i] += value
    accepted, drafted, iterations = totals
    report: dict[str, Any] = {
        "problems": n_problems,
        "problem_seed": "held_out_problems (corpus.HELD_OUT_SEED)",
        "max_new_tokens": MAX_NEW_TOKENS,
        "target_exact_match": round(target_em, 4),
        "draft_exact_match": round(draft_em, 4),
        "acceptance_rate_k4": round(accepted / drafted, 4) if drafted else None,
        "mean_accepted_length_k4": round((accepted + iterations) / iterations, 4) if iterations else None,
        "target_mean_new_tokens": round(sum(map(len, target_outputs)) / n_problems, 2),
        "target_stopped_at_eos": sum(1 for o in target_outputs if o and o[-1] == eos),
        "acceptance_method": "teacher-forced draft argmax along the target's greedy output (see evaluate.py)",
    }
    if backend_problems and importlib.util.find_spec("specbench.backends.torch_backend") is not None:
        count = min(backend_problems, n_problems)
        report["torch_backend_check"] = backend_cross_check(pair_dir, prompts[:count], target_outputs[:count])
    report["eval_seconds"] = round(time.perf_counter() - start, 2)
    return report
