"""GSM8K through lm-eval's own task definition, from the hub or from local files.

Prompts, few-shot examples (sampled from the train split with lm-eval's default
few-shot seed 1234, exactly as `lm_eval --tasks gsm8k` does), stop sequences, both
answer filters (strict-match: the number after "#### "; flexible-extract: the last
number in the text) and the exact-match metric all come from lm-eval's objects, so
a score here is the score lm-eval would give the same completion.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from specbench.errors import SpecbenchError
from specbench.tasks.base import Request, SampleScore, Task, file_fingerprint
from specbench.tasks.lm_eval_offline import (
    OFFLINE_TASK_NAMES,
    default_gsm8k_train,
    read_gsm8k,
    write_offline_tasks,
)

FEWSHOT_SEED = 1234  # lm-eval's default --fewshot_random_seed
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default when a task does not set max_gen_toks
STRICT_FILTER = "strict-match"


def _final_answer(solution: str) -> str | None:
    return solution.split("####")[-1].strip() if "####" in solution else None


class GSM8KTask(Task):
    name = "gsm8k"
    metric_name = f"exact_match,{STRICT_FILTER}"

    def __init__(
        self,
        *,
        data_files: dict[str, str] | None = None,
        limit: int | None = None,
        num_fewshot: int | None = None,
        max_new_tokens: int | None = None,
    ):
        self.limit = limit
        self.data: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        if data_files is not None:
            unknown = set(data_files) - {"test", "train"}
            if unknown or "test" not in data_files:
                raise SpecbenchError(
                    f"gsm8k data_files takes keys 'test' (required) and 'train'; got {sorted(data_files)}"
                )
            test_path = data_files["test"]
            train_path = data_files.get("train") or str(default_gsm8k_train(test_path))
            read_gsm8k(test_path)  # clear errors (file, line) before lm-eval sees the data
            if num_fewshot != 0:
                if not os.path.isfile(train_path):
                    raise SpecbenchError(
                        f"gsm8k few-shot examples come from the train split: data file not found: {train_path} "
                        "(give data_files['train'] or num_fewshot=0)"
                    )
                read_gsm8k(train_path)
                self.data["train"] = file_fingerprint(train_path)
            else:
                train_path = test_path  # never sampled from with zero shots
            self.data["test"] = file_fingerprint(test_path)
            metadata = {"gsm8k_test": test_path, "gsm8k_train": train_path}
            self.source = "offline"
        else:
            self.source = "lm-eval"
        self._lm_task = self._load_lm_eval_task(metadata, num_fewshot)
        self.lm_eval_task_name = self._lm_task.config.task
        self.version = str(self._lm_task.VERSION)
        self.num_fewshot = self._lm_task.get_config("num_fewshot")

        generation = dict(self._lm_task.config.generation_kwargs or {})
        self.stop_strings = list(generation.get("until", []))
        self.max_new_tokens = max_new_tokens or int(generation.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
        self._lm_task.build_all_requests(limit=limit, rank=0, world_size=1)
        self._instances = {instance.doc_id: instance for instance in self._lm_task.instances}

    def _load_lm_eval_task(self, metadata: dict[str, Any], num_fewshot: int | None):
        try:
            import lm_eval  # noqa: F401
            from lm_eval.tasks import TaskManager
        except ImportError:
            raise SpecbenchError("the gsm8k task needs lm-eval: pip install 'specbench[eval]'") from None
        logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its per-task chatter is not ours to show
        with tempfile.TemporaryDirectory(prefix="specbench-lm-eval-tasks-") as task_dir:
            if self.source == "offline":
                manager = TaskManager(include_path=str(write_offline_tasks(task_dir)), include_defaults=False, metadata=metadata)
                task_name = OFFLINE_TASK_NAMES["gsm8k"]
            else:
                manager = TaskManager()
                task_name = "gsm8k"
            task = manager.load([task_name])["tasks"][task_name]
        # The same overrides lm-eval's evaluator applies before building requests.
        if num_fewshot is not None:
            task.set_config(key="num_fewshot", value=num_fewshot)
        task.set_fewshot_seed(seed=FEWSHOT_SEED)
        return task

    def requests(self) -> list[Request]:
        return [
            Request(doc_id=doc_id, prompt=instance.args[0], stop_strings=list(self.stop_strings),
                    max_new_tokens=self.max_new_tokens)
            for doc_id, instance in sorted(self._instances.items())
        ]

    def score(self, doc_id: int, completion: str) -> SampleScore:
        from lm_eval.api.instance import Instance

        if doc_id not in self._instances:
            raise SpecbenchError(f"gsm8k has no document {doc_id} among the {len(self._instances)} loaded")
        original = self._instances[doc_id]
        probe = Instance(
            request_type=original.request_type,
            doc=original.doc,
            arguments=original.arguments,
            idx=original.idx,
            metadata=(original.task_name, original.doc_id, original.repeats),
            resps=[completion],
        )
        metrics: dict[str, float] = {}
        for ensemble in self._lm_task._filters:  # lm-eval's filter pipelines, in its order
            ensemble.apply([probe])
            result = self._lm_task.process_results(probe.doc, [probe.filtered_resps[ensemble.name]])
            for metric, value in result.items():
                metrics[f"{metric},{ensemble.name}"] = float(value)
        extracted = probe.filtered_resps.get(STRICT_FILTER)
        return SampleScore(
            doc_id=doc_id,
            score=metrics[self.metric_name],
            extracted=None if extracted in (None, "[invalid]") else str(extracted),
            target=_final_answer(original.doc["answer"]),
            metrics=metrics,
            details={name: value for name, value in probe.filtered_resps.items()},
        )

    def describe(self) -> dict[str, Any]:
        import lm_eval

        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "lm_eval_task": self.lm_eval_task_name,
            "lm_eval_version": lm_eval.__version__,
            "num_fewshot": self.num_fewshot,
            "fewshot_seed": FEWSHOT_SEED,
            "limit": self.limit,
            "n_documents": len(self._instances),
            "stop_strings": self.stop_strings,
            "max_new_tokens": self.max_new_tokens,
            "metric": self.metric_name,
            "data": self.data,
        }
