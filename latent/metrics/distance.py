"""WaveGAN's distance metrics: diversity |D|self and originality |D|train.

Features (Donahue et al., "Adversarial Audio Synthesis", 2019, section 6): audio at 16 kHz (resampled
with soxr when it is not), the first 16,384 samples (zero-padded when shorter), an STFT of 2048
points with hop 128 (Hann window, centred frames, reflect padding: librosa's conventions), 128
Slaney mel bands from 40 to 7800 Hz on the magnitude spectrum, natural log (floored at 1e-6),
then normalised per mel bin: (logmel - mean[bin]) / std[bin], flattened to (B, 128 * 129).

Normalisation statistics. WaveGAN normalises each mel bin with the mean and standard deviation of
the *training set*; pass them as `stats=(mean, std)` (each (128,)), computed once with
`feature_stats` (from audio) or `corpus_features` (from a corpus's training notes). Without
`stats`, each call normalises with its own batch's statistics: distances inside that call are
meaningful, but two calls are on different scales and must not be compared. Diversity and
originality of one set of sounds should share one `stats`.

- `diversity(feats)`: mean Euclidean distance from each item to its nearest *other* item.
- `nearest_distances(query, reference)`: (N,) distance from each query item to its nearest
  reference item, in chunks (a 1000 x 45,000 comparison never holds more than one
  `chunk_query x chunk_ref` block); candidates are screened in float32 by matrix products and the
  best `refine` are recomputed exactly in float64, so identical items give exactly 0.
- `originality(gen_feats, train_feats)`: mean nearest distance to the training set.
"""

from __future__ import annotations

import functools
from typing import Iterable

import numpy as np
import torch

from synth.audio import resample
from synth.errors import ConfigError
from synth.features import FeatureSpec, LogMel

SAMPLE_RATE = 16000
N_SAMPLES = 16384
SPEC = FeatureSpec(sample_rate=SAMPLE_RATE, n_fft=2048, hop_length=128, n_mels=128, f_min=40.0,
                   f_max=7800.0, log_floor=1e-6, power=1.0)
N_FRAMES = N_SAMPLES // SPEC.hop_length + 1  # 129
N_FEATURES = SPEC.n_mels * N_FRAMES

Stats = tuple[np.ndarray, np.ndarray]


@functools.lru_cache(maxsize=1)
def _layer() -> LogMel:
    return LogMel(SPEC)


def _prepare(audio: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(audio) if not isinstance(audio, torch.Tensor) else audio)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[-1] == 0:
        raise ConfigError(f"wavegan features need (B, T) audio, got shape {tuple(x.shape)}")
    x = x.detach().cpu().float()
    if sample_rate != SAMPLE_RATE:
        x = resample(x, sample_rate, SAMPLE_RATE)
    if x.shape[-1] < N_SAMPLES:
        x = torch.nn.functional.pad(x, (0, N_SAMPLES - x.shape[-1]))
    return x[:, :N_SAMPLES].contiguous()


@torch.no_grad()
def wavegan_logmel(audio: torch.Tensor | np.ndarray, sample_rate: int,
                   batch_size: int = 64) -> torch.Tensor:
    """(B, T) audio at `sample_rate` -> (B, 128, 129) un-normalised log-mel (float32, CPU)."""
    x = _prepare(audio, sample_rate)
    return torch.cat([_layer()(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def _check_stats(stats: Stats) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = (torch.as_tensor(np.asarray(s), dtype=torch.float32) for s in stats)
    if mean.shape != (SPEC.n_mels,) or std.shape != (SPEC.n_mels,):
        raise ConfigError(f"stats must be (mean, std) of shape ({SPEC.n_mels},) each, got "
                          f"{tuple(mean.shape)}, {tuple(std.shape)}")
    return mean, std.clamp_min(1e-5)


def logmel_stats(logmels: torch.Tensor) -> Stats:
    """Per-mel-bin mean and std over items and frames of (B, 128, frames) log-mels."""
    flat = logmels.transpose(0, 1).reshape(SPEC.n_mels, -1).double()
    return flat.mean(1).float().numpy(), flat.std(1, unbiased=False).float().numpy()


def feature_stats(audio: torch.Tensor | np.ndarray, sample_rate: int) -> Stats:
    """Normalisation statistics (mean, std), each (128,), from a training set's audio (B, T)."""
    return logmel_stats(wavegan_logmel(audio, sample_rate))


def normalize_logmel(logmels: torch.Tensor, stats: Stats | None = None) -> np.ndarray:
    """(B, 128, frames) log-mels -> (B, F) float32 features normalised per mel bin."""
    mean, std = _check_stats(stats if stats is not None else logmel_stats(logmels))
    out = (logmels - mean[None, :, None]) / std[None, :, None]
    return out.reshape(out.shape[0], -1).numpy().astype(np.float32)


def wavegan_features(audio: torch.Tensor | np.ndarray, sample_rate: int,
                     stats: Stats | None = None) -> np.ndarray:
    """(B, T) audio at `sample_rate` -> (B, 16512) normalised log-mel features (float32).

    `stats=(mean, std)` are the training set's per-bin statistics (`feature_stats`); None uses
    this batch's own (see the module docstring).
    """
    return normalize_logmel(wavegan_logmel(audio, sample_rate), stats)


def _as_2d(feats: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    a = feats.detach().cpu().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ConfigError(f"{what} must be a non-empty (N, F) array, got shape {a.shape}")
    return a


def nearest_distances(query: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor,
                      *, exclude_self: bool = False, chunk_query: int = 256,
                      chunk_ref: int = 4096, refine: int = 8,
                      return_index: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each query row to its nearest reference row: (N,) float64.

    `reference` may be a memory map; it is read `chunk_ref` rows at a time. With `exclude_self`
    the query *is* the reference and row i never matches itself (needs >= 2 rows).
    """
    q, r = _as_2d(query, "query"), _as_2d(reference, "reference")
    if q.shape[1] != r.shape[1]:
        raise ConfigError(f"query has {q.shape[1]} features, reference {r.shape[1]}")
    if exclude_self and (q.shape[0] != r.shape[0] or q.shape[0] < 2):
        raise ConfigError("exclude_self needs the same set of at least two items on both sides")
    n, m = q.shape[0], r.shape[0]
    k = min(refine, m - (1 if exclude_self else 0))
    r_norms = np.concatenate([np.square(r[j:j + chunk_ref], dtype=np.float64).sum(1)
                              for j in range(0, m, chunk_ref)])
    best_d = np.full(n, np.inf)
    best_i = np.full(n, -1, dtype=np.int64)
    for i in range(0, n, chunk_query):
        qc = torch.from_numpy(np.ascontiguousarray(q[i:i + chunk_query], dtype=np.float32))
        q_norm = qc.double().square().sum(1)
        cand_d = torch.full((qc.shape[0], 0), np.inf, dtype=torch.float64)
        cand_i = torch.zeros((qc.shape[0], 0), dtype=torch.long)
        for j in range(0, m, chunk_ref):
            rc = torch.from_numpy(np.ascontiguousarray(r[j:j + chunk_ref], dtype=np.float32))
            d2 = (q_norm[:, None] + torch.from_numpy(r_norms[j:j + rc.shape[0]])[None]
                  - 2.0 * (qc @ rc.T).double())
            if exclude_self:
                rows = torch.arange(qc.shape[0])
                cols = rows + i - j
                ok = (cols >= 0) & (cols < rc.shape[0])
                d2[rows[ok], cols[ok]] = np.inf
            idx = torch.arange(j, j + rc.shape[0]).expand(qc.shape[0], -1)
            cand_d, order = torch.cat([cand_d, d2], 1).topk(k, dim=1, largest=False)
            cand_i = torch.cat([cand_i, idx], 1).gather(1, order)
        # Exact float64 distances for the screened candidates.
        for row in range(qc.shape[0]):
            ids = cand_i[row].numpy()
            uniq = np.unique(ids)
            if exclude_self:
                uniq = uniq[uniq != i + row]
            diff = r[uniq].astype(np.float64) - q[i + row].astype(np.float64)
            d = np.sqrt(np.square(diff).sum(1))
            best = int(np.argmin(d))
            best_d[i + row], best_i[i + row] = d[best], uniq[best]
    return (best_d, best_i) if return_index else best_d


def diversity(feats: np.ndarray | torch.Tensor, **kwargs) -> float:
    """|D|self: mean distance from each item to its nearest other item (>= 2 items)."""
    return float(nearest_distances(feats, feats, exclude_self=True, **kwargs).mean())


def originality(gen_feats: np.ndarray | torch.Tensor, train_feats: np.ndarray | torch.Tensor,
                **kwargs) -> float:
    """|D|train: mean distance from each generated item to its nearest training item."""
    return float(nearest_distances(gen_feats, train_feats, **kwargs).mean())


def corpus_features(corpus_dir: str, split: str = "train", max_notes: int | None = 2000,
                    seed: int = 0, stats: Stats | None = None,
                    batch_size: int = 256) -> tuple[np.ndarray, Stats, list[int]]:
    """Features of a corpus split (a seeded subset of `max_notes` notes; None: all).

    Returns (features (N, F) float32, stats, row indices). When `stats` is None they are measured
    on these notes (the WaveGAN convention when `split` is the training split).
    """
    from synth.data.corpus import Corpus

    corpus = Corpus.open(corpus_dir)
    rows = corpus.select(split=split)
    if not rows:
        raise ConfigError(f"corpus {corpus_dir} has no {split!r} notes")
    if max_notes is not None and len(rows) > max_notes:
        pick = np.random.default_rng(seed).choice(len(rows), size=max_notes, replace=False)
        rows = [rows[p] for p in sorted(pick)]
    logmels = torch.cat([wavegan_logmel(corpus.waveform(rows[i:i + batch_size]),
                                        corpus.sample_rate)
                         for i in range(0, len(rows), batch_size)])
    stats = stats if stats is not None else logmel_stats(logmels)
    return normalize_logmel(logmels, stats), stats, rows


def iter_features(batches: Iterable[np.ndarray], sample_rate: int, stats: Stats) -> np.ndarray:
    """Features of audio arriving in (b, T) batches, concatenated (N, F)."""
    return np.concatenate([wavegan_features(b, sample_rate, stats) for b in batches])
