"""Writing an evaluation report (`latent.evaluate.evaluate`'s dict): report.json, report.md
(the table with each column's meaning and better direction, the per-octave breakdown, timings)
and PNG plots (metrics.png: one bar panel per metric, floor/ceiling/model coloured; per_pitch.png).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

from latent.evaluate import COLUMNS
from synth.fileio import atomic_write_bytes, atomic_write_text


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.4g}"


def _columns(report: dict[str, Any]) -> list[str]:
    """Metric keys (in `COLUMNS` order) that some row of the report carries."""
    return [k for k in COLUMNS if any(k in r["metrics"] for r in report["rows"])]


def _cell(text: str) -> str:
    """Escape the pipes of labels such as |D|self for a markdown table cell."""
    return text.replace("|", "\\|")


def table(report: dict[str, Any]) -> list[str]:
    """The metric table (one row per model or calibration row) as markdown lines; a column whose
    floor row is not better than every ceiling row is marked (!)."""
    keys, sep = _columns(report), report["separation"]
    head = ["model", "role"] + [_cell(COLUMNS[k][0]) + ("" if sep.get(k, True) else " (!)")
                                for k in keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["rows"]:
        lines.append("| " + " | ".join([r["name"], r["role"]] +
                                        [_fmt(r["metrics"].get(k)) for k in keys]) + " |")
    return lines


def column_notes(report: dict[str, Any]) -> list[str]:
    """One line per column: its label, which direction is better, what it means (markdown)."""
    arrows = {"up": "higher", "down": "lower", "alpha": "near alpha", "0": "near 0",
              "real": "near real test"}
    return ["| column | better | meaning |", "|---|---|---|"] + [
        f"| {_cell(COLUMNS[k][0])} | {arrows[COLUMNS[k][1]]} | {COLUMNS[k][2]} |"
        for k in _columns(report)]


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Evaluation", "",
             f"{report['n_train']} training notes, {report['n_test']} test notes, "
             f"{report['sample_rate']} Hz; classifier {report['classifier']['hash']}.", ""]
    lines += table(report)
    lines += ["", "(!): the floor row is not better than every ceiling row on this metric.", ""]
    lines += column_notes(report)
    if not report.get("wavegan_features"):
        lines += ["", "WaveGAN-feature |D|self and |D|train: latent.metrics.distance not installed."]
    lines += ["", "## Per octave (pitch accuracy / |D|train on the embedding)", "",
              "| model | octave | n | PA | \\|D\\|train emb |", "|---|---|---|---|---|"]
    for name, rows in report["per_pitch"].items():
        lines += [f"| {name} | {r['octave']} | {r['n']} | {_fmt(r['pitch_acc'])} | "
                  f"{_fmt(r['orig_emb'])} |" for r in rows]
    t = report["timing_s"]
    lines += ["", f"Timing: real features {t['real_features']:.1f} s, generated features "
              f"{t['generated_features']:.1f} s, metrics {t['metrics']:.1f} s.", ""]
    return "\n".join(lines)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plots(report: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes: metrics.png (one bar panel per metric) and per_pitch.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = _columns(report)
    names = [r["name"] for r in report["rows"]]
    colours = {"floor": "tab:green", "ceiling": "tab:red", "model": "tab:blue"}
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(keys) / cols), cols,
                             figsize=(4 * cols, 2.6 * math.ceil(len(keys) / cols)), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        vals = [r["metrics"].get(key, float("nan")) for r in report["rows"]]
        ax.bar(range(len(names)), vals, color=[colours.get(r["role"], "gray")
                                                for r in report["rows"]])
        ax.set_title(f"{COLUMNS[key][0]} ({COLUMNS[key][1]})", fontsize=9)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    out = {"metrics.png": _png(fig)}
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, rows in report["per_pitch"].items():
        ax.plot([r["octave"] for r in rows], [r["pitch_acc"] for r in rows], marker="o", label=name)
    ax.set_xlabel("octave of the requested pitch")
    ax.set_ylabel("pitch accuracy (within 1 semitone)")
    ax.legend(fontsize=7)
    out["per_pitch.png"] = _png(fig)
    plt.close(fig)
    return out


def write_report(report: dict[str, Any], out_dir: str | Path) -> Path:
    """Write report.json, report.md and the PNG plots into `out_dir` (atomic writes)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, allow_nan=True) + "\n")
    atomic_write_text(out / "report.md", markdown(report))
    for name, data in plots(report).items():
        atomic_write_bytes(out / name, data)
    return out / "report.md"
