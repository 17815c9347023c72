"""How inharmonic the corpus is, and whether DDSP models gain from stiff-string partials.

1. Survey: `synth.inharmonicity.estimate_inharmonicity` on `--survey` random held-out notes of
   the pitched families (MIDI 36-84): per family, the share of notes with B >= 1e-5 (partial 30
   then at least 7 cents sharp, partial 60 at least 30) and the 90th percentile of B.
2. Resynthesis loss: each `--model` resynthesises the first second of `--n` validation notes
   (manifest f0, measured loudness, its own z) and the multi-scale spectral loss (the training
   loss) is averaged over all notes, the inharmonic ones (analysed B >= 1e-5) and the rest. For
   models with an inharmonicity head, three rows: B predicted by the head, B analysed from the
   note, and B = 0.

    python -m bench.ddsp_inharmonicity --model studio/models/ddsp-gm.safetensors \
        --model runs/ddsp-gm-inh/model.safetensors
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.common import write_result
from bench.ddsp_eval import PITCHED
from synth.checkpoint import load_model
from synth.data.corpus import Corpus
from synth.inharmonicity import estimate_inharmonicity
from synth.losses import multiscale_spectral_loss
from synth.pitch import midi_to_hz

INHARMONIC = 1e-5


def pick(corpus: Corpus, split: str, n: int, seed: int) -> list[int]:
    idx = [i for i in corpus.select(split=split, instrument_split="train", families=PITCHED,
                                    on_key=True) if 36 <= corpus.notes[i]["pitch"] <= 84]
    return sorted(np.random.default_rng(seed).choice(idx, min(n, len(idx)), replace=False).tolist())


def analyse(corpus: Corpus, idx: list[int]) -> torch.Tensor:
    pitch = torch.tensor([float(corpus.notes[i]["pitch"]) for i in idx])
    out = []
    for s in range(0, len(idx), 64):
        out.append(estimate_inharmonicity(torch.from_numpy(corpus.waveform(idx[s:s + 64])),
                                          corpus.sample_rate, pitch[s:s + 64])[0])
    return torch.cat(out)


def survey(corpus: Corpus, n: int, seed: int) -> dict[str, dict[str, float]]:
    idx = pick(corpus, "test", n, seed)
    b = analyse(corpus, idx).numpy()
    fams = np.array([corpus.notes[i]["family"] for i in idx])
    return {f: {"notes": int((fams == f).sum()),
                "share_inharmonic": float(np.mean(b[fams == f] >= INHARMONIC)),
                "b_p90": float(np.quantile(b[fams == f], 0.9))}
            for f in PITCHED if (fams == f).any()}


@torch.no_grad()
def resynthesis(path: str, corpus: Corpus, idx: list[int], b: torch.Tensor) -> dict[str, dict]:
    model = load_model(path).eval()
    audio = torch.from_numpy(corpus.waveform(idx))[:, : corpus.sample_rate]
    n = model.frames(audio.shape[-1]) * model.hop_length
    audio = audio[:, :n]
    pitch = torch.tensor([float(corpus.notes[i]["pitch"]) for i in idx])
    f0 = midi_to_hz(pitch)[:, None].expand(-1, n // model.hop_length)
    ld = model.analyze_loudness(audio)
    z = model._pool(model.encode_frames(audio), ld)
    modes: dict[str, torch.Tensor | None] = {"predicted": None}
    if model.config.inharmonicity:
        modes.update({"analysed": b, "zero": torch.zeros_like(b)})
    inh = (b >= INHARMONIC).numpy()
    rows = {}
    for name, coef in modes.items():
        losses = []
        for s in range(0, len(idx), 16):
            kw = {} if coef is None else {"inharmonicity": coef[s:s + 16]}
            recon = model.synthesize(f0[s:s + 16], ld[s:s + 16], z[s:s + 16], n_samples=n,
                                     match_loudness=False, generator=0, **kw)
            losses += [float(multiscale_spectral_loss(recon[j:j + 1], audio[s + j:s + j + 1]))
                       for j in range(recon.shape[0])]
        losses_np = np.array(losses)
        rows[name] = {"all": float(losses_np.mean()), "inharmonic": float(losses_np[inh].mean()),
                      "harmonic": float(losses_np[~inh].mean())}
    meta = getattr(model, "checkpoint_meta", {})
    return {"steps": meta.get("steps"), "inharmonicity_head": bool(model.config.inharmonicity),
            "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--survey", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    corpus = Corpus.open(args.corpus)
    start = time.perf_counter()
    fam = survey(corpus, args.survey, args.seed)
    idx = pick(corpus, "valid", args.n, args.seed)
    b = analyse(corpus, idx)
    models = {path: resynthesis(path, corpus, idx, b) for path in args.model}
    print("| family | notes | share with B >= 1e-5 | B, 90th percentile |")
    print("|---|---|---|---|")
    for f, r in fam.items():
        print(f"| {f} | {r['notes']} | {r['share_inharmonic']:.2f} | {r['b_p90']:.1e} |")
    print(f"\nresynthesis of {len(idx)} validation notes ({int((b >= INHARMONIC).sum())} inharmonic): "
          "multi-scale spectral loss, all / inharmonic / harmonic notes")
    for path, m in models.items():
        for name, r in m["rows"].items():
            print(f"{path} ({m['steps']} steps) B {name}: {r['all']:.3f} / {r['inharmonic']:.3f} / "
                  f"{r['harmonic']:.3f}")
    print(f"wrote {write_result('ddsp_inharmonicity', {'corpus_hash': corpus.hash, 'survey': fam, 'validation_notes': len(idx), 'inharmonic_notes': int((b >= INHARMONIC).sum()), 'models': models, 'seconds': time.perf_counter() - start})}")


if __name__ == "__main__":
    main()
