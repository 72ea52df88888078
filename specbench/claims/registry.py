"""Claims as data: one YAML file per published source, validated before any verdict is given.

A claims file holds `source` (id, title, url, date) and `claims`, each with an id, the exact quote,
a metric from a closed list, a comparator with a value or range, the conditions under which the
source measured it, and a tolerance in the metric's own units. The JSON schema
(claims.schema.json) checks shape and vocabulary; `_semantic_problems` checks what a schema cannot
(a range with its ends swapped, a comparator without the number it compares against).
A bad file raises SpecbenchError naming the file, the claim id and the field.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specbench.errors import SpecbenchError

SHIPPED_CLAIMS_DIR = Path(__file__).parent / "data"
SCHEMA_PATH = Path(__file__).parent / "claims.schema.json"

# What each metric measures, for reports and error messages.
METRICS: dict[str, str] = {
    "speedup": "decode throughput, speculative over matched baseline (x)",
    "tokens_per_s_ratio": "end-to-end tokens/s including prefill, speculative over matched baseline (x)",
    "acceptance_rate": "accepted / drafted tokens",
    "exact_match_rate": "share of greedy prompts whose speculative tokens equal the baseline's",
    "draft_size_ratio": "draft parameters / target parameters",
    "verify_ratio": "target forward over k+1 tokens / over 1 token (time)",
    "quality_delta": "task score, speculative minus matched baseline",
    "portability": "hardware vendors on which speculative decoding ran with exact greedy outputs",
}
SPEED_METRICS = ("speedup", "tokens_per_s_ratio")


@dataclass(frozen=True)
class Claim:
    """One checkable statement of a source (see claims.schema.json for every field)."""

    id: str
    source: dict[str, Any]
    quote: str
    metric: str
    comparator: str
    tolerance: float
    conditions: dict[str, Any]
    value: float | None = None
    range: tuple[float, float] | None = None
    vendors: tuple[str, ...] = ()
    select: str = "all"
    min_samples: int = 5
    note: str = ""
    file: str = ""

    def accepted_region(self) -> tuple[float, float]:
        """The interval of metric values that reproduce the claim, widened by the tolerance."""
        inf = float("inf")
        if self.comparator == ">=":
            return self.value - self.tolerance, inf
        if self.comparator == "<=":
            return -inf, self.value + self.tolerance
        if self.comparator == "approx":
            return self.value - self.tolerance, self.value + self.tolerance
        if self.comparator == "between":
            return self.range[0] - self.tolerance, self.range[1] + self.tolerance
        return -inf, inf

    def expected_text(self) -> str:
        """The claim's threshold in words, e.g. '>= 3 (tolerance 0.15)'."""
        if self.comparator == "includes":
            return "runs on " + ", ".join(self.vendors)
        if self.comparator == "between":
            target = f"between {self.range[0]:g} and {self.range[1]:g}"
        elif self.comparator == "approx":
            target = f"about {self.value:g}"
        else:
            target = f"{self.comparator} {self.value:g}"
        return f"{target} (tolerance {self.tolerance:g})"

    def headline_value(self) -> float | None:
        """The figure a speed claim promises (the low end of a range), for feasibility lines."""
        if self.comparator == "between":
            return self.range[0]
        return self.value


def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def _claim_label(document: Any, path: list[Any]) -> str:
    """'claim <id>' for an error inside claims[i] (or 'claim #i' when it has no id), else 'source'."""
    if len(path) >= 2 and path[0] == "claims" and isinstance(path[1], int):
        try:
            claim_id = document["claims"][path[1]].get("id")
        except (AttributeError, IndexError, KeyError, TypeError):
            claim_id = None
        return f"claim {claim_id}" if claim_id else f"claim #{path[1]}"
    return "source" if path and path[0] == "source" else "file"


def _field_name(path: list[Any], error: Any) -> str:
    inner = [str(p) for p in (path[2:] if path and path[0] == "claims" else path)]
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        inner.append(missing)
    if error.validator == "additionalProperties":
        extra = error.message.split("'")[1] if "'" in error.message else "?"
        inner.append(extra)
    return ".".join(inner) or "(top level)"


def _semantic_problems(claim: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, problem) pairs a schema cannot express."""
    problems = []
    comparator = claim["comparator"]
    if comparator == "between":
        if "range" not in claim:
            problems.append(("range", "comparator 'between' needs range: [low, high]"))
        elif claim["range"][0] > claim["range"][1]:
            problems.append(("range", f"inverted range {claim['range']} (low > high)"))
    elif comparator == "includes":
        if claim["metric"] != "portability" or not claim.get("vendors"):
            problems.append(("comparator", "'includes' is for metric portability with a vendors list"))
    elif "value" not in claim:
        problems.append(("value", f"comparator '{comparator}' needs a value"))
    if claim["metric"] == "portability" and comparator != "includes":
        problems.append(("comparator", "metric portability takes comparator 'includes'"))
    if claim.get("select") == "pooled" and claim["metric"] != "exact_match_rate":
        problems.append(("select", "'pooled' adds up exact/compared prompts: only for metric exact_match_rate"))
    params = claim.get("conditions", {}).get("target_params")
    if params and params[0] > params[1]:
        problems.append(("conditions.target_params", f"inverted range {params} (low > high)"))
    if not claim["quote"].strip():
        problems.append(("quote", "empty quote"))
    return problems


def load_claims_file(path: str | os.PathLike) -> list[Claim]:
    """Parse, validate and return the claims of one YAML file."""
    import jsonschema
    import yaml

    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SpecbenchError(f"{path}:{where} not valid YAML ({getattr(error, 'problem', error)})") from None
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        location = list(error.absolute_path)
        raise SpecbenchError(
            f"{path}: {_claim_label(document, location)}: field {_field_name(location, error)}: {error.message}"
        )
    claims = []
    for raw in document["claims"]:
        for field_name, problem in _semantic_problems(raw):
            raise SpecbenchError(f"{path}: claim {raw['id']}: field {field_name}: {problem}")
        claims.append(Claim(
            id=raw["id"], source=document["source"], quote=raw["quote"].strip(), metric=raw["metric"],
            comparator=raw["comparator"], tolerance=float(raw["tolerance"]), conditions=raw["conditions"],
            value=raw.get("value"), range=tuple(raw["range"]) if "range" in raw else None,
            vendors=tuple(raw.get("vendors", ())), select=raw.get("select", "all"),
            min_samples=int(raw.get("min_samples", 5)), note=raw.get("note", ""), file=str(path),
        ))
    return claims


def load_claims(directory: str | os.PathLike | None = None) -> list[Claim]:
    """Every claim in DIRECTORY/*.yaml (default: the claims shipped with specbench); ids must be unique."""
    directory = Path(directory) if directory is not None else SHIPPED_CLAIMS_DIR
    if not directory.is_dir():
        raise SpecbenchError(f"{directory}: claims directory not found")
    paths = sorted(list(directory.glob("*.yaml")) + list(directory.glob("*.yml")))
    if not paths:
        raise SpecbenchError(f"{directory}: no claims files (*.yaml)")
    claims, seen = [], {}
    for path in paths:
        for claim in load_claims_file(path):
            if claim.id in seen:
                raise SpecbenchError(f"{path}: claim {claim.id}: field id: also defined in {seen[claim.id]}")
            seen[claim.id] = path
            claims.append(claim)
    return claims
