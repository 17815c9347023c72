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
    flagged = {corpus.notes[i]["id"]: corpus.notes[i].get("pitch_ok") for i in chosen}
    on_key = [abs(e["cents"]) for e in errors
              if e["cents"] is not None and flagged.get(e["id"]) is True]
    surveyed = any(v is not None for v in flagged.values())
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
        # Among the sampled notes the corpus survey marks pitch_ok (None: corpus not surveyed).
        "on_key_voiced": len(on_key) if surveyed else None,
        "on_key_within": sum(m <= tolerance_cents for m in on_key) if surveyed else None,
        "flagged_off_key": sum(v is False for v in flagged.values()) if surveyed else None,
        "tolerance_cents": tolerance_cents, "model": model,
        "recheck_model": recheck_model, "rechecked": rechecked,
        "worst": sorted((e for e in errors if e["cents"] is not None),
                        key=lambda e: -abs(e["cents"]))[:10],
    }


def _held_segment(corpus: Corpus) -> slice:
    sr = corpus.sample_rate
    held = corpus.info.get("builder", {}).get("options", {}).get("held_seconds", 1.0)
    return slice(int(0.1 * sr), int(max(min(held, 1.0), 0.2) * sr))


def pitched_indices(corpus: Corpus) -> list[int]:
    """Notes of pitched families (not drums, not effects): the ones a pitch label can be checked on."""
    return [i for i, r in enumerate(corpus.notes) if r["family"] not in UNPITCHED_FAMILIES
            and r.get("bank", 0) != 128]


def _median_f0(corpus: Corpus, idx: list[int], model: str, frame_rate: float,
               min_voiced: int = 3) -> np.ndarray:
    """(len(idx),) median f0 (Hz) of the confidently voiced frames of each note's held part;
    NaN where fewer than `min_voiced` frames are voiced."""
    from synth.pitch import f0

    seg = _held_segment(corpus)
    audio = torch.from_numpy(corpus.waveform(idx)[:, seg])
    track = f0(audio, corpus.sample_rate, model=model, frame_rate=frame_rate)
    out = np.full(len(idx), np.nan)
    for k in range(len(idx)):
        voiced = track.periodicity[k] > 0.5
        if int(voiced.sum()) >= min_voiced:
            out[k] = float(track.f0_hz[k][voiced].median())
    return out


def survey_pitch(corpus: Corpus, model: str = "tiny", recheck_model: str | None = "full",
                 tolerance_cents: float = 25.0, frame_rate: float = 8.0,
                 recheck_frame_rate: float = 4.0, batch: int = 128,
                 progress: Any = None) -> dict[str, Any]:
    """Measure every pitched note's sounding pitch against its label.

    Per note of a pitched family: the median torchcrepe f0 (`model`, frames every
    1/`frame_rate` s over the held part, 0.1 s to 1 s) in cents from the labelled MIDI pitch; a
    note `model` puts outside `tolerance_cents` is measured again with `recheck_model` (tiny
    locks onto a harmonic of some low notes; full CREPE does not), which has the last word.
    Returns {"cents": (N,) array (NaN: unpitched family or no voiced frames), "ok": (N,) object
    array of True/False/None, counts}. `pitch_ok` False marks notes that sound away from their
    key: GM presets such as organ footages an octave down, "guitar harmonics", "fifths lead";
    None marks notes that were not measured (unpitched families, or no confidently voiced frame:
    very high or very short notes), which `Corpus.select(on_key=True)` keeps.
    """
    from synth.pitch import cents, midi_to_hz

    idx = pitched_indices(corpus)
    labels = np.array([midi_to_hz(float(corpus.notes[i]["pitch"])) for i in idx])
    hz = np.full(len(idx), np.nan)
    for start in range(0, len(idx), batch):
        hz[start:start + batch] = _median_f0(corpus, idx[start:start + batch], model, frame_rate)
        if progress is not None:
            progress(min(start + batch, len(idx)), len(idx))
    err = np.full(len(idx), np.nan)
    ok_hz = np.isfinite(hz)
    err[ok_hz] = [float(cents(h, lab)) for h, lab in zip(hz[ok_hz], labels[ok_hz])]
    rechecked = 0
    if recheck_model and recheck_model != model:
        miss = [k for k in range(len(idx)) if np.isfinite(err[k]) and abs(err[k]) > tolerance_cents]
        for start in range(0, len(miss), batch // 4 or 1):
            part = miss[start:start + batch // 4 or 1]
            again = _median_f0(corpus, [idx[k] for k in part], recheck_model, recheck_frame_rate)
            for k, h in zip(part, again):
                if np.isfinite(h):
                    err[k] = float(cents(h, labels[k]))
            rechecked += len(part)
    n = len(corpus)
    all_cents = np.full(n, np.nan)
    ok = np.full(n, None, dtype=object)
    all_cents[idx] = err
    for k, i in enumerate(idx):
        ok[i] = bool(abs(err[k]) <= tolerance_cents) if np.isfinite(err[k]) else None
    measured = np.isfinite(err)
    return {"cents": all_cents, "ok": ok, "pitched": len(idx), "voiced": int(measured.sum()),
            "within": int((np.abs(err[measured]) <= tolerance_cents).sum()),
            "off_key": int((np.abs(err[measured]) > tolerance_cents).sum()),
            "unvoiced": int((~measured).sum()), "rechecked": rechecked, "model": model,
            "recheck_model": recheck_model, "tolerance_cents": tolerance_cents,
            "frame_rate": frame_rate}


def off_key_instruments(corpus: Corpus, limit: int = 20) -> list[dict[str, Any]]:
    """Instruments with the most notes flagged `pitch_ok: false`, with their median offset."""
    by: dict[str, list[float]] = {}
    total: dict[str, int] = {}
    for r in corpus.notes:
        if r.get("pitch_ok") is None:
            continue
        total[r["instrument"]] = total.get(r["instrument"], 0) + 1
        if r["pitch_ok"] is False:
            by.setdefault(r["instrument"], []).append(r.get("pitch_cents") or float("nan"))
    rows = [{"instrument": k, "off_key": len(v), "of": total[k],
             "median_cents": float(np.nanmedian(v)) if np.isfinite(v).any() else None}
            for k, v in by.items()]
    return sorted(rows, key=lambda r: -r["off_key"])[:limit]
