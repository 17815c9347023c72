"""Which DDSP control makes resyntheses unrecognisable? Swap the model's and the note's own.

    python -m bench.ddsp_harmonics --model studio/models/ddsp-gm.safetensors --n 24

For held-out notes (the `bench.ddsp_eval` picks: note split "test", training instruments) this
resynthesises each note with the model (manifest f0, the original's loudness, its z), analyses
the original's partial amplitudes on the model's frame grid (`synth.partials`, as many partials
as the model has harmonics), and renders the model's harmonic synthesiser with one control
swapped at a time:
- the model's amplitude envelope with the note's analysed per-frame distribution, and vice versa;
- the model's amplitude with the analysed distribution made static (the note's energy-weighted
  mean), with that mean taken over the first second only, or smoothed over 5 neighbouring
  partials (fine per-partial structure removed, spectral envelope kept);
- analysis-only resynthesis (analysed amplitude and distribution), with and without the model's
  filtered noise.
The bundled note classifier's GM-family accuracy on each says which control carries the
instrument's identity. Writes bench/results/<name>.json (default ddsp_harmonics).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from bench.common import write_result  # noqa: E402
from bench.ddsp_eval import pick  # noqa: E402
from synth import dsp  # noqa: E402
from synth.base import Conditions  # noqa: E402
from synth.catalog import load_named  # noqa: E402
from synth.checkpoint import load_model  # noqa: E402
from synth.data.corpus import Corpus  # noqa: E402
from synth.partials import note_distribution, partial_amplitudes  # noqa: E402
from synth.pitch import midi_to_hz  # noqa: E402


@torch.no_grad()
def variants(model, audio: torch.Tensor, pitch: torch.Tensor,
             more_partials: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
    """(B, T) notes, (B,) MIDI pitch -> {variant name: (B, T') audio} (T' = whole frames).

    `more_partials`: also analysis-only resyntheses (+ the model's noise) with K partials for
    each K given, to see what a synthesiser with more harmonics than the model's could reach.
    """
    sr, hop = model.sample_rate, model.hop_length
    n = audio.shape[-1] // hop * hop
    audio = audio[:, :n]
    frames = n // hop
    f0 = midi_to_hz(pitch.float())[:, None].expand(-1, frames)
    ld = model.analyze_loudness(audio)
    z = model.encode(audio, Conditions(pitch=pitch.float()))
    zf = z[:, None, :].expand(-1, frames, -1) if z.ndim == 2 else z
    harm, mags = model.get_controls(f0, ld, zf)
    m_harm, m_noise = model.get_parts(harm, mags, n, generator=0)
    n_h = harm.distribution.shape[-1]
    amps = partial_amplitudes(audio, f0[:, 0], sr, hop, frames, n_h) + 1e-6
    a_amp = amps.sum(-1, keepdim=True)
    a_dist = dsp.normalize_harmonics(amps, f0[..., None], sr)
    w = amps.pow(2).sum(-1)

    def static(weights: torch.Tensor) -> torch.Tensor:
        mean = note_distribution(a_dist, weights)[:, None, :].expand(-1, frames, -1)
        return dsp.normalize_harmonics(mean, f0[..., None], sr)

    first = (torch.arange(frames) < model.config.frame_rate).to(w.dtype)[None]
    log_d = torch.log(a_dist.clamp_min(1e-6)).reshape(-1, 1, n_h)
    smooth = torch.nn.functional.conv1d(torch.nn.functional.pad(log_d, (2, 2), mode="replicate"),
                                        torch.ones(1, 1, 5) / 5).reshape(a_dist.shape).exp()
    smooth = dsp.normalize_harmonics(smooth, f0[..., None], sr)

    def osc(amp: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
        return dsp.harmonic_synthesis(f0[..., None], amp, dist, n, sr)

    analysed = osc(a_amp, a_dist)
    mix = osc(harm.amplitude, a_dist)
    wider = {}
    for k in more_partials:
        amps_k = partial_amplitudes(audio, f0[:, 0], sr, hop, frames, k) + 1e-6
        dist_k = dsp.normalize_harmonics(amps_k, f0[..., None], sr)
        wider[f"analysed amplitude x analysed distribution, {k} partials + model noise"] = \
            osc(amps_k.sum(-1, keepdim=True), dist_k) + m_noise
    return wider | {
        "original": audio,
        "model": model._reverb(m_harm + m_noise, model.sample_rate),
        "model, dry": m_harm + m_noise,
        "model, harmonic part only": m_harm,
        "analysed amplitude x analysed distribution": analysed,
        "analysed amplitude x analysed distribution + model noise": analysed + m_noise,
        "model amplitude x analysed distribution": mix,
        "model amplitude x analysed distribution + model noise": mix + m_noise,
        "analysed amplitude x model distribution": osc(a_amp, harm.distribution),
        "model amplitude x static analysed distribution + model noise":
            osc(harm.amplitude, static(w)) + m_noise,
        "model amplitude x first-second analysed distribution + model noise":
            osc(harm.amplitude, static(w * first)) + m_noise,
        "model amplitude x analysed distribution smoothed over 5 partials + model noise":
            osc(harm.amplitude, smooth) + m_noise,
    }


def partial_counts(text: str) -> tuple[int, ...]:
    """'60,100' -> (60, 100); argparse turns the ValueError into a one-line usage error."""
    counts = tuple(int(k) for k in text.split(",") if k.strip())
    if any(k < 1 for k in counts):
        raise ValueError(text)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="studio/models/ddsp-gm.safetensors")
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--name", default="ddsp_harmonics")
    ap.add_argument("--more-partials", default=(), type=partial_counts,
                    help="comma-separated partial counts K for extra analysis-only variants")
    args = ap.parse_args()
    start = time.perf_counter()
    model = load_model(args.model).eval()
    clf = load_named("classifier-gm").eval()
    corpus = Corpus.open(args.corpus)
    idx = pick(corpus, "test", "train", args.n, args.seed)
    hits: dict[str, list[bool]] = {}
    for s in range(0, len(idx), args.batch):
        part = idx[s:s + args.batch]
        audio = torch.from_numpy(corpus.waveform(part))
        pitch = torch.tensor([float(corpus.notes[i]["pitch"]) for i in part])
        truth = torch.tensor([corpus.notes[i]["family_id"] for i in part])
        for name, x in variants(model, audio, pitch, args.more_partials).items():
            with torch.no_grad():
                guess = clf.family_logits(x, corpus.sample_rate).argmax(-1)
            hits.setdefault(name, []).extend((guess == truth).tolist())
        print(f"{s + len(part)}/{len(idx)} notes", flush=True)
    acc = {k: sum(v) / len(v) for k, v in hits.items()}
    print("| variant | family accuracy |\n|---|---|")
    for k, v in acc.items():
        print(f"| {k} | {v:.2f} |")
    meta = getattr(model, "checkpoint_meta", {})
    path = write_result(args.name, {"model": args.model, "steps": meta.get("steps"), "n": len(idx),
                                    "family_accuracy": acc,
                                    "wall_s": time.perf_counter() - start})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
