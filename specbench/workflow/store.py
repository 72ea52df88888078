"""The results store: where each cell's file lives, and writing it so no reader sees half of it.

Layout under a results directory (see the project brief):
  cells/<pair>/<backend>/<task>/<cell_id>.json   one per cell, rows = one per prompt
  jobs/<pair>__<backend>__<task>.json            a job's manifest, written last (its Snakemake output)
  equivalence/<pair>__<backend>__<task>.json     greedy speculative vs baseline, per prompt

Every file is written to a temporary name in the same folder, flushed to disk and
renamed over the target (`os.replace` is atomic on POSIX), so an interrupted sweep
leaves either the old file, the new one, or a dot-named temporary that readers skip.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from specbench.errors import SpecbenchError

CELL_STATUSES = ("ok", "oom", "error")


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); results are read by other users and by jobs of
        # a cluster, so give it the permissions an ordinary open() would have
        os.fchmod(handle, 0o666 & ~_current_umask())
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON; store them as null so every reader can parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(_json_safe(data), indent=1, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a missing or corrupt file is a SpecbenchError naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise SpecbenchError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SpecbenchError(f"{path}: not valid JSON ({error})") from None


def format_number(value: float) -> str:
    """A float for a file name: 0.0 -> '0', 0.8 -> '0.8', 1e-05 -> '1e-05'."""
    return f"{value:g}"


def cell_id(*, k: int, temperature: float, dtype: str, top_k: int = 0, top_p: float = 1.0) -> str:
    """A readable, file-name-safe id: 'baseline-t0-float32', 'k4-t0.8-bfloat16', 'k2-t1-topk50-float16'.

    Unique within one (pair, backend, task) job: mode and k, sampling, dtype.
    """
    mode = "baseline" if k == 0 else f"k{k}"
    parts = [mode, f"t{format_number(temperature)}"]
    if top_k:
        parts.append(f"topk{top_k}")
    if top_p < 1.0:
        parts.append(f"topp{format_number(top_p)}")
    parts.append(dtype)
    return "-".join(parts)


def job_name(pair: str, backend: str, task: str) -> str:
    return f"{pair}__{backend}__{task}"


def cell_path(results_dir: str | os.PathLike, pair: str, backend: str, task: str, cell: str) -> Path:
    return Path(results_dir) / "cells" / pair / backend / task / f"{cell}.json"


def job_manifest_path(results_dir: str | os.PathLike, pair: str, backend: str, task: str) -> Path:
    return Path(results_dir) / "jobs" / f"{job_name(pair, backend, task)}.json"


def equivalence_path(results_dir: str | os.PathLike, pair: str, backend: str, task: str) -> Path:
    return Path(results_dir) / "equivalence" / f"{job_name(pair, backend, task)}.json"


def read_cell(path: str | os.PathLike) -> dict[str, Any]:
    """A cell file, checked for the fields every reader relies on."""
    data = read_json(path)
    if not isinstance(data, dict) or not {"cell", "environment", "status", "rows"} <= set(data):
        raise SpecbenchError(f"{path}: not a cell file (needs cell, environment, status, rows)")
    if data["status"] not in CELL_STATUSES:
        raise SpecbenchError(f"{path}: unknown status {data['status']!r}")
    return data


def iter_cell_files(results_dir: str | os.PathLike, pair: str = "*", backend: str = "*", task: str = "*") -> Iterator[Path]:
    """Cell files in a stable order (temporaries, being dot-named, never match)."""
    yield from sorted((Path(results_dir) / "cells").glob(f"{pair}/{backend}/{task}/*.json"))


def completed_cell(path: Path, cell_key: str) -> dict[str, Any] | None:
    """The stored cell at `path` if it finished ("ok") with the same inputs (`cell_key`), else None.

    A cell from a different config (other prompts, models, lengths) has another key and is redone.
    """
    if not path.is_file():
        return None
    try:
        data = read_cell(path)
    except SpecbenchError:
        return None  # unreadable: redo it (the rename makes this unlikely, but a disk can fill)
    if data["status"] == "ok" and data["cell"].get("cell_key") == cell_key:
        return data
    return None
