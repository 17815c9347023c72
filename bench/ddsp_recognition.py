"""Which resynthesised held-out notes the note classifier recognises, by GM family and by octave,
and how that moves with the level of the noise part.

The same pick as bench.ddsp_eval (held-out notes of training instruments, pitched families, MIDI
36-84; `--n` notes, `--seed` 0 by default; `--unseen`: notes of the unseen instruments instead),
resynthesised as there (manifest pitch, the original's loudness, its
own z, the loudness lock; `--as-render`: as `synthstudio render --audio --resynth` plays them,
CREPE's f0 instead of the manifest pitch); each `--noise-db` value renders the same notes again with the model's
`noise_db` control (0 = as trained). Reports, per variant, the bundled classifier's GM-family hits
by family and by octave (MIDI 36-47, 48-59, ...), beside the originals' (and with `--griffin-lim`
beside each original's log-mel inverted by Griffin-Lim, a calibration row).

    python -m bench.ddsp_recognition --model studio/models/ddsp-gm.safetensors --n 96
    python -m bench.ddsp_recognition --model ddsp-gm --n 96 --noise-db 0,-6,-12,-24,6 --name X
    python -m bench.ddsp_recognition --n 96 --seed 1 --griffin-lim --name ddsp_recognition_gl_seed1
    python -m bench.ddsp_recognition --model ddsp-gm --n 96 --seed 1 --config '{"partial_noise":
        true, "partial_noise_range_db": 0}' --name Y
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import time

import torch

from bench.common import write_result
from bench.ddsp_eval import (add_refine_args, griffinlim_resynth, heldout_setup, pick,
                             refine_options, refined_label, resynth)


def octave(pitch: int) -> str:
    lo = pitch // 12 * 12
    return f"MIDI {lo}-{lo + 11}"


def as_render(model, audio: torch.Tensor, refine=None, controls=None) -> torch.Tensor:
    """(B, T) notes -> (B, T) through `synth.ddsp_play.resynthesize` one note at a time (the
    `render --audio --resynth [--refine N]` path), cut or padded to T."""
    from synth.ddsp_play import resynthesize

    out = torch.zeros_like(audio)
    for i, note in enumerate(audio):
        y = resynthesize(model, note.float(), refine=refine, controls=controls)[: audio.shape[-1]]
        out[i, : y.numel()] = y
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ddsp-gm", help="bundled name or checkpoint path")
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--noise-db", default="0", help="comma-separated noise_db values (0: as trained)")
    ap.add_argument("--config", type=json.loads, default=None,
                    help="JSON config fields to replace (settings that add no weights)")
    ap.add_argument("--seed", type=int, default=0,
                    help="which held-out notes (bench.ddsp_eval.pick)")
    ap.add_argument("--unseen", action="store_true",
                    help="notes of the unseen (test-split) instruments instead")
    add_refine_args(ap, "also render each note")
    ap.add_argument("--as-render", action="store_true",
                    help="render the notes as `synthstudio render --audio NOTE --resynth "
                         "[--refine N]` does (synth.ddsp_play.resynthesize: CREPE f0 held "
                         "through unvoiced frames, one note at a time) instead of from the "
                         "manifest pitch")
    ap.add_argument("--griffin-lim", action="store_true",
                    help="add a calibration row: each original's log-mel inverted by Griffin-Lim "
                         "(bench.ddsp_eval.griffinlim_resynth), a resynthesis from the true "
                         "spectral envelope")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="ddsp_recognition")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    levels = [float(v) for v in args.noise_db.split(",")]
    model, clf, corpus, idx = heldout_setup(args.model, args.corpus, args.n, args.seed, args.config)
    if args.unseen:
        idx = pick(corpus, None, "test", args.n, args.seed)
    start = time.perf_counter()
    refine = refine_options(args)
    variants = ["original"] + (["Griffin-Lim resynthesis"] if args.griffin_lim else [])
    variants += [f"noise_db {x:+g}" for x in levels]
    variants += [f"{refined_label(refine)} ({args.refine} steps)"] if refine else []
    hits = {v: collections.Counter() for v in variants}
    total: collections.Counter = collections.Counter()
    for s in range(0, len(idx), args.batch):
        b = idx[s:s + args.batch]
        audio = torch.from_numpy(corpus.waveform(b))
        pitch = torch.tensor([float(corpus.notes[i]["pitch"]) for i in b])
        truth = [int(corpus.notes[i]["family_id"]) for i in b]
        keys = [(corpus.notes[i]["family"], octave(int(corpus.notes[i]["pitch"]))) for i in b]
        for fam, octv in keys:
            total[fam] += 1
            total[octv] += 1
        with torch.no_grad():
            renders = {"original": audio}
            if args.griffin_lim:
                renders["Griffin-Lim resynthesis"] = griffinlim_resynth(audio, corpus.sample_rate)
            for x in levels:
                renders[f"noise_db {x:+g}"] = (
                    as_render(model, audio, None, {"noise_db": x} if x else None)
                    if args.as_render else
                    resynth(model, audio, pitch, controls={"noise_db": x} if x else None))
            if refine:
                renders[variants[-1]] = (as_render(model, audio, refine) if args.as_render
                                         else resynth(model, audio, pitch, refine=refine))
            for name, wav in renders.items():
                pred = clf.family_logits(wav, corpus.sample_rate).argmax(-1).tolist()
                for (fam, octv), p, t in zip(keys, pred, truth):
                    hits[name][fam] += int(p == t)
                    hits[name][octv] += int(p == t)
                    hits[name]["all"] += int(p == t)
    groups = sorted(k for k in total if not k.startswith("MIDI")) + sorted(k for k in total if k.startswith("MIDI"))
    print("| variant | all | " + " | ".join(groups) + " |")
    print("|---|---|" + "---|" * len(groups))
    for name, h in hits.items():
        print(f"| {name} | {h['all']}/{len(idx)} | " + " | ".join(f"{h[g]}/{total[g]}" for g in groups) + " |")
    payload = {"model": args.model, "config": args.config, "seed": args.seed,
               "refine": dataclasses.asdict(refine) if refine else None,
               "unseen": args.unseen, "as_render": args.as_render, "notes": len(idx), "corpus_hash": corpus.hash,
               "totals": dict(total), "hits": {k: dict(v) for k, v in hits.items()},
               "seconds": time.perf_counter() - start}
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
