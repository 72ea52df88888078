"""Prepare a pair's models before any run job uses them (`specbench prepare-models`).

- toy pair: `specbench toy-pair` has already trained it into <models>/<pair>/toy;
- hub models: download (or, with HF_HUB_OFFLINE=1, find in the cache) the named revision;
- local folders: just checked.
Then the target and draft vocabularies are compared and `<models>/<pair>/pair.json`
records what was prepared (ids, revisions, parameter counts). Run jobs resolve model
folders again on their own host (`model_folders`), so no path of this host travels.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path
from typing import Any

from specbench.errors import SpecbenchError
from specbench.workflow import config as cfg
from specbench.workflow.store import atomic_write_json

# What a checkpoint needs; everything else on a hub repo (other formats, images) is skipped.
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.tiktoken", "*.txt"]


def toy_dir(config: dict[str, Any], pair_name: str) -> Path:
    return cfg.pair_dir(config, pair_name) / "toy"


def manifest_path(config: dict[str, Any], pair_name: str) -> Path:
    return cfg.pair_dir(config, pair_name) / "pair.json"


def model_folders(config: dict[str, Any], pair_name: str, *, download: bool = False) -> tuple[Path, Path]:
    """(target folder, draft folder) of a pair on this host; SpecbenchError naming what is missing."""
    pair = cfg.find(config, "pairs", pair_name)
    if "toy" in pair:
        base = toy_dir(config, pair_name)
        folders = (base / "target", base / "draft")
        for folder in folders:
            if not (folder / "config.json").is_file():
                raise SpecbenchError(f"toy pair {pair_name!r} not found at {folder}; run `specbench toy-pair --out {base}`")
        return folders
    return (_model_folder(config, pair["target"], download), _model_folder(config, pair["draft"], download))


def _model_folder(config: dict[str, Any], spec: dict[str, Any], download: bool) -> Path:
    if "path" in spec:
        folder = cfg.input_path(config, spec["path"])
        if not (folder / "config.json").is_file():
            raise SpecbenchError(f"model path {folder}: no checkpoint there (config.json missing)")
        return folder
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            spec["id"],
            revision=spec["revision"],
            cache_dir=cfg.hub_cache_dir(config),
            allow_patterns=HUB_PATTERNS,
            local_files_only=not download,
        )
    except LocalEntryNotFoundError:
        how = "HF_HUB_OFFLINE is set" if cfg.hub_offline() else "run the prepare step first"
        raise SpecbenchError(f"{spec['id']}@{spec['revision']}: not in the hub cache ({how})") from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SpecbenchError(f"{spec['id']}@{spec['revision']}: cannot download: {message}") from None
    return Path(folder)


def safetensors_parameters(folder: Path) -> int:
    """Parameters stored in a checkpoint: sum over tensors of prod(shape), read from the
    safetensors headers only (8-byte little-endian header length, then a JSON header)."""
    total = 0
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise SpecbenchError(f"{folder}: no *.safetensors weights")
    for file in files:
        with open(file, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                count = 1
                for size in info["shape"]:
                    count *= size
                total += count
    return total


def model_fingerprint(folder: Path) -> str:
    """Identity of a checkpoint's files (name, size, mtime): a retrained toy pair gets a new one,
    so cells computed with the old weights are redone rather than resumed."""
    import hashlib

    entries = []
    for file in sorted(folder.iterdir()):
        if file.is_file():
            stat = file.stat()
            entries.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


def prepare_pair(config: dict[str, Any], pair_name: str) -> dict[str, Any]:
    """Make the pair's models available here, check vocabularies, write and return pair.json."""
    pair = cfg.find(config, "pairs", pair_name)
    target, draft = model_folders(config, pair_name, download=True)
    problem = cfg.vocabulary_mismatch(target, draft)
    if problem:
        raise SpecbenchError(f"{config['_path']}: pair {pair_name!r}: draft vocabulary differs from the target's: {problem}")
    kind = "toy" if "toy" in pair else ("hub" if "id" in pair["target"] else "local")
    record: dict[str, Any] = {"pair": pair_name, "kind": kind}
    for role, folder in (("target", target), ("draft", draft)):
        spec = pair.get(role, {})
        record[role] = {
            "id": spec.get("id"),
            "revision": spec.get("revision"),
            "path": spec.get("path") or (str(folder) if kind == "toy" else None),
            "params": safetensors_parameters(folder),
        }
    if kind == "toy":
        report_file = toy_dir(config, pair_name) / "toy_pair.json"
        record["toy_pair"] = json.loads(report_file.read_text()) if report_file.is_file() else None
    record["draft_share"] = record["draft"]["params"] / record["target"]["params"]
    atomic_write_json(manifest_path(config, pair_name), record)
    return record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="sweep config (YAML)")
    parser.add_argument("--pair", required=True, help="pair name from the config")


def run(args: argparse.Namespace) -> int:
    config = cfg.load_config(args.config, check_models=False)  # the job loads its own pair
    record = prepare_pair(config, args.pair)
    print(
        f"pair {args.pair}: target {record['target']['params']:,} params, draft {record['draft']['params']:,} "
        f"({record['draft_share']:.1%}); vocabularies match; wrote {manifest_path(config, args.pair)}"
    )
    return 0


if __name__ == "__main__":
    from specbench.workflow import standalone_main

    sys.exit(standalone_main(sys.modules[__name__], "specbench prepare-models"))
