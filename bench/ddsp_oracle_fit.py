"""How recognisable can the DDSP synthesiser itself sound? Fit its controls to each note directly.

    python -m bench.ddsp_oracle_fit --n 48 --steps 300

For held-out notes (the same picks as `bench.ddsp_eval`: note split "test", training instruments,
pitched families, MIDI 36-84) this optimises, per note and with no network, the frame-rate
controls of `synth.dsp` (harmonic amplitude, harmonic distribution, filtered-noise band
magnitudes; ddsp's bounded parameterisation) against the same multi-scale spectral loss the model
trains on, at the model's frame rate, and asks the bundled note classifier for the GM family of
the result. Variants: the bundled model's synthesiser (60 harmonics, no inharmonicity); with
partials up to Nyquist; with the note's stiff-string coefficient (`synth.inharmonicity`) as well.

It separates the two possible limits of the bundled DDSP model's family accuracy: if these
per-note fits are recognised, the synthesiser can sound like the instrument and the network
(its capacity, its one z per note, its training time) is what falls short; if not, the
synthesiser's parameterisation is. Writes bench/results/ddsp_oracle_fit.json.
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from bench.common import write_result  # noqa: E402
from bench.ddsp_eval import pick, resynth  # noqa: E402
from synth import dsp  # noqa: E402
from synth.catalog import load_named  # noqa: E402
from synth.checkpoint import load_model  # noqa: E402
from synth.data.corpus import Corpus  # noqa: E402
from synth.dsp_filters import filtered_noise  # noqa: E402
from synth.losses import multiscale_spectral_loss  # noqa: E402
from synth.partials import partial_amplitudes  # noqa: E402
from synth.pitch import midi_to_hz  # noqa: E402


def inverse_exp_sigmoid(y: torch.Tensor) -> torch.Tensor:
    """x with `dsp.exp_sigmoid(x)` = y (y clamped into its open range (1e-7, 2))."""
    s = ((y - 1e-7).clamp(1e-7, 1.999) / 2) ** (1 / math.log(10.0))
    return torch.logit(s.clamp(1e-6, 1 - 1e-6))


def fit(audio: torch.Tensor, pitch: torch.Tensor, sr: int, frame_rate: int, n_harmonics: int,
        n_bands: int, steps: int, inharmonicity: torch.Tensor | None, seed: int = 0, lr: float = 0.03
        ) -> tuple[torch.Tensor, float, float]:
    """(B, T) notes -> (B, T') synthesis from controls fitted to them (initialised from a
    partial analysis), the loss of that initial guess and the final loss."""
    b, n = audio.shape
    hop = sr // frame_rate
    frames = n // hop
    n = frames * hop
    audio = audio[:, :n]
    f0 = midi_to_hz(pitch)[:, None, None].expand(-1, frames, 1)
    a0 = partial_amplitudes(audio, f0[:, 0, 0], sr, hop, frames, n_harmonics, inharmonicity) + 1e-6
    amp = inverse_exp_sigmoid(a0.sum(-1, keepdim=True)).requires_grad_()
    dist = inverse_exp_sigmoid(a0 / a0.sum(-1, keepdim=True).clamp_min(1e-7)).requires_grad_()
    noise = torch.full((b, frames, n_bands), -3.0, requires_grad=True)
    white = torch.rand(b, n, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    opt = torch.optim.Adam([amp, dist, noise], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)

    def synth() -> torch.Tensor:
        harm = dsp.harmonic_controls(amp, dist, f0, sr, inharmonicity=inharmonicity)
        tone = dsp.harmonic_synthesis(harm.f0_hz, harm.amplitude, harm.distribution, n, sr,
                                      inharmonicity=inharmonicity)
        return tone + filtered_noise(dsp.noise_controls(noise), n, noise=white)

    with torch.no_grad():
        first = float(multiscale_spectral_loss(synth(), audio))
    loss = torch.tensor(first)
    for _ in range(steps):
        opt.zero_grad()
        loss = multiscale_spectral_loss(synth(), audio)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        out = synth()
        return out, first, float(multiscale_spectral_loss(out, audio))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="studio/models/ddsp-gm.safetensors")
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--frame-rate", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--classifier", default="classifier-gm")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clf = load_named(args.classifier).eval()
    model = load_model(args.model).eval()
    corpus = Corpus.open(args.corpus)
    sr = corpus.sample_rate
    idx = pick(corpus, "test", "train", args.n, args.seed)
    variants = {"60 harmonics (bundled model's synthesiser)": (60, False),
                "partials to Nyquist": (None, False),
                "partials to Nyquist + the note's inharmonicity": (None, True)}
    hits: dict[str, list[bool]] = {"original": []}
    losses: dict[str, list[float]] = {}
    t0 = time.time()
    for start in range(0, len(idx), args.batch):
        part = idx[start:start + args.batch]
        audio = torch.from_numpy(corpus.waveform(part))
        pitch = torch.tensor([float(corpus.notes[i]["pitch"]) for i in part])
        truth = torch.tensor([corpus.notes[i]["family_id"] for i in part])
        with torch.no_grad():
            hits["original"] += (clf.family_logits(audio, sr).argmax(-1) == truth).tolist()
            out = resynth(model, audio, pitch)
            hits.setdefault("bundled model", []).extend(
                (clf.family_logits(out, sr).argmax(-1) == truth).tolist())
            losses.setdefault("bundled model", []).append(
                float(multiscale_spectral_loss(out, audio[:, :out.shape[-1]])))
        for name, (h, inh) in variants.items():
            n_h = h or int(sr / 2 / midi_to_hz(pitch.min()).item())
            coef = None
            if inh:
                from synth.inharmonicity import estimate_inharmonicity

                coef = estimate_inharmonicity(audio, sr, pitch, max_partials=n_h)[0]
            out, first, loss = fit(audio, pitch, sr, args.frame_rate, n_h, 65, args.steps, coef)
            with torch.no_grad():
                pred = clf.family_logits(out, sr).argmax(-1)
            hits.setdefault(name, []).extend((pred == truth).tolist())
            losses.setdefault(name, []).append(loss)
            losses.setdefault(name + " (analysis only)", []).append(first)
        print(f"{start + len(part)}/{len(idx)} notes, {time.time() - t0:.0f} s: " +
              ", ".join(f"{k} {sum(v) / len(v):.2f}" for k, v in hits.items()), flush=True)
    acc = {k: sum(v) / len(v) for k, v in hits.items()}
    mean_loss = {k: sum(v) / len(v) for k, v in losses.items()}
    for k in list(acc) + [k for k in mean_loss if k not in acc]:
        print(f"{k:<62}{acc.get(k, float('nan')):>6.2f}  {mean_loss.get(k, float('nan')):.3f}")
    path = write_result("ddsp_oracle_fit", {"n": len(idx), "steps": args.steps,
                                            "frame_rate": args.frame_rate,
                                            "family_accuracy": acc, "final_mss_loss": mean_loss,
                                            "wall_s": time.time() - t0})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
