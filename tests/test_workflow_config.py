"""Config validation: every shipped config loads; each kind of mistake is one line naming file and key,
both from `load_config` and from the Snakefile (which then runs nothing)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from specbench.errors import SpecbenchError
from specbench.workflow.config import config_hash, input_path, load_config, vocabulary_mismatch

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "configs").glob("*.yaml"))
DATA_DIR = input_path(load_config(REPO / "configs" / "default.yaml"), "../../shared/data")


def write_config(tmp_path: Path, **changes) -> Path:
    """The default config, data paths made absolute, with top-level keys replaced by `changes`."""
    data = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    data["paths"]["data_dir"] = str(DATA_DIR)
    data.update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def fake_checkpoint(folder: Path, vocab: dict[str, int]) -> Path:
    """Just what the vocabulary check reads: config.json and tokenizer.json."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": len(vocab)}))
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": vocab}, "added_tokens": []}))
    return folder


def error_of(path: Path) -> str:
    with pytest.raises(SpecbenchError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_passes_the_schema(path, monkeypatch):
    # Real-run configs name hub models that are not cached here; only offline mode checks the cache.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    config = load_config(path)
    assert config["name"] == path.stem
    assert len(config_hash(config)) == 12


def test_real_run_configs_pin_hub_revisions():
    for path in SHIPPED:
        data = yaml.safe_load(path.read_text())
        for pair in data["pairs"]:
            for role in ("target", "draft"):
                if "id" in pair.get(role, {}):
                    assert pair[role]["revision"], f"{path.name}: {pair['name']}.{role} has no revision"


def test_unknown_key_is_named(tmp_path):
    path = write_config(tmp_path, sweep={"k": [1], "temperatures": [0.0], "dtypes": ["float32"], "kk": [2]})
    assert "key sweep.kk: unknown key" in error_of(path)


def test_wrong_type_is_named(tmp_path):
    path = write_config(tmp_path, sweep={"k": [1, "two"], "temperatures": [0.0], "dtypes": ["float32"]})
    assert "key sweep.k[1]: expected integer, got str 'two'" in error_of(path)


def test_unknown_dtype_is_named(tmp_path):
    path = write_config(tmp_path, sweep={"k": [1], "temperatures": [0.0], "dtypes": ["float8"]})
    assert "key sweep.dtypes[0]: 'float8' is not one of" in error_of(path)


def test_missing_required_key_is_named(tmp_path):
    data = yaml.safe_load(write_config(tmp_path).read_text())
    del data["tasks"][0]["max_new_tokens"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert "key tasks[0].max_new_tokens: required key is missing" in error_of(path)


def test_missing_model_path_is_named(tmp_path):
    pairs = [{"name": "local", "target": {"path": str(tmp_path / "nowhere")}, "draft": {"path": str(tmp_path)}}]
    message = error_of(write_config(tmp_path, pairs=pairs))
    assert "key pairs[0].target.path: model path" in message and "folder not found" in message


def test_missing_data_file_is_named(tmp_path):
    tasks = [{"name": "gsm8k", "limit": 2, "max_new_tokens": 8, "data_files": {"test": "gsm8k/missing.jsonl"}}]
    message = error_of(write_config(tmp_path, tasks=tasks))
    assert "key tasks[0].data_files.test: data file not found" in message and "missing.jsonl" in message


def test_draft_with_another_vocabulary_is_refused(tmp_path):
    target = fake_checkpoint(tmp_path / "target", {"a": 0, "b": 1, "c": 2})
    other = fake_checkpoint(tmp_path / "other", {"a": 0, "c": 1, "b": 2})
    same = fake_checkpoint(tmp_path / "same", {"a": 0, "b": 1, "c": 2})
    equivalence = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())["equivalence"]
    equivalence["sampling_test"]["pair"] = "p"  # the default's names the toy pair, replaced here
    ok = write_config(tmp_path, equivalence=equivalence,
                      pairs=[{"name": "p", "target": {"path": str(target)}, "draft": {"path": str(same)}}])
    load_config(ok)
    bad = write_config(tmp_path, equivalence=equivalence,
                       pairs=[{"name": "p", "target": {"path": str(target)}, "draft": {"path": str(other)}}])
    message = error_of(bad)
    assert "key pairs[0].draft: draft vocabulary differs from the target's" in message
    assert "token id 1" in message


def test_vocabulary_check_reads_real_tokenizers(tiny_checkpoint_factory, tmp_path):
    from tests.checkpoints import train_tokenizer

    target = tiny_checkpoint_factory("llama")
    train_tokenizer(tmp_path / "same")
    assert vocabulary_mismatch(target, tmp_path / "same") is None
    train_tokenizer(tmp_path / "smaller", vocab_size=80)
    assert vocabulary_mismatch(target, tmp_path / "smaller").startswith("80 tokens in")


def test_hub_model_must_be_cached_when_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pairs = [{"name": "hub", "target": {"id": "example/target", "revision": "0" * 40},
              "draft": {"id": "example/draft", "revision": "0" * 40}}]
    data = yaml.safe_load(write_config(tmp_path, pairs=pairs).read_text())
    data["paths"]["hub_cache"] = str(tmp_path / "empty-cache")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    assert "key pairs[0].target.id: example/target@" in error_of(path)


def test_hub_model_needs_a_revision(tmp_path):
    pairs = [{"name": "hub", "target": {"id": "example/target"}, "draft": {"id": "example/draft", "revision": "main"}}]
    assert "key pairs[0].target.revision: name the hub revision" in error_of(write_config(tmp_path, pairs=pairs))


def test_pair_is_toy_or_target_and_draft(tmp_path):
    pairs = [{"name": "p", "toy": {}, "target": {"path": "x"}}]
    assert "key pairs[0]: a pair is either `toy`" in error_of(write_config(tmp_path, pairs=pairs))


def test_duplicate_task_names_are_refused(tmp_path):
    tasks = [{"name": "synthetic-arith", "limit": 1, "max_new_tokens": 4}] * 2
    assert "key tasks[1].name: duplicate task name" in error_of(write_config(tmp_path, tasks=tasks))


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ndevice: cpu\n  pairs: [\n")
    assert "line 3" in error_of(path) or "line 2" in error_of(path)


def test_missing_config_file(tmp_path):
    assert "config file not found" in error_of(tmp_path / "absent.yaml")


def test_config_hash_ignores_where_the_file_is(tmp_path):
    first = load_config(write_config(tmp_path))
    other_dir = tmp_path / "elsewhere"
    other_dir.mkdir()
    second = load_config(write_config(other_dir))
    assert config_hash(first) == config_hash(second)


def _snakemake(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(cwd), "--cores", "1", *args],
        capture_output=True, text=True, timeout=120,
    )


def test_snakefile_stops_on_a_bad_config_before_any_job(tmp_path):
    path = write_config(tmp_path, sweep={"k": [1], "temperatures": [0.0], "dtypes": ["float32"], "bogus": 1})
    result = _snakemake("--configfile", str(path), cwd=tmp_path)  # a real run, not a dry run
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "specbench" in line]
    # Snakemake hands the Snakefile the config path relative to the working directory
    assert lines == [f"specbench: config error: {path.relative_to(tmp_path)}: key sweep.bogus: unknown key (allowed here: "
                     "dtypes, k, temperatures, top_k, top_p)"]
    assert not (tmp_path / "results").exists() and not (tmp_path / "models").exists()


def test_snakefile_refuses_command_line_overrides(tmp_path):
    result = _snakemake("-n", "--configfile", str(write_config(tmp_path)), "--config", "seed=3", cwd=tmp_path)
    assert result.returncode == 2
    assert "--config overrides are not supported (seed)" in result.stderr
