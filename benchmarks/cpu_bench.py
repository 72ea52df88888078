"""Issue 7's CPU targets, measured as ratios in one run (one thread, runs interleaved ABAB):

    python benchmarks/cpu_bench.py --pair models/toy          # a toy pair from `specbench toy-pair --out DIR`

1. `torch` baseline decode tokens/s over transformers' own greedy `generate` on the same
   checkpoint (target: >= 1.0). Both decode tokens/s = (new tokens - 1) / decode seconds; for
   transformers, decode seconds = time(generate N tokens) - time(generate 1 token), the
   second being its prefill plus first token.
2. Efficiency of speculative decoding on the toy pair (target: >= 0.85): measured speedup
   (paired per prompt, sum of baseline decode s / sum of speculative decode s) over the
   prediction L / (k c + v) from the same runs' acceptance and costs (`specbench.metrics`).
Each round runs every prompt through A then B; rounds repeat, and the spread of the per-round
ratios is the noise. The machine may be shared: the ratios, not the absolute rates, are the figures.
Writes OUT/cpu-<date>.json (default OUT: benchmarks/results).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from specbench import metrics  # noqa: E402
from specbench.backends import load_backend  # noqa: E402
from specbench.environment import torch_environment  # noqa: E402
from specbench.toy.corpus import format_prompt, held_out_problems  # noqa: E402
from specbench.workflow.store import atomic_write_text  # noqa: E402


def hf_decode_seconds(model, ids: torch.Tensor, max_new: int) -> tuple[float, int]:
    """(decode seconds, new tokens) of transformers' greedy generate: time(N) - time(1)."""
    def timed(n: int) -> tuple[float, int]:
        began = time.perf_counter()
        out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        return time.perf_counter() - began, out.shape[1] - ids.shape[1]

    prefill, _ = timed(1)
    total, new = timed(max_new)
    return total - prefill, new


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": len(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", type=Path, required=True, help="toy pair folder (target/, draft/)")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--max-new", type=int, default=48)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import transformers

    target, draft = args.pair / "target", args.pair / "draft"
    backend = load_backend("torch", target=str(target), draft=str(draft), max_seq_len=512)
    backend.eos_ids = ()  # decode exactly max_new tokens on both sides, so rates compare like with like
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(target), dtype=torch.float32).eval()
    hf.generation_config.eos_token_id = None
    prompts = [backend.tokenizer.encode(format_prompt(p["question"])) for p in held_out_problems(args.prompts)]
    backend.warmup([None, args.k])
    hf_decode_seconds(hf, torch.tensor([prompts[0]]), 4)

    torch_vs_hf, efficiencies, rounds = [], [], []
    for round_index in range(args.rounds):
        torch_tokens = torch_s = hf_tokens = hf_s = 0.0
        baselines, speculatives = [], []
        for prompt in prompts:
            # A: torch baseline; B: transformers generate; A': torch speculative -- per prompt, in turn.
            baseline = backend.generate(prompt, max_new_tokens=args.max_new)
            seconds, new = hf_decode_seconds(hf, torch.tensor([prompt]), args.max_new)
            speculative = backend.generate(prompt, max_new_tokens=args.max_new, k=args.k)
            torch_tokens += len(baseline.tokens) - 1
            torch_s += baseline.decode_s
            hf_tokens += new - 1
            hf_s += seconds
            baselines.append(baseline)
            speculatives.append(speculative)
        ratio = (torch_tokens / torch_s) / (hf_tokens / hf_s)
        iterations = sum(r.iterations for r in speculatives)
        accepted = sum(r.accepted for r in speculatives)
        base_s, base_iters = sum(b.decode_s for b in baselines), sum(b.iterations for b in baselines)
        speedup = base_s / sum(r.decode_s for r in speculatives)
        length = metrics.mean_accepted_length(accepted, iterations)
        c = metrics.cost_ratio(sum(r.draft_s for r in speculatives), iterations, args.k, base_s, base_iters)
        v = metrics.verify_ratio(sum(r.verify_s for r in speculatives), iterations, base_s, base_iters)
        predicted = metrics.predicted_speedup(length, args.k, c, v)
        same_tokens = all(b.tokens == s.tokens for b, s in zip(baselines, speculatives))
        rounds.append({"torch_tokens_per_s": torch_tokens / torch_s, "hf_tokens_per_s": hf_tokens / hf_s,
                       "torch_over_hf": ratio, "speedup": speedup, "acceptance": accepted / sum(r.drafted for r in speculatives),
                       "mean_accepted_length": length, "c": c, "v": v, "predicted": predicted,
                       "efficiency": metrics.efficiency(speedup, predicted), "greedy_tokens_identical": same_tokens})
        torch_vs_hf.append(ratio)
        efficiencies.append(rounds[-1]["efficiency"])
        print(f"round {round_index + 1}: torch/hf decode tokens/s {ratio:.2f} ({rounds[-1]['torch_tokens_per_s']:.0f} vs "
              f"{rounds[-1]['hf_tokens_per_s']:.0f}); k={args.k} speedup {speedup:.2f}x, L {length:.2f}, c {c:.3f}, v {v:.3f}, "
              f"predicted {predicted:.2f}x, efficiency {rounds[-1]['efficiency']:.2f}", flush=True)

    pair_report = args.pair / "toy_pair.json"
    result = {
        "date": datetime.date.today().isoformat(), "environment": torch_environment(torch.device("cpu")),
        "load_average": os.getloadavg(), "pair": str(args.pair),
        "pair_report": json.loads(pair_report.read_text()) if pair_report.exists() else None,
        "settings": {"prompts": args.prompts, "max_new_tokens": args.max_new, "k": args.k, "rounds": args.rounds,
                     "threads": torch.get_num_threads(), "dtype": "float32", "step_mode": backend.step_mode},
        "rounds": rounds,
        "torch_over_hf_decode_tokens_per_s": spread(torch_vs_hf),
        "efficiency": spread(efficiencies),
        "targets": [
            {"target": "torch baseline decode tokens/s >= transformers generate's", "value": statistics.median(torch_vs_hf),
             "threshold": 1.0, "met": statistics.median(torch_vs_hf) >= 1.0},
            {"target": "efficiency (measured / predicted speedup) >= 0.85 on the toy pair",
             "value": statistics.median(efficiencies), "threshold": 0.85, "met": statistics.median(efficiencies) >= 0.85},
        ],
    }
    path = args.out / f"cpu-{result['date']}.json"
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    for target in result["targets"]:
        print(f"{target['target']}: {target['value']:.3f} ({'met' if target['met'] else 'NOT met'})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
