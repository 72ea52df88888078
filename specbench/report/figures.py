"""The report's figures, drawn with matplotlib's Agg backend from the aggregate tables.

Each function takes DataFrames and returns a matplotlib Figure, or None when the tables hold
nothing to draw (e.g. no speculative cell); `save` writes PNG and SVG and returns the PNG bytes.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen before pyplot loads)
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from specbench import metrics  # noqa: E402

# A speedup curve is grouped by everything but k: one line per configuration.
CURVE_KEYS = ["pair", "backend", "task", "temperature", "dtype"]


def _ok(cells):
    return cells[cells["status"] == "ok"] if len(cells) else cells


def _error_bars(frame, column: str) -> np.ndarray:
    """Asymmetric error bars (2 x n) from <column>_ci_low/high, zero where there is no interval."""
    value = frame[column].to_numpy(float)
    low = np.nan_to_num(value - frame[f"{column}_ci_low"].to_numpy(float), nan=0.0)
    high = np.nan_to_num(frame[f"{column}_ci_high"].to_numpy(float) - value, nan=0.0)
    return np.vstack([np.clip(low, 0, None), np.clip(high, 0, None)])


def _size_label(params: Any) -> str:
    if params is None or (isinstance(params, float) and math.isnan(params)):
        return "size ?"
    params = float(params)
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if params >= scale:
            return f"{params / scale:.3g}{unit}"
    return f"{params:.0f}"


def tokens_per_s_by_size(cells):
    """Decode tokens/s of each baseline and its best speculative cell, per model pair (ordered by target size)."""
    ok = _ok(cells)
    if not len(ok) or not (ok["mode"] == "speculative").any():
        return None
    groups = []
    for key, frame in ok.groupby(["pair", "backend", "task", "temperature", "dtype"], dropna=False, sort=False):
        base = frame[frame["mode"] == "baseline"]
        spec = frame[frame["mode"] == "speculative"]
        if not len(base) or not len(spec):
            continue
        best = spec.loc[spec["tokens_per_s"].idxmax()]
        groups.append((float(base["target_params"].iloc[0] or 0), key, base.iloc[0], best))
    if not groups:
        return None
    groups.sort(key=lambda g: g[0])
    figure, axis = plt.subplots(figsize=(max(6, 1.4 * len(groups)), 4.2))
    x = np.arange(len(groups))
    for offset, index, label in ((-0.2, 2, "baseline"), (0.2, 3, "speculative (best k)")):
        rows = [g[index] for g in groups]
        values = [r["tokens_per_s"] for r in rows]
        errors = np.hstack([_error_bars(r.to_frame().T, "tokens_per_s") for r in rows])
        axis.bar(x + offset, values, width=0.4, yerr=errors, capsize=3, label=label)
    labels = [f"{g[1][0]} ({_size_label(g[0])})\n{g[1][1]}, {g[1][2]}\nT={g[1][3]:g}"
              + (f", k={int(g[3]['k'])}") for g in groups]
    axis.set_xticks(x, labels, fontsize=7)
    axis.set_ylabel("decode throughput (tokens/s)")
    axis.set_title("Baseline vs speculative throughput per model pair (target size)")
    axis.legend()
    figure.tight_layout()
    return figure


def _curve_parameters(frame) -> tuple[float, float, float]:
    """Median measured per-token acceptance a, cost ratio c and verify ratio v over a configuration's k values."""
    return tuple(float(np.nanmedian(frame[col].to_numpy(float))) if frame[col].notna().any() else math.nan
                 for col in ("per_token_acceptance", "cost_ratio", "verify_ratio"))


def speedup_vs_k(cells):
    """Measured speedup (with 95% CI) against k, one panel per task, Leviathan's curve for the measured a, c, v dashed."""
    ok = _ok(cells)
    spec = ok[(ok["mode"] == "speculative") & ok["speedup"].notna()] if len(ok) else ok
    if not len(spec):
        return None
    tasks = sorted(spec["task"].unique())
    figure, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        frame = spec[spec["task"] == task]
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for number, (key, group) in enumerate(frame.groupby(CURVE_KEYS, dropna=False, sort=True)):
            group = group.sort_values("k")
            colour = colours[number % len(colours)]
            label = f"{key[0]}, {key[1]}, T={key[3]:g}, {key[4]}"
            axis.errorbar(group["k"], group["speedup"], yerr=_error_bars(group, "speedup"), marker="o",
                          capsize=3, color=colour, label=label)
            a, c, v = _curve_parameters(group)
            if not any(math.isnan(x) for x in (a, c, v)):
                ks = np.arange(1, int(group["k"].max()) + 3)
                axis.plot(ks, [metrics.leviathan_speedup(a, int(k), c, v) for k in ks], linestyle="--",
                          color=colour, alpha=0.7, label=f"theory a={a:.2f}, c={c:.2g}, v={v:.2g}")
        axis.axhline(1.0, color="grey", linewidth=0.8)
        axis.set_xlabel("draft length k (tokens)")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel("speedup over matched baseline (x)")
        axis.set_title(f"Speedup vs draft length: {task}")
        axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def acceptance_by_position(cells):
    """Share of iterations accepting draft position i, per speculative cell."""
    ok = _ok(cells)
    spec = ok[ok["mode"] == "speculative"] if len(ok) else ok
    spec = spec[spec["acceptance_by_position"].map(lambda v: v is not None and len(v) > 0)] if len(spec) else spec
    if not len(spec):
        return None
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for _, row in spec.sort_values(["pair", "backend", "task", "k"]).iterrows():
        values = list(row["acceptance_by_position"])
        axis.plot(range(1, len(values) + 1), values, marker="o",
                  label=f"{row['pair']}, {row['backend']}, {row['task']}, k={int(row['k'])}, T={row['temperature']:g}")
    axis.set_xlabel("draft position (1 = first drafted token)")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel("share of iterations accepting it (fraction)")
    axis.set_ylim(0, 1.05)
    axis.set_title("Acceptance by draft position")
    axis.legend(fontsize=6)
    figure.tight_layout()
    return figure


def measured_vs_predicted(cells):
    """Measured speedup against L / (k c + v) from the measured tokens per iteration and costs."""
    ok = _ok(cells)
    spec = ok[(ok["mode"] == "speculative") & ok["speedup"].notna() & ok["predicted_speedup"].notna()] if len(ok) else ok
    if not len(spec):
        return None
    figure, axis = plt.subplots(figsize=(5.5, 5))
    for (backend,), group in spec.groupby(["backend"]):
        axis.errorbar(group["predicted_speedup"], group["speedup"], yerr=_error_bars(group, "speedup"), fmt="o",
                      capsize=3, label=backend)
    top = float(np.nanmax(np.concatenate([spec["predicted_speedup"], spec["speedup_ci_high"].fillna(spec["speedup"])])))
    axis.plot([0, top * 1.1], [0, top * 1.1], color="grey", linestyle="--", label="measured = predicted")
    axis.set_xlabel("predicted speedup L / (k c + v) (x)")
    axis.set_ylabel("measured speedup (x)")
    axis.set_title("Measured vs predicted speedup")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def quality(quality_table):
    """Accuracy (95% CI) of baseline and speculative cells, per task and pair."""
    if quality_table is None or not len(quality_table):
        return None
    frame = quality_table.sort_values(["task", "pair", "backend", "k"])
    labels = [f"{r.task}\n{r.pair}, {r.backend}\n{'baseline' if r.mode == 'baseline' else f'k={int(r.k)}'}, T={r.temperature:g}"
              for r in frame.itertuples()]
    colours = ["tab:blue" if m == "baseline" else "tab:orange" for m in frame["mode"]]
    figure, axis = plt.subplots(figsize=(max(6, 0.9 * len(frame)), 4.2))
    axis.bar(range(len(frame)), frame["accuracy"], yerr=_error_bars(frame, "accuracy"), capsize=3, color=colours)
    axis.set_xticks(range(len(frame)), labels, fontsize=6)
    axis.set_ylabel("accuracy (fraction of prompts scored correct)")
    axis.set_ylim(0, 1.05)
    axis.set_title("Quality: baseline (blue) vs speculative (orange), 95% CI")
    figure.tight_layout()
    return figure


def history_trend(history: list[dict[str, Any]]):
    """Best speedup per configuration across the runs of a history file."""
    points: dict[str, list[tuple[int, float]]] = {}
    for index, entry in enumerate(history):
        for headline in entry.get("headlines", []):
            if headline.get("best_speedup") is not None:
                key = f"{headline['pair']}, {headline['backend']}, {headline['task']}, T={headline['temperature']:g}"
                points.setdefault(key, []).append((index, float(headline["best_speedup"])))
    if not points:
        return None
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for key, series in sorted(points.items()):
        axis.plot([p[0] for p in series], [p[1] for p in series], marker="o", label=key)
    ticks = list(range(len(history)))
    axis.set_xticks(ticks, [f"{h.get('date', '?')[:10]}\n{str(h.get('git_commit') or '?')[:7]}" for h in history],
                    fontsize=7)
    axis.set_xlabel("run (date, commit)")
    axis.set_ylabel("best speedup over k (x)")
    axis.set_title("Speedup history")
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def save(figure, figures_dir: Path, name: str) -> bytes:
    """Write NAME.png and NAME.svg; return the PNG bytes (for embedding)."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    png = buffer.getvalue()
    (figures_dir / f"{name}.png").write_bytes(png)
    figure.savefig(figures_dir / f"{name}.svg", format="svg")
    plt.close(figure)
    return png
