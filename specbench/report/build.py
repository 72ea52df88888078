"""`specbench report RESULTS_DIR [--out DIR] [--history FILE]`: the HTML and Markdown report.

Regenerated from the stored tables (aggregating first when they are missing or stale); nothing
is rerun. OUT gets index.html (self-contained: figures embedded as base64 PNG, no scripts, opens
from disk), index.md (figures linked from figures/), and figures/*.png + *.svg. Sections, in
order: verdicts; throughput per model size; speedup vs k with Leviathan curves; acceptance by
draft position; measured vs predicted speedup; all cells; equivalence; quality; failed cells;
environments; history trend (with --history); metric definitions.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import math
import os
from pathlib import Path
from typing import Any

from specbench.errors import SpecbenchError

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.v-reproduced { background: #d8f5d0; } .v-not-reproduced { background: #f8d0d0; }
.v-inconclusive { background: #fff2c0; } .v-not-applicable-here { background: #e6e6e6; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; }
"""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}g}"
    return str(value)


def _with_ci(row: dict[str, Any], column: str, digits: int = 3) -> str:
    value, low, high = row.get(column), row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    if _fmt(value) == "-":
        return "-"
    if _fmt(low) == "-" or _fmt(high) == "-":
        return _fmt(value, digits)
    return f"{_fmt(value, digits)} [{_fmt(low, digits)}, {_fmt(high, digits)}]"


class Document:
    """Builds the HTML and the Markdown side by side, section by section."""

    def __init__(self, title: str):
        self.title = title
        self.html: list[str] = []
        self.md: list[str] = [f"# {title}", ""]

    def heading(self, text: str, level: int = 2) -> None:
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        self.md += [f"{'#' * level} {text}", ""]

    def paragraph(self, text: str, css: str = "") -> None:
        attribute = f' class="{css}"' if css else ""
        self.html.append(f"<p{attribute}>{html.escape(text)}</p>")
        self.md += [text, ""]

    def table(self, headers: list[str], rows: list[list[str]], row_classes: list[str] | None = None,
              numeric: set[int] | None = None) -> None:
        numeric = numeric or set()
        if not rows:
            self.paragraph("(none)", "note")
            return
        lines = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>"]
        for index, row in enumerate(rows):
            css = f' class="{row_classes[index]}"' if row_classes else ""
            cells = "".join(f'<td{" class=num" if i in numeric else ""}>{html.escape(str(c))}</td>'
                            for i, c in enumerate(row))
            lines.append(f"<tr{css}>{cells}</tr>")
        lines.append("</table>")
        self.html.append("\n".join(lines))

        def md_cell(text: Any) -> str:
            return str(text).replace("|", "\\|").replace("\n", " ")

        self.md.append("| " + " | ".join(md_cell(h) for h in headers) + " |")
        self.md.append("|" + "---|" * len(headers))
        self.md += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
        self.md.append("")

    def figure(self, png: bytes, name: str, caption: str) -> None:
        encoded = base64.b64encode(png).decode("ascii")
        self.html.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}">'
                         f"<figcaption class=note>{html.escape(caption)} "
                         f"(figures/{name}.png, figures/{name}.svg)</figcaption></figure>")
        self.md += [f"![{caption}](figures/{name}.png)", "", f"*{caption}* ([SVG](figures/{name}.svg))", ""]

    def render_html(self) -> str:
        return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
                f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head><body>\n"
                f"<h1>{html.escape(self.title)}</h1>\n" + "\n".join(self.html) + "\n</body></html>\n")

    def render_markdown(self) -> str:
        return "\n".join(self.md).rstrip() + "\n"


def _records(frame) -> list[dict[str, Any]]:
    return frame.to_dict("records") if frame is not None and len(frame) else []


def _verdict_section(doc: Document, verdicts) -> None:
    records = _records(verdicts)
    doc.heading("Verdicts on published claims")
    counts = {}
    for v in records:
        counts[v["verdict"]] = counts.get(v["verdict"], 0) + 1
    doc.paragraph(", ".join(f"{n} {verdict}" for verdict, n in counts.items()) or "no claims evaluated")
    rows, classes = [], []
    for v in records:
        measured = _with_ci({"m": v.get("measured"), "m_ci_low": v.get("ci_low"), "m_ci_high": v.get("ci_high")}, "m")
        rows.append([v["claim_id"], v["metric"], v["expected"], v["verdict"], measured, _fmt(v.get("n")),
                     v.get("reason", "")])
        classes.append("v-" + v["verdict"].replace(" ", "-"))
    doc.table(["claim", "metric", "claimed", "verdict", "measured [95% CI]", "n", "why"], rows, classes, numeric={5})
    doc.paragraph("reproduced / not reproduced: the measurement (its whole 95% CI for timed or sampled figures) lies "
                  "inside / outside the claimed region widened by the claim's tolerance; inconclusive: the CI "
                  "straddles it or there are too few prompts; not applicable here: no run met the claim's "
                  "conditions, with the closest measurement and why it does not apply.", "note")
    doc.heading("Verdict details", 3)
    details = []
    for v in records:
        cells = list(v["cells"]) if v.get("cells") is not None else []
        source = v["source_title"] + (f" ({v['source_url']})" if isinstance(v.get("source_url"), str) else " (no address given)")
        details.append([v["claim_id"], source, f"\u201c{v['quote']}\u201d", v.get("conditions", ""),
                        " ".join(x for x in (v.get("closest"), v.get("feasibility")) if x) or "-",
                        ", ".join(cells[:6]) + (f" (+{len(cells) - 6} more)" if len(cells) > 6 else "")])
    doc.table(["claim", "source", "quote", "conditions", "closest measurement / feasibility", "cells"], details)


def _cells_section(doc: Document, cells) -> None:
    doc.heading("All cells")
    rows = []
    for c in _records(cells):
        if c["status"] != "ok":
            continue
        rows.append([c["cell_ref"], c["mode"], _fmt(c["k"]), _fmt(c["temperature"]), c["dtype"], _fmt(c["n_prompts"]),
                     _with_ci(c, "tokens_per_s"), _fmt(c["tpot_ms"]), _with_ci(c, "speedup"),
                     _with_ci(c, "acceptance_rate"), _fmt(c["mean_accepted_length"]), _fmt(c["cost_ratio"]),
                     _fmt(c["verify_ratio"]), _fmt(c["predicted_speedup"]), _fmt(c["efficiency"]),
                     _fmt(c["exact_match_rate"])])
    doc.table(["cell", "mode", "k", "T", "dtype", "prompts", "decode tokens/s [CI]", "TPOT ms", "speedup [CI]",
               "acceptance [CI]", "tokens/iteration", "c", "v", "predicted", "efficiency", "exact match"], rows,
              numeric=set(range(5, 16)))


def _equivalence_section(doc: Document, equivalence) -> None:
    doc.heading("Equivalence (greedy speculative vs matched baseline)")
    records = _records(equivalence)
    summary: dict[str, dict[str, int]] = {}
    for r in records:
        counts = summary.setdefault(r["cell_ref"], {})
        counts[r["classification"]] = counts.get(r["classification"], 0) + 1
    doc.table(["speculative cell", "prompts", "exact", "near-tie", "mismatch", "unclassified"],
              [[ref, str(sum(c.values())), str(c.get("exact", 0)), str(c.get("near-tie", 0)),
                str(c.get("mismatch", 0)), str(c.get("unclassified", 0))] for ref, c in summary.items()],
              numeric={1, 2, 3, 4, 5})
    divergences = [r for r in records if not r["exact"]]
    if divergences:
        doc.paragraph("First divergence of every prompt whose tokens differ (margins: target's top-1 minus top-2 "
                      "logit at that position, in the baseline and speculative computations).", "note")
        doc.table(["cell", "prompt", "doc", "position", "baseline token", "speculative token", "baseline margin",
                   "speculative margin", "classification", "reason"],
                  [[r["cell_ref"], _fmt(r["prompt_index"]), _fmt(r["doc_id"]), _fmt(r["position"]),
                    _fmt(r["baseline_token"]), _fmt(r["speculative_token"]), _fmt(r["baseline_margin"]),
                    _fmt(r["speculative_margin"]), r["classification"], _fmt(r.get("reason"))] for r in divergences])


def _quality_section(doc: Document, quality) -> None:
    doc.heading("Quality")
    doc.table(["cell", "mode", "k", "T", "prompts", "accuracy [95% CI]", "baseline accuracy", "delta [95% CI]"],
              [[q["cell_ref"], q["mode"], _fmt(q["k"]), _fmt(q["temperature"]), _fmt(q["n"]), _with_ci(q, "accuracy"),
                _fmt(q["baseline_accuracy"]), _with_ci(q, "quality_delta")] for q in _records(quality)],
              numeric={4, 6})


def _environment_section(doc: Document, cells) -> None:
    doc.heading("Environment of every run")
    records = _records(cells)
    env_columns = sorted({k for r in records for k in r if k.startswith("env_")})
    seen: dict[tuple, list[str]] = {}
    for r in records:
        job = f"{r['pair']}/{r['backend']}/{r['task']}"
        key = (job, *(str(r.get(c)) for c in env_columns))
        seen.setdefault(key, []).append(r["cell_id"])
    doc.table(["job (pair/backend/task)", *[c[4:] for c in env_columns], "cells"],
              [[key[0], *key[1:], str(len(ids))] for key, ids in seen.items()])


def build_report(results_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 history_file: str | os.PathLike | None = None) -> Path:
    """Write the report for RESULTS_DIR into OUT_DIR (default reports/<results dir name>); returns OUT_DIR."""
    from specbench.report import figures
    from specbench.report.history import read_history
    from specbench.workflow.aggregate import _atomic_write, load_tables

    results_dir = Path(results_dir)
    history = read_history(history_file) if history_file else None  # fail on a bad file before any work
    tables = load_tables(results_dir)
    out_dir = Path(out_dir) if out_dir else Path("reports") / results_dir.name
    figures_dir = out_dir / "figures"
    cells, verdicts = tables["cells"], tables["verdicts"]

    doc = Document(f"specbench report: {results_dir.name}")
    ok = int((cells["status"] == "ok").sum()) if len(cells) else 0
    doc.paragraph(f"Results: {results_dir} ({len(cells)} cells, {ok} ok, {len(tables['samples'])} prompt samples). "
                  f"Generated {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} from stored results.",
                  "note")
    _verdict_section(doc, verdicts)

    plots = [
        ("tokens_per_s_by_size", figures.tokens_per_s_by_size(cells), "Throughput per model size",
         "Decode tokens/s, baseline vs best speculative k, per model pair ordered by target size (95% CI)"),
        ("speedup_vs_k", figures.speedup_vs_k(cells), "Speedup vs draft length",
         "Measured speedup vs k per task (95% CI); dashed: Leviathan et al.'s expected speedup for the measured "
         "per-token acceptance a, cost ratio c and verify ratio v"),
        ("acceptance_by_position", figures.acceptance_by_position(cells), "Acceptance by draft position",
         "Share of iterations in which each draft position was accepted"),
        ("measured_vs_predicted", figures.measured_vs_predicted(cells), "Measured vs predicted speedup",
         "Measured speedup vs L / (k c + v) from measured tokens per iteration L and costs"),
    ]
    for name, figure, heading, caption in plots:
        doc.heading(heading)
        if figure is None:
            doc.paragraph("Nothing to draw: no speculative cell with a matched baseline.", "note")
            continue
        doc.figure(figures.save(figure, figures_dir, name), name, caption)

    _cells_section(doc, cells)
    _equivalence_section(doc, tables["equivalence"])
    _quality_section(doc, tables["quality"])
    quality_figure = figures.quality(tables["quality"])
    if quality_figure is not None:
        doc.figure(figures.save(quality_figure, figures_dir, "quality"), "quality",
                   "Accuracy of baseline and speculative cells per task, 95% CI")
    failed = [c for c in _records(cells) if c["status"] != "ok"]
    doc.heading("Failed cells")
    doc.table(["cell", "status", "message"], [[c["cell_ref"], c["status"], _fmt(c.get("error"))] for c in failed])
    _environment_section(doc, cells)
    if history is not None:
        doc.heading("History")
        trend = figures.history_trend(history)
        if trend is None:
            doc.paragraph(f"{history_file}: no speedups recorded yet.", "note")
        else:
            doc.figure(figures.save(trend, figures_dir, "history"), "history",
                       f"Best speedup per configuration over the {len(history)} runs in {history_file}")
    doc.heading("Metric definitions")
    doc.paragraph("Decode tokens/s = (new_tokens - 1) / decode_s, pooled over prompts (the first token comes from "
                  "prefill). Speedup = speculative over matched-baseline decode tokens/s, bootstrap 95% CI with "
                  "prompts resampled in pairs. Acceptance = accepted / drafted. Tokens per iteration L = "
                  "(accepted + iterations) / iterations. c = draft step time / baseline step time; v = "
                  "verification time per iteration / baseline step time. Predicted = L / (k c + v); efficiency = "
                  "measured / predicted. Leviathan et al. 2023: expected speedup (1 - a^(k+1)) / ((1 - a)(k c + v)). "
                  "Accuracy CIs are Wilson intervals. Definitions live in specbench/metrics.py.", "note")

    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(out_dir / "index.html", lambda tmp: Path(tmp).write_text(doc.render_html(), encoding="utf-8"))
    _atomic_write(out_dir / "index.md", lambda tmp: Path(tmp).write_text(doc.render_markdown(), encoding="utf-8"))
    return out_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", metavar="RESULTS_DIR", help="folder holding cells/ (and tables/)")
    parser.add_argument("--out", metavar="DIR", default=None, help="report folder (default: reports/<RESULTS_DIR name>)")
    parser.add_argument("--history", metavar="FILE", default=None, help="history.jsonl to draw the trend from")


def run(args: argparse.Namespace) -> int:
    if not Path(args.results_dir).is_dir():
        raise SpecbenchError(f"{args.results_dir}: results directory not found")
    out = build_report(args.results_dir, args.out, args.history)
    print(f"report written to {out / 'index.html'} and {out / 'index.md'}")
    return 0
