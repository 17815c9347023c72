"""VAE / VQ-VAE evaluation: reconstruction beside vocoder-only resynthesis, pitch
disentanglement, pitch transfer, and (VQ-VAE) codebook usage and prior samples.

Sets: held-out notes of training instruments (note split "test") and notes of unseen
instruments (instrument split "test"), pitched families, MIDI 36-84. Rows per set:
- model: encode -> decode (mel) -> the model's vocoder;
- vocoder only: the same vocoder on the true mel of the note (the best the model can do through
  that vocoder).
Metrics (latent/metrics/reconstruction.py): mel L1 (the model's FeatureSpec), multi-resolution
STFT distance; for the model also the mel L1 before vocoding ("mel_l1_direct").

Pitch disentanglement (held-out instruments and training instruments alike): for instruments
with notes at every pitch of `--pitches` (velocity nearest 100), latents (VQ-VAE: mean over
frames) -> ratio = mean over instruments of the latent variance across pitches (trace of the
covariance) / mean over pitches of the variance across instruments. Goal <= 0.3.
Pitch transfer: each instrument's z at the middle pitch decoded at every other pitch; median
|cents| of torchcrepe (tiny) f0 against the requested pitch over voiced frames.
Interpolation: pairs of those instruments whose notes at the middle pitch differ in spectral
centroid (`spectral_centroid`, the whole signal) by at least 25 %; each pair's latents (VQ-VAE: pre-quantisation, quantised by the
decoder) are interpolated linearly at 9 points and decoded at that pitch; a pair passes when the
decoded centroids move monotonically, no step backwards larger than `--tolerance` (5 %) of the
endpoints' gap (`latent.interpolate.monotonic_within`). Also reported: the fraction among pairs
whose decoded endpoints differ by 25 % too (where they differ by less, 5 % of their gap is a few
Hz).
VQ-VAE: codebook usage and perplexity over the validation split's codes; prior samples at the
grid pitches (families of the chosen instruments), median |cents| against the requested pitch.

    python -m bench.vae_eval --model runs/vae-gm/model.safetensors --corpus data/gm --n 100
    python -m bench.vae_eval --model /tmp/vae-smoke/model.safetensors --n 4 --instruments 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.common import mel_grid, write_result
from bench.ddsp_eval import PITCHED, pick
from latent.metrics.reconstruction import mel_l1, mrstft_distance, pitch_tracks
from synth.base import Conditions
from synth.catalog import load_named
from synth.checkpoint import load_model
from synth.data.corpus import Corpus
from synth.registry import build
from synth.pitch import midi_to_hz


def conditions(corpus: Corpus, idx: list[int], duration: float | None = None) -> Conditions:
    rows = [corpus.notes[i] for i in idx]
    return Conditions(pitch=torch.tensor([float(r["pitch"]) for r in rows]),
                      velocity=torch.tensor([float(r["velocity"]) for r in rows]),
                      family=torch.tensor([int(r["family_id"]) for r in rows]), duration=duration)


def note_vector(model, latent: torch.Tensor) -> torch.Tensor:
    """(B, D) or (B, D, F') -> (B, D): frame-mean for temporal latents."""
    return latent.mean(-1) if latent.ndim == 3 else latent


def cents_error(audio: torch.Tensor, pitch: torch.Tensor, sr: int, threshold: float = 0.5) -> list[float]:
    """Median |cents| per item of the crepe f0 against `pitch` (MIDI) over voiced frames."""
    track = pitch_tracks(audio, sr)
    target = midi_to_hz(pitch.double())[:, None]
    cents = 1200 * torch.log2(track.f0_hz.double().clamp_min(1e-3) / target)
    voiced = track.periodicity > threshold
    return [float(cents[i][voiced[i]].abs().median()) if voiced[i].any() else float("nan")
            for i in range(audio.shape[0])]


@torch.no_grad()
def reconstruction(model, corpus: Corpus, indices: list[int], batch: int) -> dict[str, dict[str, float]]:
    spec = model.feature_spec
    rows: dict[str, dict[str, list[float]]] = {"model": {}, "vocoder only": {}}
    for start in range(0, len(indices), batch):
        idx = indices[start:start + batch]
        ref = model.fit_length(torch.from_numpy(corpus.waveform(idx)))
        cond = conditions(corpus, idx)
        true_mel = model.mel(ref)
        pred_mel = model.decode_mel(model.encode(ref, cond), cond)
        outs = {"model": model.vocode(pred_mel), "vocoder only": model.vocode(true_mel)}
        rows["model"].setdefault("mel_l1_direct", []).extend(
            (pred_mel - true_mel).abs().mean((-2, -1)).tolist())
        for name, out in outs.items():
            out = out[:, : ref.shape[-1]]
            rows[name].setdefault("mel_l1", []).extend(mel_l1(out, ref, spec).tolist())
            rows[name].setdefault("mrstft", []).extend(mrstft_distance(out, ref).tolist())
    return {name: {**{k: float(np.mean(v)) for k, v in m.items()}, "notes": len(indices)}
            for name, m in rows.items()}


def instrument_grid(corpus: Corpus, pitches: list[int], n_instruments: int, inst_split: str | None,
                    seed: int) -> dict[str, list[int]]:
    """Instrument id -> note indices at each of `pitches` (velocity nearest 100)."""
    best: dict[tuple[str, int], tuple[float, int]] = {}
    wanted = set(pitches)
    for i in corpus.select(split=None, instrument_split=inst_split, families=PITCHED):
        row = corpus.notes[i]
        if row["pitch"] in wanted:
            key, gap = (row["instrument_id"], int(row["pitch"])), abs(row["velocity"] - 100)
            if key not in best or gap < best[key][0]:
                best[key] = (gap, i)
    complete = sorted({inst for inst, _ in best if all((inst, p) in best for p in pitches)})
    rng = np.random.default_rng(seed)
    chosen = rng.choice(complete, size=min(n_instruments, len(complete)), replace=False).tolist()
    return {inst: [best[(inst, p)][1] for p in pitches] for inst in sorted(chosen)}


@torch.no_grad()
def disentanglement(model, corpus: Corpus, grid: dict[str, list[int]], pitches: list[int],
                    batch: int) -> dict[str, float]:
    """Within-instrument (across pitches) / between-instrument (at one pitch) latent variance,
    and the pitch error of each instrument's middle-pitch z decoded at the other pitches."""
    if len(grid) < 2:
        return {"instruments": len(grid), "ratio": float("nan"), "transfer_cents_median": float("nan")}
    lat = []
    for idx in grid.values():
        audio = torch.from_numpy(corpus.waveform(idx))
        lat.append(torch.cat([note_vector(model, model.encode(audio[s:s + batch],
                                                                conditions(corpus, idx[s:s + batch])))
                              for s in range(0, len(idx), batch)]))
    z = torch.stack(lat).double()  # (instruments, pitches, D)
    within = z.var(1).sum(-1).mean()  # per instrument, across pitches
    between = z.var(0).sum(-1).mean()  # per pitch, across instruments
    mid = len(pitches) // 2
    errors = []
    for (inst, idx), zi in zip(grid.items(), lat):
        full = model.encode(model.fit_length(torch.from_numpy(corpus.waveform(idx[mid:mid + 1]))))
        others = [k for k in range(len(pitches)) if k != mid]
        latent = full.expand(len(others), *full.shape[1:])
        vel = float(corpus.notes[idx[mid]]["velocity"])
        pitch = torch.tensor([float(pitches[k]) for k in others])
        audio = model.decode(latent, Conditions(pitch=pitch, velocity=torch.full_like(pitch, vel)))
        errors.extend(cents_error(audio, pitch, model.sample_rate))
    return {"instruments": len(grid), "pitches": pitches, "within_var": float(within),
            "between_var": float(between), "ratio": float(within / between),
            "transfer_cents_median": float(np.nanmedian(errors)),
            "transfer_within_30_cents": float(np.nanmean(np.array(errors) <= 30))}


@torch.no_grad()
def interpolation(model, corpus: Corpus, grid: dict[str, list[int]], pitches: list[int],
                  tolerance: float, max_pairs: int = 12, mode: str = "lerp") -> dict[str, object]:
    """Centroid monotonicity of latent interpolations between pairs of instruments."""
    from latent.interpolate import centroid_sweep, monotonic_within
    from synth.data.descriptors import spectral_centroid

    mid = len(pitches) // 2
    notes = [idx[mid] for idx in grid.values()]
    audio = torch.from_numpy(corpus.waveform(notes))
    centroids = [spectral_centroid(a.numpy(), corpus.sample_rate) for a in audio]
    fit = getattr(model, "fit_length", None)  # mel models take fixed-length notes
    latents = model.encode(fit(audio) if fit else audio, conditions(corpus, notes))
    pairs = [(i, j) for i in range(len(notes)) for j in range(i + 1, len(notes))
             if max(centroids[i], centroids[j]) >= 1.25 * min(centroids[i], centroids[j])]
    sweeps = []
    for i, j in pairs[:max_pairs]:
        cond = conditions(corpus, [notes[i]])
        values = centroid_sweep(model, latents[i:i + 1], latents[j:j + 1], cond, mode=mode)
        sweeps.append({"instruments": [list(grid)[i], list(grid)[j]], "centroid_hz": values,
                       "original_centroid_hz": [centroids[i], centroids[j]],
                       "monotonic": monotonic_within(values, tolerance)})
    # The pairs are chosen on the originals' gap; where the decoded endpoints differ by less than
    # 25 % the tolerance (a share of that gap) gets small: reported apart, not instead.
    wide = [s for s in sweeps if max(s["centroid_hz"][0], s["centroid_hz"][-1])
            >= 1.25 * min(s["centroid_hz"][0], s["centroid_hz"][-1])]
    return {"pairs": len(sweeps), "tolerance": tolerance, "mode": mode,
            "monotonic_fraction": float(np.mean([s["monotonic"] for s in sweeps])) if sweeps else float("nan"),
            "decoded_wide_pairs": len(wide),
            "decoded_wide_monotonic_fraction": float(np.mean([s["monotonic"] for s in wide])) if wide else float("nan"),
            "sweeps": sweeps}


@torch.no_grad()
def vq_checks(model, corpus: Corpus, n: int, grid: dict[str, list[int]], pitches: list[int],
              seed: int, batch: int) -> dict[str, float]:
    idx = pick(corpus, "valid", "train", n, seed)
    codes = []
    for s in range(0, len(idx), batch):
        audio = torch.from_numpy(corpus.waveform(idx[s:s + batch]))
        codes.append(model.quantize(model.encode(audio)).codes.reshape(-1))
    from synth.vqvae import codebook_stats

    perplexity, usage = codebook_stats(torch.cat(codes), model.config.codebook_size)
    families = [int(corpus.notes[v[0]]["family_id"]) for v in grid.values()] or [0]
    pitch = torch.tensor([float(p) for p in pitches for _ in families])
    fam = torch.tensor([f for _ in pitches for f in families])
    cond = Conditions(pitch=pitch, velocity=torch.full_like(pitch, 100.0), family=fam)
    audio = torch.cat([model.sample(len(pitch[s:s + batch]), cond.select(slice(s, s + batch)), seed=seed + s)
                       for s in range(0, len(pitch), batch)])
    errors = cents_error(audio, pitch, model.sample_rate)
    return {"valid_notes": len(idx), "codebook_usage": float(usage),
            "codebook_perplexity": float(perplexity), "prior_samples": len(errors),
            "prior_cents_median": float(np.nanmedian(errors)),
            "prior_within_50_cents": float(np.nanmean(np.array(errors) <= 50))}


@torch.no_grad()
def figure(model, corpus: Corpus, idx: list[int], path: str) -> None:
    """Log-mels of held-out notes: the original, the model's decode before the vocoder, and the
    model's audio (vocoded) measured again."""
    ref = model.fit_length(torch.from_numpy(corpus.waveform(idx)))
    cond = conditions(corpus, idx)
    true_mel = model.mel(ref)
    pred_mel = model.decode_mel(model.encode(ref, cond), cond)
    heard = model.mel(model.vocode(pred_mel))
    rows = []
    for k, i in enumerate(idx):
        note = f"{corpus.notes[i]['instrument']}, MIDI {corpus.notes[i]['pitch']}"
        rows.append([(true_mel[k], f"original: {note}"), (pred_mel[k], f"{model.kind} mel: {note}"),
                     (heard[k], f"{model.kind} audio: {note}")])
    mel_grid(path, rows, vmin=-11.5, width=11.0, fontsize=8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--n", type=int, default=100, help="notes per reconstruction set")
    ap.add_argument("--instruments", type=int, default=12, help="instruments per disentanglement set")
    ap.add_argument("--pitches", default="48,52,55,60,64,67,72")
    ap.add_argument("--vocoder", default=None, help="override the model's vocoder (name or 'griffinlim')")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--figure", default=None, help="PNG of held-out log-mels beside the model's")
    ap.add_argument("--name", default=None, help="result name under bench/results/ (default: "
                    "<kind>_eval)")
    ap.add_argument("--tolerance", type=float, default=0.05,
                    help="interpolation: largest step back, as a fraction of the endpoints' gap")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model).eval()
    if args.vocoder == "griffinlim":
        model.attach_vocoder(build("griffinlim", {"feature_spec": model.feature_spec.to_dict()}).eval())
    elif args.vocoder:
        model.attach_vocoder(load_named(args.vocoder))
    corpus = Corpus.open(args.corpus)
    pitches = [int(p) for p in args.pitches.split(",")]
    start = time.perf_counter()
    sets = {"held-out notes": (pick(corpus, "test", "train", args.n, args.seed), "train"),
            "unseen instruments": (pick(corpus, None, "test", args.n, args.seed), "test")}
    results: dict[str, dict] = {}
    for name, (idx, inst_split) in sets.items():
        grid = instrument_grid(corpus, pitches, args.instruments, inst_split, args.seed)
        results[name] = {"reconstruction": reconstruction(model, corpus, idx, args.batch),
                         "disentanglement": disentanglement(model, corpus, grid, pitches, args.batch),
                         "interpolation": interpolation(model, corpus, grid, pitches, args.tolerance)}
    if model.kind == "vqvae":
        grid = instrument_grid(corpus, pitches, args.instruments, "train", args.seed)
        results["vq"] = vq_checks(model, corpus, args.n, grid, pitches, args.seed, args.batch)
    meta = getattr(model, "checkpoint_meta", {})
    payload = {"model": args.model, "kind": model.kind, "steps": meta.get("steps"),
               "vocoder": args.vocoder or model.config.vocoder, "corpus_hash": corpus.hash,
               "results": results, "seconds": time.perf_counter() - start}
    print("| set | row | mel L1 | MR-STFT | mel L1 before vocoder |")
    print("|---|---|---|---|---|")
    for set_name in sets:
        for row, m in results[set_name]["reconstruction"].items():
            direct = f"{m['mel_l1_direct']:.3f}" if "mel_l1_direct" in m else ""
            print(f"| {set_name} | {row} | {m['mel_l1']:.3f} | {m['mrstft']:.3f} | {direct} |")
    for set_name in sets:
        d = results[set_name]["disentanglement"]
        print(f"{set_name}: disentanglement ratio {d['ratio']:.3f} over {d['instruments']} instruments; "
              f"pitch transfer median {d['transfer_cents_median']:.1f} cents")
        it = results[set_name]["interpolation"]
        print(f"{set_name}: interpolation centroid monotonic (tolerance {it['tolerance']:.0%}) in "
              f"{it['monotonic_fraction']:.2f} of {it['pairs']} instrument pairs "
              f"({it['decoded_wide_monotonic_fraction']:.2f} of the {it['decoded_wide_pairs']} whose "
              f"decoded endpoints also differ by 25 %)")
    if "vq" in results:
        v = results["vq"]
        print(f"codebook usage {v['codebook_usage']:.2f} (perplexity {v['codebook_perplexity']:.1f}); "
              f"prior samples median {v['prior_cents_median']:.1f} cents")
    print(f"wrote {write_result(args.name or f'{model.kind}_eval', payload)}")
    if args.figure:
        figure(model, corpus, sets["held-out notes"][0][:5], args.figure)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
