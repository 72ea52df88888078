"""synthetic-arith: held-out arithmetic word problems in GSM8K's format, scored by exact match.

Problems come from `specbench.toy.corpus.generate_problems(n, HELD_OUT_SEED + seed)`:
the toy pair never trains on the held-out seed, so seed 0 (the default) evaluates it on
problems it has not seen. The prompt is lm-eval gsm8k's zero-shot template, and the
answer is the number after the first "####" (lm-eval's strict-match), compared exactly.
"""

from __future__ import annotations

from typing import Any

from specbench.errors import SpecbenchError
from specbench.tasks.base import Request, SampleScore, Task

VERSION = "1.0"
DEFAULT_PROBLEMS = 500  # accuracy moves by ~0.1 between seeds at 200 problems (toy-pair notes)
STOP_STRINGS = ["Question:", "</s>", "<|im_end|>"]  # lm-eval gsm8k's `until`
MAX_NEW_TOKENS = 128  # the longest worked solution (3 steps) is well under this


class SyntheticArithTask(Task):
    name = "synthetic-arith"
    version = VERSION
    source = "synthetic"
    metric_name = "exact_match"

    def __init__(self, *, limit: int | None = None, num_fewshot: int | None = None, seed: int = 0,
                 max_new_tokens: int | None = None):
        from specbench.toy import corpus

        if num_fewshot not in (None, 0):
            raise SpecbenchError(f"synthetic-arith is zero-shot; num_fewshot={num_fewshot} is not supported")
        if limit is not None and limit < 0:
            raise SpecbenchError(f"limit must be >= 0, got {limit}")
        self._corpus = corpus
        self.seed = seed
        self.problem_seed = corpus.HELD_OUT_SEED + seed
        self.problems = corpus.generate_problems(DEFAULT_PROBLEMS if limit is None else limit, self.problem_seed)
        self.max_new_tokens = max_new_tokens or MAX_NEW_TOKENS

    def requests(self) -> list[Request]:
        return [
            Request(doc_id=doc_id, prompt=self._corpus.format_prompt(problem["question"]),
                    stop_strings=list(STOP_STRINGS), max_new_tokens=self.max_new_tokens)
            for doc_id, problem in enumerate(self.problems)
        ]

    def score(self, doc_id: int, completion: str) -> SampleScore:
        if not 0 <= doc_id < len(self.problems):
            raise SpecbenchError(f"synthetic-arith has no document {doc_id} among the {len(self.problems)} generated")
        target = self._corpus.extract_answer(self.problems[doc_id]["answer"])
        extracted = self._corpus.extract_answer(completion)
        value = 1.0 if extracted is not None and extracted == target else 0.0
        return SampleScore(doc_id=doc_id, score=value, extracted=extracted, target=target,
                           metrics={self.metric_name: value})

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "num_fewshot": 0,
            "seed": self.seed,
            "problem_seed": self.problem_seed,
            "n_documents": len(self.problems),
            "stop_strings": list(STOP_STRINGS),
            "max_new_tokens": self.max_new_tokens,
            "metric": self.metric_name,
        }
