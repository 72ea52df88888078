"""`specbench toy-pair`: train the offline toy target/draft pair and score it on held-out problems.

    specbench toy-pair --out models/toy            # full budget: about 4.5 minutes on 2 idle CPU cores
    specbench toy-pair --out /tmp/toy --steps-scale 0.05 --eval-problems 20   # seconds, low quality

Writes OUT/target, OUT/draft (Hugging Face checkpoint folders sharing one tokenizer) and
OUT/toy_pair.json (sizes, steps, times, exact match of each model, greedy acceptance at k=4).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="folder to write target/, draft/ and toy_pair.json to (new, empty, or an older toy pair)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the training corpus, initial weights and batches (default 0)")
    parser.add_argument("--steps-scale", type=float, default=1.0,
                        help="multiply the calibrated training steps by this (e.g. 0.05 for a quick test pair)")
    parser.add_argument("--eval-problems", type=int, default=200, metavar="N",
                        help="held-out problems to score the pair on (default 200; 0 skips the evaluation)")


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    from specbench.toy.train import REPORT_NAME, build_toy_pair, check_toy_pair_bounds

    transformers_logging.disable_progress_bar()  # per-file save/load bars would bury the summary
    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report = build_toy_pair(args.out, steps_scale=args.steps_scale, seed=args.seed, eval_problems=args.eval_problems,
                            log=log)
    target, draft = report["target"], report["draft"]
    print(f"target: {target['parameters']:,} parameters, {target['steps']} steps in {target['train_seconds']:.0f} s, "
          f"final loss {target['final_loss']:.3f}")
    print(f"draft:  {draft['parameters']:,} parameters ({report['draft_share']:.0%} of the target), "
          f"{draft['steps']} steps in {draft['train_seconds']:.0f} s, final loss {draft['final_loss']:.3f}")
    evaluation = report.get("evaluation")
    if evaluation:
        print(f"held-out exact match over {evaluation['problems']} problems: "
              f"target {evaluation['target_exact_match']:.3f}, draft {evaluation['draft_exact_match']:.3f}; "
              f"greedy acceptance at k=4: {evaluation['acceptance_rate_k4']:.3f}")
    print(f"total {report['total_seconds']:.0f} s; "
          f"wrote {args.out / 'target'}, {args.out / 'draft'}, {args.out / REPORT_NAME}")
    if args.steps_scale == 1.0 and evaluation:
        for problem in check_toy_pair_bounds(report):
            print(f"warning: {problem}")
    return 0
