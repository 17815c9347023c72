"""Vocoder quality on held-out notes, beside Griffin-Lim and a real-vs-real floor.

Sets (pitched families, MIDI 36-84, as bench/ddsp_eval.py): held-out notes of training instruments
(note split "test") and notes of unseen instruments (instrument split "test"). Each vocoder gets
the log-mel of the original note under its own FeatureSpec and re-synthesises it. Rows:
- every trained vocoder given with --model;
- griffinlim: ours, 16 NNLS steps + 32 fast Griffin-Lim iterations (the zero-training baseline);
- real vs real: the same instrument and pitch at the neighbouring velocity layer (a floor);
- with --bounds, two oracle rows that split Griffin-Lim's error into its two causes (they see the
  original's STFT, so they are bounds, not vocoders): "true magnitude + GL" (the phase retrieval
  alone: the exact linear magnitude, 32 fast Griffin-Lim iterations) and "mel inversion + true
  phase" (the NNLS magnitude from the mel with the original's phases: the mel inversion alone).
- with --magnitude-bounds, rows that ask how good a magnitude the mel allows (oracles too):
  "harmonic inversion + true phase" and "+ GL (PGHI, 32 it)" (`harmonic_magnitude`: partials
  at multiples of the note's manifest pitch, refined +-40 cents, fitted to the mel), "<model>
  magnitude + true phase" for every magnitude-only (phase="griffinlim") iSTFT model, and "true
  magnitude + GL (PGHI, 128 it)" (phase retrieval at its best).
Metrics (latent/metrics/reconstruction.py) against the original audio: multi-resolution STFT
distance, mel L1, median f0 error in cents and voicing agreement (torchcrepe tiny). With
--levels, every row also gets the distance split into its parts: spectral convergence and the
log term per resolution, and the log term's share from bins at each level below the note's peak
(`mrstft_parts`; the shares add up to the log term).

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
from latent.metrics.reconstruction import f0_error_cents, mel_l1, mrstft_distance, mrstft_parts, pitch_tracks
from synth.checkpoint import load_model
from synth.data.corpus import Corpus
from synth.features import LogMel
from vocoders.griffinlim import GriffinLim, GriffinLimConfig, fast_griffin_lim, harmonic_magnitude, pghi_angles

#: --levels bands (dB below the target's peak bin, per item and resolution).
LEVEL_BANDS = ((-80.0, -60.0), (-60.0, -40.0), (-40.0, -20.0), (-20.0, 0.0))


@torch.no_grad()
def evaluate(vocoders: dict[str, torch.nn.Module], corpus: Corpus, indices: list[int],
             batch: int = 16, bounds: GriffinLim | None = None, levels: bool = False,
             magnitude_bounds: bool = False) -> dict[str, dict[str, float]]:
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
        if bounds is not None:
            outs.update(oracle_rows(bounds, audio))
        if magnitude_bounds:
            pitches = [float(corpus.notes[i]["pitch"]) for i in idx]
            outs.update(magnitude_rows(vocoders, audio, pitches))
        n = min(o.shape[-1] for o in outs.values())
        ref = audio[:, :n]
        ref_track = pitch_tracks(ref, sr)
        for name, out in outs.items():
            out = out[:, :n]
            cents, voicing = f0_error_cents(pitch_tracks(out, sr), ref_track)
            spec = vocoders[name].feature_spec if name in vocoders else next(
                iter(vocoders.values())).feature_spec
            rows.setdefault(name, {})
            metrics = {"mrstft": mrstft_distance(out, ref), "mel_l1": mel_l1(out, ref, spec),
                       "f0_error_cents": cents, "voicing_agreement": voicing}
            if levels:
                metrics.update({f"mrstft {k}": v for k, v in mrstft_parts(out, ref, bands=LEVEL_BANDS).items()})
            for key, val in metrics.items():
                rows[name].setdefault(key, []).extend(val.tolist())
    return {name: {**{k: float(np.nanmedian(v)) if k == "f0_error_cents" else float(np.nanmean(v))
                      for k, v in metrics.items()}, "notes": len(indices)}
            for name, metrics in rows.items()}


BOUND_ROWS = ("true magnitude + GL (32 it)", "mel inversion + true phase")


def oracle_rows(gl: GriffinLim, audio: torch.Tensor) -> dict[str, torch.Tensor]:
    """The two --bounds rows for (B, T) audio under `gl`'s spec (see the module docstring)."""
    spec = gl.feature_spec
    n = audio.shape[-1] // spec.hop_length * spec.hop_length
    x = audio[:, :n]
    frames = n // spec.hop_length
    stft = dict(n_fft=spec.n_fft, hop_length=spec.hop_length, win_length=spec.n_fft,
                window=gl.window, center=True)
    true = torch.stft(x, **stft, pad_mode="reflect", return_complex=True)[..., :frames]
    nnls = gl.linear_magnitude(LogMel(spec)(x)[..., :frames])
    return {BOUND_ROWS[0]: gl.griffin_lim(true.abs()),
            BOUND_ROWS[1]: torch.istft(nnls * torch.exp(1j * true.angle()), **stft, length=n)}


def magnitude_rows(vocoders: dict[str, torch.nn.Module], audio: torch.Tensor,
                   pitches: list[float]) -> dict[str, torch.Tensor]:
    """The --magnitude-bounds rows for (B, T) audio of notes at MIDI `pitches` (module docstring)."""
    gl = vocoders["griffinlim (32 it)"]
    spec = gl.feature_spec
    n = audio.shape[-1] // spec.hop_length * spec.hop_length
    x, frames = audio[:, :n], n // spec.hop_length
    stft = dict(n_fft=spec.n_fft, hop_length=spec.hop_length, win_length=spec.n_fft,
                window=gl.window, center=True)
    true = torch.stft(x, **stft, pad_mode="reflect", return_complex=True)[..., :frames]
    phase = torch.exp(1j * true.angle())
    mel = LogMel(spec)(x)[..., :frames]
    harmonic = torch.stack([harmonic_magnitude(m, 440.0 * 2.0 ** ((p - 69.0) / 12.0), spec)
                            for m, p in zip(mel, pitches)])
    rows = {"harmonic inversion + true phase": torch.istft(harmonic * phase, **stft, length=n),
            "harmonic inversion + GL (PGHI, 32 it)": fast_griffin_lim(
                harmonic, pghi_angles(harmonic, spec), spec, gl.window, 32, gl.config.momentum)}
    for name, voc in vocoders.items():
        if getattr(voc.config, "phase", None) == "griffinlim" and voc.feature_spec == spec:
            mag = voc.generator.log_magnitude(mel).exp()
            rows[f"{name} magnitude + true phase"] = torch.istft(mag * phase, **stft, length=n)
    mag = true.abs()
    rows["true magnitude + GL (PGHI, 128 it)"] = fast_griffin_lim(
        mag, pghi_angles(mag, spec), spec, gl.window, 128, gl.config.momentum)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[], help="Vocoder checkpoint (repeatable).")
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="vocoder_eval")
    ap.add_argument("--bounds", action="store_true", help="Add the two oracle rows that split "
                    "Griffin-Lim's error into phase retrieval and mel inversion.")
    ap.add_argument("--levels", action="store_true", help="Split each row's MR-STFT distance into "
                    "its terms and the log term by level below the note's peak.")
    ap.add_argument("--magnitude-bounds", action="store_true", help="Add oracle rows for the "
                    "magnitude the mel allows (harmonic inversion at the true pitch, each "
                    "magnitude model with true phases) and for Griffin-Lim at its best.")
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
    results = {name: evaluate(vocoders, corpus, idx, bounds=gl if args.bounds else None, levels=args.levels,
                               magnitude_bounds=args.magnitude_bounds)
               for name, idx in sets.items()}
    payload = {"models": meta, "corpus_hash": corpus.hash, "results": results,
               "seconds": time.perf_counter() - start}
    print("| set | row | MR-STFT | mel L1 | f0 error (cents, median) | voicing agreement |")
    print("|---|---|---|---|---|---|")
    for set_name, rows in results.items():
        for row, m in rows.items():
            print(f"| {set_name} | {row} | {m['mrstft']:.3f} | {m['mel_l1']:.3f} | "
                  f"{m['f0_error_cents']:.1f} | {m['voicing_agreement']:.2f} |")
    if args.levels:
        bands = [f"log {lo:g}..{hi:g} dB" for lo, hi in LEVEL_BANDS]
        print("| set | row | spectral convergence | log term | " + " | ".join(bands) + " |")
        print("|---|---|---|---|" + "---|" * len(bands))
        for set_name, rows in results.items():
            for row, m in rows.items():
                cells = [m[f"mrstft {k}"] for k in ("sc", "log", *bands)]
                print(f"| {set_name} | {row} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
