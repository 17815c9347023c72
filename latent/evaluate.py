"""The evaluation core behind `synthstudio eval`: every metric for sets of generated notes, with
calibration rows, as a JSON-able report (`latent.eval_report` writes it as JSON + markdown + PNG).

    train = RealSet.from_corpus(corpus, split="train")        # all training notes (cached features)
    test = RealSet.from_corpus(corpus, split="test")
    report = evaluate({"ddsp-gm": GeneratedSet(audio, pitches)}, train, test, classifier, 16000)
    write_report(report, "out/eval")                          # latent.eval_report

Rows: "real test" (held-out real notes against the training notes: the floor a model cannot beat
by much), "noise" (white noise at random levels: a ceiling), then every generated set (the caller
may add an untrained model with role "ceiling"). Metrics per row (`COLUMNS` says what each means and
which direction is better), all against the training notes unless noted:
- on the classifier (`latent.metrics.classifier`): IS on the pitch and family heads, FD, FD-infinity,
  KID, pitch accuracy (within one semitone of the requested pitch, pitched families only) and pitch
  entropy; NDB/K, Vendi, precision/recall/density/coverage, authenticity, C_T (against the test
  notes), and |D|self / |D|train on the embedding;
- on WaveGAN's log-mel features (`latent.metrics.distance`, when installed): |D|self and |D|train.

Speed. Training-set features are computed once per (corpus, split, classifier weights) and cached
as `.npy` files under `<corpus>/eval_cache/` (as are WaveGAN features and the training set's own
nearest-neighbour distances); nearest neighbours are computed in chunks. The k-means bins, KID and
PRDC use a seeded subset of at most `EvalOptions.max_reference` training notes.
"""

from __future__ import annotations

import importlib.util
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from latent.metrics import coverage as cov
from latent.metrics import quality as q
from synth.errors import ConfigError
from synth.fileio import atomic_path

Progress = Callable[[str, int, int], None]

#: metric key -> (column label, better direction, one-line meaning). Directions: "up", "down",
#: "alpha" (near the NDB test level), "0" (near zero), "real" (near the real-test row: diversity,
#: originality and authenticity are not "more is better": noise maximises them).
COLUMNS: dict[str, tuple[str, str, str]] = {
    "is_pitch": ("IS pitch", "up", "inception score on the pitch head: confident and varied pitches"),
    "is_family": ("IS family", "up", "inception score on the family head"),
    "fd": ("FD", "down", "Frechet distance of classifier embeddings to the training notes"),
    "fd_inf": ("FD-inf", "down", "FD extrapolated to infinitely many samples"),
    "kid": ("KID", "down", "kernel inception distance (unbiased MMD^2, cubic kernel)"),
    "pitch_acc": ("PA", "up", "share with the requested pitch within one semitone (pitched families)"),
    "pitch_entropy": ("PE", "down", "mean entropy of the pitch head (nats)"),
    "ndb_k": ("NDB/K", "alpha", "share of k-means bins whose occupancy differs (alpha is ideal)"),
    "vendi": ("Vendi", "up", "effective number of distinct sounds (cosine kernel, embedding)"),
    "precision": ("P", "up", "share of samples inside the real manifold (k-NN balls)"),
    "recall": ("R", "up", "share of real notes inside the generated manifold"),
    "density": ("D", "up", "real k-NN balls per sample / k (about 1 when matched)"),
    "coverage": ("C", "up", "share of real notes with a sample in their k-NN ball"),
    "authenticity": ("Auth", "real", "share of samples farther from their nearest training note "
                     "than any other training note is (copies: 0)"),
    "ct": ("C_T", "0", "data-copying z-score vs held-out notes (<< 0: copying, > 0: underfit)"),
    "div_emb": ("|D|self emb", "real", "mean distance to the nearest other sample (embedding)"),
    "orig_emb": ("|D|train emb", "real", "mean distance to the nearest training note (embedding)"),
    "div_wavegan": ("|D|self", "real", "WaveGAN diversity: nearest other sample, log-mel features"),
    "orig_wavegan": ("|D|train", "real", "WaveGAN originality: nearest training note, log-mel"),
}


@dataclass
class EvalOptions:
    """Attributes:
        max_reference: training notes (seeded subset) used for k-means bins, KID and PRDC.
        ndb_bins, ndb_alpha: NDB/K bins and test level.
        ct_cells, ct_min_gen: C_T cells and the fewest generated samples a cell needs.
        prdc_k: neighbourhood size of precision/recall/density/coverage.
        kid_subset, kid_subsets: KID subset size and count.
        noise_row: add the white-noise calibration row.
        wavegan_reference: training notes (seeded subset; None: all) with WaveGAN features for
            |D|train and the per-bin normalisation (16,512 floats = 66 kB per note on disk).
        batch_size: classifier batch (items).
        seed: every random choice (subsets, k-means, noise).
    """

    max_reference: int = 5000
    ndb_bins: int = 50
    ndb_alpha: float = 0.05
    ct_cells: int = 10
    ct_min_gen: int = 20
    prdc_k: int = 5
    kid_subset: int = 1000
    kid_subsets: int = 20
    noise_row: bool = True
    wavegan_reference: int | None = 10000
    batch_size: int = 16
    seed: int = 0


@dataclass
class GeneratedSet:
    """Generated notes: audio (N, T) at the evaluation rate, the requested MIDI pitches (N,), and
    optionally the GM family ids they were asked for (N,) (unpitched ones are left out of PA)."""

    audio: np.ndarray | torch.Tensor
    pitches: np.ndarray | Sequence[float]
    families: np.ndarray | None = None
    role: str = "model"  # "model", "floor" or "ceiling"


@dataclass
class RealSet:
    """Real notes with labels; `load(indices) -> (n, T) float32` reads audio on demand.

    `cache_dir` + `cache_key` name where features of this set are cached (None: no cache)."""

    name: str
    pitches: np.ndarray
    families: np.ndarray
    load: Callable[[np.ndarray], np.ndarray]
    cache_dir: Path | None = None
    cache_key: str | None = None

    def __len__(self) -> int:
        return len(self.pitches)

    @classmethod
    def from_arrays(cls, name: str, audio: np.ndarray, pitches: Sequence[float],
                    families: Sequence[int]) -> "RealSet":
        audio = np.asarray(audio, dtype=np.float32)
        return cls(name, np.asarray(pitches, float), np.asarray(families, int),
                   lambda idx: audio[idx])

    @classmethod
    def from_corpus(cls, corpus: Any, split: str | None, instrument_split: str | None = None,
                    cache: bool = True) -> "RealSet":
        """Notes of a `synth.data.corpus.Corpus` split; features cached under the corpus."""
        idx = np.asarray(corpus.select(split=split, instrument_split=instrument_split), dtype=int)
        if len(idx) == 0:
            raise ConfigError(f"{corpus.root}: no notes in split={split} "
                              f"instrument_split={instrument_split}")
        rows = [corpus.notes[i] for i in idx]
        key = f"{corpus.hash}-{split or 'all'}-{instrument_split or 'all'}"
        return cls(f"{split or 'all'}", np.array([r["pitch"] for r in rows], float),
                   np.array([r["family_id"] for r in rows], int),
                   lambda sel: corpus.waveform(idx[np.asarray(sel)]),
                   Path(corpus.root) / "eval_cache" if cache else None, key)

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self), size):
            yield self.load(np.arange(start, min(start + size, len(self))))


@dataclass
class Features:
    emb: np.ndarray          # (N, E)
    family: np.ndarray       # (N, 16) logits
    pitch: np.ndarray        # (N, 128) logits
    wavegan: np.ndarray | None = None
    wavegan_stats: np.ndarray | None = None   # (2, 128) per-bin mean/std (training set)
    wavegan_rows: np.ndarray | None = None    # which rows have WaveGAN features


def distance_module() -> Any | None:
    """`latent.metrics.distance` (WaveGAN features) if it is installed, else None."""
    if importlib.util.find_spec("latent.metrics.distance") is None:
        return None
    import latent.metrics.distance as distance

    return distance


# -- features -----------------------------------------------------------------------------------
def _cached(path: Path | None, make: Callable[[], np.ndarray]) -> np.ndarray:
    if path is not None and path.exists():
        return np.load(path)
    value = make()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, value)
    return value


def _batches(audio: np.ndarray | torch.Tensor, size: int) -> Iterator[np.ndarray]:
    for s in range(0, len(audio), size):
        chunk = audio[s:s + size]
        yield chunk.detach().cpu().numpy() if isinstance(chunk, torch.Tensor) else chunk


def _features(chunks: Iterator[np.ndarray], n: int, classifier: Any, sample_rate: int,
              what: str, progress: Progress | None) -> np.ndarray:
    out, done = [], 0
    for chunk in chunks:
        e, f, p = classifier.analyse(torch.as_tensor(np.asarray(chunk, np.float32)), sample_rate)
        out.append(torch.cat([e, f, p], 1).numpy())
        done += len(chunk)
        if progress:
            progress(what, done, n)
    return np.concatenate(out).astype(np.float32)


def _wavegan_logmels(chunks: Iterator[np.ndarray], n: int, sample_rate: int, what: str,
                     progress: Progress | None) -> Iterator[torch.Tensor]:
    distance = distance_module()
    done = 0
    for chunk in chunks:
        yield distance.wavegan_logmel(np.asarray(chunk, np.float32), sample_rate)
        done += len(chunk)
        if progress:
            progress(what, done, n)


def _wavegan(chunks: Iterator[np.ndarray], n: int, sample_rate: int, stats: np.ndarray,
             what: str, progress: Progress | None) -> np.ndarray:
    """WaveGAN features normalised with the training set's per-bin `stats` (2, 128)."""
    distance = distance_module()
    return np.concatenate([distance.normalize_logmel(m, (stats[0], stats[1]))
                           for m in _wavegan_logmels(chunks, n, sample_rate, what, progress)])


def _split(raw: np.ndarray, emb_dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return raw[:, :emb_dim], raw[:, emb_dim:emb_dim + 16], raw[:, emb_dim + 16:]


def real_features(real: RealSet, classifier: Any, sample_rate: int, batch_size: int = 16,
                  progress: Progress | None = None, wavegan_stats: np.ndarray | None = None,
                  wavegan_max: int | None = None, seed: int = 0) -> Features:
    """Classifier (and WaveGAN, if available) features of a real set, cached when possible.

    WaveGAN features are normalised per mel bin with `wavegan_stats` (2, 128); when None (the
    training set) the statistics are measured on this set and stored in `Features.wavegan_stats`.
    At most `wavegan_max` notes (a seeded subset) get WaveGAN features; the cached array is opened
    as a memory map (16,512 floats per note).
    """
    base = (real.cache_dir / real.cache_key) if real.cache_dir and real.cache_key else None
    clf_path = base.with_name(f"{base.name}-clf{classifier.weights_hash()}.npy") if base else None
    raw = _cached(clf_path, lambda: _features(real.chunks(batch_size), len(real), classifier,
                                              sample_rate, f"embed {real.name}", progress))
    feats = Features(*_split(raw, classifier.embed_dim))
    if distance_module() is None:
        return feats
    n = len(real)
    pick = np.arange(n) if wavegan_max is None or wavegan_max >= n else np.sort(
        np.random.default_rng(seed).choice(n, wavegan_max, replace=False))
    tag = f"wavegan{len(pick)}s{seed}"

    def chunks() -> Iterator[np.ndarray]:
        for s in range(0, len(pick), 64):
            yield real.load(pick[s:s + 64])

    if wavegan_stats is None:  # the training set: measure the statistics on it, in one pass
        stats_path = base.with_name(f"{base.name}-{tag}-stats.npy") if base else None
        path = base.with_name(f"{base.name}-{tag}.npy") if base else None
        if stats_path is not None and stats_path.exists() and path.exists():
            wavegan_stats, wave = np.load(stats_path), np.load(path, mmap_mode="r")
        else:
            distance = distance_module()
            mels = torch.cat(list(_wavegan_logmels(chunks(), len(pick), sample_rate,
                                                   f"wavegan {real.name}", progress)))
            wavegan_stats = np.stack(distance.logmel_stats(mels)).astype(np.float32)
            wave = distance.normalize_logmel(mels, (wavegan_stats[0], wavegan_stats[1]))
            del mels
            if path is not None:
                _cached(path, lambda: wave)
                _cached(stats_path, lambda: wavegan_stats)  # written last: marks a finished pair
    else:
        path = (base.with_name(f"{base.name}-{tag}-{_stats_id(wavegan_stats)}.npy")
                if base else None)
        wave = _cached(path, lambda: _wavegan(chunks(), len(pick), sample_rate, wavegan_stats,
                                              f"wavegan {real.name}", progress))
    feats.wavegan, feats.wavegan_stats, feats.wavegan_rows = wave, wavegan_stats, pick
    return feats


def _stats_id(stats: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(stats, np.float32).tobytes()).hexdigest()[:8]


def generated_features(gen: GeneratedSet, name: str, classifier: Any, sample_rate: int,
                       batch_size: int = 16, progress: Progress | None = None,
                       wavegan_stats: np.ndarray | None = None) -> Features:
    n = len(gen.audio)
    raw = _features(_batches(gen.audio, batch_size), n, classifier, sample_rate,
                    f"embed {name}", progress)
    wave = None
    if distance_module() is not None and wavegan_stats is not None:
        wave = _wavegan(_batches(gen.audio, 64), n, sample_rate, wavegan_stats,
                        f"wavegan {name}", progress)
    return Features(*_split(raw, classifier.embed_dim), wavegan=wave)


def white_noise(n: int, samples: int, seed: int) -> np.ndarray:
    """(n, samples) uniform white noise, each item at a random peak between -30 and 0 dBFS."""
    rng = np.random.default_rng(seed)
    gains = 10 ** (rng.uniform(-30, 0, size=(n, 1)) / 20)
    return (rng.uniform(-1, 1, size=(n, samples)) * gains).astype(np.float32)


# -- metrics ------------------------------------------------------------------------------------
@dataclass
class Reference:
    """Everything about the training/test notes that every row reuses."""

    train: Features
    test: Features
    train_stats: tuple[np.ndarray, np.ndarray]
    subset: np.ndarray
    ndb_centroids: np.ndarray
    ct_centroids: np.ndarray
    train_nn: np.ndarray
    test_d: np.ndarray
    test_pitches: np.ndarray
    test_families: np.ndarray


def build_reference(train: Features, test: Features, real_train: RealSet, real_test: RealSet,
                    classifier: Any, opts: EvalOptions) -> Reference:
    rng = np.random.default_rng(opts.seed)
    n = len(train.emb)
    subset = np.sort(rng.choice(n, min(n, opts.max_reference), replace=False))
    base = real_train.cache_dir / real_train.cache_key if real_train.cache_dir else None
    nn_path = base.with_name(f"{base.name}-clf{classifier.weights_hash()}-nn.npy") if base else None
    train_nn = _cached(nn_path, lambda: cov.knn_distances(train.emb, train.emb, 1,
                                                          exclude_self=True)[:, 0])
    ref = train.emb[subset]
    return Reference(
        train, test, q.gaussian_stats(train.emb), subset,
        cov.kmeans(ref, min(opts.ndb_bins, len(ref) // 2), opts.seed),
        cov.kmeans(ref, min(opts.ct_cells, len(ref) // 2), opts.seed + 1),
        train_nn, cov.knn_distances(test.emb, train.emb, 1)[:, 0],
        real_test.pitches, real_test.families)


def row_metrics(feats: Features, pitches: np.ndarray, families: np.ndarray | None,
                ref: Reference, classifier: Any, opts: EvalOptions) -> dict[str, float]:
    """Every metric of one set of features against the reference (see `COLUMNS`)."""
    emb, train = feats.emb.astype(np.float64), ref.train.emb
    pitched = (np.ones(len(emb), bool) if families is None else
               classifier.pitched(torch.as_tensor(families)).numpy())
    m: dict[str, float] = {
        "n": len(emb),
        "is_pitch": q.inception_score(q.softmax(feats.pitch))[0],
        "is_family": q.inception_score(q.softmax(feats.family))[0],
        "fd": q.frechet_distance_stats(*q.gaussian_stats(emb), *ref.train_stats),
        "fd_inf": q.fd_infinity(emb, ref.train_stats, seed=opts.seed) if len(emb) >= 10
        else float("nan"),
        "kid": q.kid(emb, train[ref.subset], opts.kid_subset, opts.kid_subsets, seed=opts.seed)[0],
        "pitch_acc": q.pitch_accuracy(feats.pitch, pitches, 1, pitched),
        "pitch_entropy": q.pitch_entropy(feats.pitch, pitched),
        "ndb_k": cov.ndb_k(train[ref.subset], emb, alpha=opts.ndb_alpha,
                           centroids=ref.ndb_centroids)["ndb_k"],
        "vendi": cov.vendi_score(emb),
        "authenticity": cov.authenticity(train, emb, ref.train_nn),
        "ct": cov.ct_statistic(train, ref.test.emb, emb, min_gen=opts.ct_min_gen,
                               centroids=ref.ct_centroids, test_d=ref.test_d)["ct"],
        "div_emb": cov.mean_nn_distance(emb),
        "orig_emb": cov.mean_nn_distance(emb, train),
    }
    k = min(opts.prdc_k, len(emb) - 1)
    m.update(cov.prdc(train[ref.subset], emb, k=k))
    if feats.wavegan is not None and ref.train.wavegan is not None:
        distance = distance_module()
        m["div_wavegan"] = float(distance.diversity(feats.wavegan))
        m["orig_wavegan"] = float(distance.originality(feats.wavegan, ref.train.wavegan))
    return {k: float(v) for k, v in m.items()}


def per_pitch(feats: Features, pitches: np.ndarray, families: np.ndarray | None,
              classifier: Any, train_emb: np.ndarray) -> list[dict[str, float]]:
    """Per octave of the requested pitch (C-1 = octave -1): n, pitch accuracy, |D|train emb."""
    octave = np.floor(np.asarray(pitches) / 12).astype(int) - 1
    pitched = (np.ones(len(pitches), bool) if families is None else
               classifier.pitched(torch.as_tensor(families)).numpy())
    nn = cov.knn_distances(feats.emb, train_emb, 1)[:, 0]
    rows = []
    for o in np.unique(octave):
        sel = octave == o
        rows.append({"octave": int(o), "n": int(sel.sum()),
                     "pitch_acc": q.pitch_accuracy(feats.pitch[sel], pitches[sel], 1, pitched[sel]),
                     "orig_emb": float(nn[sel].mean())})
    return rows


def evaluate(generated: dict[str, GeneratedSet | tuple], real_train: RealSet, real_test: RealSet,
             classifier: Any, sample_rate: int, options: EvalOptions | None = None,
             progress: Progress | None = None) -> dict[str, Any]:
    """Compute every metric for every generated set plus the calibration rows.

    Args:
        generated: name -> `GeneratedSet` or (audio (N, T), pitches (N,)[, families (N,)]).
        real_train, real_test: the training notes (the reference) and held-out notes.
        classifier: a `NoteClassifier` (any rate; audio is resampled to it).
        sample_rate: rate of the generated audio and of the real sets.
    Returns:
        the report dict (JSON-able): rows (name, role, metrics), per-pitch breakdown, columns,
        separation checks, timings and settings.
    """
    opts = options or EvalOptions()
    sets = {k: v if isinstance(v, GeneratedSet) else GeneratedSet(*v) for k, v in generated.items()}
    classifier = classifier.cpu().eval()
    t0 = time.perf_counter()
    train = real_features(real_train, classifier, sample_rate, opts.batch_size, progress,
                          wavegan_max=opts.wavegan_reference, seed=opts.seed)
    test = real_features(real_test, classifier, sample_rate, opts.batch_size, progress,
                         wavegan_stats=train.wavegan_stats)
    t_real = time.perf_counter()
    ref = build_reference(train, test, real_train, real_test, classifier, opts)
    # The floor row holds as many test notes as the largest generated set (FD, Vendi and |D|self
    # depend on the set size); C_T still compares against every test note.
    n = min(max([len(s.audio) for s in sets.values()] or [len(real_test)]), len(real_test))
    sub = np.sort(np.random.default_rng(opts.seed + 2).choice(len(real_test), n, replace=False))
    floor = Features(test.emb[sub], test.family[sub], test.pitch[sub],
                     None if test.wavegan is None else test.wavegan[sub])
    rows: list[tuple[str, str, Features, np.ndarray, np.ndarray | None]] = [
        ("real test", "floor", floor, real_test.pitches[sub], real_test.families[sub])]
    if opts.noise_row:
        pick = np.random.default_rng(opts.seed).choice(len(real_test), n, replace=len(real_test) < n)
        length = next((s.audio.shape[-1] for s in sets.values()), None)
        length = length or real_test.load(np.arange(1)).shape[-1]
        noise = GeneratedSet(white_noise(n, length, opts.seed), real_test.pitches[pick],
                             real_test.families[pick], "ceiling")
        sets = {"noise": noise, **sets}
    t_gen = 0.0
    for name, s in sets.items():
        t = time.perf_counter()
        feats = generated_features(s, name, classifier, sample_rate, opts.batch_size, progress,
                                   train.wavegan_stats)
        t_gen += time.perf_counter() - t
        fams = None if s.families is None else np.asarray(s.families, int)
        rows.append((name, s.role, feats, np.asarray(s.pitches, float), fams))
    report_rows, pitch_rows = [], {}
    for i, (name, role, feats, pitches, fams) in enumerate(rows):
        report_rows.append({"name": name, "role": role,
                            "metrics": row_metrics(feats, pitches, fams, ref, classifier, opts)})
        pitch_rows[name] = per_pitch(feats, pitches, fams, classifier, train.emb)
        if progress:
            progress("metrics", i + 1, len(rows))
    t_end = time.perf_counter()
    return {
        "sample_rate": int(sample_rate),
        "classifier": {"hash": classifier.weights_hash(), "config": repr(classifier.config)},
        "n_train": len(real_train), "n_test": len(real_test),
        "options": asdict(opts),
        "columns": {k: {"label": v[0], "better": v[1], "meaning": v[2]} for k, v in COLUMNS.items()},
        "rows": report_rows,
        "separation": separation(report_rows, opts.ndb_alpha),
        "per_pitch": pitch_rows,
        "wavegan_features": distance_module() is not None,
        "timing_s": {"real_features": t_real - t0, "generated_features": t_gen,
                     "metrics": t_end - t_real - t_gen, "total": t_end - t0},
    }


def _badness(key: str, value: float, alpha: float) -> float:
    better = COLUMNS[key][1]
    return {"up": -value, "down": value, "alpha": abs(value - alpha), "0": abs(value)}[better]


def separation(rows: list[dict[str, Any]], alpha: float) -> dict[str, bool]:
    """Per metric: is the floor row better than every ceiling row? (A metric that cannot
    separate them is flagged in the markdown table.)"""
    floor = [r for r in rows if r["role"] == "floor"]
    ceil = [r for r in rows if r["role"] == "ceiling"]
    out = {}
    for key in COLUMNS:
        if COLUMNS[key][1] == "real":
            continue
        vals_f = [r["metrics"].get(key) for r in floor]
        vals_c = [r["metrics"].get(key) for r in ceil]
        if not floor or not ceil or any(v is None or math.isnan(v) for v in vals_f + vals_c):
            continue
        out[key] = all(_badness(key, f, alpha) < _badness(key, c, alpha)
                       for f in vals_f for c in vals_c)
    return out
