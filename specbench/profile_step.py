"""`specbench profile-step`: forward latency per number of new tokens q, against the memory floor.

    specbench profile-step --model gemma-27b-like --draft gemma-2b-like --device cuda --q 1-16 --context 512
    specbench profile-step --model path/to/checkpoint --context 128,1024 --json step.json

For each model and context length C (tokens already in the KV cache), one decode-path
forward of q new tokens at position C is timed (median of --reps after warm-up), through
the same `StepRunner` the torch backend decodes with (CUDA graphs on a GPU by default).

The floor is what moving the weights costs: a step must read every weight once, so
    floor = weight bytes per step / copy bandwidth,
with the copy bandwidth measured here as (bytes read + bytes written) / time of a large
device-to-device copy. The KV cache read is listed beside it (kv bytes), not in the floor.
From two profiles (--draft):
    cost ratio   c    = draft step(q=1) / target step(q=1)
    verify ratio v(k) = target step(q=k+1) / target step(q=1)
which are the c and v of Leviathan et al.'s speedup L / (k c + v).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from specbench.errors import SpecbenchError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="PATH_OR_SHAPE",
                        help="checkpoint folder, or a named random-weight shape (gemma-2b-like, gemma-27b-like@4, ...)")
    parser.add_argument("--draft", metavar="PATH_OR_SHAPE", help="a second model: adds its profile and the cost ratio c")
    parser.add_argument("--q", default="1-16", help="new tokens per forward: a range 1-16 or a list 1,2,5,9 (default 1-16)")
    parser.add_argument("--context", default="512", help="tokens already cached, comma-separated (default 512)")
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default bfloat16 on cuda, float32 on cpu)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--mode", default=None, choices=("plain", "static", "graphs"),
                        help="decode-step path (default graphs on cuda, plain on cpu)")
    parser.add_argument("--reps", type=int, default=10, help="timed forwards per (context, q) (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights and tokens (default 0)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures as JSON to OUT")


def parse_counts(text: str, what: str) -> list[int]:
    """'1-16' or '1,2,5,9' -> sorted positive integers; a one-line error otherwise."""
    try:
        if "-" in text:
            low, high = (int(part) for part in text.split("-", 1))
            values = list(range(low, high + 1))
        else:
            values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SpecbenchError(f"--{what} {text!r}: expected a range like 1-16 or a list like 1,2,5") from None
    if not values or min(values) < 1:
        raise SpecbenchError(f"--{what} {text!r}: values must be positive integers")
    return sorted(set(values))


def load_model(name: str, dtype: str, device: str, seed: int):
    """A Decoder from a checkpoint folder or a named shape."""
    from specbench.models.torch_model import load_decoder
    from specbench.shapes import build_decoder, is_shape

    if is_shape(name):
        return build_decoder(name, seed=seed, dtype=dtype, device=device)
    if not Path(name).is_dir():
        from specbench.shapes import SHAPES

        raise SpecbenchError(f"--model {name!r} is neither a checkpoint folder nor a shape ({', '.join(SHAPES)})")
    return load_decoder(name, dtype, device)


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device, reps: int, warmup: int = 2) -> float:
    """Median wall time of `fn()` over `reps` calls, each bracketed by device synchronisation."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        synchronize(device)
        began = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def copy_bandwidth(device, megabytes: int | None = None) -> float:
    """Device copy bandwidth in bytes/s: (read + written bytes) / time of copying one large buffer."""
    import torch

    megabytes = megabytes or (1024 if device.type == "cuda" else 128)
    source = torch.ones(megabytes * 2**20 // 4, dtype=torch.float32, device=device)
    destination = torch.empty_like(source)
    seconds = median_seconds(lambda: destination.copy_(source), device, reps=10)
    return 2 * source.numel() * 4 / seconds


def profile_model(model, qs: list[int], contexts: list[int], reps: int, mode: str, seed: int, bandwidth: float) -> dict[str, Any]:
    """Step latency of `model` for every (context, q), with its floor and KV-cache bytes."""
    import torch

    from specbench.models.torch_model import StepRunner
    from specbench.shapes import decode_weight_bytes

    device = model.embed.weight.device
    config = model.config
    model.setup_cache(max(contexts) + max(qs) + 1)
    runner = StepRunner(model, mode=mode)
    generator = torch.Generator().manual_seed(seed)
    weight_bytes = decode_weight_bytes(model)
    kv_bytes_per_token = 2 * config.num_layers * config.num_kv_heads * config.head_dim * model.embed.weight.element_size()
    floor_ms = weight_bytes / bandwidth * 1e3
    steps = []
    with torch.no_grad():
        for context in contexts:
            runner(torch.randint(1, config.vocab_size, (1, context), generator=generator).to(device), 0)  # prefill
            for q in qs:
                tokens = torch.randint(1, config.vocab_size, (1, q), generator=generator).to(device)
                # Every call rewrites the same positions context..context+q-1: the cache stays at `context`.
                seconds = median_seconds(lambda: runner(tokens, context), device, reps)
                steps.append({"context": context, "q": q, "ms": seconds * 1e3, "over_floor": seconds * 1e3 / floor_ms,
                              "kv_bytes": kv_bytes_per_token * (context + q)})
    return {
        "parameters": config.num_params, "weight_bytes_per_step": weight_bytes, "floor_ms": floor_ms,
        "kv_bytes_per_token": kv_bytes_per_token, "mode": mode, "capture_s": runner.capture_s,
        "dtype": str(model.embed.weight.dtype).removeprefix("torch."), "steps": steps,
    }


def step_ms(profile: dict[str, Any], context: int, q: int) -> float | None:
    return next((s["ms"] for s in profile["steps"] if s["context"] == context and s["q"] == q), None)


def ratios(target: dict[str, Any], draft: dict[str, Any] | None, contexts: list[int], qs: list[int]) -> dict[str, Any]:
    """c per context (needs q=1 in both), and v(k) = t(k+1)/t(1) per context for every profiled k+1."""
    out: dict[str, Any] = {"verify_ratio": {}, "cost_ratio": {}}
    for context in contexts:
        one = step_ms(target, context, 1)
        if one is None:
            continue
        out["verify_ratio"][str(context)] = {str(q - 1): step_ms(target, context, q) / one for q in qs if q > 1}
        if draft is not None and (draft_one := step_ms(draft, context, 1)) is not None:
            out["cost_ratio"][str(context)] = draft_one / one
    return out


def profile(model_name: str, draft_name: str | None, qs: list[int], contexts: list[int], dtype: str | None, device: str,
            mode: str | None, reps: int, seed: int) -> dict[str, Any]:
    """Everything `specbench profile-step` measures, as one JSON-ready dict."""
    import torch

    from specbench.environment import torch_environment
    from specbench.models.torch_model import resolve_device

    torch_device = resolve_device(device)
    dtype = dtype or ("bfloat16" if torch_device.type == "cuda" else "float32")
    mode = mode or ("graphs" if torch_device.type == "cuda" else "plain")
    if reps < 1:
        raise SpecbenchError(f"--reps must be at least 1, got {reps}")
    bandwidth = copy_bandwidth(torch_device)
    result: dict[str, Any] = {"environment": torch_environment(torch_device), "copy_bandwidth_GBps": bandwidth / 1e9,
                              "contexts": contexts, "qs": qs, "models": {}}
    for role, name in (("target", model_name), ("draft", draft_name)):
        if name is None:
            continue
        model = load_model(name, dtype, device, seed)
        result["models"][role] = {"model": name, **profile_model(model, qs, contexts, reps, mode, seed, bandwidth)}
        del model
        if torch_device.type == "cuda":
            torch.cuda.empty_cache()
    result.update(ratios(result["models"]["target"], result["models"].get("draft"), contexts, qs))
    return result


def format_table(result: dict[str, Any]) -> str:
    lines = [f"device: {result['environment'].get('device_name')}   copy bandwidth {result['copy_bandwidth_GBps']:.1f} GB/s"]
    for role, prof in result["models"].items():
        lines.append(f"{role} {prof['model']}: {prof['parameters'] / 1e6:,.1f}M parameters, {prof['dtype']}, "
                     f"floor {prof['floor_ms']:.3f} ms/step, mode {prof['mode']}, capture {prof['capture_s']:.1f} s")
        lines.append("  context   q      ms   x floor")
        for step in prof["steps"]:
            lines.append(f"  {step['context']:7d} {step['q']:3d} {step['ms']:7.3f} {step['over_floor']:8.2f}")
    for context, c in result["cost_ratio"].items():
        lines.append(f"cost ratio c (draft/target, q=1, context {context}): {c:.3f}")
    for context, by_k in result["verify_ratio"].items():
        if by_k:
            lines.append(f"verify ratio v(k) at context {context}: " + ", ".join(f"k={k}: {v:.3f}" for k, v in by_k.items()))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    qs = parse_counts(args.q, "q")
    contexts = parse_counts(args.context, "context")
    result = profile(args.model, args.draft, qs, contexts, args.dtype, args.device, args.mode, args.reps, args.seed)
    print(format_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        temporary = args.json.with_name(args.json.name + ".tmp")
        temporary.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(temporary, args.json)
        print(f"wrote {args.json}")
    return 0
