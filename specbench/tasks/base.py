"""What every task gives the workflow: prompts to decode, a scorer, and an aggregate with CIs.

The workflow decodes each `Request` itself (so that it controls timing per prompt),
then calls `task.score(doc_id, completion)` and finally `task.aggregate(scores)`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass(frozen=True)
class Request:
    """One prompt to decode: generation stops at any of `stop_strings` or after `max_new_tokens`."""

    doc_id: int
    prompt: str
    stop_strings: list[str]
    max_new_tokens: int


@dataclass
class SampleScore:
    """The verdict on one completion.

    `score` is the task's headline metric for this sample (0 or 1); `metrics` holds every
    per-sample metric the task reports (GSM8K: exact match under both of lm-eval's filters),
    keyed like lm-eval's results ("exact_match,strict-match").
    """

    doc_id: int
    score: float
    extracted: str | None
    target: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def file_fingerprint(path: str | Path) -> dict[str, str]:
    """Path and sha256 of a data file, so a result says exactly which data it was scored on."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"path": str(Path(path).resolve()), "sha256": digest}


class Task(ABC):
    """A benchmark: its requests, how one completion is scored, and how scores add up.

    Attributes set by every task:
      name: the specbench task name ("gsm8k", "humaneval", "synthetic-arith");
      version: the task definition's version (lm-eval's `metadata.version` for lm-eval tasks);
      source: "lm-eval" (lm-eval's own task, data from the hub), "offline" (the same
              definition, data from local files) or "synthetic" (generated here);
      metric_name: the headline metric, a key of `SampleScore.metrics`.
    """

    name: ClassVar[str]
    version: str
    source: str
    metric_name: str

    @abstractmethod
    def requests(self) -> list[Request]:
        """The prompts, in document order (the first `limit` documents)."""

    @abstractmethod
    def score(self, doc_id: int, completion: str) -> SampleScore:
        """Score the model's `completion` (generated text only, prompt excluded) of document `doc_id`."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Everything needed to say what was evaluated: name, version, source, data, few-shot setting."""

    def aggregate(self, scores: Sequence[SampleScore]) -> dict[str, dict[str, float]]:
        """Per metric: the mean over samples with its 95% CI, {"value", "ci_low", "ci_high", "n"}.

        0/1 scores get the Wilson score interval, others a percentile bootstrap
        (both from `specbench.metrics.proportion`, so the report and the tasks agree).
        """
        from specbench.metrics import proportion

        names = [self.metric_name] + sorted({name for s in scores for name in s.metrics} - {self.metric_name})
        out: dict[str, dict[str, float]] = {}
        for name in names:
            estimate = proportion([s.metrics[name] for s in scores if name in s.metrics])
            out[name] = {"value": estimate.value, "ci_low": estimate.ci_low, "ci_high": estimate.ci_high, "n": estimate.n}
        return out
