"""DDSP resynthesis quality on held-out notes, with calibration rows.

Sets: held-out notes of training instruments (note split "test") and notes of unseen instruments
(instrument split "test"), pitched families only. Rows per set:
- ddsp: encode -> decode with the manifest pitch as f0 and the original's loudness curve, with
  the loudness lock (one gain per note so the render meets the requested loudness curve, the
  model's default at inference);
- ddsp, no loudness lock: the same, the network's raw output level;
- real vs real: the same instrument and pitch at the neighbouring velocity layer (how far two real
  renderings of one note are apart: a floor the model need not beat);
- harmonic-only: a 1/k harmonic tone with the same f0 and frame-by-frame RMS as the original
  (what a fixed synth gets; the model should beat it);
- Griffin-Lim resynthesis: the original's log-mel (default 16 kHz / 80-mel spec) inverted by our
  Griffin-Lim (NNLS + 32 iterations): a reconstruction with the right spectral envelope and
  phase artefacts, so its family accuracy shows how far the classifier tolerates resynthesis.
Metrics (latent/metrics/reconstruction.py): median f0 error (cents, torchcrepe tiny, frames
voiced in both), voicing agreement, loudness L1 (dB), multi-resolution STFT distance, mel L1;
and "is it the right instrument": the bundled note classifier's GM-family accuracy on each row's
audio against the note's label (`--classifier`; the originals' own accuracy is the ceiling).

    python -m bench.ddsp_eval --model runs/ddsp-gm/model.safetensors --corpus data/gm --n 100
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from bench.common import write_result
from latent.metrics.reconstruction import (f0_error_cents, loudness_l1_db, mel_l1,
                                           mrstft_distance, pitch_tracks)
from synth import dsp
from synth.base import Conditions
from synth.checkpoint import load_model
from synth.data.corpus import Corpus
from synth.features import FeatureSpec
from synth.pitch import midi_to_hz

PITCHED = ("piano", "chromatic percussion", "organ", "guitar", "bass", "strings", "ensemble",
           "brass", "reed", "pipe", "synth lead", "synth pad", "ethnic")


def pick(corpus: Corpus, split: str | None, inst_split: str, n: int, seed: int) -> list[int]:
    idx = corpus.select(split=split, instrument_split=inst_split, families=PITCHED)
    idx = [i for i in idx if 36 <= corpus.notes[i]["pitch"] <= 84]
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(idx, size=min(n, len(idx)), replace=False).tolist())


def with_config(model, overrides: dict | None):
    """The model rebuilt with some config fields replaced and its weights loaded strictly: for
    settings that add no weights (e.g. a fixed `partial_noise` level). None or {}: the model."""
    if not overrides:
        return model
    import dataclasses

    from synth.errors import ConfigError

    try:
        rebuilt = type(model)(dataclasses.replace(model.config, **overrides))
    except (TypeError, ConfigError) as err:  # an unknown field or a bad value: one line, exit 2
        raise SystemExit(f"--config: {err}") from None
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    rebuilt.checkpoint_meta = getattr(model, "checkpoint_meta", {})
    return rebuilt.eval()


def heldout_setup(model_name: str, corpus_path: str, n: int, seed: int = 0,
                  overrides: dict | None = None):
    """(model, note classifier, corpus, idx): the DDSP model (bundled name or checkpoint, with
    `overrides` to its config, `with_config`) and the bundled classifier in eval mode, and the
    `pick` of `n` held-out notes of training instruments, as the oracle and recognition benches
    share them."""
    from synth.catalog import load_named

    corpus = Corpus.open(corpus_path)
    return (with_config(load_named(model_name), overrides), load_named("classifier-gm").eval(),
            corpus, pick(corpus, "test", "train", n, seed))


def note_batches(corpus: Corpus, idx: list[int], batch: int):
    """Yield (done, audio (B, T), pitch (B,), family (B,)) for `idx` in batches: done counts the
    notes given out so far."""
    for s in range(0, len(idx), batch):
        part = idx[s:s + batch]
        audio = torch.from_numpy(corpus.waveform(part)).float()
        pitch = torch.tensor([float(corpus.notes[i]["pitch"]) for i in part])
        truth = torch.tensor([int(corpus.notes[i]["family_id"]) for i in part])
        yield s + len(part), audio, pitch, truth


def count_family_hits(classifier, rows: dict[str, torch.Tensor], truth: torch.Tensor, sr: int,
                      hits: dict[str, int]) -> None:
    """Add each row's right GM-family guesses (the note classifier on (B, T) audio) to `hits`."""
    for name, x in rows.items():
        guess = classifier.family_logits(x, sr).argmax(-1)
        hits[name] = hits.get(name, 0) + int((guess == truth).sum())


def accuracy_table(hits: dict[str, int], n: int) -> dict[str, float]:
    """Print hits as a markdown table of family accuracy; return {row: accuracy}."""
    acc = {k: v / n for k, v in hits.items()}
    print("| render | family accuracy |\n|---|---|")
    for k, v in acc.items():
        print(f"| {k} | {v:.2f} ({hits[k]} of {n}) |")
    return acc


def neighbour(corpus: Corpus, i: int) -> int | None:
    """Index of the same instrument and pitch at the nearest other velocity."""
    row = corpus.notes[i]
    best, gap = None, 1e9
    for j, r in enumerate(corpus.notes):
        if r["instrument_id"] == row["instrument_id"] and r["pitch"] == row["pitch"] and j != i:
            if abs(r["velocity"] - row["velocity"]) < gap:
                best, gap = j, abs(r["velocity"] - row["velocity"])
    return best


@torch.no_grad()
def resynth(model, audio: torch.Tensor, pitch: torch.Tensor, lock: bool = True,
            controls: dict[str, float] | None = None, refine=None) -> torch.Tensor:
    """(B, T) originals -> (B, T') resynthesis: manifest pitch as f0, the original's loudness,
    its own z; `lock` is the loudness lock (the inference default), `controls` the model's
    synthesis controls (harmonic_db, noise_db, brightness, reverb_mix); `refine`
    (`synth.ddsp_play.RefineOptions`): z, and with `refine.offsets` a static spectral correction,
    refined on the note first (`refine_note`)."""
    n = audio.shape[-1] // model.hop_length * model.hop_length
    audio = audio[:, :n]
    frames = n // model.hop_length
    f0 = midi_to_hz(pitch)[:, None].expand(-1, frames)
    ld = model.analyze_loudness(audio)
    z = model.encode(audio, Conditions(pitch=pitch))
    offsets = None
    if refine is not None:
        from synth.ddsp_play import refine_note

        z, offsets = refine_note(model, audio.float(), f0, ld, z, refine)
    return model.synthesize(f0, ld, z, n_samples=n, generator=torch.Generator().manual_seed(0),
                            controls=controls, match_loudness=lock, offsets=offsets)


def add_refine_args(ap: argparse.ArgumentParser, what: str) -> None:
    """`--refine N` (`what` the N-step refined render adds), `--refine-weight` and
    `--refine-z-only`."""
    ap.add_argument("--refine", type=int, default=0,
                    help=f"{what} with each note's z and spectral offsets refined by this many "
                         "steps (synth.ddsp_play.refine_note, default options otherwise)")
    ap.add_argument("--refine-weight", type=float, default=None,
                    help="the refinement's perceptual weight (0: spectral loss only)")
    ap.add_argument("--refine-z-only", action="store_true",
                    help="refine the global z alone, without the static spectral offsets "
                         "(the refinement of sessions 23-24)")


def refined_label(refine) -> str:
    """A refined row's name: what `refine` (RefineOptions) moves on each note."""
    return "z + offsets refined" if refine.offsets else "z refined"


def refine_options(args: argparse.Namespace):
    """`--refine` / `--refine-weight` / `--refine-z-only` -> RefineOptions, or None for 0 steps."""
    if args.refine <= 0:
        return None
    from synth.ddsp_play import RefineOptions
    from synth.errors import ConfigError

    try:
        weight = {} if args.refine_weight is None else {"perceptual_weight": args.refine_weight}
        return RefineOptions(steps=args.refine, offsets=not args.refine_z_only, **weight)
    except ConfigError as err:  # one line, non-zero exit
        raise SystemExit(f"--refine: {err}") from None


def harmonic_baseline(audio: torch.Tensor, pitch: torch.Tensor, sr: int, hop: int = 64) -> torch.Tensor:
    n = audio.shape[-1] // hop * hop
    frames = n // hop
    h = 40
    f0 = midi_to_hz(pitch)[:, None, None].expand(-1, frames, 1)
    dist = (1.0 / torch.arange(1, h + 1).float()).expand(audio.shape[0], frames, h)
    dist = dist / dist.sum(-1, keepdim=True)
    tone = dsp.harmonic_synthesis(f0, torch.ones_like(f0), dsp.normalize_harmonics(dist, f0, sr), n, sr)
    rms = lambda x: x.reshape(x.shape[0], frames, hop).pow(2).mean(-1).sqrt()  # noqa: E731
    gain = rms(audio[:, :n]) / rms(tone).clamp_min(1e-6)
    return tone * dsp.upsample_linear(gain[..., None], n)[..., 0]


ROWS = ("ddsp", "ddsp, no loudness lock", "real vs real", "harmonic-only",
        "Griffin-Lim resynthesis", "original")


@torch.no_grad()
def griffinlim_resynth(audio: torch.Tensor, sr: int) -> torch.Tensor:
    from synth.features import LogMel
    from synth.registry import build

    spec = FeatureSpec(sample_rate=sr)
    vocoder = build("griffinlim", {"feature_spec": spec.to_dict()}).eval()
    return vocoder(LogMel(spec)(audio))


def evaluate(model, corpus: Corpus, indices: list[int], batch: int = 16, classifier=None,
             reverb_mixes: tuple[float, ...] = (), calibration: bool = True, refine=None
             ) -> dict[str, dict[str, float]]:
    """Rows of `ROWS` (the model rows only without `calibration`), plus one "ddsp, reverb_mix X"
    row per extra mix of the learned reverb (0: dry) and, with `refine` (RefineOptions), a
    "ddsp, z refined" row ("ddsp, z + offsets refined" with `refine.offsets`; `refine_note`)."""
    sr = corpus.sample_rate
    spec = FeatureSpec(sample_rate=sr)
    names = ROWS if calibration else ("ddsp", "ddsp, no loudness lock", "original")
    extra = tuple(f"ddsp, reverb_mix {m:g}" for m in reverb_mixes)
    refined = f"ddsp, {refined_label(refine)}" if refine is not None else None
    extra += (refined,) if refined else ()
    names = names[:2] + extra + names[2:]
    rows: dict[str, dict[str, list[float]]] = {k: {} for k in names}
    for start in range(0, len(indices), batch):
        idx = indices[start:start + batch]
        audio = torch.from_numpy(corpus.waveform(idx))
        pitch = torch.tensor([float(corpus.notes[i]["pitch"]) for i in idx])
        outs = {"ddsp": resynth(model, audio, pitch),
                "ddsp, no loudness lock": resynth(model, audio, pitch, lock=False)}
        for m in reverb_mixes:
            outs[f"ddsp, reverb_mix {m:g}"] = resynth(model, audio, pitch, controls={"reverb_mix": m})
        if refine is not None:
            outs[refined] = resynth(model, audio, pitch, refine=refine)
        if calibration:
            nb = [neighbour(corpus, i) for i in idx]
            outs["real vs real"] = torch.from_numpy(
                corpus.waveform([j if j is not None else i for i, j in zip(idx, nb)]))
            outs["harmonic-only"] = harmonic_baseline(audio, pitch, sr)
            outs["Griffin-Lim resynthesis"] = griffinlim_resynth(audio, sr)
        outs["original"] = audio
        n = min(o.shape[-1] for o in outs.values())
        ref = audio[:, :n]
        ref_track = pitch_tracks(ref, sr)
        family = torch.tensor([corpus.notes[i]["family_id"] for i in idx])
        for name, out in outs.items():
            out = out[:, :n]
            metrics = {}
            if name != "original":
                track = pitch_tracks(out, sr)
                cents, voicing = f0_error_cents(track, ref_track)
                metrics = {"f0_error_cents": cents, "voicing_agreement": voicing,
                           "loudness_l1_db": loudness_l1_db(out, ref, sr),
                           "mrstft": mrstft_distance(out, ref), "mel_l1": mel_l1(out, ref, spec)}
            if classifier is not None:
                with torch.no_grad():
                    pred = classifier.family_logits(out, sr).argmax(-1).cpu()
                metrics["family_accuracy"] = (pred == family).float()
            for key, val in metrics.items():
                rows[name].setdefault(key, []).extend(val.tolist())
    summary = {}
    for name, metrics in rows.items():
        summary[name] = {k: float(np.nanmedian(v)) if k == "f0_error_cents" else float(np.nanmean(v))
                         for k, v in metrics.items()}
        summary[name]["notes"] = len(indices)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--classifier", default="classifier-gm",
                    help="note classifier for the family-accuracy column ('' to skip)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="ddsp_eval", help="bench/results/<name>.json")
    ap.add_argument("--reverb-mixes", default="",
                    help="extra rows at these levels of the learned reverb, e.g. '0,0.5' (0: dry)")
    ap.add_argument("--config", type=json.loads, default=None,
                    help="JSON config fields to replace (settings that add no weights), e.g. "
                         "'{\"partial_noise\": true, \"partial_noise_range_db\": 0}'")
    ap.add_argument("--no-calibration", action="store_true",
                    help="only the model rows (and the originals' family accuracy)")
    add_refine_args(ap, "add a row")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = with_config(load_model(args.model).eval(), args.config)
    classifier = None
    if args.classifier:
        from synth.catalog import load_named

        classifier = load_named(args.classifier).eval()
    corpus = Corpus.open(args.corpus)
    start = time.perf_counter()
    sets = {"held-out notes": pick(corpus, "test", "train", args.n, args.seed),
            "unseen instruments": pick(corpus, None, "test", args.n, args.seed)}
    mixes = tuple(float(m) for m in args.reverb_mixes.split(",") if m.strip())
    refine = refine_options(args)
    results = {name: evaluate(model, corpus, idx, classifier=classifier, reverb_mixes=mixes,
                              calibration=not args.no_calibration, refine=refine)
               for name, idx in sets.items()}
    meta = getattr(model, "checkpoint_meta", {})
    payload = {"model": args.model, "config": args.config, "steps": meta.get("steps"),
               "refine": dataclasses.asdict(refine) if refine else None,
               "corpus_hash": corpus.hash,
               "results": results, "seconds": time.perf_counter() - start}
    print("| set | row | f0 error (cents, median) | voicing agreement | loudness L1 (dB) | "
          "MR-STFT | mel L1 | family accuracy |")
    print("|---|---|---|---|---|---|---|---|")
    fmt = lambda m, k, f: format(m[k], f) if k in m else "-"  # noqa: E731
    for set_name, rows in results.items():
        for row, m in rows.items():
            print(f"| {set_name} | {row} | {fmt(m, 'f0_error_cents', '.1f')} | "
                  f"{fmt(m, 'voicing_agreement', '.2f')} | {fmt(m, 'loudness_l1_db', '.2f')} | "
                  f"{fmt(m, 'mrstft', '.3f')} | {fmt(m, 'mel_l1', '.3f')} | "
                  f"{fmt(m, 'family_accuracy', '.2f')} |")
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
