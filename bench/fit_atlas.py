"""Fit a generator's instrument atlas (latent.atlas) and measure how well it separates instruments.

    python -m bench.fit_atlas --model studio/models/ddsp-gm.safetensors --corpus data/gm

Encodes `--per-instrument` training notes of every instrument the model was trained on (its
recipe's families and instrument split), writes `<model-stem>.atlas.json` beside the model, and
reports, on other (held-out "test") notes of the same instruments, how often the nearest
instrument mean (in PCA-normalised coordinates) is the note's own instrument and its own family,
beside chance. JSON in bench/results/fit_atlas.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import write_result  # noqa: E402
from latent.atlas import encode_notes, fit_atlas, save_atlas  # noqa: E402
from synth.checkpoint import load_model  # noqa: E402
from synth.data.corpus import Corpus  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="studio/models/ddsp-gm.safetensors")
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--per-instrument", type=int, default=12)
    ap.add_argument("--test-per-instrument", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(Path(args.model)).eval()
    corpus = Corpus.open(args.corpus)
    recipe = getattr(model, "checkpoint_meta", {}).get("recipe") or {}
    families = recipe.get("families")
    inst_split = recipe.get("instrument_split") or "train"
    start = time.perf_counter()
    atlas = fit_atlas(model, corpus, per_instrument=args.per_instrument,
                      instrument_split=inst_split, families=families, seed=args.seed)
    fit_s = time.perf_counter() - start
    out = save_atlas(atlas, args.model)
    # Held-out notes: encode a few test notes per instrument, nearest instrument mean.
    idx = corpus.select(split="test", instrument_split=inst_split, families=families)
    rng = np.random.default_rng(args.seed + 2)
    by_inst: dict[str, list[int]] = {}
    for i in idx:
        by_inst.setdefault(corpus.notes[i]["instrument"], []).append(i)
    chosen = []
    for name in sorted(by_inst):
        rows = by_inst[name]
        chosen += rng.choice(rows, size=min(args.test_per_instrument, len(rows)), replace=False).tolist()
    z = encode_notes(model, corpus, chosen)
    coords = model.to_pca(z).float()
    centres = atlas.coords(model)
    nearest = torch.cdist(coords, centres).argmin(1).tolist()
    inst_acc = float(np.mean([atlas.names[k] == corpus.notes[i]["instrument"]
                              for k, i in zip(nearest, chosen)]))
    fam_acc = float(np.mean([atlas.families[k] == corpus.notes[i]["family"]
                             for k, i in zip(nearest, chosen)]))
    fams = [corpus.notes[i]["family"] for i in chosen]
    majority = max(fams.count(f) for f in set(fams)) / len(fams)
    payload = {"model": args.model, "atlas": str(out), "instruments": len(atlas),
               "notes_per_instrument": args.per_instrument, "fit_seconds": fit_s,
               "heldout_notes": len(chosen), "nearest_instrument_accuracy": inst_acc,
               "nearest_instrument_chance": 1.0 / len(atlas),
               "nearest_family_accuracy": fam_acc, "majority_family_rate": majority}
    print(f"atlas {out}: {len(atlas)} instruments from {sum(atlas.notes)} notes in {fit_s:.1f} s")
    print(f"held-out notes ({len(chosen)}): nearest instrument {inst_acc:.3f} "
          f"(chance {1 / len(atlas):.3f}), its family {fam_acc:.3f} (majority {majority:.3f})")
    print(f"wrote {write_result('fit_atlas', payload)}")


if __name__ == "__main__":
    main()
