"""Time and memory of `synthstudio render --audio REC --resynth` with the default refinement
against `--refine 0` (the encoder's latent, the baseline), and for a long recording against
refining it whole (`RefineOptions.max_seconds` out of the way).

Each case runs in a fresh process (model loading excluded from the time, peak resident memory
included); the recordings are one note (`--audio`, or by default the corpus's cello note at MIDI
54, F#3, velocity 100: the README tour's cello_fs3.wav) and that note tiled to `--long` seconds.

    python -m bench.ddsp_resynth_speed --threads 2
    python -m bench.ddsp_resynth_speed --audio cello_fs3.wav --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.common import write_result


def run_case(audio: str, steps: int, max_seconds: float, threads: int) -> dict:
    """In this process: resynthesise `audio` with `steps` refinement steps; seconds and peak RSS."""
    import torch

    from synth.audio import load
    from synth.catalog import load_named
    from synth.ddsp_play import RefineOptions, resynthesize

    torch.set_num_threads(threads)
    model = load_named("ddsp-gm").eval()
    x = load(audio, model.sample_rate)
    refine = RefineOptions(steps=steps, max_seconds=max_seconds) if steps else None
    start = time.perf_counter()
    out = resynthesize(model, x, refine=refine)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "audio_seconds": x.numel() / model.sample_rate,
            "out_samples": int(out.numel()),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audio", default=None, help="a short recording (one note; default: the "
                    "corpus's cello note at MIDI 54, velocity 100)")
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--long", type=float, default=30.0, help="seconds of the tiled recording")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="ddsp_resynth_speed")
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: one case as JSON
    args = ap.parse_args()
    if args.case:
        audio, steps, max_seconds = json.loads(args.case)
        print(json.dumps(run_case(audio, steps, max_seconds, args.threads)))
        return
    source = args.audio
    with tempfile.TemporaryDirectory() as tmp:
        if args.audio is None:
            from synth.data.corpus import Corpus

            corpus = Corpus.open(args.corpus)
            i = next(i for i, n in enumerate(corpus.notes)
                     if n["instrument"] == "cello" and n["pitch"] == 54 and n["velocity"] == 100)
            source = f"{args.corpus} note {i} (cello, MIDI 54, velocity 100)"
            args.audio = str(Path(tmp) / "cello_fs3.wav")
            sf.write(args.audio, corpus.waveform([i])[0], corpus.sample_rate)
        note, sr = sf.read(args.audio, dtype="float32")
        if note.ndim == 2:
            note = note.mean(axis=1)                     # the models play mono
        long_path = str(Path(tmp) / "long.wav")
        sf.write(long_path, np.tile(note, int(np.ceil(args.long * sr / len(note))))[
            : int(args.long * sr)], sr)
        cases = {"note, --refine 0": (args.audio, 0, 10.0),
                 "note, default (30 steps)": (args.audio, 30, 10.0),
                 "long, --refine 0": (long_path, 0, 10.0),
                 "long, default (30 steps on the loudest 10 s)": (long_path, 30, 10.0),
                 "long, 30 steps on the whole recording": (long_path, 30, 1e9)}
        rows = {}
        for name, case in cases.items():
            res = subprocess.run([sys.executable, "-m", "bench.ddsp_resynth_speed", "--threads",
                                  str(args.threads), "--case", json.dumps(case)],
                                 capture_output=True, text=True, check=True)
            rows[name] = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"{name}: {rows[name]['seconds']:.1f} s for {rows[name]['audio_seconds']:.1f} s "
                  f"of audio, peak {rows[name]['peak_rss_mb']:.0f} MB", flush=True)
    ratios = {"note: default / --refine 0": rows["note, default (30 steps)"]["seconds"]
              / rows["note, --refine 0"]["seconds"],
              "long: whole / loudest 10 s": rows["long, 30 steps on the whole recording"]["seconds"]
              / rows["long, default (30 steps on the loudest 10 s)"]["seconds"]}
    print({k: round(v, 2) for k, v in ratios.items()})
    payload = {"audio": source, "long_seconds": args.long, "threads": args.threads,
               "rows": rows, "ratios": ratios}
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
