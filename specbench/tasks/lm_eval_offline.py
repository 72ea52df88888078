"""lm-eval's GSM8K and HumanEval tasks, fed from local files instead of the hub.

`write_offline_tasks(dir)` writes two lm-eval task YAMLs into `dir` (give it to lm-eval
as `--include_path`; `specbench-lm-eval` does that by itself):

  gsm8k_offline      `include:`s the installed lm-eval gsm8k.yaml, so prompt template,
                     few-shot setting, stop sequences, filters, metric and version are
                     lm-eval's own; only the dataset comes from `custom_dataset` below.
  humaneval_offline  lm-eval's humaneval.yaml read as data and copied field by field,
                     except the two `!function`s that live in its utils.py: that module
                     loads the hub metric `code_eval` at import time and so cannot even be
                     imported offline. They are replaced by `build_predictions` (same
                     definition: prompt + completion) and `pass_at_k` (our sandbox).

The data files are passed through lm-eval's task metadata (`--metadata` JSON, which lm-eval
hands to `custom_dataset`): `gsm8k_test`, `gsm8k_train` (few-shot examples come from the
train split; by default `train.jsonl` beside the test file) and `humaneval_file`.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from typing import Any

import yaml

from specbench.errors import SpecbenchError

OFFLINE_TASK_NAMES = {"gsm8k": "gsm8k_offline", "humaneval": "humaneval_offline"}


def lm_eval_task_yaml(relative: str) -> Path:
    """Path of a task YAML shipped with the installed lm-eval (e.g. "gsm8k/gsm8k.yaml")."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise SpecbenchError("lm-eval is not installed: pip install 'specbench[eval]'")
    path = Path(spec.submodule_search_locations[0]) / "tasks" / relative
    if not path.is_file():
        raise SpecbenchError(f"the installed lm-eval has no task file {relative} (looked for {path})")
    return path


class _FunctionTag(str):
    """A `!function module.name` reference kept as text."""


def _data_loader() -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: _FunctionTag(loader.construct_scalar(node)))
    return Loader


def read_task_yaml(path: Path) -> dict[str, Any]:
    """A task YAML as plain data: `!function` references stay strings and nothing is imported."""
    with path.open("rb") as handle:
        return yaml.load(handle, Loader=_data_loader())  # noqa: S506 (a SafeLoader subclass)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON Lines file (gzip if it ends in .gz); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise SpecbenchError(f"data file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    records = []
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise SpecbenchError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
                if not isinstance(record, dict):
                    raise SpecbenchError(f"{path}, line {number}: expected a JSON object")
                records.append(record)
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise SpecbenchError(f"{path}: cannot read ({error})") from None
    return records


def require_fields(records: list[dict[str, Any]], fields: tuple[str, ...], path: str | Path) -> None:
    """Every record has every field, else an error naming file, record (= line for JSONL) and field."""
    for number, record in enumerate(records, start=1):
        missing = [name for name in fields if name not in record]
        if missing:
            raise SpecbenchError(f"{path}, record {number}: missing field(s) {', '.join(missing)}")


def read_gsm8k(path: str | Path) -> list[dict[str, Any]]:
    """GSM8K upstream JSONL: `question`, `answer` (worked solution ending in `#### N`)."""
    records = read_jsonl(path)
    require_fields(records, ("question", "answer"), path)
    return records


def read_humaneval(path: str | Path) -> list[dict[str, Any]]:
    """HumanEval upstream JSONL(.gz): task_id, prompt, canonical_solution, test, entry_point."""
    records = read_jsonl(path)
    require_fields(records, ("task_id", "prompt", "canonical_solution", "test", "entry_point"), path)
    return records


def default_gsm8k_train(test_path: str | Path) -> Path:
    """Where the upstream layout keeps the train split: beside the test file."""
    return Path(test_path).with_name("train.jsonl")


# ----------------------------------------------------------------------------- lm-eval hooks


def _metadata_path(metadata: dict[str, Any], key: str, task: str) -> str:
    if not metadata.get(key):
        raise SpecbenchError(
            f"{task} needs its data file: pass --metadata '{{\"{key}\": \"PATH\"}}' to lm-eval"
        )
    return str(metadata[key])


def gsm8k_dataset(**metadata: Any):
    """custom_dataset for gsm8k_offline: test (and train, for few-shot examples) from local JSONL."""
    import datasets

    test_path = _metadata_path(metadata, "gsm8k_test", "gsm8k_offline")
    train_path = metadata.get("gsm8k_train") or default_gsm8k_train(test_path)
    if not Path(train_path).is_file():
        raise SpecbenchError(
            f"gsm8k_offline takes its few-shot examples from the train split, not found at {train_path}: "
            "pass gsm8k_train in --metadata"
        )
    return datasets.DatasetDict(
        test=datasets.Dataset.from_list(read_gsm8k(test_path)),
        train=datasets.Dataset.from_list(read_gsm8k(train_path)),
    )


def humaneval_dataset(**metadata: Any):
    """custom_dataset for humaneval_offline: the upstream HumanEval.jsonl.gz as the test split."""
    import datasets

    path = _metadata_path(metadata, "humaneval_file", "humaneval_offline")
    return datasets.DatasetDict(test=datasets.Dataset.from_list(read_humaneval(path)))


def build_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """HumanEval's filter: the program is the prompt (signature + docstring) followed by the completion."""
    return [[doc["prompt"] + completion for completion in completions] for completions, doc in zip(resps, docs)]


def humaneval_program(prediction: str, reference: str) -> str:
    """What code_eval runs: the candidate, a newline, then the test code and its `check(entry_point)` call."""
    return prediction + "\n" + reference


def pass_at_k(references: list[str], predictions: list[list[str]], k: list[int] | int | None = None) -> dict[str, float]:
    """pass@k of one problem, as lm-eval's code_eval reports it: {"pass@K": value}.

    With n samples of which c pass, pass@k = 1 - C(n-c, k) / C(n, k) (Chen et al. 2021);
    for the greedy n = 1, k = 1 case that is simply 1 if the sample passes, else 0.
    lm-eval has already asked for --confirm_run_unsafe_code (the task is marked unsafe_code).
    """
    from math import comb

    from specbench.tasks.sandbox import run_python

    ks = [1] if k is None else [k] if isinstance(k, int) else list(k)
    scores: dict[str, list[float]] = {f"pass@{kk}": [] for kk in ks}
    for reference, candidates in zip(references, predictions):
        n = len(candidates)
        c = sum(run_python(humaneval_program(candidate, reference), allow_code_execution=True).passed
                for candidate in candidates)
        for kk in ks:
            value = 1.0 if n - c < kk else 1.0 - comb(n - c, kk) / comb(n, kk)
            scores[f"pass@{kk}"].append(value)
    return {name: sum(values) / len(values) for name, values in scores.items()}


def _humaneval_offline_config() -> dict[str, Any]:
    upstream = read_task_yaml(lm_eval_task_yaml("humaneval/humaneval.yaml"))
    config = {key: value for key, value in upstream.items() if key not in ("dataset_path", "dataset_name")}
    config["task"] = OFFLINE_TASK_NAMES["humaneval"]
    config["custom_dataset"] = _FunctionTag(f"{__name__}.humaneval_dataset")
    for metric in config["metric_list"]:
        if str(metric["metric"]) == "utils.pass_at_k":
            metric["metric"] = _FunctionTag(f"{__name__}.pass_at_k")
    for pipeline in config["filter_list"]:
        for step in pipeline["filter"]:
            if str(step.get("filter_fn")) == "utils.build_predictions":
                step["filter_fn"] = _FunctionTag(f"{__name__}.build_predictions")
    leftover = [str(v) for v in _walk(config) if isinstance(v, _FunctionTag) and not v.startswith(__name__)]
    if leftover:
        raise SpecbenchError(f"lm-eval's humaneval.yaml references functions specbench cannot replace: {leftover}")
    return config


def _walk(value: Any):
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_FunctionTag, lambda dumper, value: dumper.represent_scalar("!function", str(value)))


def write_offline_tasks(directory: str | Path) -> Path:
    """Write gsm8k_offline.yaml and humaneval_offline.yaml into `directory` (for --include_path)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    gsm8k = {
        "include": str(lm_eval_task_yaml("gsm8k/gsm8k.yaml")),
        "task": OFFLINE_TASK_NAMES["gsm8k"],
        "custom_dataset": _FunctionTag(f"{__name__}.gsm8k_dataset"),
    }
    for name, config in (("gsm8k_offline.yaml", gsm8k), ("humaneval_offline.yaml", _humaneval_offline_config())):
        text = "# written by specbench.tasks.lm_eval_offline from the installed lm-eval; do not edit\n"
        text += yaml.dump(config, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
        temporary = directory / f".{name}.tmp"
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(directory / name)
    return directory
