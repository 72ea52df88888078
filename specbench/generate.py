"""`specbench generate`: decode one prompt with any backend, baseline or speculative."""

from __future__ import annotations

import argparse
import json
import sys

from specbench.errors import SpecbenchError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from specbench.backends import BACKENDS

    parser.add_argument("--target", required=True, help="target checkpoint folder or hub id")
    parser.add_argument("--draft", help="draft checkpoint folder or hub id (omit for the baseline)")
    parser.add_argument("--k", type=int, default=None, help="draft tokens per iteration (default 4 when --draft is given)")
    parser.add_argument("--backend", default="torch", choices=sorted(BACKENDS))
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy decoding")
    parser.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: off)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0: off)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-seq-len", type=int, default=2048, help="KV-cache capacity: prompt + new tokens")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (ROCm too), or for jax: cpu, gpu, tpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompt", required=True, help="text, tokenized as the target's tokenizer does by default")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args: argparse.Namespace) -> int:
    from specbench.backends import SamplingConfig, load_backend

    if args.temperature < 0:
        raise SpecbenchError(f"--temperature must be >= 0, got {args.temperature}")
    if not 0.0 < args.top_p <= 1.0:
        raise SpecbenchError(f"--top-p must be in (0, 1], got {args.top_p}")
    k = args.k if args.k is not None else (4 if args.draft else None)
    if k is not None and args.draft is None:
        raise SpecbenchError("--k needs a --draft model")
    if k is not None and k < 1:
        raise SpecbenchError(f"--k must be at least 1, got {k}")
    backend = load_backend(args.backend, target=args.target, draft=args.draft, dtype=args.dtype,
                           device=args.device, max_seq_len=args.max_seq_len)
    prompt_ids = backend.tokenizer.encode(args.prompt)
    result = backend.generate(prompt_ids, max_new_tokens=args.max_new_tokens, k=k,
                              sampling=SamplingConfig(args.temperature, args.top_k, args.top_p), seed=args.seed)
    text = backend.tokenizer.decode(result.tokens, skip_special_tokens=True)
    if args.json:
        stats = {key: value for key, value in result.stats().items() if key != "accepted_per_position"}
        stats["accepted_per_position"] = result.accepted_per_position
        print(json.dumps({
            "backend": args.backend, "k": k, "prompt_tokens": result.prompt_tokens,
            "tokens": result.tokens, "text": text, "stop_reason": result.stop_reason,
            "stats": _finite(stats),
            "timing": {"prefill_s": result.prefill_s, "decode_s": result.decode_s,
                       "draft_s": result.draft_s, "verify_s": result.verify_s},
            "environment": backend.environment(),
        }))
    else:
        print(text)
        if k is not None:
            print(f"[{result.accepted}/{result.drafted} drafts accepted, {result.mean_accepted_length:.2f} tokens per target forward]",
                  file=sys.stderr)
    return 0


def _finite(values: dict) -> dict:
    """JSON has no NaN: undefined ratios (e.g. acceptance of a baseline) become null."""
    return {key: (None if isinstance(v, float) and v != v else v) for key, v in values.items()}
