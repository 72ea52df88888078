"""The lossless-sampling distribution test for sampled cells (`specbench sampling-test`).

Token-for-token comparison only works for greedy decoding: sampled baseline and speculative
cells draw different random numbers. What speculative sampling promises instead is that its
tokens follow the target's own (temperature/top-k/top-p warped) distribution. This samples
the first few tokens many times with speculative decoding and G-tests the counts against
the exact distribution enumerated with target forwards (`specbench.checks`). A p-value at
or below 0.001 fails the rule, and so does a test without power (see MIN_CELLS).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from specbench.errors import SpecbenchError
from specbench.workflow import config as cfg
from specbench.workflow import store

# A trained model's continuation of a task prompt is often nearly certain (one sequence holds
# 98% of the mass: nothing to test); the opening of a new problem is open (names, numbers).
# The test uses whichever of the first two task prompts and this one spreads its mass widest.
OPEN_PROMPT = "Question:"

# Sequences expected fewer than 5 times are pooled into one cell; with fewer than this many
# cells left the G-test compares almost nothing and would pass any sampler.
MIN_CELLS = 3


def _most_informative(backend, prompts, n_tokens, sampling, eos, samples) -> int:
    """Index of the prompt whose exact first-token distribution gives the G-test the most cells."""
    from specbench.checks import exact_sequence_distribution

    def cells(prompt) -> int:
        exact = exact_sequence_distribution(backend, prompt, n_tokens, sampling, eos)
        return sum(1 for probability in exact.values() if probability * samples >= 5)

    counts = [cells(prompt) for prompt in prompts]
    return max(range(len(prompts)), key=lambda index: counts[index])


def sampling_test(config: dict[str, Any], *, n_tokens: int = 3) -> dict[str, Any]:
    """Run the test configured under `equivalence.sampling_test`; return what was found."""
    from transformers import AutoTokenizer

    from specbench.backends import SamplingConfig, load_backend
    from specbench.checks import lossless_sampling_test
    from specbench.workflow.run import Job, run_environment

    settings = config["equivalence"]["sampling_test"]
    if not settings["enabled"]:
        raise SpecbenchError(f"{config['_path']}: equivalence.sampling_test is not enabled")
    pair, backend_name = settings["pair"], settings["backend"]
    task_name = config["tasks"][0]["name"]
    job = Job({**config, "backends": [backend_name]}, pair, backend_name, task_name)
    tokenizer = AutoTokenizer.from_pretrained(job.target_dir)
    texts = [request.prompt for request in job.load_task().requests()[:2]] + [OPEN_PROMPT]
    prompts = [tokenizer.encode(text) for text in texts]
    # the test compares probabilities, so it runs in the widest dtype the sweep uses
    dtype = next((d for d in ("float32", "bfloat16", "float16") if d in config["sweep"]["dtypes"]), "float32")
    backend = load_backend(backend_name, target=str(job.target_dir), draft=str(job.draft_dir), dtype=dtype,
                           device=config["device"], max_seq_len=max(map(len, prompts)) + n_tokens + settings["k"] + 1)
    backend.warmup(k_values=[settings["k"]])
    sampling = SamplingConfig(temperature=settings["temperature"], top_k=config["sweep"]["top_k"],
                              top_p=config["sweep"]["top_p"])
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    started = time.perf_counter()
    chosen = _most_informative(backend, prompts, n_tokens, sampling, eos, settings["samples"])
    result = lossless_sampling_test(backend, prompts[chosen], k=settings["k"], sampling=sampling,
                                    samples=settings["samples"], n_tokens=n_tokens, eos_ids=eos, seed=config["seed"])
    if result.cells < MIN_CELLS:
        raise SpecbenchError(
            f"{config['_path']}: the lossless sampling test has no power: {result.samples} samples fill only "
            f"{result.cells} cell(s) with >= 5 expected counts; raise equivalence.sampling_test.samples"
        )
    return {
        "pair": pair,
        "backend": backend_name,
        "task": task_name,
        "prompt": texts[chosen],
        "prompt_tokens": len(prompts[chosen]),
        "k": settings["k"],
        "dtype": dtype,
        "temperature": settings["temperature"],
        "top_k": sampling.top_k,
        "top_p": sampling.top_p,
        "first_tokens": n_tokens,
        "samples": result.samples,
        "statistic": result.statistic,
        "degrees_of_freedom": result.degrees_of_freedom,
        "cells": result.cells,
        "p_value": result.p_value,
        "passed": result.passed,
        "seconds": time.perf_counter() - started,
        "environment": run_environment(backend.environment()),
    }


def output_path(config: dict[str, Any]):
    settings = config["equivalence"]["sampling_test"]
    return cfg.results_dir(config) / "sampling" / f"{settings['pair']}__{settings['backend']}.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="sweep config (YAML) with equivalence.sampling_test enabled")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for tensor maths (default: all)")


def run(args: argparse.Namespace) -> int:
    from specbench.workflow.run import limit_cpu_threads

    limit_cpu_threads(args.threads)
    config = cfg.load_config(args.config, check_models=False)  # the job loads its own pair
    result = sampling_test(config)
    store.atomic_write_json(output_path(config), result)
    verdict = "passed" if result["passed"] else "FAILED"
    print(
        f"lossless sampling test {verdict}: {result['pair']}/{result['backend']} k={result['k']} "
        f"T={result['temperature']:g}, first {result['first_tokens']} tokens x {result['samples']} samples, "
        f"G={result['statistic']:.1f} on {result['degrees_of_freedom']} dof, p={result['p_value']:.3g}"
    )
    if not result["passed"]:
        print("speculative sampling does not follow the target's distribution", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from specbench.workflow import standalone_main

    sys.exit(standalone_main(sys.modules[__name__], "specbench sampling-test"))
