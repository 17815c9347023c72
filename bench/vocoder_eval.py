"""Vocoder quality on held-out notes, beside Griffin-Lim and a real-vs-real floor.

Sets (pitched families, MIDI 36-84, as bench/ddsp_eval.py): held-out notes of training instruments
(note split "test") and notes of unseen instruments (instrument split "test"). Each vocoder gets
the log-mel of the original note under its own FeatureSpec and re-synthesises it. Rows:
- every trained vocoder given with --model;
- griffinlim: ours, 16 NNLS steps + 32 fast Griffin-Lim iterations (the zero-training baseline);
- real vs real: the same instrument and pitch at the neighbouring velocity layer (a floor).
Metrics (latent/metrics/reconstruction.py) against the original audio: multi-resolution STFT
distance, mel L1, median f0 error in cents and voicing agreement (torchcrepe tiny).

    python -m bench.vocoder_eval --model runs/istft-gm/model.safetensors --n 64
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import write_result
from bench.ddsp_eval import neighbour, pick
from latent.metrics.reconstruction import f0_error_cents, mel_l1, mrstft_distance, pitch_tracks
from synth.checkpoint import load_model
from synth.data.corpus import Corpus
from synth.features import LogMel
from vocoders.griffinlim import GriffinLim, GriffinLimConfig


@torch.no_grad()
def evaluate(vocoders: dict[str, torch.nn.Module], corpus: Corpus, indices: list[int],
             batch: int = 16) -> dict[str, dict[str, float]]:
    sr = corpus.sample_rate
    rows: dict[str, dict[str, list[float]]] = {k: {} for k in [*vocoders, "real vs real"]}
    for start in range(0, len(indices), batch):
        idx = indices[start:start + batch]
        audio = torch.from_numpy(corpus.waveform(idx))
        nb = [neighbour(corpus, i) for i in idx]
        outs = {"real vs real": torch.from_numpy(
            corpus.waveform([j if j is not None else i for i, j in zip(idx, nb)]))}
        for name, voc in vocoders.items():
            spec = voc.feature_spec
            hop = spec.hop_length
            n = audio.shape[-1] // hop * hop
            outs[name] = voc(LogMel(spec)(audio[:, :n]), spec)
        n = min(o.shape[-1] for o in outs.values())
        ref = audio[:, :n]
        ref_track = pitch_tracks(ref, sr)
        for name, out in outs.items():
            out = out[:, :n]
            cents, voicing = f0_error_cents(pitch_tracks(out, sr), ref_track)
            spec = vocoders[name].feature_spec if name in vocoders else next(
                iter(vocoders.values())).feature_spec
            metrics = {"mrstft": mrstft_distance(out, ref), "mel_l1": mel_l1(out, ref, spec),
                       "f0_error_cents": cents, "voicing_agreement": voicing}
            for key, val in metrics.items():
                rows[name].setdefault(key, []).extend(val.tolist())
    return {name: {**{k: float(np.nanmedian(v)) if k == "f0_error_cents" else float(np.nanmean(v))
                      for k, v in metrics.items()}, "notes": len(indices)}
            for name, metrics in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[], help="Vocoder checkpoint (repeatable).")
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="vocoder_eval")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    corpus = Corpus.open(args.corpus)
    vocoders: dict[str, torch.nn.Module] = {}
    meta: dict[str, dict] = {}
    for path in args.model:
        model = load_model(path).eval()
        name = f"{model.kind} ({Path(path).parent.name or Path(path).stem})"
        vocoders[name] = model
        m = getattr(model, "checkpoint_meta", {})
        meta[name] = {"path": path, "steps": m.get("steps"),
                      "parameters": sum(p.numel() for p in getattr(model, "generator", model).parameters())}
    spec = next(iter(vocoders.values())).feature_spec if vocoders else None
    gl = GriffinLim(GriffinLimConfig(feature_spec=spec) if spec else GriffinLimConfig()).eval()
    vocoders["griffinlim (32 it)"] = gl
    start = time.perf_counter()
    sets = {"held-out notes": pick(corpus, "test", "train", args.n, args.seed),
            "unseen instruments": pick(corpus, None, "test", args.n, args.seed)}
    results = {name: evaluate(vocoders, corpus, idx) for name, idx in sets.items()}
    payload = {"models": meta, "corpus_hash": corpus.hash, "results": results,
               "seconds": time.perf_counter() - start}
    print("| set | row | MR-STFT | mel L1 | f0 error (cents, median) | voicing agreement |")
    print("|---|---|---|---|---|---|")
    for set_name, rows in results.items():
        for row, m in rows.items():
            print(f"| {set_name} | {row} | {m['mrstft']:.3f} | {m['mel_l1']:.3f} | "
                  f"{m['f0_error_cents']:.1f} | {m['voicing_agreement']:.2f} |")
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
