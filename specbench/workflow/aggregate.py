"""`specbench aggregate RESULTS_DIR`: merge per-cell results into tables with metrics and verdicts.

Reads RESULTS_DIR/cells/**/*.json (one file per cell, rows one per prompt) and, if present,
RESULTS_DIR/equivalence/*.json, and writes to RESULTS_DIR/tables/ (each as .parquet and .csv):
  samples      one row per (cell, prompt): cell fields, row fields, environment as env_* columns
  cells        one row per cell: metrics with 95% CIs (see specbench.metrics), matched baseline,
               exact-match rate, accuracy; oom/error cells carry their status and message only
  quality      one row per scored cell: accuracy with CI; speculative cells add the paired delta
               against their matched baseline
  equivalence  one row per (greedy speculative cell, prompt): exact, or the first divergence
  verdicts     (.json and .csv) one row per claim, from specbench.claims
Every file is written to a temporary name and renamed, so a reader never sees half a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from specbench.errors import SpecbenchError

# A speculative cell's matched baseline shares all of these; only mode and k differ.
MATCH_KEYS = ("pair", "backend", "task", "temperature", "top_k", "top_p", "dtype", "device", "max_new_tokens")
REQUIRED_CELL_FIELDS = ("pair", "backend", "task", "cell_id", "mode", "k", "temperature", "dtype")
OPTIONAL_CELL_FIELDS = (
    "config_name", "config_hash", "target", "draft", "target_params", "draft_params", "top_k", "top_p",
    "device", "seed", "max_new_tokens",
)
CELL_FIELDS = REQUIRED_CELL_FIELDS + OPTIONAL_CELL_FIELDS
REQUIRED_ROW_FIELDS = ("prompt_index", "new_tokens", "decode_s")
ROW_DEFAULTS: dict[str, Any] = {
    "doc_id": None, "prompt_tokens": None, "iterations": 0, "drafted": 0, "accepted": 0,
    "accepted_per_position": [], "prefill_s": 0.0, "draft_s": 0.0, "verify_s": 0.0, "stop_reason": None,
    "tokens": [], "margins": None, "text": None, "score": None, "target": None, "extracted": None,
}
STATUSES = ("ok", "oom", "error")
TABLE_NAMES = ("samples", "cells", "quality", "equivalence")


# ---------------------------------------------------------------- reading cells


def _load_cell_file(path: Path) -> dict[str, Any]:
    """Parse and check one cell file; every problem names the file and the key."""
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SpecbenchError(f"{path}: not valid JSON (line {error.lineno}: {error.msg})") from None
    if not isinstance(document, dict):
        raise SpecbenchError(f"{path}: expected a JSON object with keys cell, status, rows")
    for key in ("cell", "status"):
        if key not in document:
            raise SpecbenchError(f"{path}: missing key '{key}'")
    cell = document["cell"]
    if not isinstance(cell, dict):
        raise SpecbenchError(f"{path}: key 'cell' must be an object")
    for key in REQUIRED_CELL_FIELDS:
        if key not in cell:
            raise SpecbenchError(f"{path}: missing key 'cell.{key}'")
    if cell["mode"] not in ("baseline", "speculative"):
        raise SpecbenchError(f"{path}: key 'cell.mode' is {cell['mode']!r}, expected 'baseline' or 'speculative'")
    if document["status"] not in STATUSES:
        raise SpecbenchError(f"{path}: key 'status' is {document['status']!r}, expected one of {', '.join(STATUSES)}")
    rows = document.get("rows") or []
    if not isinstance(rows, list):
        raise SpecbenchError(f"{path}: key 'rows' must be a list")
    checked_rows = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise SpecbenchError(f"{path}: rows[{index}] must be an object")
        for key in REQUIRED_ROW_FIELDS:
            if key not in row:
                raise SpecbenchError(f"{path}: missing key 'rows[{index}].{key}'")
        checked_rows.append({**ROW_DEFAULTS, **row})
    environment = document.get("environment") or {}
    if not isinstance(environment, dict):
        raise SpecbenchError(f"{path}: key 'environment' must be an object")
    return {
        "cell": {**{key: None for key in OPTIONAL_CELL_FIELDS}, **cell},
        "environment": environment,
        "status": document["status"],
        "error": document.get("error"),
        "rows": checked_rows if document["status"] == "ok" else [],
        "path": path,
    }


def read_cells(results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every cell under RESULTS_DIR/cells, sorted by (pair, backend, task, cell_id)."""
    cells_dir = Path(results_dir) / "cells"
    if not Path(results_dir).is_dir():
        raise SpecbenchError(f"{results_dir}: results directory not found")
    if not cells_dir.is_dir():
        raise SpecbenchError(f"{results_dir}: no cells/ folder (was the sweep run into this directory?)")
    # Temporary files of an interrupted atomic write are not results.
    paths = sorted(p for p in cells_dir.rglob("*.json") if not p.name.startswith("."))
    if not paths:
        raise SpecbenchError(f"{cells_dir}: no cell result files (*.json)")
    cells, seen = [], {}
    for path in paths:
        cell = _load_cell_file(path)
        ref = cell_ref(cell["cell"])
        if ref in seen:
            raise SpecbenchError(f"{path}: cell {ref} also in {seen[ref]}")
        seen[ref] = path
        cells.append(cell)
    return sorted(cells, key=lambda c: cell_ref(c["cell"]))


def cell_ref(fields: dict[str, Any]) -> str:
    """'pair/backend/task/cell_id': unique in a results directory (cell_id is unique only within a job)."""
    return "/".join(str(fields[key]) for key in ("pair", "backend", "task", "cell_id"))


def _match_key(cell: dict[str, Any]) -> tuple:
    return tuple(cell.get(key) for key in MATCH_KEYS)


def matched_baselines(cells: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Speculative cell_ref -> its matched baseline cell (same pair, backend, task, sampling, dtype, device).

    Among several candidates the one with the same seed wins; a speculative cell with no ok
    baseline is left out (its speedup is then NaN, and says so).
    """
    baselines: dict[tuple, list[dict[str, Any]]] = {}
    for cell in cells:
        if cell["cell"]["mode"] == "baseline" and cell["status"] == "ok":
            baselines.setdefault(_match_key(cell["cell"]), []).append(cell)
    matches = {}
    for cell in cells:
        if cell["cell"]["mode"] != "speculative":
            continue
        candidates = baselines.get(_match_key(cell["cell"]), [])
        same_seed = [b for b in candidates if b["cell"].get("seed") == cell["cell"].get("seed")]
        if same_seed or candidates:
            matches[cell_ref(cell["cell"])] = (same_seed or candidates)[0]
    return matches


# ---------------------------------------------------------------- per-cell metrics


def _paired_rows(baseline: dict[str, Any], speculative: dict[str, Any]) -> list[tuple[dict, dict]]:
    """(baseline row, speculative row) for prompts present in both, by prompt_index."""
    by_index = {row["prompt_index"]: row for row in baseline["rows"]}
    return [(by_index[row["prompt_index"]], row) for row in speculative["rows"] if row["prompt_index"] in by_index]


def _estimate_columns(name: str, estimate) -> dict[str, float]:
    return {name: estimate.value, f"{name}_ci_low": estimate.ci_low, f"{name}_ci_high": estimate.ci_high}


def first_divergence(baseline_tokens: list[int], speculative_tokens: list[int]) -> int | None:
    """Index of the first differing token (or the shorter length if one is a prefix); None when identical."""
    if list(baseline_tokens) == list(speculative_tokens):
        return None
    for position, (b, s) in enumerate(zip(baseline_tokens, speculative_tokens)):
        if b != s:
            return position
    return min(len(baseline_tokens), len(speculative_tokens))


def cell_metrics(cell: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    """The metrics of one ok cell (and, for a speculative cell, those relative to its matched baseline)."""
    from specbench import metrics

    rows = cell["rows"]
    k = int(cell["cell"]["k"] or 0)
    decode_tokens = [max(r["new_tokens"] - 1, 0) for r in rows]
    out: dict[str, Any] = {
        "n_prompts": len(rows),
        "new_tokens": int(sum(r["new_tokens"] for r in rows)),
        "decode_s": float(sum(r["decode_s"] for r in rows)),
    }
    out.update(_estimate_columns("tokens_per_s", metrics.ratio_of_sums(decode_tokens, [r["decode_s"] for r in rows])))
    out.update(_estimate_columns(
        "e2e_tokens_per_s",
        metrics.ratio_of_sums([r["new_tokens"] for r in rows], [r["prefill_s"] + r["decode_s"] for r in rows]),
    ))
    out["tpot_ms"] = 1000.0 * metrics.time_per_output_token(sum(decode_tokens) + 1, out["decode_s"])
    iterations = sum(r["iterations"] for r in rows)
    accepted = sum(r["accepted"] for r in rows)
    out["iterations"] = int(iterations)
    out["mean_accepted_length"] = metrics.mean_accepted_length(accepted, iterations)
    nan_columns = ("acceptance_rate", "speedup", "tokens_per_s_ratio")
    for name in nan_columns:
        out.update(_estimate_columns(name, metrics.NAN_ESTIMATE))
    out.update(per_token_acceptance=math.nan, acceptance_by_position=[], baseline_cell_ref=None,
               cost_ratio=math.nan, verify_ratio=math.nan, predicted_speedup=math.nan, efficiency=math.nan,
               exact_match_rate=math.nan, exact_matches=math.nan, compared_prompts=0)
    if cell["cell"]["mode"] == "speculative" and k > 0:
        out.update(_estimate_columns(
            "acceptance_rate", metrics.ratio_of_sums([r["accepted"] for r in rows], [r["drafted"] for r in rows])
        ))
        out["per_token_acceptance"] = metrics.per_token_acceptance(out["mean_accepted_length"], k)
        per_position = [sum(r["accepted_per_position"][i] if i < len(r["accepted_per_position"]) else 0 for r in rows)
                        for i in range(k)]
        out["acceptance_by_position"] = metrics.acceptance_by_position(per_position, iterations)
    if baseline is not None:
        pairs = _paired_rows(baseline, cell)
        out["baseline_cell_ref"] = cell_ref(baseline["cell"])
        out.update(_estimate_columns("speedup", metrics.paired_throughput_ratio(
            [max(b["new_tokens"] - 1, 0) for b, _ in pairs], [b["decode_s"] for b, _ in pairs],
            [max(s["new_tokens"] - 1, 0) for _, s in pairs], [s["decode_s"] for _, s in pairs],
        )))
        out.update(_estimate_columns("tokens_per_s_ratio", metrics.paired_throughput_ratio(
            [b["new_tokens"] for b, _ in pairs], [b["prefill_s"] + b["decode_s"] for b, _ in pairs],
            [s["new_tokens"] for _, s in pairs], [s["prefill_s"] + s["decode_s"] for _, s in pairs],
        )))
        base_decode = sum(b["decode_s"] for b, _ in pairs)
        base_iterations = sum(b["iterations"] for b, _ in pairs)
        spec_iterations = sum(s["iterations"] for _, s in pairs)
        out["cost_ratio"] = metrics.cost_ratio(sum(s["draft_s"] for _, s in pairs), spec_iterations, k,
                                               base_decode, base_iterations)
        out["verify_ratio"] = metrics.verify_ratio(sum(s["verify_s"] for _, s in pairs), spec_iterations,
                                                   base_decode, base_iterations)
        out["predicted_speedup"] = metrics.predicted_speedup(out["mean_accepted_length"], k, out["cost_ratio"],
                                                             out["verify_ratio"])
        out["efficiency"] = metrics.efficiency(out["speedup"], out["predicted_speedup"])
        if float(cell["cell"]["temperature"]) == 0.0:
            exact = [first_divergence(b["tokens"], s["tokens"]) is None for b, s in pairs]
            out["compared_prompts"] = len(exact)
            out["exact_matches"] = int(sum(exact))
            out["exact_match_rate"] = sum(exact) / len(exact) if exact else math.nan
    scores = [r["score"] for r in rows if r["score"] is not None]
    out.update(_estimate_columns("accuracy", metrics.proportion(scores)))
    out["scored_prompts"] = len(scores)
    return out


def _environment_columns(environment: dict[str, Any]) -> dict[str, Any]:
    return {f"env_{key}": (json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value)
            for key, value in environment.items()}


# ---------------------------------------------------------------- equivalence


def _equivalence_records(node: Any, cell_id: Any = None) -> list[dict[str, Any]]:
    """Flatten an equivalence/*.json document into per-prompt records carrying their cell_id.

    Accepts a list of records or records nested under cells; a record is any object with a
    prompt_index, inheriting cell_id / speculative_cell_id from the object that encloses it.
    """
    records: list[dict[str, Any]] = []
    if isinstance(node, list):
        for item in node:
            records.extend(_equivalence_records(item, cell_id))
    elif isinstance(node, dict):
        own_id = node.get("speculative_cell_id", node.get("cell_id", cell_id))
        if "prompt_index" in node:
            flat = {**node}
            divergence = flat.pop("divergence", None)
            if isinstance(divergence, dict):
                flat.update({key: value for key, value in divergence.items() if key not in flat})
            records.append({**flat, "cell_id": own_id})
        else:
            for value in node.values():
                if isinstance(value, (list, dict)):
                    records.extend(_equivalence_records(value, own_id))
    return records


def read_equivalence_files(results_dir: Path) -> dict[tuple[str, Any], dict[str, Any]]:
    """(speculative cell_ref, prompt_index) -> the workflow's classification record.

    Files are named <pair>__<backend>__<task>.json, one per job, so a record's cell_id (unique
    within its job) is completed to a cell_ref from the file name.
    """
    found = {}
    for path in sorted((results_dir / "equivalence").glob("*.json")):
        parts = path.stem.split("__")
        if len(parts) != 3:
            raise SpecbenchError(f"{path}: equivalence file name must be <pair>__<backend>__<task>.json")
        try:
            document = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise SpecbenchError(f"{path}: not valid JSON (line {error.lineno}: {error.msg})") from None
        for record in _equivalence_records(document):
            ref = "/".join([*parts, str(record.get("cell_id"))])
            found[(ref, record["prompt_index"])] = record
    return found


def equivalence_rows(cells: list[dict[str, Any]], matches: dict[str, dict[str, Any]],
                     classified: dict[tuple[str, Any], dict[str, Any]]) -> list[dict[str, Any]]:
    """Per greedy speculative cell and prompt: exact, or the first divergence with both tokens and margins.

    Exactness and the divergence position are recomputed from the stored tokens (a fact of the
    results); the near-tie / mismatch classification comes from the workflow's equivalence files,
    whose dtype-dependent bounds live with the check that applies them. Without such a file the
    classification says "unclassified".
    """
    rows = []
    for cell in cells:
        fields, ref = cell["cell"], cell_ref(cell["cell"])
        if fields["mode"] != "speculative" or cell["status"] != "ok" or float(fields["temperature"]) != 0.0:
            continue
        baseline = matches.get(ref)
        if baseline is None:
            continue
        for base_row, spec_row in _paired_rows(baseline, cell):
            position = first_divergence(base_row["tokens"], spec_row["tokens"])
            record = classified.get((ref, spec_row["prompt_index"]), {})

            def token_at(tokens: list[int]) -> int | None:
                return tokens[position] if position is not None and position < len(tokens) else None

            def margin_at(margins: list[float] | None) -> float | None:
                return margins[position] if margins and position is not None and position < len(margins) else None

            rows.append({
                "pair": fields["pair"], "backend": fields["backend"], "task": fields["task"],
                "cell_ref": ref, "cell_id": fields["cell_id"], "baseline_cell_ref": cell_ref(baseline["cell"]),
                "k": fields["k"],
                "dtype": fields["dtype"], "device": fields.get("device"),
                "prompt_index": spec_row["prompt_index"], "doc_id": spec_row["doc_id"],
                "exact": position is None, "position": position,
                "baseline_token": token_at(base_row["tokens"]), "speculative_token": token_at(spec_row["tokens"]),
                "baseline_margin": record.get("baseline_margin", margin_at(base_row["margins"])),
                "speculative_margin": record.get("speculative_margin", margin_at(spec_row["margins"])),
                "classification": "exact" if position is None else record.get("classification", "unclassified"),
                "reason": record.get("reason"),
            })
    return rows


# ---------------------------------------------------------------- tables


def build_tables(results_dir: str | os.PathLike) -> dict[str, Any]:
    """All tables as pandas DataFrames, computed from the stored cell files."""
    import pandas as pd

    results_dir = Path(results_dir)
    cells = read_cells(results_dir)
    matches = matched_baselines(cells)
    sample_rows, cell_rows, quality_rows = [], [], []
    for cell in cells:
        # The contract's fields first, then any the workflow adds (task_version, cell_key, ...).
        fields = {**{key: cell["cell"].get(key) for key in CELL_FIELDS}, **cell["cell"]}
        env = _environment_columns(cell["environment"])
        ref = cell_ref(fields)
        for row in cell["rows"]:
            sample_rows.append({"cell_ref": ref, **fields, "status": cell["status"], **row, **env})
        base = {"cell_ref": ref, **fields, "status": cell["status"], "error": cell["error"],
                "source_file": str(cell["path"].relative_to(results_dir))}
        if cell["status"] != "ok":
            cell_rows.append({**base, **env})
            continue
        measured = cell_metrics(cell, matches.get(ref))
        cell_rows.append({**base, **measured, **env})
        if measured["scored_prompts"]:
            quality_rows.append(_quality_row(cell, matches.get(ref), measured))
    equivalence = equivalence_rows(cells, matches, read_equivalence_files(results_dir))
    return {
        "samples": pd.DataFrame(sample_rows),
        "cells": pd.DataFrame(cell_rows),
        "quality": pd.DataFrame(quality_rows),
        "equivalence": pd.DataFrame(equivalence),
    }


def _quality_row(cell: dict[str, Any], baseline: dict[str, Any] | None, measured: dict[str, Any]) -> dict[str, Any]:
    """Accuracy of one cell; for speculative cells also the paired delta against the matched baseline."""
    from specbench import metrics

    fields = cell["cell"]
    row = {"cell_ref": cell_ref(fields)}
    row.update({key: fields.get(key) for key in ("pair", "backend", "task", "cell_id", "mode", "k", "temperature", "dtype",
                                           "device", "target_params")})
    row.update(n=measured["scored_prompts"], accuracy=measured["accuracy"], accuracy_ci_low=measured["accuracy_ci_low"],
               accuracy_ci_high=measured["accuracy_ci_high"], baseline_cell_ref=None, baseline_accuracy=math.nan)
    row.update(_estimate_columns("quality_delta", metrics.NAN_ESTIMATE))
    if baseline is not None:
        pairs = [(b, s) for b, s in _paired_rows(baseline, cell) if b["score"] is not None and s["score"] is not None]
        if pairs:
            row["baseline_cell_ref"] = cell_ref(baseline["cell"])
            row["baseline_accuracy"] = sum(b["score"] for b, _ in pairs) / len(pairs)
            row.update(_estimate_columns("quality_delta", metrics.paired_mean_difference(
                [b["score"] for b, _ in pairs], [s["score"] for _, s in pairs])))
    return row


def _csv_ready(frame):
    """Lists and dicts as JSON text, so the CSV stays one value per field."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].map(lambda v: isinstance(v, (list, dict))).any():
            frame[column] = frame[column].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
    return frame


def _atomic_write(path: Path, write) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temporary)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_frame(frame, tables_dir: Path, name: str) -> None:
    """One table as NAME.parquet and NAME.csv, each written atomically."""
    tables_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(tables_dir / f"{name}.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    _atomic_write(tables_dir / f"{name}.csv", lambda tmp: _csv_ready(frame).to_csv(tmp, index=False))


def write_json(document: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2, default=_json_default) + "\n"))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def aggregate(results_dir: str | os.PathLike, claims_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Build every table and the verdicts, compute everything before writing anything, then write."""
    import pandas as pd

    from specbench.claims import evaluate_claims, load_claims, verdicts_frame

    results_dir = Path(results_dir)
    tables = build_tables(results_dir)
    claims = load_claims(claims_dir)
    verdicts = evaluate_claims(claims, tables)
    tables_dir = results_dir / "tables"
    for name in TABLE_NAMES:
        write_frame(tables[name], tables_dir, name)
    write_json([v.to_dict() for v in verdicts], tables_dir / "verdicts.json")
    frame = verdicts_frame(verdicts)
    _atomic_write(tables_dir / "verdicts.csv", lambda tmp: _csv_ready(frame).to_csv(tmp, index=False))
    tables["verdicts"] = frame if len(frame) else pd.DataFrame()
    return tables


def load_tables(results_dir: str | os.PathLike, claims_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The stored tables, aggregating first if any is missing or older than a cell file."""
    import pandas as pd

    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise SpecbenchError(f"{results_dir}: results directory not found")
    tables_dir = results_dir / "tables"
    wanted = [tables_dir / f"{name}.parquet" for name in TABLE_NAMES] + [tables_dir / "verdicts.json"]
    inputs = [*(results_dir / "cells").rglob("*.json"), *(results_dir / "equivalence").glob("*.json")]
    newest_cell = max((p.stat().st_mtime for p in inputs), default=0.0)
    if claims_dir is not None or not all(p.exists() for p in wanted) or min(p.stat().st_mtime for p in wanted) < newest_cell:
        return aggregate(results_dir, claims_dir)
    tables = {name: pd.read_parquet(tables_dir / f"{name}.parquet") for name in TABLE_NAMES}
    tables["verdicts"] = pd.DataFrame(json.loads((tables_dir / "verdicts.json").read_text()))
    return tables


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", metavar="RESULTS_DIR", help="folder holding cells/ (and equivalence/)")
    parser.add_argument("--claims", metavar="DIR", default=None,
                        help="folder of claims YAML files (default: the claims shipped with specbench)")


def run(args: argparse.Namespace) -> int:
    tables = aggregate(args.results_dir, args.claims)
    cells = tables["cells"]
    ok = int((cells["status"] == "ok").sum()) if len(cells) else 0
    print(f"aggregated {len(cells)} cells ({ok} ok, {len(cells) - ok} oom/error), {len(tables['samples'])} samples "
          f"-> {Path(args.results_dir) / 'tables'}")
    if len(tables["verdicts"]):
        for verdict, count in tables["verdicts"]["verdict"].value_counts().items():
            print(f"  {verdict}: {count} claims")
    return 0
