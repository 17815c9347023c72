"""Why does the note classifier not recognise DDSP resyntheses? Ablations on held-out notes.

    python -m bench.ddsp_diagnose --model studio/models/ddsp-gm.safetensors --n 64

For held-out notes (note split "test", training instruments, pitched families, MIDI 36-84) the
bundled classifier's GM-family accuracy on:
- the originals, and the DDSP resynthesis (f0 from the manifest pitch, the original's loudness);
- splices: the resynthesis with the original's first 150 ms, and the original with the
  resynthesis's first 150 ms (does the attack carry the identity?);
- the resynthesis without its reverb, without its noise part (-24 dB), without both;
- the original's first second only (the rest silent), and the same for the resynthesis;
- Griffin-Lim resynthesis of the original's log-mel (envelope kept, phase artefacts).
It also prints the families the classifier assigns to the resyntheses, and writes a figure of
six originals' log-mels beside their resyntheses (docs/img/ddsp_vs_real.png with --figure).
Writes bench/results/ddsp_diagnose.json.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from bench.common import mel_grid, write_result  # noqa: E402
from bench.ddsp_eval import griffinlim_resynth, pick, resynth  # noqa: E402
from synth.catalog import load_named  # noqa: E402
from synth.checkpoint import load_model  # noqa: E402
from synth.data.corpus import Corpus  # noqa: E402
from synth.data.gm import FAMILIES  # noqa: E402
from synth.features import FeatureSpec, LogMel  # noqa: E402

ATTACK_S = 0.15


@torch.no_grad()
def variants(model, audio: torch.Tensor, pitch: torch.Tensor, sr: int) -> dict[str, torch.Tensor]:
    out = resynth(model, audio, pitch)
    n = out.shape[-1]
    ref = audio[:, :n]
    a = int(ATTACK_S * sr)
    first = torch.zeros_like(ref)
    first[:, :sr] = 1.0
    return {
        "original": ref,
        "ddsp": out,
        "ddsp with the original's attack": torch.cat([ref[:, :a], out[:, a:]], 1),
        "original with ddsp's attack": torch.cat([out[:, :a], ref[:, a:]], 1),
        "ddsp, no reverb": resynth(model, audio, pitch, controls={"reverb_mix": 0.0}),
        "ddsp, no noise": resynth(model, audio, pitch, controls={"noise_db": -24.0}),
        "ddsp, no noise, no reverb": resynth(model, audio, pitch,
                                             controls={"noise_db": -24.0, "reverb_mix": 0.0}),
        "original, first second only": ref * first,
        "ddsp, first second only": out * first,
        "Griffin-Lim resynthesis": griffinlim_resynth(ref, sr),
    }


def figure(model, corpus: Corpus, idx: list[int], path: str) -> None:
    audio = torch.from_numpy(corpus.waveform(idx))
    pitch = torch.tensor([float(corpus.notes[i]["pitch"]) for i in idx])
    out = resynth(model, audio, pitch)
    mel = LogMel(FeatureSpec(sample_rate=corpus.sample_rate))
    real, fake = mel(audio[:, :out.shape[-1]]), mel(out)
    rows = []
    for k, i in enumerate(idx):
        note = f"{corpus.notes[i]['instrument']}, MIDI {corpus.notes[i]['pitch']}"
        rows.append([(real[k], f"original: {note}"), (fake[k], f"ddsp: {note}")])
    mel_grid(path, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="studio/models/ddsp-gm.safetensors")
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--classifier", default="classifier-gm")
    ap.add_argument("--figure", default=None, help="PNG path for the log-mel figure")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model).eval()
    clf = load_named(args.classifier).eval()
    corpus = Corpus.open(args.corpus)
    idx = pick(corpus, "test", "train", args.n, args.seed)
    sr = corpus.sample_rate
    hits: dict[str, list[bool]] = {}
    assigned: Counter = Counter()
    truth_all: list[int] = []
    for start in range(0, len(idx), 16):
        part = idx[start:start + 16]
        audio = torch.from_numpy(corpus.waveform(part))
        pitch = torch.tensor([float(corpus.notes[i]["pitch"]) for i in part])
        truth = torch.tensor([corpus.notes[i]["family_id"] for i in part])
        truth_all += truth.tolist()
        for name, x in variants(model, audio, pitch, sr).items():
            pred = clf.family_logits(x, sr).argmax(-1)
            hits.setdefault(name, []).extend((pred == truth).tolist())
            if name == "ddsp":
                assigned.update(FAMILIES[int(p)] for p in pred)
    acc = {k: sum(v) / len(v) for k, v in hits.items()}
    per_family = {}
    for f in sorted(set(truth_all)):
        sel = [k for k, t in enumerate(truth_all) if t == f]
        per_family[FAMILIES[f]] = {"n": len(sel), "original": sum(hits["original"][k] for k in sel) / len(sel),
                                   "ddsp": sum(hits["ddsp"][k] for k in sel) / len(sel)}
    print(f"{'variant':<34}{'family accuracy':>16}")
    for k, v in acc.items():
        print(f"{k:<34}{v:>16.2f}")
    print("families the classifier assigns to the resyntheses: " +
          ", ".join(f"{k} {v}" for k, v in assigned.most_common(6)))
    if args.figure:
        figure(model, corpus, idx[:6], args.figure)
        print(f"wrote {args.figure}")
    path = write_result("ddsp_diagnose", {"model": args.model, "n": len(idx), "attack_s": ATTACK_S,
                                          "family_accuracy": acc, "per_family": per_family,
                                          "ddsp_assigned_families": dict(assigned)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
