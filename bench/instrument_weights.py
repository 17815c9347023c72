"""Which instruments does a mel VAE reconstruct worst? Per-instrument draw weights for oversampling.

    python -m bench.instrument_weights --model runs/vae-grid/model.safetensors --out runs/weights.json
    synthstudio train vae ... --instrument-weights runs/weights.json

For every training instrument (instrument split "train", pitched families), `--per-instrument`
of its training-split notes of MIDI 36-84 (seeded) are encoded and decoded (posterior mean, whole
4 s notes) and scored (`--metric`) by how far the decoded brightness misses: "centroid", the mean
absolute difference of the energy-weighted mean mel band of decoded and original note (the
brightness a morph moves through; a bell whose loud upper partials the decoder leaves out decodes
many bands low, where the log-mel L1 barely sees it), or "sc", the spectral convergence of the
linear mel (`synth.losses.spectral_convergence`, the error weighted by energy).
An instrument's weight is (its mean error / the median instrument's) ** `--power`, clipped to
[1, `--max-weight`]: instruments at or better than the median keep their share, the worst are
drawn up to `--max-weight` times as often. Writes the weights file (`--out`, read by the training
recipe) and bench/results/<name>.json with every instrument's error.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import write_result
from bench.ddsp_eval import PITCHED
from bench.vae_instrument_probe import band_centroid
from synth.checkpoint import load_model
from synth.data.corpus import Corpus
from synth.fileio import atomic_write_text
from synth.losses import spectral_convergence


def weights_from_errors(errors: dict[str, float], power: float, max_weight: float) -> dict[str, float]:
    """Per-instrument error -> draw weight: (error / median) ** power, clipped to [1, max_weight]."""
    median = float(np.median(list(errors.values())))
    return {k: float(np.clip((v / median) ** power, 1.0, max_weight)) for k, v in errors.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--out", required=True, help="weights JSON for --instrument-weights")
    ap.add_argument("--per-instrument", type=int, default=12)
    ap.add_argument("--metric", choices=("centroid", "sc"), default="centroid")
    ap.add_argument("--power", type=float, default=1.0)
    ap.add_argument("--max-weight", type=float, default=8.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="instrument_weights")
    args = ap.parse_args(argv)
    if args.per_instrument < 1 or args.max_weight < 1 or args.power < 0:
        raise SystemExit("error: --per-instrument and --max-weight must be >= 1, --power >= 0")
    torch.set_num_threads(args.threads)
    model = load_model(args.model).eval()
    if model.kind != "vae":
        raise SystemExit(f"error: {args.model} is a {model.kind} model; this takes a mel VAE")
    corpus = Corpus.open(args.corpus)
    rng = np.random.default_rng(args.seed)
    by_inst: dict[str, list[int]] = {}
    for i in corpus.select(split="train", instrument_split="train", families=PITCHED):
        if 36 <= corpus.notes[i]["pitch"] <= 84:
            by_inst.setdefault(corpus.notes[i]["instrument_id"], []).append(i)
    n = model.n_samples
    errors, names, scores = {}, {}, {}
    start = time.perf_counter()
    for inst, idx in sorted(by_inst.items()):
        pick = sorted(rng.choice(idx, size=min(args.per_instrument, len(idx)), replace=False).tolist())
        audio = np.zeros((len(pick), n), dtype=np.float32)
        for row, i in enumerate(pick):
            a = np.asarray(corpus.waveform(i), dtype=np.float32)[:n]
            audio[row, :len(a)] = a
        pitch = torch.tensor([float(corpus.notes[i]["pitch"]) for i in pick])
        velocity = torch.tensor([float(corpus.notes[i]["velocity"]) for i in pick])
        with torch.no_grad():
            mel = model.mel(torch.from_numpy(audio))
            dec = model.denormalize(model.decode_normalized(model.posterior(mel)[0], pitch, velocity))
        sc = [float(spectral_convergence(dec[j:j + 1], mel[j:j + 1])) for j in range(len(pick))]
        shift = band_centroid(dec) - band_centroid(mel)
        scores[inst] = {"spectral_convergence": float(np.mean(sc)),
                        "band_error": float(shift.abs().mean()), "band_shift": float(shift.mean())}
        errors[inst] = scores[inst]["band_error" if args.metric == "centroid" else
                                    "spectral_convergence"]
        names[inst] = corpus.notes[pick[0]]["instrument"]
    weights = weights_from_errors(errors, args.power, args.max_weight)
    atomic_write_text(Path(args.out), json.dumps(
        {"model": args.model, "metric": args.metric,
         "power": args.power, "max_weight": args.max_weight, "instrument_weights": weights},
        indent=1))
    ranked = sorted(errors, key=errors.get, reverse=True)
    for inst in ranked[:12]:
        print(f"{errors[inst]:7.3f}  x{weights[inst]:.2f}  {inst}  {names[inst]}")
    share = sum(weights[k] for k in ranked[:10]) / sum(weights.values())
    print(f"{len(errors)} instruments; the worst 10 now draw {share:.0%} of notes "
          f"({10 / len(errors):.0%} before); wrote {args.out}")
    write_result(args.name, {"model": args.model, "per_instrument": args.per_instrument,
                             "metric": args.metric,
                             "power": args.power, "max_weight": args.max_weight,
                             "seconds": time.perf_counter() - start,
                             "instruments": {k: {"name": names[k], **scores[k], "weight": weights[k]}
                                             for k in ranked}})


if __name__ == "__main__":
    main()
