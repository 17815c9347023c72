"""Test-split accuracy of a trained note classifier (latent/metrics/classifier.py).

Sets: held-out notes of training instruments (note split "test", instrument split "train") and
notes of unseen instruments (instrument split "test"), both whole notes. Reports family accuracy
(16 GM families), pitch accuracy exact and within one semitone (pitched families only: the
classifier's `unpitched_families` are left out), and embedding throughput.

    python -m bench.classifier_eval --model runs/classifier-gm/model.safetensors --corpus data/gm
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.common import write_result
from latent.metrics.quality import pitch_accuracy
from synth.catalog import load_named
from synth.data.corpus import Corpus


def evaluate_split(model, corpus: Corpus, idx: list[int], batch: int) -> dict[str, float]:
    fam_pred, pitch_logits, t0 = [], [], time.perf_counter()
    for s in range(0, len(idx), batch):
        audio = torch.from_numpy(corpus.waveform(idx[s:s + batch]))
        _, fam, pitch = model.analyse(audio, corpus.sample_rate)
        fam_pred.append(fam.argmax(-1).numpy())
        pitch_logits.append(pitch.numpy())
    seconds = time.perf_counter() - t0
    fam_pred, logits = np.concatenate(fam_pred), np.concatenate(pitch_logits)
    family = np.array([corpus.notes[i]["family_id"] for i in idx])
    pitch = np.array([corpus.notes[i]["pitch"] for i in idx], float)
    pitched = model.pitched(torch.as_tensor(family)).numpy()
    per_family = {corpus.notes[i]["family"]: float((fam_pred[family == f] == f).mean())
                  for f, i in {int(f): i for f, i in zip(family, idx)}.items()}
    return {"notes": len(idx), "pitched_notes": int(pitched.sum()),
            "family_acc": float((fam_pred == family).mean()),
            "pitch_acc": pitch_accuracy(logits, pitch, 0, pitched),
            "pitch_acc_1st": pitch_accuracy(logits, pitch, 1, pitched),
            "family_acc_per_family": per_family, "notes_per_s": len(idx) / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="classifier-gm", help="checkpoint name or path")
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--max-notes", type=int, default=None, help="seeded subset per set")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="classifier_eval")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_named(args.model)
    corpus = Corpus.open(args.corpus)
    sets = {"test notes, training instruments": corpus.select("test", "train"),
            "unseen instruments": corpus.select("test", "test")}
    results = {}
    for name, idx in sets.items():
        if args.max_notes and len(idx) > args.max_notes:
            idx = sorted(np.random.default_rng(0).choice(idx, args.max_notes, replace=False).tolist())
        results[name] = evaluate_split(model, corpus, idx, args.batch)
        r = results[name]
        print(f"{name}: family {r['family_acc']:.3f}, pitch {r['pitch_acc']:.3f}, "
              f"within 1 st {r['pitch_acc_1st']:.3f} ({r['notes']} notes)")
    meta = getattr(model, "checkpoint_meta", {})
    path = write_result(args.name, {"model": args.model, "corpus": args.corpus,
                                    "corpus_hash": corpus.hash, "steps": meta.get("steps"),
                                    "classifier_hash": model.weights_hash(), "sets": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
