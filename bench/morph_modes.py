"""Which morph path moves the sound monotonically: lerp on raw latents, slerp in PCA-normalised
coordinates, or (mel generators: VAE, VQ-VAE) melfit, the latents fitted to the
endpoints' log-mel crossfade (`latent.interpolate.mel_crossfade_fit`).

The check is bench.vae_eval's interpolation check (pairs of 12 instruments per set whose notes at
MIDI 60 differ by >= 25 % in spectral centroid; 9 points decoded at that pitch; a pair passes when
the decoded centroids move monotonically, no step back larger than `--tolerance` of the
endpoints' gap), run once per path on the same pairs. Sets: held-out notes of training
instruments and notes of unseen instruments.

Why it can differ by model: slerp's weights sin((1 - t) w) / sin w and sin(t w) / sin w sum to more
than 1 inside the path (1 / cos(w / 2) at the middle), so a component both endpoints share is
pushed beyond both of them mid-way (a brightness both notes have overshoots), while lerp can only
dip towards the centre of the cloud. melfit leaves the straight line where the decoder bends it:
each point is moved to the latent whose note is closest to the crossfade of the endpoint notes.

    python -m bench.morph_modes --model vae-gm
    python -m bench.morph_modes --model studio/models/ddsp-gm.safetensors --name morph_modes_ddsp
    python -m bench.morph_modes --model vae-gm --modes lerp,melfit --name morph_modes_vae_melfit
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common import write_result
from bench.vae_eval import instrument_grid, interpolation
from latent.interpolate import MORPH_MODES, supports_melfit
from synth.catalog import load_named
from synth.data.corpus import Corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="bundled name or checkpoint path")
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--instruments", type=int, default=12)
    ap.add_argument("--pitches", default="48,52,55,60,64,67,72", help="the middle one is used")
    ap.add_argument("--modes", default=None,
                    help=f"comma-separated, of {','.join(MORPH_MODES)} (default: all the model supports)")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default=None, help="result name (default morph_modes_<kind>)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_named(args.model).eval()
    modes = [m for m in MORPH_MODES if m != "melfit" or supports_melfit(model)]
    if args.modes:
        modes = [m.strip() for m in args.modes.split(",")]
        bad = [m for m in modes if m not in MORPH_MODES or (m == "melfit" and not supports_melfit(model))]
        if bad:
            raise SystemExit(f"error: {model.kind} has no morph mode {', '.join(bad)} "
                             f"(available: {', '.join(MORPH_MODES)}; melfit needs a mel generator)")
    corpus = Corpus.open(args.corpus)
    pitches = [int(p) for p in args.pitches.split(",")]
    start = time.perf_counter()
    results: dict[str, dict] = {}
    for set_name, split in (("held-out notes", "train"), ("unseen instruments", "test")):
        grid = instrument_grid(corpus, pitches, args.instruments, split, args.seed)
        results[set_name] = {}
        for mode in modes:
            t0 = time.perf_counter()
            r = interpolation(model, corpus, grid, pitches, args.tolerance, mode=mode)
            # wall time of the whole check (encoding, the path, decoding 9 notes per pair)
            r["seconds_per_pair"] = (time.perf_counter() - t0) / max(1, r["pairs"])
            results[set_name][mode] = r
            print(f"{set_name}: {mode}: monotonic in {r['monotonic_fraction']:.2f} of {r['pairs']} "
                  f"pairs ({r['decoded_wide_monotonic_fraction']:.2f} of the "
                  f"{r['decoded_wide_pairs']} whose decoded endpoints differ by 25 %); "
                  f"{r['seconds_per_pair']:.2f} s per pair on {args.threads} thread(s)")
    payload = {"model": args.model, "modes": modes, "threads": args.threads, "kind": model.kind,
               "corpus_hash": corpus.hash, "results": results,
               "seconds": time.perf_counter() - start}
    print(f"wrote {write_result(args.name or f'morph_modes_{model.kind}', payload)}")


if __name__ == "__main__":
    main()
