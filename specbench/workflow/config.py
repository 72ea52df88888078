"""Sweep configs: load, validate (schema, then what a schema cannot see), resolve paths.

`load_config(path)` is the single gate: the Snakefile calls it before any rule is
defined and every job calls it again, so a bad config stops everything with one line
naming the file and the key (`configs/x.yaml: pairs[0].draft: ...`), and nothing runs.

Path rules: inputs (`paths.data_dir`, task data files, local checkpoints) are relative
to the config file's folder, so a config can point at data beside the project
(`../../shared/data`) whatever the working directory; outputs and caches (`results`,
`models`, `logs`, `reports`, `hub_cache`) are relative to the workflow's working
directory, so jobs on other hosts of a shared filesystem find them at the same
relative place. No absolute path of the submitting host is baked into a job.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from specbench.errors import SpecbenchError

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")

# Where a divergence between speculative and baseline greedy tokens still counts as a
# numerical near-tie, as a top-1/top-2 logit margin. Verification runs the target on
# k+1 tokens with other kernels (other reduction orders) than one-token decoding, so
# logits differ by a few roundings of the logit magnitude (~10-30 for real LMs).
# One rounding at logit 30: fp32 2^-24*30 ~ 2e-6, fp16 2^-11*30 ~ 0.015,
# bf16 2^-8*30 ~ 0.12. The bounds allow ~50x (fp32) and ~2-4 roundings (fp16, bf16);
# a flip needs both computations' margins under the bound (a perturbation of size d
# can only swap two logits closer than 2d), so a bug that picks a confident wrong
# token is never excused as a near-tie.
DEFAULT_NEAR_TIE_BOUNDS = {"float32": 1e-4, "float16": 0.05, "bfloat16": 0.25}

DEFAULT_RESOURCES = {
    "prepare": {"mem_mb": 4000, "runtime": 30},
    "run": {"mem_mb": 8000, "runtime": 60},  # threads: see workflow/rules/common.smk
    "analysis": {"mem_mb": 2000, "runtime": 15},
}

_PRIVATE_KEYS = ("_path",)  # added by load_config, not part of the user's config


def load_config(path: str | os.PathLike, *, check_models: bool = True) -> dict[str, Any]:
    """Read, validate and complete the config at `path`; SpecbenchError on any problem.

    The returned dict has schema defaults filled in and `_path` (the file as given).
    `check_models=False` skips the model folders and vocabularies: jobs on cluster hosts
    load only their own pair, and a missing checkpoint there must fail that job alone.
    """
    path = Path(path)
    data = _read_yaml(path)
    return validate_config(data, path, check_models=check_models)


def validate_config(data: Any, path: str | os.PathLike, *, check_models: bool = True) -> dict[str, Any]:
    """Check `data` (a config as read from `path`) and return it completed with defaults."""
    path = Path(path)
    if not isinstance(data, dict):
        raise SpecbenchError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    _check_schema(data, path)
    config = _with_defaults(copy.deepcopy(data))
    config["_path"] = str(path)
    _check_semantics(config, path, check_models)
    return config


# --- reading and the schema ---------------------------------------------------------


def _read_yaml(path: Path) -> Any:
    import yaml

    if not path.is_file():
        raise SpecbenchError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SpecbenchError(f"{path}:{where}: invalid YAML: {problem}") from None
    except UnicodeDecodeError as error:
        raise SpecbenchError(f"{path}: not UTF-8 text ({error.reason})") from None


def load_schema() -> dict[str, Any]:
    import yaml

    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def key_path(parts: Iterable[Any]) -> str:
    """['pairs', 0, 'draft'] -> 'pairs[0].draft'."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _schema_error_line(error) -> str:
    """One readable line for a jsonschema ValidationError: the key, then what is wrong."""
    where = list(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return f"key {key_path(where + [extra[0]])}: unknown key (allowed here: {', '.join(allowed)})"
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        return f"key {key_path(where + [missing[0]])}: required key is missing"
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"key {key_path(where)}: expected {expected}, got {type(error.instance).__name__} {error.instance!r}"
    if error.validator == "enum":
        return f"key {key_path(where)}: {error.instance!r} is not one of {', '.join(map(repr, error.validator_value))}"
    if error.validator == "pattern":
        hint = error.schema.get("description", f"must match {error.validator_value}")
        return f"key {key_path(where)}: {error.instance!r} is not valid ({hint})"
    return f"key {key_path(where)}: {error.message}"


def _check_schema(data: dict[str, Any], path: Path) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    if errors:
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise SpecbenchError(f"{path}: {_schema_error_line(errors[0])}{more}")


def _with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    config.setdefault("seed", 0)
    config.setdefault("description", "")
    paths = config.setdefault("paths", {})
    for key in ("results", "models", "logs", "reports"):
        paths.setdefault(key, key)
    paths.setdefault("data_dir", ".")
    paths.setdefault("hub_cache", None)
    sweep = config["sweep"]
    sweep.setdefault("top_k", 0)
    sweep.setdefault("top_p", 1.0)
    sweep["temperatures"] = [float(t) for t in sweep["temperatures"]]
    for task in config["tasks"]:
        task.setdefault("num_fewshot", None)
        task.setdefault("data_files", {})
        task.setdefault("allow_code_execution", False)
    equivalence = config.setdefault("equivalence", {})
    equivalence["near_tie_bounds"] = {**DEFAULT_NEAR_TIE_BOUNDS, **equivalence.get("near_tie_bounds", {})}
    equivalence.setdefault("exact_dtypes", ["float32"])
    sampling = equivalence.setdefault("sampling_test", {})
    sampling.setdefault("enabled", False)
    resources = config.setdefault("resources", {})
    for rule, defaults in DEFAULT_RESOURCES.items():
        resources[rule] = {**defaults, **resources.get(rule, {})}
    return config


# --- checks a schema cannot express -------------------------------------------------


def _check_semantics(config: dict[str, Any], path: Path, check_models: bool = True) -> None:
    def fail(key: str, message: str) -> None:
        raise SpecbenchError(f"{path}: key {key}: {message}")

    _check_unique([p["name"] for p in config["pairs"]], "pairs", "pair name", fail)
    _check_unique([t["name"] for t in config["tasks"]], "tasks", "task name", fail)

    for index, pair in enumerate(config["pairs"]):
        key = f"pairs[{index}]"
        if "toy" in pair:
            if "target" in pair or "draft" in pair:
                fail(key, "a pair is either `toy` (trained here) or `target` + `draft`, not both")
            continue
        for role in ("target", "draft"):
            if role not in pair:
                fail(f"{key}.{role}", "required key is missing (or give `toy: {}` for the offline toy pair)")
            if check_models:
                _check_model_spec(config, pair[role], f"{key}.{role}", fail)
        if not check_models:
            continue
        target_dir, draft_dir = model_folder(config, pair["target"]), model_folder(config, pair["draft"])
        if target_dir is not None and draft_dir is not None:
            problem = vocabulary_mismatch(target_dir, draft_dir)
            if problem:
                fail(f"{key}.draft", f"draft vocabulary differs from the target's: {problem}")

    known_tasks = _known_task_names()
    data_dir = input_path(config, config["paths"]["data_dir"])
    for index, task in enumerate(config["tasks"]):
        key = f"tasks[{index}]"
        if known_tasks is not None and task["name"] not in known_tasks:
            fail(f"{key}.name", f"unknown task {task['name']!r}; known tasks: {', '.join(sorted(known_tasks))}")
        for split, relative in task["data_files"].items():
            file = data_dir / os.path.expanduser(relative)
            if not file.is_file():
                fail(f"{key}.data_files.{split}", f"data file not found: {file}")
        if task["name"] == "humaneval" and not task["allow_code_execution"]:
            fail(f"{key}.allow_code_execution", "humaneval runs generated code; set it to true to opt in (sandboxed)")

    sampling = config["equivalence"]["sampling_test"]
    if sampling["enabled"]:
        for needed in ("pair", "backend", "k", "temperature", "samples"):
            if needed not in sampling:
                fail(f"equivalence.sampling_test.{needed}", "required when the sampling test is enabled")
        if sampling["pair"] not in {p["name"] for p in config["pairs"]}:
            fail("equivalence.sampling_test.pair", f"no pair named {sampling['pair']!r} in pairs")


def _check_unique(names: list[str], key: str, what: str, fail) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            fail(f"{key}[{index}].name", f"duplicate {what} {name!r}")
        seen.add(name)


def _check_model_spec(config: dict[str, Any], spec: dict[str, Any], key: str, fail) -> None:
    if ("path" in spec) == ("id" in spec):
        fail(key, "give either `path` (a local checkpoint folder) or `id` + `revision` (a hub model)")
    if "path" in spec:
        if "revision" in spec:
            fail(f"{key}.revision", "a revision only applies to a hub `id`, not to a local `path`")
        folder = input_path(config, spec["path"])
        if not (folder / "config.json").is_file():
            what = "folder not found" if not folder.exists() else "no config.json in it"
            fail(f"{key}.path", f"model path {folder}: {what}")
        return
    if "revision" not in spec:
        fail(f"{key}.revision", "name the hub revision (a commit hash) so that results are reproducible")
    if hub_offline() and model_folder(config, spec) is None:
        fail(f"{key}.id", f"{spec['id']}@{spec['revision']} is not in the hub cache and HF_HUB_OFFLINE is set")


def _known_task_names() -> set[str] | None:
    try:
        from specbench.tasks import TASKS
    except ImportError:  # tasks package not installed: the job reports it
        return None
    return set(TASKS)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


# --- models and vocabularies --------------------------------------------------------


def model_folder(config: dict[str, Any], spec: dict[str, Any]) -> Path | None:
    """The local folder of a model spec: its `path`, or its cached hub snapshot (None if not cached)."""
    if "path" in spec:
        return input_path(config, spec["path"])
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(spec["id"], "config.json", cache_dir=hub_cache_dir(config), revision=spec["revision"])
    return Path(cached).parent if isinstance(cached, str) else None


def tokenizer_vocabulary(folder: Path) -> dict[str, int]:
    """token -> id of the tokenizer saved in `folder` (tokenizer.json, else via transformers)."""
    tokenizer_file = folder / "tokenizer.json"
    if tokenizer_file.is_file():
        with open(tokenizer_file, encoding="utf-8") as handle:
            data = json.load(handle)
        vocab = data.get("model", {}).get("vocab", {})
        if isinstance(vocab, list):  # unigram models store [piece, score] pairs in id order
            vocab = {piece: index for index, (piece, _score) in enumerate(vocab)}
        vocab = dict(vocab)
        for added in data.get("added_tokens", []):
            vocab[added["content"]] = added["id"]
        return vocab
    from transformers import AutoTokenizer

    return dict(AutoTokenizer.from_pretrained(folder).get_vocab())


def vocabulary_mismatch(target_dir: Path, draft_dir: Path) -> str | None:
    """Why the draft cannot propose tokens for the target, or None if the vocabularies agree.

    Token ids must mean the same strings in both; the embedding matrices may still differ
    in size (Qwen2.5 pads them to different multiples), which the engine handles.
    """
    target_vocab, draft_vocab = tokenizer_vocabulary(target_dir), tokenizer_vocabulary(draft_dir)
    if target_vocab == draft_vocab:
        return None
    if len(target_vocab) != len(draft_vocab):
        return f"{len(draft_vocab)} tokens in {draft_dir} vs {len(target_vocab)} in {target_dir}"
    differing = sorted(set(target_vocab.items()) ^ set(draft_vocab.items()), key=lambda item: item[1])
    token, token_id = differing[0]
    return f"token id {token_id} ({token!r}) differs between {draft_dir} and {target_dir}"


# --- derived paths and identity -----------------------------------------------------


def input_path(config: dict[str, Any], value: str) -> Path:
    """An input path from the config: relative to the config file's folder."""
    value = os.path.expanduser(os.path.expandvars(value))
    if os.path.isabs(value):
        return Path(value)
    return Path(os.path.normpath(Path(config["_path"]).parent / value))


def hub_cache_dir(config: dict[str, Any]) -> str | None:
    cache = config["paths"]["hub_cache"]
    return os.path.expanduser(os.path.expandvars(cache)) if cache else None


def results_dir(config: dict[str, Any]) -> Path:
    return Path(config["paths"]["results"]) / config["name"]


def logs_dir(config: dict[str, Any]) -> Path:
    return Path(config["paths"]["logs"]) / config["name"]


def reports_dir(config: dict[str, Any]) -> Path:
    return Path(config["paths"]["reports"]) / config["name"]


def pair_dir(config: dict[str, Any], pair_name: str) -> Path:
    """Where the pair's prepared models (toy pair, manifest) live."""
    return Path(config["paths"]["models"]) / pair_name


def find(config: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    """The entry of `section` ('pairs' or 'tasks') called `name`."""
    for entry in config[section]:
        if entry["name"] == name:
            return entry
    known = ", ".join(entry["name"] for entry in config[section])
    raise SpecbenchError(f"{config['_path']}: no entry named {name!r} in {section} (have: {known})")


def task_data_files(config: dict[str, Any], task: dict[str, Any]) -> dict[str, str]:
    data_dir = input_path(config, config["paths"]["data_dir"])
    return {split: str(data_dir / os.path.expanduser(rel)) for split, rel in task["data_files"].items()}


def config_hash(config: dict[str, Any]) -> str:
    """First 12 hex digits of sha256 over the config's canonical JSON (defaults filled in)."""
    public = {key: value for key, value in config.items() if key not in _PRIVATE_KEYS}
    canonical = json.dumps(public, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]
