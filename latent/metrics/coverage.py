"""Coverage, diversity and memorisation metrics on (N, D) feature sets (numpy in, floats out).

Notation: R = real reference (training) features, G = generated features, P = held-out real (test)
features. Euclidean distances throughout; nearest neighbours are computed in chunks
(`knn_distances`), so 1,000 samples against ~40k training notes fit in memory and seconds.

- `ndb_k` (Richardson & Weiss 2018, "On GANs and GMMs"): k-means on R into K bins; for every bin a
  two-proportion z-test of "share of R in the bin" vs "share of G in the bin"; NDB/K is the
  fraction of bins that differ significantly at level alpha. Samples of the training distribution
  give about alpha; mode collapse or missing modes give more. Lower is better, alpha is the floor.
- `vendi_score` (Friedman & Dieng 2023): exp of the Shannon entropy of the eigenvalues of K / n,
  K the cosine-similarity matrix of G; the "effective number of distinct samples": 1 for n copies
  of one sound, n for n orthogonal ones. Higher is more diverse.
- `prdc` (Naeem et al. 2020, "Reliable fidelity and diversity metrics"), with k-NN balls
  B(x, d_k(x)) around each point: precision = share of G inside some real ball; recall = share of R
  inside some generated ball; density = (1 / kM) sum over G of the number of real balls holding it
  (about 1 for matching distributions, can exceed 1); coverage = share of real points whose ball
  holds at least one generated point.
- `authenticity` (Alaa et al. 2022, "How faithful is your synthetic data?"): a generated sample g
  with nearest training point r is unauthentic when d(g, r) < d(r, r's nearest other training
  point), i.e. it sits closer to a training note than any other real note does. The score is the
  authentic share: 0 for copies of training notes, about 1/2 for fresh draws of the training
  distribution (a new real point wins that race half the time). Higher is more original.
- `ct_statistic` (Meehan, Chaudhuri & Dasgupta 2020, "A non-parametric test to detect
  data-copying in generative models"): cells from k-means on R; in each cell a Mann-Whitney U test
  of nearest-training-neighbour distances of G against those of P, as a z-score; C_T is the average
  of the z-scores weighted by the cell's share of P, over cells holding at least `min_gen`
  generated samples. About 0 when G is as far from the training set as held-out data is; far below
  0 (e.g. -5) signals data copying; above 0 signals underfitting.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import norm


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))


@torch.no_grad()
def knn_distances(query: np.ndarray, ref: np.ndarray, k: int = 1, exclude_self: bool = False,
                  chunk: int = 1024) -> np.ndarray:
    """Distances from each query row to its k nearest rows of `ref`, sorted: (N, k) float64.

    With `exclude_self`, query is ref and each point's zero distance to itself is skipped (the
    same index is removed, so exact duplicates elsewhere still count as distance 0).
    """
    q, r = _t(query), _t(ref)
    r_sq = (r * r).sum(1)
    kk = k + 1 if exclude_self else k
    if kk > len(r):
        raise ValueError(f"need more than {kk - 1} reference points, have {len(r)}")
    out = []
    for start in range(0, len(q), chunk):
        qc = q[start:start + chunk]
        d2 = (qc * qc).sum(1, keepdim=True) + r_sq[None] - 2 * qc @ r.T
        if exclude_self:
            rows = torch.arange(len(qc))
            d2[rows, rows + start] = float("inf")
        vals = torch.topk(d2, k, dim=1, largest=False).values
        out.append(vals.clamp_min(0).sqrt().double())
    return torch.cat(out).numpy()


def mean_nn_distance(query: np.ndarray, ref: np.ndarray | None = None) -> float:
    """Mean distance to the nearest other point of the same set (ref None: |D|self) or to the
    nearest point of `ref` (|D|train), on any features."""
    if ref is None:
        return float(knn_distances(query, query, 1, exclude_self=True)[:, 0].mean())
    return float(knn_distances(query, ref, 1)[:, 0].mean())


# -- k-means --------------------------------------------------------------------------------------
def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 30) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding: (k, D) centroids (float32)."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=1, max_iter=iters, random_state=seed)
    return km.fit(np.asarray(x, dtype=np.float32)).cluster_centers_.astype(np.float32)


@torch.no_grad()
def assign(x: np.ndarray, centroids: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Index of the nearest centroid per row: (N,) int64."""
    q, c = _t(x), _t(centroids)
    c_sq = (c * c).sum(1)
    out = [((c_sq[None] - 2 * q[s:s + chunk] @ c.T).argmin(1)) for s in range(0, len(q), chunk)]
    return torch.cat(out).numpy()


# -- NDB/K ----------------------------------------------------------------------------------------
def ndb_k(real: np.ndarray, gen: np.ndarray, k: int = 50, alpha: float = 0.05, seed: int = 0,
          centroids: np.ndarray | None = None) -> dict[str, float]:
    """Number of statistically Different Bins over K (see module docstring).

    Returns {"ndb": count, "k": K, "ndb_k": count / K}. Pass `centroids` to reuse bins.
    """
    cents = kmeans(real, k, seed) if centroids is None else centroids
    kk = len(cents)
    n_r, n_g = len(real), len(gen)
    p_r = np.bincount(assign(real, cents), minlength=kk) / n_r
    p_g = np.bincount(assign(gen, cents), minlength=kk) / n_g
    pooled = (p_r * n_r + p_g * n_g) / (n_r + n_g)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_r + 1 / n_g))
    z = np.where(se > 0, (p_g - p_r) / np.where(se > 0, se, 1), 0.0)
    different = int((np.abs(z) > norm.ppf(1 - alpha / 2)).sum())
    return {"ndb": different, "k": kk, "ndb_k": different / kk}


# -- Vendi ----------------------------------------------------------------------------------------
def vendi_score(feats: np.ndarray) -> float:
    """Vendi score with the cosine-similarity kernel (rows are L2-normalised first).

    The nonzero eigenvalues of K / n = X X^T / n equal those of X^T X / n (D x D), so the cost is
    O(n D^2) rather than O(n^3).
    """
    x = np.asarray(feats, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    small = x.T @ x / n if x.shape[1] < n else x @ x.T / n
    lam = np.clip(np.linalg.eigvalsh(small), 0, None)
    lam = lam[lam > 1e-12]
    return float(np.exp(-(lam * np.log(lam)).sum()))


# -- precision / recall / density / coverage ------------------------------------------------------
def prdc(real: np.ndarray, gen: np.ndarray, k: int = 5, chunk: int = 1024) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020), k-NN radii."""
    real_r = knn_distances(real, real, k, exclude_self=True)[:, -1]
    gen_r = knn_distances(gen, gen, k, exclude_self=True)[:, -1]
    rt, gt = _t(real), _t(gen)
    in_real = np.zeros(len(gen), dtype=np.int64)     # number of real balls holding each g
    covered = np.zeros(len(real), dtype=bool)       # real ball holds some g
    recalled = np.zeros(len(real), dtype=bool)      # r inside some generated ball
    rr, gr = torch.as_tensor(real_r), torch.as_tensor(gen_r)
    with torch.no_grad():
        for s in range(0, len(real), chunk):
            d = torch.cdist(rt[s:s + chunk], gt).double()            # (c, M)
            inside = d <= rr[s:s + chunk, None]
            in_real += inside.sum(0).numpy()
            covered[s:s + chunk] = inside.any(1).numpy()
            recalled[s:s + chunk] = (d <= gr[None]).any(1).numpy()
    return {"precision": float((in_real > 0).mean()), "recall": float(recalled.mean()),
            "density": float(in_real.sum() / (k * len(gen))), "coverage": float(covered.mean())}


# -- authenticity ---------------------------------------------------------------------------------
def authenticity(train: np.ndarray, gen: np.ndarray,
                 train_nn: np.ndarray | None = None, chunk: int = 1024) -> float:
    """Share of generated samples that are authentic (Alaa et al. 2022; module docstring).

    Args:
        train_nn: (N,) distance of each training point to its nearest other training point
            (computed when None; pass it to reuse across generated sets).
    """
    if train_nn is None:
        train_nn = knn_distances(train, train, 1, exclude_self=True)[:, 0]
    tt, gt = _t(train), _t(gen)
    t_sq = (tt * tt).sum(1)
    dists, idx = [], []
    with torch.no_grad():
        for s in range(0, len(gt), chunk):
            g = gt[s:s + chunk]
            d2 = (g * g).sum(1, keepdim=True) + t_sq[None] - 2 * g @ tt.T
            v, i = d2.min(1)
            dists.append(v.clamp_min(0).sqrt().double())
            idx.append(i)
    d, i = torch.cat(dists).numpy(), torch.cat(idx).numpy()
    return float((d > np.asarray(train_nn)[i]).mean())


# -- C_T data-copying test ------------------------------------------------------------------------
def mann_whitney_z(gen_d: np.ndarray, test_d: np.ndarray) -> float:
    """z-score of U = #{(g, p): d_g > d_p} (+ 1/2 per tie) against its null mean m n / 2 and
    standard deviation sqrt(m n (m + n + 1) / 12)."""
    m, n = len(gen_d), len(test_d)
    both = np.concatenate([gen_d, test_d])
    from scipy.stats import rankdata

    ranks = rankdata(both)
    u = ranks[:m].sum() - m * (m + 1) / 2
    return float((u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12))


def ct_statistic(train: np.ndarray, test: np.ndarray, gen: np.ndarray, cells: int = 10,
                 min_gen: int = 20, seed: int = 0, centroids: np.ndarray | None = None,
                 test_d: np.ndarray | None = None) -> dict[str, float]:
    """Meehan et al.'s C_T (module docstring).

    Returns {"ct": C_T, "cells_used": n, "gen_share_used": share of G in the used cells}; C_T is
    NaN when no cell holds `min_gen` generated samples. `test_d` (the test set's nearest-training
    distances) and `centroids` can be passed to reuse them across generated sets.
    """
    cents = kmeans(train, cells, seed) if centroids is None else centroids
    if test_d is None:
        test_d = knn_distances(test, train, 1)[:, 0]
    gen_d = knn_distances(gen, train, 1)[:, 0]
    test_cell, gen_cell = assign(test, cents), assign(gen, cents)
    zs, weights, used_gen = [], [], 0
    for c in range(len(cents)):
        g, p = gen_d[gen_cell == c], test_d[test_cell == c]
        if len(g) < min_gen or len(p) == 0:
            continue
        zs.append(mann_whitney_z(g, p))
        weights.append(len(p) / len(test))
        used_gen += len(g)
    if not zs:
        return {"ct": float("nan"), "cells_used": 0, "gen_share_used": 0.0}
    w = np.asarray(weights)
    return {"ct": float((np.asarray(zs) * w).sum() / w.sum()), "cells_used": len(zs),
            "gen_share_used": used_gen / len(gen)}
