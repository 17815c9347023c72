"""Can a mel VAE's decoder draw one instrument at all? Reconstruct its training notes, then
optionally fine-tune the whole model on that instrument alone and reconstruct again.

    python -m bench.vae_instrument_probe --model studio/models/vae-gm.safetensors --program 10
    python -m bench.vae_instrument_probe --model runs/vae-grid/model.safetensors --program 10 --steps 300

Notes: the instrument's training-split notes of MIDI 36-84 (GM program `--program`, every bank),
whole 4 s notes. Reported on the first 64 of them (the fine-tune trains on all, so after it these
are fit numbers, not held-out ones): decoded-vs-original log-mel L1 (natural log units) and the
energy-weighted mean mel band of each (a band-index centroid over the whole note; a decoder that
loses loud upper partials decodes a lower one). The fine-tune is the model's own `training_step`
(reconstruction L1 + beta * free-bits KL; morph terms left out; `--linear-weight` adds an L1 on
linear mel magnitudes), Adam at `--lr`, batch 16.
This asks whether the decoder's *form* can draw the instrument, not how well the bundled training
does: a decoder that cannot get close even when trained on nothing else lacks the form.
Writes bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.common import write_result
from synth.checkpoint import load_model
from synth.data.corpus import Corpus


def band_centroid(log_mel: torch.Tensor) -> torch.Tensor:
    """(B, n_mels, F) natural-log mel -> (B,) energy-weighted mean band index over the note."""
    energy = log_mel.exp().sum(-1)
    bands = torch.arange(log_mel.shape[1], dtype=energy.dtype)
    return (energy * bands).sum(1) / energy.sum(1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--program", type=int, default=10, help="GM program (10: music box)")
    ap.add_argument("--steps", type=int, default=0, help="fine-tune steps on the instrument alone")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--linear-weight", type=float, default=0.0,
                    help="add this x the L1 of linear mel magnitudes over their mean to the loss")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="vae_instrument_probe")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = load_model(args.model)
    if model.kind != "vae":
        raise SystemExit(f"error: {args.model} is a {model.kind} model; the probe takes a mel VAE")
    corpus = Corpus.open(args.corpus)
    idx = [i for i, r in enumerate(corpus.notes) if r["program"] == args.program
           and r["split"] == "train" and 36 <= r["pitch"] <= 84]
    if not idx:
        raise SystemExit(f"error: no training notes of GM program {args.program} in {args.corpus}")
    n = model.n_samples

    def note(i: int) -> np.ndarray:
        a = np.asarray(corpus.waveform(i), dtype=np.float32)[:n]
        return np.pad(a, (0, n - len(a)))

    audio = torch.from_numpy(np.stack([note(i) for i in idx]))
    pitch = torch.tensor([float(corpus.notes[i]["pitch"]) for i in idx])
    velocity = torch.tensor([float(corpus.notes[i]["velocity"]) for i in idx])

    def measure() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            mel = model.mel(audio[:64])
            z = model.posterior(mel)[0]
            dec = model.denormalize(model.decode_normalized(z, pitch[:64], velocity[:64]))
        model.train()
        return {"mel_l1": float((dec - mel).abs().mean()),
                "band_centroid_original": float(band_centroid(mel).mean()),
                "band_centroid_decoded": float(band_centroid(dec).mean())}

    rows = [{"step": 0, **measure()}]
    print(rows[-1])
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        b = torch.randint(len(idx), (16,))
        out = model.training_step({"audio": audio[b], "pitch": pitch[b], "velocity": velocity[b]})
        loss = out["recon/l1"] + model.config.beta * out["vae/kl"]
        if args.linear_weight > 0:
            mel = model.mel(audio[b])
            dec = model.denormalize(model.decode_normalized(model.posterior(mel)[0], pitch[b], velocity[b]))
            loss = loss + args.linear_weight * (dec.exp() - mel.exp()).abs().mean() / mel.exp().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps:
            rows.append({"step": step, **measure()})
            print(rows[-1])
    write_result(args.name, {
        "model": args.model,
        "program": args.program, "notes": len(idx), "measured_on": min(64, len(idx)),
        "lr": args.lr, "linear_weight": args.linear_weight, "fine_tune_s": time.perf_counter() - start, "rows": rows})


if __name__ == "__main__":
    main()
