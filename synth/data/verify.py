"""Checks on a finished corpus: level (no silent notes) and pitch labels against torchcrepe."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from synth.data.corpus import Corpus

#: Families whose notes have no reliable pitch (drums, effects); excluded from the pitch check.
UNPITCHED_FAMILIES = ("percussive", "sound effects", "synth effects")


def verify_levels(corpus: Corpus, silence_rms: float = 1e-4, chunk: int = 512) -> dict[str, Any]:
    """RMS of every note; counts notes below `silence_rms` and the quietest ones."""
    rms = np.empty(len(corpus), np.float64)
    for start in range(0, len(corpus), chunk):
        block = corpus.audio[start:start + chunk].astype(np.float32) / 32767.0
        rms[start:start + len(block)] = np.sqrt((block.astype(np.float64) ** 2).mean(1))
    order = np.argsort(rms)[:5]
    return {"silent": int((rms < silence_rms).sum()), "min_rms": float(rms.min()) if len(rms) else 0.0,
            "quietest": [corpus.notes[i]["id"] for i in order]}


def verify_pitch(corpus: Corpus, n: int = 200, seed: int = 0, model: str = "tiny",
                 tolerance_cents: float = 25.0, batch: int = 16,
                 recheck_model: str | None = "full") -> dict[str, Any]:
    """torchcrepe f0 on a seeded sample of pitched notes vs their labels.

    The median f0 of confidently voiced frames in the held part of each note is compared with the
    labelled MIDI pitch. Notes `model` (tiny, fast) puts outside the tolerance are measured again
    with `recheck_model` (the published full CREPE, too slow on a CPU to run on every note):
    tiny often locks onto a harmonic of low notes, which full CREPE does not. Returns counts,
    the fraction within `tolerance_cents` and per-note errors (octave errors show up as ~1200
    cents; what remains after the re-check are presets that sound off their key by design:
    organ footages, "guitar harmonics", "fifths lead").
    """
    from synth.pitch import cents, f0, midi_to_hz

    pitched = [i for i, r in enumerate(corpus.notes) if r["family"] not in UNPITCHED_FAMILIES
               and r.get("bank", 0) != 128]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(pitched, size=min(n, len(pitched)), replace=False).tolist())
    sr = corpus.sample_rate
    held = corpus.info.get("builder", {}).get("options", {}).get("held_seconds", 1.0)
    seg = slice(int(0.1 * sr), int(min(held, 1.0) * sr))
    errors: list[dict[str, Any]] = []
    for start in range(0, len(chosen), batch):
        idx = chosen[start:start + batch]
        audio = torch.from_numpy(corpus.waveform(idx)[:, seg])
        track = f0(audio, sr, model=model)
        for row_i, i in enumerate(idx):
            voiced = track.periodicity[row_i] > 0.5
            if voiced.sum() < 3:
                errors.append({"id": corpus.notes[i]["id"], "cents": None})
                continue
            est = float(track.f0_hz[row_i][voiced].median())
            err = float(cents(est, midi_to_hz(float(corpus.notes[i]["pitch"]))))
            errors.append({"id": corpus.notes[i]["id"], "cents": err})
    rechecked = 0
    if recheck_model and recheck_model != model:
        for e, i in zip(errors, chosen):
            if e["cents"] is not None and abs(e["cents"]) > tolerance_cents:
                audio = torch.from_numpy(corpus.waveform([i])[:, seg])
                track = f0(audio, sr, model=recheck_model)
                voiced = track.periodicity[0] > 0.5
                if voiced.sum() >= 3:
                    e["first_cents"] = e["cents"]
                    e["cents"] = float(cents(float(track.f0_hz[0][voiced].median()),
                                             midi_to_hz(float(corpus.notes[i]["pitch"]))))
                rechecked += 1
    measured = [abs(e["cents"]) for e in errors if e["cents"] is not None]
    within = sum(m <= tolerance_cents for m in measured)
    # Octave-folded: distance to the nearest whole number of octaves (GM presets played far
    # outside their natural range, or "guitar harmonics", sound an octave or two off the key).
    folded = [abs(m - 1200 * round(m / 1200)) for m in measured]
    within_folded = sum(f <= tolerance_cents for f in folded)
    return {
        "checked": len(errors), "voiced": len(measured), "within": within,
        "fraction_within": within / max(len(measured), 1),
        "within_octave_folded": within_folded,
        "fraction_within_octave_folded": within_folded / max(len(measured), 1),
        "median_abs_cents": float(np.median(measured)) if measured else None,
        "tolerance_cents": tolerance_cents, "model": model,
        "recheck_model": recheck_model, "rechecked": rechecked,
        "worst": sorted((e for e in errors if e["cents"] is not None),
                        key=lambda e: -abs(e["cents"]))[:10],
    }
