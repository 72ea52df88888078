"""Issue 7's GPU check, one command (about 5-8 minutes on one H200):

    python benchmarks/gpu_check.py                  # cuda, bf16, Gemma-like shapes up to 27B
    python benchmarks/gpu_check.py --small          # CPU, float32, tiny shapes: under a minute, for tests

1. Step profile (`specbench.profile_step`): forward latency at context 512 for the 27B/7B/2B/1B-class
   shapes and the 27B's 4-layer self-draft, through the torch backend's decode path (CUDA
   graphs), against the floor weight bytes / copy bandwidth.
2. Controlled-acceptance sweep (`specbench.shapes.controlled_pair`): the 27B-class target, its
   first 4 layers as draft, epsilon in a few values; torch baseline and speculative, and
   transformers' assisted generation (`hf-assisted`) over the very same weight tensors.
   Measured speedup, acceptance, c and v, Leviathan's prediction, efficiency.
3. Greedy equivalence in the run dtype with the workflow's divergence classification, and the
   number of host synchronisations per speculative iteration (torch.cuda sync debug mode).
Writes OUT/gpu-check-<device>-<date>.json and .md (default OUT: benchmarks/results) and prints the table.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from specbench import metrics  # noqa: E402

from specbench.backends.hf_backend import HFAssistedBackend  # noqa: E402
from specbench.backends.torch_backend import TorchBackend  # noqa: E402
from specbench.environment import torch_environment  # noqa: E402
from specbench.profile_step import copy_bandwidth, profile_model  # noqa: E402
from specbench.shapes import build_decoder, controlled_pair, hf_model, llama_config_dict, random_prompts  # noqa: E402
from specbench.workflow.config import DEFAULT_NEAR_TIE_BOUNDS  # noqa: E402
from specbench.workflow.equivalence import first_divergence  # noqa: E402
from specbench.workflow.store import atomic_write_text  # noqa: E402

FULL = dict(
    device="cuda", dtype="bfloat16", mode="graphs", context=512, reps=20,
    profile=[("gemma-27b-like", [1, 3, 5, 9]), ("gemma-7b-like", [1]), ("gemma-2b-like", [1]), ("gemma-1b-like", [1]),
             ("gemma-27b-like@4", [1, 2])],
    target_shape="gemma-27b-like", draft_shapes=["gemma-2b-like", "gemma-27b-like@4"],
    pair="gemma-27b-like", draft_layers=4, epsilons=[0.0, 0.02, 0.1], ks=[4, 8],
    prompts=2, prompt_len=128, max_new=128,
)
SMALL = dict(
    device="cpu", dtype="float32", mode="static", context=32, reps=3,
    profile=[("small", [1, 3, 5]), ("tiny", [1]), ("small@2", [1, 2])],
    target_shape="small", draft_shapes=["tiny", "small@2"],
    pair="small", draft_layers=2, epsilons=[0.0, 0.3], ks=[2, 4],
    prompts=2, prompt_len=16, max_new=24,
)
# Issue 7's GPU targets.
TARGET_STEP_OVER_FLOOR, DRAFT_STEP_OVER_FLOOR, EFFICIENCY_MIN, OVER_ASSISTED_MIN = 1.2, 2.0, 0.9, 1.5


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def step_profiles(plan: dict, device: torch.device, bandwidth: float) -> dict:
    profiles = {}
    for shape, qs in plan["profile"]:
        model = build_decoder(shape, dtype=plan["dtype"], device=plan["device"])
        profiles[shape] = profile_model(model, qs, [plan["context"]], plan["reps"], plan["mode"], 0, bandwidth)
        del model
        free(device)
        one = profiles[shape]["steps"][0]
        print(f"  {shape:20s} q=1 {one['ms']:8.3f} ms  floor {profiles[shape]['floor_ms']:7.3f} ms  "
              f"x{one['over_floor']:.2f}", flush=True)
    return profiles


def hf_assisted_backend(target, draft, target_shape: str, draft_shape: str, max_seq_len: int) -> HFAssistedBackend:
    """transformers' assisted generation over the very tensors of our decoders (no checkpoint on disk)."""
    backend = HFAssistedBackend.from_models(hf_model(target, llama_config_dict(target_shape)),
                                            hf_model(draft, llama_config_dict(draft_shape)),
                                            dtype=str(target.embed.weight.dtype).removeprefix("torch."), max_seq_len=max_seq_len)
    return backend


def count_syncs(backend: TorchBackend, prompt: list[int], k: int, max_new: int) -> dict:
    """Host synchronisations in one speculative generate (CUDA only), per iteration."""
    if backend.device.type != "cuda":
        return {"measured": False, "why": "sync debug mode exists only on CUDA/ROCm"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = backend.generate(prompt, max_new_tokens=max_new, k=k)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message).lower() for w in caught)
    return {"measured": True, "syncs": syncs, "iterations": result.iterations,
            "syncs_per_iteration": syncs / max(result.iterations, 1)}


def paired_speedup(baselines: list, speculatives: list) -> float:
    """Sum of baseline decode time / sum of speculative decode time over the same prompts."""
    return sum(b.decode_s for b in baselines) / sum(s.decode_s for s in speculatives)


def sweep(plan: dict, device: torch.device) -> tuple[list[dict], dict]:
    rows, syncs = [], {}
    bound = DEFAULT_NEAR_TIE_BOUNDS[plan["dtype"]]
    max_seq_len = plan["prompt_len"] + plan["max_new"] + 8
    draft_shape = f"{plan['pair'].partition('@')[0]}@{plan['draft_layers']}"
    for epsilon in plan["epsilons"]:
        pair = controlled_pair(plan["pair"], plan["draft_layers"], epsilon, dtype=plan["dtype"], device=plan["device"])
        prompts = random_prompts(pair.vocab_size, plan["prompts"], plan["prompt_len"], seed=1)
        torch_backend = TorchBackend.from_decoders(pair.target, pair.draft, dtype=plan["dtype"], max_seq_len=max_seq_len,
                                                   step_mode=plan["mode"])
        torch_backend.warmup([None, *plan["ks"]])
        assisted = hf_assisted_backend(pair.target, pair.draft, plan["pair"], draft_shape, max_seq_len)
        assisted.generate(prompts[0][:8], max_new_tokens=8)
        assisted.generate(prompts[0][:8], max_new_tokens=8, k=plan["ks"][0])
        # Interleave baseline and speculative per prompt, so drifting clocks hit both alike.
        for name, backend in (("torch", torch_backend), ("hf-assisted", assisted)):
            baselines, by_k = [], {k: [] for k in plan["ks"]}
            for prompt in prompts:
                baselines.append(backend.generate(prompt, max_new_tokens=plan["max_new"]))
                for k in plan["ks"]:
                    by_k[k].append(backend.generate(prompt, max_new_tokens=plan["max_new"], k=k))
            for k, results in by_k.items():
                rows.append(summarise(name, epsilon, k, baselines, results, bound))
                print("  " + format_row(rows[-1]), flush=True)
        if epsilon == plan["epsilons"][-1]:
            syncs = count_syncs(torch_backend, prompts[0], plan["ks"][-1], 32)
        del torch_backend, assisted, pair
        free(device)
    return rows, syncs


def summarise(backend: str, epsilon: float, k: int, baselines: list, results: list, bound: float) -> dict:
    iterations = sum(r.iterations for r in results)
    accepted, drafted = sum(r.accepted for r in results), sum(r.drafted for r in results)
    row = {"backend": backend, "epsilon": epsilon, "k": k, "speedup": paired_speedup(baselines, results),
           "acceptance": metrics.acceptance_rate(accepted, drafted),
           "mean_accepted_length": metrics.mean_accepted_length(accepted, iterations),
           "baseline_tokens_per_s": sum(len(b.tokens) - 1 for b in baselines) / sum(b.decode_s for b in baselines),
           "compile_s": sum(r.compile_s for r in results)}
    if backend == "torch":  # costs are only separable where the loop times draft and verify apart
        base_s, base_iters = sum(b.decode_s for b in baselines), sum(b.iterations for b in baselines)
        c = metrics.cost_ratio(sum(r.draft_s for r in results), iterations, k, base_s, base_iters)
        v = metrics.verify_ratio(sum(r.verify_s for r in results), iterations, base_s, base_iters)
        predicted = metrics.predicted_speedup(row["mean_accepted_length"], k, c, v)
        verdicts = [first_divergence(b.tokens, r.tokens, b.margins, r.margins, bound) for b, r in zip(baselines, results)]
        row.update(c=c, v=v, predicted=predicted, efficiency=metrics.efficiency(row["speedup"], predicted),
                   equivalence={name: sum(d["classification"] == name for d in verdicts)
                                for name in ("exact", "near-tie", "mismatch")})
    return row


def format_row(row: dict) -> str:
    text = (f"{row['backend']:11s} eps={row['epsilon']:<5g} k={row['k']}: speedup {row['speedup']:.2f}x, "
            f"acceptance {row['acceptance']:.3f}, L {row['mean_accepted_length']:.2f}")
    if "predicted" in row:
        text += (f", c {row['c']:.3f}, v {row['v']:.3f}, predicted {row['predicted']:.2f}x, "
                 f"efficiency {row['efficiency']:.2f}, equivalence {row['equivalence']}")
    return text


def targets(plan: dict, profiles: dict, rows: list[dict]) -> list[dict]:
    """Issue 7's GPU targets, each with its measured value and whether it was met."""
    out = []
    step = profiles[plan["target_shape"]]["steps"][0]
    out.append({"target": f"target step ({plan['target_shape']}) <= {TARGET_STEP_OVER_FLOOR}x floor",
                "value": step["over_floor"], "met": step["over_floor"] <= TARGET_STEP_OVER_FLOOR})
    for shape in plan["draft_shapes"]:
        over = profiles[shape]["steps"][0]["over_floor"]
        out.append({"target": f"draft step ({shape}) <= {DRAFT_STEP_OVER_FLOOR}x floor", "value": over,
                    "met": over <= DRAFT_STEP_OVER_FLOOR})
    for row in rows:
        if row["backend"] != "torch":
            continue
        out.append({"target": f"efficiency >= {EFFICIENCY_MIN} (eps {row['epsilon']:g}, k {row['k']})",
                    "value": row["efficiency"], "met": row["efficiency"] >= EFFICIENCY_MIN})
        peer = next(r for r in rows if r["backend"] == "hf-assisted" and r["epsilon"] == row["epsilon"] and r["k"] == row["k"])
        ratio = row["speedup"] / peer["speedup"]
        out.append({"target": f"torch speedup >= {OVER_ASSISTED_MIN}x hf-assisted's (eps {row['epsilon']:g}, k {row['k']})",
                    "value": ratio, "met": ratio >= OVER_ASSISTED_MIN})
    return out


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [f"# GPU check, {result['date']}: {env.get('device_name')} ({env.get('driver')}), torch {env.get('torch')}, "
             f"{result['plan']['dtype']}, mode {result['plan']['mode']}{' (SMALL: CPU smoke run, not a measurement)' if result['small'] else ''}",
             "", f"copy bandwidth {result['copy_bandwidth_GBps']:.1f} GB/s; context {result['plan']['context']}", "",
             "| shape | q | step ms | floor ms | x floor |", "|---|---|---|---|---|"]
    for shape, prof in result["profiles"].items():
        for step in prof["steps"]:
            lines.append(f"| {shape} | {step['q']} | {step['ms']:.3f} | {prof['floor_ms']:.3f} | {step['over_floor']:.2f} |")
    lines += ["", "| backend | epsilon | k | speedup | acceptance | L | c | v | predicted | efficiency | exact/near-tie/mismatch |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["sweep"]:
        eq = row.get("equivalence")
        lines.append(f"| {row['backend']} | {row['epsilon']:g} | {row['k']} | {row['speedup']:.2f} | {row['acceptance']:.3f} | "
                     f"{row['mean_accepted_length']:.2f} | " + (" | ".join(f"{row[key]:.3f}" for key in ("c", "v", "predicted", "efficiency"))
                                                              if "c" in row else "- | - | - | -")
                     + f" | {'/'.join(str(eq[n]) for n in ('exact', 'near-tie', 'mismatch')) if eq else '-'} |")
    lines += ["", f"host syncs in a speculative generate: {result['syncs']}", "", "| target | value | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']:.3f} | {'yes' if t['met'] else 'NO'} |" for t in result["targets"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny shapes on the CPU in float32 (a smoke run, under a minute)")
    parser.add_argument("--device", help="override the device (default cuda, or cpu with --small)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results", help="folder for the JSON and table")
    args = parser.parse_args(argv)
    plan = dict(SMALL if args.small else FULL)
    if args.device:
        plan["device"] = args.device
        plan["mode"] = "graphs" if args.device.startswith("cuda") else "static"
    device = torch.device(plan["device"])
    if device.type == "cpu":
        torch.set_num_threads(1)  # tiny shapes: one thread is fastest and fair to a shared machine
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA/ROCm device here; use --small for the CPU smoke run", file=sys.stderr)
        return 2
    began = time.perf_counter()
    date = datetime.date.today().isoformat()
    bandwidth = copy_bandwidth(device)
    print(f"device {device}: copy bandwidth {bandwidth / 1e9:.1f} GB/s\nstep profile at context {plan['context']}:", flush=True)
    profiles = step_profiles(plan, device, bandwidth)
    print("controlled-acceptance sweep:", flush=True)
    rows, syncs = sweep(plan, device)
    result = {"date": date, "small": args.small, "plan": plan, "environment": torch_environment(device),
              "copy_bandwidth_GBps": bandwidth / 1e9, "profiles": profiles, "sweep": rows, "syncs": syncs}
    result["targets"] = targets(plan, profiles, rows)
    result["seconds"] = time.perf_counter() - began
    stem = f"gpu-check-{'small-' if args.small else ''}{device.type}-{date}"
    for suffix, text in ((".json", json.dumps(result, indent=2) + "\n"), (".md", markdown(result))):
        atomic_write_text(args.out / f"{stem}{suffix}", text)
    print(markdown(result))
    print(f"wrote {args.out / stem}.json/.md in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
