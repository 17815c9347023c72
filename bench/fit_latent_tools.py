"""Fit a generator's latent tools (semantic directions, text mapper) and measure them.

    python -m bench.fit_latent_tools --model studio/models/ddsp-gm.safetensors --corpus data/gm \
        --n 2000 --threads 1

1. Encodes `--n` training notes (note split "train", instruments and families the model was
   trained on, from its recipe metadata; whole notes, as the recipe's latent statistics).
2. Fits one linear direction per descriptor (`latent.controls.SEMANTIC`) by least squares in the
   model's PCA-normalised coordinates; reports the fit r2 and, refitted on 80%, the r2 on the
   other 20%.
3. Measures each direction on the model: `--base` base latents (training notes) moved by
   -2..+2 steps, rendered (1 s at the model's rate, velocity 100, the note's pitch clamped to
   48-72), and the descriptor measured with synth.data.descriptors; reports the mean value per
   step, its slope and whether it rises monotonically (mean and per note).
4. Fits the text mapper (caption embedding -> PCA coordinates) on the same notes' captions, and
   measures it on held-out captions: test-split notes of the training instruments, notes of
   held-out instruments (unseen instrument names), and free-form prompts. Metric: nearest-family
   accuracy in latent space (nearest family centroid and 10-NN vote among the training latents),
   beside the same figure for the held-out notes' own encoded latents and the majority-family
   rate. On audio (issue 7's text adherence, `--classifier`): the note classifier's family
   accuracy on notes rendered from the held-out captions, beside the same for the notes' own
   encoded latents rendered as notes (the generator's ceiling) and for the real notes.
5. Writes `<model-stem>.directions.json` and `<model-stem>.text.safetensors` beside the model
   (atomically) and bench/results/fit_latent_tools.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import write_result  # noqa: E402
from latent.atlas import encode_notes  # noqa: E402
from latent.controls import (fit_directions, measure_direction, save_directions,  # noqa: E402
                             semantic_targets, semantic_units)
from latent.text import (TextEncoder, TextMapper, TextMapperConfig,  # noqa: E402
                         family_ids, nearest_family_accuracy, save_mapper, text_adherence)
from synth.base import Conditions, Generator  # noqa: E402
from synth.checkpoint import file_hash, load_model  # noqa: E402
from synth.data.corpus import Corpus  # noqa: E402

STEPS = (-2.0, -1.0, 0.0, 1.0, 2.0)

#: Free-form prompts (phrasings no caption uses) and the family each describes.
FREE_PROMPTS: list[tuple[str, str]] = [
    ("a warm cello note in the low register", "strings"),
    ("violin playing high and soft", "strings"),
    ("soft breathy flute, high", "pipe"),
    ("pan flute melody", "pipe"),
    ("twangy electric guitar at E3", "guitar"),
    ("nylon string guitar, gently plucked", "guitar"),
    ("deep fretless bass, C2", "bass"),
    ("slap bass, loud", "bass"),
    ("big church organ, ff", "organ"),
    ("rock organ with a bit of drive", "organ"),
    ("bright trumpet fanfare", "brass"),
    ("tuba, very loud, low", "brass"),
    ("mellow clarinet at F4", "reed"),
    ("alto saxophone, mf", "reed"),
    ("grand piano, middle register, soft", "piano"),
    ("honky tonk piano", "piano"),
    ("vibraphone a4", "chromatic percussion"),
    ("music box, high and delicate", "chromatic percussion"),
    ("lush string ensemble, quiet", "ensemble"),
    ("choir singing aah", "ensemble"),
    ("square wave synth lead", "synth lead"),
    ("sawtooth lead synth, loud", "synth lead"),
    ("warm analog synth pad, low", "synth pad"),
    ("airy halo pad", "synth pad"),
    ("sitar drone", "ethnic"),
    ("banjo picking, midi 67", "ethnic"),
]


def pick(corpus: Corpus, split: str, inst_split: str, families: list[str] | None, n: int,
         seed: int) -> list[int]:
    idx = corpus.select(split=split, instrument_split=inst_split, families=families)
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(idx, size=min(n, len(idx)), replace=False).tolist())


def note_covariates(corpus: Corpus, idx: list[int]) -> np.ndarray:
    """(N, 3) nuisance regressors: pitch, its square (centred at 60) and velocity. They are
    conditions of the note, not part of the latent, so directions are fitted at a fixed pitch."""
    p = np.array([float(corpus.notes[i]["pitch"]) for i in idx])
    v = np.array([float(corpus.notes[i]["velocity"]) for i in idx])
    return np.stack([p, (p - 60.0) ** 2 / 12.0, v], axis=1)


def holdout_r2(latents: torch.Tensor, targets: dict[str, np.ndarray], covariates: np.ndarray,
               model: Generator, seed: int) -> dict[str, float]:
    """Partial r2 out of sample: the direction fitted on 80% of the notes (with the covariates),
    then on the other 20% the share of the covariate-residual variance its projection explains."""
    n = latents.shape[0]
    perm = np.random.default_rng(seed).permutation(n)
    tr, te = perm[: int(0.8 * n)], perm[int(0.8 * n):]
    dirs = fit_directions(latents[tr], {k: v[tr] for k, v in targets.items()}, model=model,
                          covariates=covariates[tr])
    coords = model.to_pca(latents.float()).double().numpy()
    out = {}
    for name, d in dirs.items():
        y = targets[name]
        ok_tr, ok_te = tr[np.isfinite(y[tr])], te[np.isfinite(y[te])]
        proj = coords @ d.coords.double().numpy()
        # Joint least squares of y on [projection, covariates, 1] on the training part ...
        design = np.column_stack([proj, covariates, np.ones(n)])
        beta = np.linalg.lstsq(design[ok_tr], y[ok_tr], rcond=None)[0]
        cov_only = np.linalg.lstsq(design[ok_tr][:, 1:], y[ok_tr], rcond=None)[0]
        # ... scored on the held-out part against the covariates-only fit.
        sse = np.square(y[ok_te] - design[ok_te] @ beta).sum()
        sse_cov = np.square(y[ok_te] - design[ok_te][:, 1:] @ cov_only).sum()
        out[name] = float(1 - sse / sse_cov)
    return out


@torch.no_grad()
def audio_adherence(model: Generator, mapper: TextMapper, classifier: Any, corpus: Corpus,
                    idx: list[int], true_z: torch.Tensor, encoder: TextEncoder, seed: int,
                    batch: int = 16) -> dict[str, Any]:
    """Issue 7's text adherence: the classifier's family accuracy on notes rendered from the
    held-out captions (t=0), beside two ceilings: the same notes' own encoded latents rendered
    through the same note path (pitch, velocity, the model's envelope), and the real notes."""
    caps = [corpus.notes[i]["caption"] for i in idx]
    fam = [corpus.notes[i]["family"] for i in idx]
    truth = family_ids(fam)
    res = text_adherence(model, mapper, caps, classifier, fam, seed=seed, encoder=encoder)
    preds_z, preds_real = [], []
    sr = corpus.sample_rate
    for start in range(0, len(idx), batch):
        part = idx[start:start + batch]
        cond = Conditions(pitch=torch.tensor([float(corpus.notes[i]["pitch"]) for i in part]),
                          velocity=torch.tensor([float(corpus.notes[i]["velocity"]) for i in part]))
        audio = model.render(true_z[start:start + batch], cond, seed=seed)
        preds_z.append(classifier.family_logits(audio, model.sample_rate).argmax(-1))
        real = torch.stack([torch.from_numpy(corpus.waveform(i)) for i in part])
        preds_real.append(classifier.family_logits(real, sr).argmax(-1))
    acc = lambda p: float((torch.cat(p) == truth).float().mean())  # noqa: E731
    return {"rendered_from_text": res["accuracy"], "per_family_from_text": res["per_family"],
            "encoded_latent_as_note": acc(preds_z), "real_notes": acc(preds_real)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="studio/models/ddsp-gm.safetensors")
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--n", type=int, default=3000, help="training notes to encode")
    ap.add_argument("--n-heldout", type=int, default=500, help="held-out notes per set")
    ap.add_argument("--base", type=int, default=16, help="base latents per direction measurement")
    ap.add_argument("--keep-all", action="store_true",
                    help="save every direction, also those without a monotonic effect on renders")
    ap.add_argument("--epochs", type=int, default=300, help="text mapper epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--classifier", default="classifier-gm",
                    help="note classifier for audio-level text adherence ('' to skip)")
    ap.add_argument("--name", default="fit_latent_tools")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    model_path = Path(args.model)
    model = load_model(model_path).eval()
    corpus = Corpus.open(args.corpus)
    recipe = getattr(model, "checkpoint_meta", {}).get("recipe") or {}
    families = recipe.get("families")
    inst_split = recipe.get("instrument_split") or "train"
    print(f"model {model_path} ({model.kind}, D={model.latent_dim}, hash {file_hash(model_path)}); "
          f"corpus {corpus.root} ({len(corpus)} notes)")

    # 1. encode training notes -------------------------------------------------------------------
    t = time.perf_counter()
    train_idx = pick(corpus, "train", inst_split, families, args.n, args.seed)
    latents = encode_notes(model, corpus, train_idx)
    timings["encode_train_s"] = time.perf_counter() - t
    print(f"encoded {len(train_idx)} training notes in {timings['encode_train_s']:.1f} s")

    # 2. directions ----------------------------------------------------------------------------
    t = time.perf_counter()
    rows = [corpus.notes[i]["descriptors"] for i in train_idx]
    targets = semantic_targets(rows)
    covariates = note_covariates(corpus, train_idx)
    directions = fit_directions(latents, targets, model=model, covariates=covariates,
                                units=semantic_units())
    r2_holdout = holdout_r2(latents, targets, covariates, model, args.seed)
    names = list(directions)
    cos = {f"{a}/{b}": float(directions[a].coords @ directions[b].coords)
           for i, a in enumerate(names) for b in names[i + 1:]}
    timings["fit_directions_s"] = time.perf_counter() - t

    # 3. measure them on renders ---------------------------------------------------------------
    t = time.perf_counter()
    rng = np.random.default_rng(args.seed + 1)
    base = rng.choice(len(train_idx), size=min(args.base, len(train_idx)), replace=False)
    base_z = latents[torch.as_tensor(base)]
    base_pitch = [float(np.clip(corpus.notes[train_idx[i]]["pitch"], 48, 72)) for i in base]
    centre = model.from_pca(torch.zeros(1, model.latent_dim))
    measured: dict[str, Any] = {}
    for name, d in directions.items():
        m = measure_direction(model, d, base_z, base_pitch, steps=STEPS)
        c = measure_direction(model, d, centre, [60.0], steps=STEPS, seconds=0.5)
        m["centre_c4_0.5s"] = {k: c[k] for k in ("values", "centroid_hz", "slope", "monotonic")}
        d.measured = {k: m[k] for k in ("steps", "values", "centroid_hz", "slope", "monotonic",
                                        "monotonic_notes", "centre_c4_0.5s")}
        d.measured["base_notes"] = len(base)
        measured[name] = m
    timings["measure_directions_s"] = time.perf_counter() - t

    print(f"\n{'direction':<11}{'unit':<44}{'fit slope':>10}{'r2':>6}{'r2 held':>8}"
          f"{'render slope':>13}{'monotonic':>10}{'notes':>7}{'centre':>8}")
    for name, d in directions.items():
        m = measured[name]
        print(f"{name:<11}{d.unit[:43]:<44}{d.slope:>10.3f}{d.r2:>6.2f}{r2_holdout[name]:>8.2f}"
              f"{m['slope']:>13.3f}{str(m['monotonic']):>10}{m['monotonic_notes']:>7.2f}"
              f"{str(m['centre_c4_0.5s']['monotonic']):>8}")
    b = measured["brightness"]
    print("brightness: centroid Hz per step " +
          ", ".join(f"{s:+.0f}: {c:.0f}" for s, c in zip(b["steps"], b["centroid_hz"])) +
          "; centre latent, C4: " + ", ".join(f"{c:.0f}" for c in b["centre_c4_0.5s"]["centroid_hz"]))

    # 4. text mapper ---------------------------------------------------------------------------
    t = time.perf_counter()
    encoder = TextEncoder()
    captions = [corpus.notes[i]["caption"] for i in train_idx]
    unique = sorted(set(captions))
    table = dict(zip(unique, encoder.embed(unique)))
    emb = torch.stack([table[c] for c in captions])
    timings["embed_train_captions_s"] = time.perf_counter() - t
    coords = model.to_pca(latents.float())
    t = time.perf_counter()
    torch.manual_seed(args.seed)  # initial weights and dropout
    mapper = TextMapper(TextMapperConfig(out_dim=model.latent_dim))
    fit = mapper.fit(emb, coords, epochs=args.epochs, seed=args.seed)
    timings["fit_mapper_s"] = time.perf_counter() - t
    print(f"\ntext mapper: {len(unique)} distinct captions, train MSE {fit['loss']:.3f} "
          f"(explains {fit['explained']:.2f} of the coordinate variance), {timings['fit_mapper_s']:.1f} s")

    t = time.perf_counter()
    classifier = None
    if args.classifier:
        from synth.catalog import load_named

        classifier = load_named(args.classifier).eval()
    ref_fam = [corpus.notes[i]["family"] for i in train_idx]
    majority = Counter(ref_fam).most_common(1)[0]
    seen = set(captions)
    sets: dict[str, Any] = {}
    held = {"note_split_test": pick(corpus, "test", inst_split, families, args.n_heldout, args.seed),
            "unseen_instruments": pick(corpus, "train", "test", families, args.n_heldout, args.seed)}
    for set_name, idx in held.items():
        caps = [corpus.notes[i]["caption"] for i in idx]
        fam = [corpus.notes[i]["family"] for i in idx]
        true_z = encode_notes(model, corpus, idx)
        e = encoder.embed(caps)
        row: dict[str, Any] = {"n": len(idx), "captions_seen_in_training":
                               float(np.mean([c in seen for c in caps])),
                               "majority_rate": float(np.mean([f == majority[0] for f in fam]))}
        for temp in (0.0, 0.5, 1.0):
            pred = mapper.predict(e, seed=args.seed, temperature=temp)
            row[f"mapped_t{temp:g}"] = nearest_family_accuracy(pred, fam, coords, ref_fam)
        row["encoded_latents"] = nearest_family_accuracy(model.to_pca(true_z), fam, coords, ref_fam)
        if classifier is not None:
            row["audio"] = audio_adherence(model, mapper, classifier, corpus, idx, true_z,
                                           encoder, args.seed)
        unseen = [k for k, c in enumerate(caps) if c not in seen]
        if unseen:
            pred = mapper.predict(e[unseen])
            row["mapped_t0_unseen_captions_only"] = nearest_family_accuracy(
                pred, [fam[k] for k in unseen], coords, ref_fam)
        sets[set_name] = row
    prompts, prompt_fam = zip(*FREE_PROMPTS)
    keep = [k for k, f in enumerate(prompt_fam) if families is None or f in families]
    pred = mapper.predict(encoder.embed([prompts[k] for k in keep]))
    sets["free_prompts"] = {"n": len(keep), "mapped_t0": nearest_family_accuracy(
        pred, [prompt_fam[k] for k in keep], coords, ref_fam)}
    if classifier is not None:
        res = text_adherence(model, mapper, [prompts[k] for k in keep], classifier,
                             [prompt_fam[k] for k in keep], seed=args.seed, encoder=encoder)
        sets["free_prompts"]["audio"] = {"rendered_from_text": res["accuracy"]}
    timings["text_eval_s"] = time.perf_counter() - t

    print(f"{'held-out set':<22}{'n':>5}{'seen':>6}{'map t0 (cent/knn)':>19}{'t0.5 knn':>10}"
          f"{'t1 knn':>8}{'encoded (cent/knn)':>20}{'majority':>9}")
    for set_name, row in sets.items():
        m0 = row["mapped_t0"]
        enc = row.get("encoded_latents")
        print(f"{set_name:<22}{row['n']:>5}{row.get('captions_seen_in_training', float('nan')):>6.2f}"
              f"{m0['centroid']:>10.2f}/{m0['knn']:<8.2f}"
              f"{row.get('mapped_t0.5', {}).get('knn', float('nan')):>10.2f}"
              f"{row.get('mapped_t1', {}).get('knn', float('nan')):>8.2f}"
              f"{(enc or {}).get('centroid', float('nan')):>12.2f}/{(enc or {}).get('knn', float('nan')):<7.2f}"
              f"{row.get('majority_rate', float('nan')):>9.2f}")

    if classifier is not None:
        print("\ntext adherence on audio (classifier family accuracy; issue 7's goal: 0.70)")
        print(f"{'held-out set':<22}{'from text':>10}{'encoded z':>10}{'real notes':>11}")
        for set_name, row in sets.items():
            a = row.get("audio", {})
            print(f"{set_name:<22}{a.get('rendered_from_text', float('nan')):>10.2f}"
                  f"{a.get('encoded_latent_as_note', float('nan')):>10.2f}"
                  f"{a.get('real_notes', float('nan')):>11.2f}")

    # 5. sidecars and results ------------------------------------------------------------------
    info = {"n_notes": len(train_idx), "corpus": str(corpus.root), "corpus_hash": corpus.hash,
            "split": "train", "instrument_split": inst_split, "families": families,
            "seed": args.seed, "ridge": 1.0, "covariates": ["pitch", "(pitch-60)^2/12", "velocity"],
            "r2_holdout": r2_holdout,
            "measure": {"base_notes": len(base), "seconds": 1.0, "velocity": 100,
                        "pitch_clamp": [48, 72], "steps": list(STEPS)}}
    kept = {k: d for k, d in directions.items() if args.keep_all or d.measured["monotonic"]}
    info["dropped"] = {k: "mean descriptor not monotonic in the step on renders"
                       for k in directions if k not in kept}
    side_dir = save_directions(kept, model_path, **info)
    side_text = save_mapper(mapper, model_path, n_notes=len(train_idx), distinct_captions=len(unique),
                            corpus_hash=corpus.hash, epochs=args.epochs, train=fit,
                            heldout={k: {kk: vv for kk, vv in v.items()} for k, v in sets.items()})
    timings["total_s"] = time.perf_counter() - t_all
    payload = {
        "model": str(model_path), "model_hash": file_hash(model_path), "kind": model.kind,
        "latent_dim": model.latent_dim, "args": vars(args), "timings": timings,
        "directions": {k: {"unit": d.unit, "fit_slope": d.slope, "r2": d.r2,
                           "r2_holdout": r2_holdout[k], "range_steps": [d.low, d.high],
                           **measured[k]} for k, d in directions.items()},
        "direction_cosines": cos,
        "text": {"distinct_captions": len(unique), "fit": fit, "heldout": sets,
                 "majority_family": majority[0]},
        "saved_directions": list(kept), "sidecars": [str(side_dir), str(side_text)],
    }
    out = write_result(args.name, payload)
    print(f"\nwrote {side_dir}, {side_text} and {out}; total {timings['total_s']:.0f} s "
          f"({args.threads} torch thread(s))")


if __name__ == "__main__":
    main()
