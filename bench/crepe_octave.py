"""How often CREPE reads corpus notes an octave off, and what `synth.pitch.octave_up_errors` mends.

    python -m bench.crepe_octave --corpus data/gm --n 96

Three 96-note sets as bench.ddsp_recognition picks them (held-out notes of training instruments,
seeds 0 and 1, and the unseen instruments' notes, seed 0), notes the corpus survey marks off key
(`pitch_ok` false) left out. Each note's f0 is tracked with CREPE `tiny` at the bundled DDSP
model's frame grid (16 kHz, hop 64), held through unvoiced frames as resynthesis plays it
(`synth.ddsp_play.hold_unvoiced`), and read against the note's key on its loud frames (within
30 dB of its peak): right (within 50 cents), an octave or two high, an octave low, and the notes
with more than 10 % of their loud frames off by over 50 cents. Rows: no check, then the check
over a grid of thresholds, passes and smoothing windows; the distribution of
`half_partial_ratio` on right and octave-high frames calibrates the threshold. JSON in
bench/results/crepe_octave.json.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

import synth.pitch as pitch
from bench.common import write_result
from bench.ddsp_eval import pick
from synth.data.corpus import Corpus
from synth.ddsp_play import VOICING_THRESHOLD, hold_unvoiced

SR, HOP = 16000, 64


def tracks(corpus: Corpus, n: int, model: str) -> list[tuple]:
    """[(audio (B, T), raw f0 (B, F), voiced, loud, key Hz (B, 1))] in batches of 16."""
    out = []
    for split, seed in (("train", 0), ("train", 1), ("test", 0)):
        idx = pick(corpus, "test" if split == "train" else None, split, n, seed)
        idx = [i for i in idx if corpus.notes[i].get("pitch_ok") is not False]
        for s in range(0, len(idx), 16):
            b = idx[s:s + 16]
            audio = torch.from_numpy(corpus.waveform(b)).float()
            frames = audio.shape[-1] // HOP
            track = pitch.f0(audio, SR, hop_length=HOP, model=model)
            ld = pitch.loudness(audio, SR, hop_length=HOP)[:, :frames]
            key = pitch.midi_to_hz(torch.tensor([float(corpus.notes[i]["pitch"]) for i in b]))
            out.append((audio, track.f0_hz[:, :frames],
                        track.periodicity[:, :frames] > VOICING_THRESHOLD,
                        ld > ld.amax(-1, keepdim=True) - 30, key[:, None]))
    return out


def score(cache: list[tuple], fix=None) -> dict[str, int]:
    tot = {"frames": 0, "right": 0, "octave_high": 0, "octave_low": 0, "notes": 0, "notes_off": 0}
    for audio, raw, voiced, loud, key in cache:
        f0 = raw if fix is None else fix(audio, raw, voiced)
        cents = 1200 * torch.log2(hold_unvoiced(f0, voiced) / key)
        for k in range(len(audio)):
            c = cents[k][loud[k]]
            tot["frames"] += c.numel()
            tot["notes"] += 1
            tot["right"] += int((c.abs() < 50).sum())
            tot["octave_high"] += int(((c - 1200).abs() < 50).sum() + ((c - 2400).abs() < 50).sum())
            tot["octave_low"] += int(((c + 1200).abs() < 50).sum())
            tot["notes_off"] += int((c.abs() > 50).float().mean() > 0.1)
    return tot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--model", default="tiny", help="CREPE model")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    cache = tracks(Corpus.open(args.corpus), args.n, args.model)
    ratios: dict[str, list[float]] = {"right": [], "octave_high": []}
    for audio, raw, voiced, loud, key in cache:
        r = pitch.half_partial_ratio(audio, SR, raw, HOP)
        cents = 1200 * torch.log2(raw / key)
        ratios["right"] += r[loud & (cents.abs() < 50)].tolist()
        ratios["octave_high"] += r[loud & ((cents - 1200).abs() < 50)].tolist()
    rows = [{"check": False, **score(cache)}]
    default = pitch.OCTAVE_HALF_RATIO
    try:
        for thr, passes, smooth in itertools.product((0.15, 0.2, 0.25, 0.3), (1, 2), (0.1, 0.3)):
            pitch.OCTAVE_HALF_RATIO = thr
            rows.append({"check": True, "threshold": thr, "passes": passes, "smooth_s": smooth,
                         **score(cache, lambda a, f, v: pitch.octave_up_errors(
                             a, SR, f, v, HOP, passes=passes, smooth_s=smooth))})
    finally:
        pitch.OCTAVE_HALF_RATIO = default
    print("| check | threshold | passes | smooth (s) | right frames | octave high | octave low "
          "| notes off |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {'on' if r['check'] else 'off'} | {r.get('threshold', '')} | "
              f"{r.get('passes', '')} | {r.get('smooth_s', '')} | {r['right']}/{r['frames']} | "
              f"{r['octave_high']} | {r['octave_low']} | {r['notes_off']}/{r['notes']} |")
    pct = (1, 5, 10, 50, 90, 95, 99)
    payload = {"crepe_model": args.model, "n_per_set": args.n, "default_threshold": default,
               "rows": rows,
               "half_partial_ratio_percentiles": {
                   k: dict(zip(map(str, pct), np.percentile(v, pct).round(4).tolist()))
                   for k, v in ratios.items() if v},
               "seconds": time.perf_counter() - start}
    print(f"wrote {write_result('crepe_octave', payload)}")


if __name__ == "__main__":
    main()
