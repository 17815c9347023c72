"""The pack report: `report.md` and `contact_sheet.png` (log-mel spectrograms, matplotlib Agg).

It states the pack's diversity |D|self, its originality |D|train against the training corpus
beside the same figure for held-out real notes (or says plainly that no corpus was given), the
models' real bandwidth (model rate / 2) against the file rate, and the near-duplicates dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from synth.features import FeatureSpec, LogMel
from synth.fileio import atomic_path, atomic_write_text

MAX_PANELS = 48


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def report_text(spec: Any, instruments: Sequence[dict], rows: Sequence[dict],
                dropped: Sequence[str], diversity: float | None, originality: float | None,
                held_out: float | None, stats_source: str) -> str:
    lines = [f"# Sample pack: {spec.name}", "",
             f"{len(rows)} samples (24-bit PCM WAV, {spec.sample_rate} Hz) in {len(instruments)} "
             f"instrument(s): keys {spec.keys.low}-{spec.keys.high} every {spec.keys.step} "
             f"semitone(s), velocity layers {', '.join(map(str, spec.velocities))}, "
             f"{spec.round_robins} round robin(s), notes of {spec.duration:g} s, "
             f"normalisation: {spec.normalize}.", "",
             "## Models and bandwidth", "",
             "| instrument | model | kind | file hash | model rate | real bandwidth |",
             "|---|---|---|---|---|---|"]
    for inst in instruments:
        sr = inst["model_sample_rate"]
        lines.append(f"| {inst['name']} | {inst['model']} | {inst['kind']} | "
                     f"{inst['model_hash']} | {sr} Hz | 0-{sr / 2:g} Hz |")
    lowest = min(i["model_sample_rate"] for i in instruments)
    lines += ["", f"The files are written at {spec.sample_rate} Hz, but a model only makes sound "
                  f"up to half its own rate: above {lowest / 2:g} Hz these samples hold nothing "
                  "the model made (resampling adds no content)." if lowest < spec.sample_rate else
              f"The models' band covers the file rate's ({spec.sample_rate / 2:g} Hz).", ""]
    lines += ["## Diversity and originality", "",
              "WaveGAN's distances on normalised log-mel features (16 kHz, first 16,384 "
              "samples, STFT 2048/128, 128 mels 40-7800 Hz); features normalised with the "
              + ("training corpus's per-bin statistics." if stats_source == "corpus" else
                 "pack's own per-bin statistics (no corpus given)."), "",
              f"- diversity |D|self (mean distance to the nearest other sample): "
              f"{_fmt(diversity)}"]
    if originality is None:
        lines.append("- originality |D|train: not measured: no training corpus was given "
                     "(`corpus:` in the spec or `--corpus`).")
    else:
        lines.append(f"- originality |D|train (mean distance to the nearest training note, "
                     f"{spec.corpus_notes} notes at most): {_fmt(originality)}; held-out real "
                     f"notes score {_fmt(held_out)} on the same features (a pack far below that "
                     "copies its training data).")
    lines += ["", "## Near-duplicates", ""]
    if dropped:
        lines.append(f"{len(dropped)} round robin(s) closer than {spec.dedup_threshold:g} (RMS "
                     "log-mel difference) to an earlier take of the same note were dropped:")
        lines += [f"- {name}" for name in dropped]
    else:
        lines.append(f"None dropped (threshold {spec.dedup_threshold:g} RMS log-mel difference).")
    lines += ["", "## Files", "",
              "- `samples/*.wav`: 24-bit WAV with `smpl` (unity note, loop) and `inst` (key and "
              "velocity range) chunks; `samples/*.json`: each sample's metadata",
              "- `*.sfz`, `*.dspreset`: one instrument each (SFZ; DecentSampler)",
              "- `metadata.json`, `metadata.csv`: every sample (model, hash, seed, latent, pitch, "
              "velocity, descriptors, originality)",
              "- `contact_sheet.png`: log-mel spectrograms", ""]
    return "\n".join(lines)


def contact_sheet(path: Path, audio: Sequence[torch.Tensor], rows: Sequence[dict],
                  sample_rate: int) -> Path:
    """A grid of log-mel spectrograms (at most MAX_PANELS, spread over the pack) as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pick = np.unique(np.linspace(0, len(audio) - 1, min(MAX_PANELS, len(audio))).round()
                     .astype(int)) if audio else []
    layer = LogMel(FeatureSpec(sample_rate=sample_rate, n_fft=1024, hop_length=256, n_mels=64,
                               f_min=0.0, f_max=sample_rate / 2))
    cols = min(6, max(1, len(pick)))
    nrows = max(1, -(-len(pick) // cols))
    fig = Figure(figsize=(2.2 * cols, 1.8 * nrows), dpi=80)
    FigureCanvasAgg(fig)
    for k, i in enumerate(pick):
        ax = fig.add_subplot(nrows, cols, k + 1)
        x = audio[i]
        if x.numel() < 1024:
            x = torch.nn.functional.pad(x, (0, 1024 - x.numel()))
        with torch.no_grad():
            mel = layer(x[None].float())[0].numpy()
        ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", vmin=mel.max() - 12)
        ax.set_title(Path(rows[i]["file"]).stem[-22:], fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return path


def write_report(out: Path, spec: Any, instruments: Sequence[dict], rows: Sequence[dict],
                 dropped: Sequence[str], audio: Sequence[torch.Tensor], diversity: float | None,
                 originality: float | None, held_out: float | None,
                 stats_source: str) -> list[Path]:
    """Write report.md and contact_sheet.png into `out`; returns both paths."""
    out = Path(out).resolve()
    text = report_text(spec, instruments, rows, dropped, diversity, originality, held_out,
                       stats_source)
    text += "\n![contact sheet](contact_sheet.png)\n"
    md = out / "report.md"
    if not md.exists() or md.read_text() != text:
        atomic_write_text(md, text)
    png = contact_sheet(out / "contact_sheet.png", audio, rows, spec.sample_rate)
    return [md, png]
