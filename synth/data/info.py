"""Corpus summaries: counts, a markdown dataset card and a PNG of the distributions."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from synth.data.corpus import Corpus
from synth.data.gm import FAMILIES, note_name
from synth.fileio import atomic_path, atomic_write_text


def summarize(corpus: Corpus) -> dict[str, Any]:
    notes = corpus.notes
    sr, n = corpus.sample_rate, corpus.audio.shape[1]
    size = sum(p.stat().st_size for p in corpus.root.glob("*") if p.is_file())
    return {
        "root": str(corpus.root), "hash": corpus.hash, "notes": len(notes),
        "instruments": len({r["instrument_id"] for r in notes}),
        "sample_rate": sr, "note_seconds": n / sr, "hours": len(notes) * n / sr / 3600,
        "size_bytes": size,
        "family": dict(Counter(r["family"] for r in notes)),
        "pitch": dict(sorted(Counter(int(round(r["pitch"])) for r in notes).items())),
        "velocity": dict(sorted(Counter(r["velocity"] for r in notes).items())),
        "split": dict(Counter(r["split"] for r in notes)),
        "instrument_split": dict(Counter(r["instrument_split"] for r in notes)),
        "held_out_instruments": sorted({r["instrument"] for r in notes
                                        if r["instrument_split"] == "test"}),
        "builder": corpus.info.get("builder", {}),
    }


def plot_distributions(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    fams = [f for f in FAMILIES if f in summary["family"]]
    axes[0, 0].barh(fams, [summary["family"][f] for f in fams])
    axes[0, 0].set_title("notes per GM family")
    axes[0, 1].bar(list(map(int, summary["pitch"])), list(summary["pitch"].values()), width=1.0)
    axes[0, 1].set_title("notes per MIDI pitch")
    axes[1, 0].bar([str(v) for v in summary["velocity"]], list(summary["velocity"].values()))
    axes[1, 0].set_title("notes per velocity")
    splits = ["train", "valid", "test"]
    axes[1, 1].bar([f"note {s}" for s in splits], [summary["split"].get(s, 0) for s in splits])
    axes[1, 1].bar(["instrument train", "instrument test"],
                   [summary["instrument_split"].get(s, 0) for s in ("train", "test")])
    axes[1, 1].set_title("splits (notes)")
    axes[1, 1].tick_params(axis="x", rotation=20)
    fig.suptitle(f"corpus {summary['hash']}: {summary['notes']} notes, "
                 f"{summary['instruments']} instruments, {summary['hours']:.1f} h")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return path


def dataset_card(summary: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    s = summary
    pitches = [int(p) for p in s["pitch"]]
    lines = [
        f"# Dataset card: corpus {s['hash']}", "",
        f"- notes: {s['notes']} from {s['instruments']} instruments "
        f"({s['hours']:.2f} hours, {s['note_seconds']:.2f} s per note at {s['sample_rate']} Hz)",
        f"- pitch range: {note_name(min(pitches))} ({min(pitches)}) to "
        f"{note_name(max(pitches))} ({max(pitches)})" if pitches else "- pitch range: none",
        f"- velocities: {', '.join(str(v) for v in s['velocity'])}",
        f"- size on disk: {s['size_bytes'] / 1e9:.2f} GB",
        f"- builder: `{json.dumps(s['builder'].get('builder', s['builder']))}`", "",
        "## Splits", "",
        "| split | note split | instrument split |", "|---|---|---|",
    ]
    for name in ("train", "valid", "test"):
        lines.append(f"| {name} | {s['split'].get(name, 0)} | {s['instrument_split'].get(name, 0)} |")
    lines += ["", f"Held-out instruments: {', '.join(s['held_out_instruments']) or 'none'}", "",
              "## Families", "", "| family | notes |", "|---|---|"]
    lines += [f"| {f} | {s['family'][f]} |" for f in FAMILIES if f in s["family"]]
    if extra:
        lines += ["", "## Checks", "", "```json", json.dumps(extra, indent=2), "```"]
    lines += ["", "![distributions](distributions.png)", ""]
    return "\n".join(lines)


def write_card(corpus: Corpus, extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    summary = summarize(corpus)
    png = plot_distributions(summary, corpus.root / "distributions.png")
    card = corpus.root / "CARD.md"
    atomic_write_text(card, dataset_card(summary, extra))
    return card, png
