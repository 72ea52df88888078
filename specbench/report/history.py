"""`specbench history append RESULTS_DIR --file history.jsonl`: one line of headline figures per run.

Each line is a JSON object: date, git_commit, hardware (device names), config_name, config_hash,
results_dir, headlines (per pair/backend/task/temperature/dtype: best speedup over k with its CI,
baseline tokens/s, exact-match rate, accuracy of baseline and speculative) and verdicts
(claim id -> verdict). `specbench report --history FILE` draws the trend; `history show` prints it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
from pathlib import Path
from typing import Any

from specbench.errors import SpecbenchError

HEADLINE_KEYS = ("pair", "backend", "task", "temperature", "dtype")


def _number(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _unique(frame, column: str) -> list[str]:
    if column not in frame.columns:
        return []
    return sorted({str(v) for v in frame[column].dropna().unique()})


def headlines(cells) -> list[dict[str, Any]]:
    """Per configuration: the best speculative cell (by speedup) and the baseline it was matched to."""
    ok = cells[cells["status"] == "ok"] if len(cells) else cells
    out = []
    for key, frame in ok.groupby(list(HEADLINE_KEYS), dropna=False, sort=True):
        base = frame[frame["mode"] == "baseline"]
        spec = frame[(frame["mode"] == "speculative") & frame["speedup"].notna()]
        entry: dict[str, Any] = dict(zip(HEADLINE_KEYS, key))
        entry["temperature"] = float(entry["temperature"])
        entry["baseline_tokens_per_s"] = _number(base["tokens_per_s"].iloc[0]) if len(base) else None
        entry["accuracy_baseline"] = _number(base["accuracy"].iloc[0]) if len(base) else None
        if len(spec):
            best = spec.loc[spec["speedup"].idxmax()]
            entry.update(best_k=int(best["k"]), best_speedup=_number(best["speedup"]),
                         best_speedup_ci_low=_number(best["speedup_ci_low"]),
                         best_speedup_ci_high=_number(best["speedup_ci_high"]),
                         accuracy_speculative=_number(best["accuracy"]),
                         exact_match_rate=_number(spec["exact_match_rate"].min()))
        out.append(entry)
    return out


def summarise_run(results_dir: str | os.PathLike, date: str | None = None) -> dict[str, Any]:
    """The history line for one results directory (aggregating first if its tables are missing)."""
    from specbench.workflow.aggregate import load_tables

    tables = load_tables(results_dir)
    cells = tables["cells"]
    verdicts = tables["verdicts"]
    commits = _unique(cells, "env_git_commit")
    return {
        "date": date or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commits[0] if len(commits) == 1 else (",".join(commits) or None),
        "hardware": _unique(cells, "env_device_name"),
        "config_name": ",".join(_unique(cells, "config_name")) or None,
        "config_hash": ",".join(_unique(cells, "config_hash")) or None,
        "results_dir": str(results_dir),
        "headlines": headlines(cells),
        "verdicts": dict(zip(verdicts["claim_id"], verdicts["verdict"])) if len(verdicts) else {},
    }


def read_history(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every line of a history file; a malformed line is an error naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise SpecbenchError(f"{path}: history file not found")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise SpecbenchError(f"{path}: line {number}: not valid JSON ({error.msg})") from None
        if not isinstance(entry, dict) or "headlines" not in entry:
            raise SpecbenchError(f"{path}: line {number}: not a history entry (missing key 'headlines')")
        entries.append(entry)
    return entries


def append(results_dir: str | os.PathLike, history_file: str | os.PathLike, date: str | None = None) -> dict[str, Any]:
    """Add one run to the history file (rewritten whole via a temporary file, so it is never half-written)."""
    from specbench.workflow.aggregate import _atomic_write

    history_file = Path(history_file)
    previous = history_file.read_text() if history_file.is_file() else ""
    if previous:
        read_history(history_file)  # refuse to extend a corrupt file
    entry = summarise_run(results_dir, date)
    if previous and not previous.endswith("\n"):
        previous += "\n"
    history_file.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(history_file, lambda tmp: Path(tmp).write_text(previous + json.dumps(entry, sort_keys=True) + "\n"))
    return entry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("append", help="append RESULTS_DIR's headline figures to a history file")
    add.add_argument("results_dir", metavar="RESULTS_DIR")
    add.add_argument("--file", required=True, metavar="HISTORY.jsonl", help="history file (created if missing)")
    add.add_argument("--date", default=None, help="ISO date to record (default: now, UTC)")
    show = actions.add_parser("show", help="print a history file as a table")
    show.add_argument("--file", required=True, metavar="HISTORY.jsonl")


def run(args: argparse.Namespace) -> int:
    if args.action == "append":
        entry = append(args.results_dir, args.file, args.date)
        print(f"appended {entry['date']} (commit {entry['git_commit']}, {len(entry['headlines'])} configurations) "
              f"to {args.file}")
        return 0
    for entry in read_history(args.file):
        for headline in entry["headlines"]:
            speedup = headline.get("best_speedup")
            print(f"{entry['date'][:19]:19}  {str(entry.get('git_commit'))[:10]:10}  {headline['pair']}/"
                  f"{headline['backend']}/{headline['task']} T={headline['temperature']:g}  "
                  f"best speedup {'-' if speedup is None else f'{speedup:.2f}x'}")
    return 0
