"""HumanEval: lm-eval's task definition, scored by pass@1 in specbench's sandbox.

lm-eval's humaneval task imports a hub metric (`code_eval`) when its utils module loads,
so it cannot run offline; here its YAML is read as data (prompt template, target
template, stop sequences, max_gen_toks, version) and the scoring is ours: the program
`prompt + completion + "\\n" + test + "\\ncheck(entry_point)"` passes when it exits 0
within the time limit, which is what code_eval checks.
"""

from __future__ import annotations

from typing import Any

from specbench.errors import SpecbenchError
from specbench.tasks.base import Request, SampleScore, Task, file_fingerprint
from specbench.tasks.lm_eval_offline import humaneval_program, lm_eval_task_yaml, read_humaneval, read_task_yaml
from specbench.tasks.sandbox import SandboxLimits, run_python

OPT_IN_HINT = (
    "humaneval executes model-generated code; opt in with allow_code_execution=True "
    "(`specbench run`: allow_code_execution in the config; lm-eval: --confirm_run_unsafe_code)"
)


def _render(template: str, doc: dict[str, Any]) -> str:
    from lm_eval.utils import apply_template

    return apply_template(template, doc)


class HumanEvalTask(Task):
    name = "humaneval"
    metric_name = "pass@1"

    def __init__(
        self,
        *,
        data_files: dict[str, str] | None = None,
        limit: int | None = None,
        num_fewshot: int | None = None,
        allow_code_execution: bool = False,
        max_new_tokens: int | None = None,
        limits: SandboxLimits = SandboxLimits(),
    ):
        if not allow_code_execution:
            raise SpecbenchError(OPT_IN_HINT)
        if num_fewshot not in (None, 0):
            raise SpecbenchError(f"humaneval is zero-shot in lm-eval; num_fewshot={num_fewshot} is not supported")
        self.definition = read_task_yaml(lm_eval_task_yaml("humaneval/humaneval.yaml"))
        self.version = str(self.definition.get("metadata", {}).get("version"))
        self.limit = limit
        self.limits = limits
        self.data: dict[str, Any] = {}
        if data_files is not None:
            if set(data_files) != {"test"}:
                raise SpecbenchError(f"humaneval data_files takes one key, 'test'; got {sorted(data_files)}")
            self.docs = read_humaneval(data_files["test"])
            self.data["test"] = file_fingerprint(data_files["test"])
            self.source = "offline"
        else:
            import datasets

            dataset = datasets.load_dataset(self.definition["dataset_path"], split=self.definition["test_split"])
            self.docs = [dict(doc) for doc in dataset]
            self.source = "lm-eval"
        if limit is not None:
            self.docs = self.docs[:limit]
        generation = self.definition["generation_kwargs"]
        self.stop_strings = list(generation["until"])
        self.max_new_tokens = max_new_tokens or int(generation["max_gen_toks"])

    def requests(self) -> list[Request]:
        template = self.definition["doc_to_text"]
        return [
            Request(doc_id=doc_id, prompt=_render(template, doc), stop_strings=list(self.stop_strings),
                    max_new_tokens=self.max_new_tokens)
            for doc_id, doc in enumerate(self.docs)
        ]

    def program(self, doc_id: int, completion: str) -> str:
        """The program whose exit status decides pass@1 (lm-eval's build_predictions + code_eval)."""
        doc = self.docs[doc_id]
        return humaneval_program(_render(self.definition["doc_to_text"], doc) + completion,
                                 _render(self.definition["doc_to_target"], doc))

    def score(self, doc_id: int, completion: str) -> SampleScore:
        if not 0 <= doc_id < len(self.docs):
            raise SpecbenchError(f"humaneval has no document {doc_id} among the {len(self.docs)} loaded")
        result = run_python(self.program(doc_id, completion), limits=self.limits, allow_code_execution=True)
        value = 1.0 if result.passed else 0.0
        return SampleScore(
            doc_id=doc_id,
            score=value,
            extracted=None,
            target=None,
            metrics={self.metric_name: value},
            details={
                "task_id": self.docs[doc_id]["task_id"],
                "status": result.status,
                "returncode": result.returncode,
                "duration_s": result.duration_s,
                "stderr_tail": result.stderr[-1000:],
                "sandbox": result.protections,
            },
        )

    def describe(self) -> dict[str, Any]:
        import lm_eval

        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "lm_eval_task": "humaneval",
            "lm_eval_version": lm_eval.__version__,
            "num_fewshot": 0,
            "limit": self.limit,
            "n_documents": len(self.docs),
            "stop_strings": self.stop_strings,
            "max_new_tokens": self.max_new_tokens,
            "metric": self.metric_name,
            "sandbox_limits": self.limits.__dict__,
            "data": self.data,
        }
