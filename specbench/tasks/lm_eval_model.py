"""specbench as an lm-evaluation-harness model: `--model specbench`.

    specbench-lm-eval --model specbench \\
        --model_args target=PATH,draft=PATH,k=4,backend=torch,stats_file=run.jsonl --tasks gsm8k

Every `generate_until` request is decoded by a specbench backend (speculative with a
draft and k >= 1; the matched baseline with no draft or k=0), so one lm-eval pass gives
both lm-eval's quality metrics and, per request, the token counts, timings and
acceptance statistics (kept in `SpecbenchLM.records`, appended to `stats_file` as JSON
Lines, and summarised in the results JSON under config.specbench).

The model is generation-only: log-likelihood requests are refused with a clear error.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM

from specbench.errors import SpecbenchError

log = logging.getLogger(__name__)

DEFAULT_K = 4  # with a draft and no k given (the example of the issue)
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default when a task sets no max_gen_toks


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _usable_device(device: str | None) -> str:
    """lm-eval's CLI passes device "cuda:0" unless told otherwise; on a machine without a GPU that means cpu."""
    if not device:
        return "cpu"
    if device.startswith("cuda"):
        import torch

        if torch.cuda.device_count() == 0:
            log.warning("device %s requested but no CUDA/ROCm device is visible: running on cpu", device)
            return "cpu"
    return device


class SpecbenchLM(LM):
    """A specbench backend behind lm-eval's LM interface (generate_until only).

    model_args: target (checkpoint folder or hub id), draft (optional), k (draft length;
    default 4 with a draft, 0 = matched baseline), backend (torch | hf | hf-assisted | jax),
    dtype, device, max_seq_len (KV-cache capacity; longer prompts are cut from the left as
    lm-eval's HF model does, and the cut is recorded), seed, stats_file (JSONL of per-request
    statistics), max_gen_toks (when the task sets none), warmup (untimed decodes first).
    """

    def __init__(
        self,
        target: str,
        draft: str | None = None,
        k: int | str | None = None,
        backend: str = "torch",
        dtype: str = "float32",
        device: str | None = None,
        max_seq_len: int | str = 2048,
        seed: int | str = 0,
        stats_file: str | None = None,
        max_gen_toks: int | str = DEFAULT_MAX_GEN_TOKS,
        warmup: bool | str = True,
        batch_size: int | str | None = None,  # lm-eval passes these to every model; decoding is one prompt at a time
        max_batch_size: int | str | None = None,
        **unknown: Any,
    ):
        super().__init__()
        if unknown:
            raise SpecbenchError(
                f"unknown model_args for specbench: {', '.join(sorted(unknown))} (known: target, draft, k, backend, "
                "dtype, device, max_seq_len, seed, stats_file, max_gen_toks, warmup)"
            )
        from specbench.backends import load_backend

        self.k = int(k) if k not in (None, "") else (DEFAULT_K if draft else 0)
        if self.k < 0:
            raise SpecbenchError(f"k must be >= 0 (0 = baseline), got {k}")
        if self.k > 0 and not draft:
            raise SpecbenchError(f"k={self.k} needs a draft model: add draft=PATH to model_args (or k=0 for the baseline)")
        self.target_name, self.draft_name = str(target), (str(draft) if draft else None)
        self.backend_name = backend
        self.max_seq_len = int(max_seq_len)
        self.seed = int(seed)
        self.max_gen_toks = int(max_gen_toks)
        self.backend = load_backend(
            backend, target=str(target), draft=self.draft_name, dtype=dtype, device=_usable_device(device),
            max_seq_len=self.max_seq_len,
        )
        self.tokenizer = self.backend.tokenizer
        self.stats_path = Path(stats_file) if stats_file else None
        if self.stats_path is not None:
            self.stats_path.parent.mkdir(parents=True, exist_ok=True)
            self.stats_path.write_text("")  # one run per file: start empty
        self.records: list[dict[str, Any]] = []
        self._warmup_pending = _as_bool(warmup)

    # ---------------------------------------------------------------- refused request types

    def _generation_only(self, kind: str):
        raise SpecbenchError(
            f"the specbench model is generation-only and cannot answer {kind} requests; "
            "use generate_until tasks (e.g. gsm8k, humaneval)"
        )

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        self._generation_only("loglikelihood")

    def loglikelihood_rolling(self, requests) -> list[float]:
        self._generation_only("loglikelihood_rolling")

    # ---------------------------------------------------------------- generation

    @property
    def tokenizer_name(self) -> str:
        return getattr(self.tokenizer, "name_or_path", self.target_name).replace("/", "__")

    def _sampling(self, gen_kwargs: dict[str, Any]):
        from specbench.backends import SamplingConfig

        if not gen_kwargs.get("do_sample", False) or float(gen_kwargs.get("temperature", 1.0)) == 0.0:
            return SamplingConfig()
        return SamplingConfig(
            temperature=float(gen_kwargs.get("temperature", 1.0)),
            top_k=int(gen_kwargs.get("top_k") or 0),
            top_p=float(gen_kwargs.get("top_p") or 1.0),
        )

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from tqdm import tqdm

        if self._warmup_pending:
            self.backend.warmup(k_values=(None, self.k) if self.k else (None,))
            self._warmup_pending = False
        completions = []
        for request in tqdm(requests, disable=disable_tqdm, desc="specbench generate_until"):
            context, gen_kwargs = request.args
            completions.append(self._generate_one(request, context, dict(gen_kwargs)))
        return completions

    def _generate_one(self, request, context: str, gen_kwargs: dict[str, Any]) -> str:
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        max_new_tokens = int(gen_kwargs.get("max_gen_toks") or self.max_gen_toks)
        if max_new_tokens >= self.max_seq_len:
            raise SpecbenchError(f"max_gen_toks {max_new_tokens} does not fit in max_seq_len {self.max_seq_len}")
        prompt_ids = self.tokenizer.encode(context, add_special_tokens=True)
        # Keep the end of an over-long prompt, as lm-eval's HF model does; the cut is recorded.
        room = self.max_seq_len - max_new_tokens
        truncated = max(0, len(prompt_ids) - room)
        prompt_ids = prompt_ids[truncated:]
        index = len(self.records)
        result = self.backend.generate(
            prompt_ids, max_new_tokens=max_new_tokens, k=self.k or None, sampling=self._sampling(gen_kwargs),
            seed=self.seed + index, stop_strings=until,
        )
        text = self.tokenizer.decode(result.tokens, skip_special_tokens=True)
        for stop in until:
            if stop:
                text = text.split(stop)[0]
        record = {
            "index": index,
            "task": request.task_name,
            "doc_id": request.doc_id,
            "mode": "speculative" if self.k else "baseline",
            "k": self.k,
            "truncated_prompt_tokens": truncated,
            "new_tokens": len(result.tokens),
            **{key: value for key, value in result.to_dict().items() if key not in ("tokens", "margins")},
            "text": text,
        }
        self.records.append(record)
        if self.stats_path is not None:
            with self.stats_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")  # one whole line per request
        if truncated:
            log.warning("request %d: prompt cut by %d tokens to fit max_seq_len %d", index, truncated, self.max_seq_len)
        return text

    # ---------------------------------------------------------------- provenance

    def summary(self) -> dict[str, Any]:
        """Totals over all requests: tokens, time, and acceptance (accepted/drafted, tokens per target forward)."""
        total = {key: sum(r[key] for r in self.records) for key in
                 ("new_tokens", "iterations", "drafted", "accepted", "prefill_s", "decode_s", "draft_s", "verify_s")}
        total["requests"] = len(self.records)
        total["truncated_prompts"] = sum(1 for r in self.records if r["truncated_prompt_tokens"])
        total["acceptance_rate"] = total["accepted"] / total["drafted"] if total["drafted"] else None
        total["mean_accepted_length"] = (
            (total["accepted"] + total["iterations"]) / total["iterations"] if total["iterations"] else None
        )
        return total

    def get_model_info(self) -> dict[str, Any]:
        """Merged by lm-eval into results["config"]: what ran, where, and its decoding statistics."""
        return {
            "specbench": {
                "target": self.target_name,
                "draft": self.draft_name,
                "k": self.k,
                "mode": "speculative" if self.k else "baseline",
                "backend": self.backend_name,
                "max_seq_len": self.max_seq_len,
                "stats_file": str(self.stats_path) if self.stats_path else None,
                "environment": self.backend.environment(),
                "summary": self.summary(),
            }
        }


def register() -> None:
    """Register SpecbenchLM as lm-eval's `specbench` model (idempotent)."""
    import lm_eval.models  # noqa: F401  (lm-eval's own models first: get_model only loads them into an empty registry)
    from lm_eval.api.registry import model_registry, register_model

    if model_registry.get("specbench", None) is not SpecbenchLM:
        register_model("specbench")(SpecbenchLM)


# Importing this module (lm-eval's entry point for the name, or `specbench-lm-eval`) registers the model.
register()
