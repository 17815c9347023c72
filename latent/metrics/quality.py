"""Sample-quality metrics on classifier outputs and embeddings (numpy in, floats out).

Features are (N, D) arrays (e.g. `NoteClassifier.embed`), probabilities (N, C) rows summing to 1.

- `inception_score`: IS = exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016); 1 when every sample
  gets the same prediction, up to C when predictions are confident and spread evenly over C classes.
  GANSynth (Engel et al. 2019) computed it with its own pitch classifier, as we do. Higher is better.
- `frechet_distance`: FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) between Gaussians fitted
  to two feature sets (Heusel et al. 2017, "FID"; Kilgour et al. 2019, "FAD"). Lower is better.
- `fd_infinity`: FD is biased upward for finite N, roughly linearly in 1/N; FD-infinity fits
  FD(N) = FD_inf + k / N on subsets of the generated set and reports the intercept (Chong &
  Forsyth 2020, "Effectively unbiased FID and Inception Score and where to find them").
- `kid`: Kernel Inception Distance, the unbiased estimator of MMD^2 with the cubic polynomial
  kernel k(x, y) = (x.y / D + 1)^3, averaged over random subsets (Binkowski et al. 2018). Unbiased:
  near 0 (and possibly negative) for samples of one distribution. Lower is better.
- `pitch_accuracy`: fraction of samples whose arg-max pitch is within `tolerance` semitones of the
  requested pitch (GANSynth's PA, with one semitone of tolerance as the design asks).
- `pitch_entropy`: mean entropy (nats) of the per-sample pitch distribution p(pitch|x) (GANSynth's
  PE): low when the classifier is sure of one pitch. Lower is better (real notes set the floor).
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) logits (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def inception_score(probs: np.ndarray, splits: int = 1) -> tuple[float, float]:
    """(N, C) class probabilities -> (mean IS over `splits` equal parts, std over them)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError(f"inception_score needs (N, C) probabilities, got {p.shape}")
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(0, keepdims=True)
        kl = (part * (np.log(part + EPS) - np.log(marginal + EPS))).sum(1)
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> (mean (D,), covariance (D, D)) in float64 (unbiased covariance)."""
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need (N >= 2, D) features, got {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance_stats(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray,
                           s2: np.ndarray) -> float:
    """FD between N(mu1, s1) and N(mu2, s2).

    tr((S1 S2)^(1/2)) is computed as tr((A S2 A)^(1/2)) with A = S1^(1/2): the matrices are
    similar, and A S2 A is symmetric PSD, so eigh is exact and stable (no complex parts).
    """
    a = _psd_sqrt(s1)
    middle = a @ s2 @ a
    tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum())
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean, 0.0))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between Gaussians fitted to feature sets a (N, D) and b (M, D)."""
    return frechet_distance_stats(*gaussian_stats(a), *gaussian_stats(b))


def fd_infinity(gen: np.ndarray, real: np.ndarray | tuple[np.ndarray, np.ndarray],
                points: int = 10, min_n: int | None = None, seed: int = 0) -> float:
    """FD extrapolated to infinitely many generated samples (Chong & Forsyth 2020).

    Args:
        gen: (N, D) generated features; subsets of sizes linspace(min_n, N, points) are drawn.
        real: (M, D) real features, or their precomputed (mean, covariance).
        min_n: smallest subset (default N / 5, at least D / 4 + 2 so covariances are usable).
    Returns:
        the intercept of the least-squares line FD = FD_inf + k / n.
    """
    gen = np.asarray(gen, dtype=np.float64)
    mu, cov = real if isinstance(real, tuple) else gaussian_stats(real)
    n = len(gen)
    lo = min_n or max(n // 5, min(n, gen.shape[1] // 4 + 2))
    sizes = np.unique(np.linspace(min(lo, n), n, points).astype(int))
    if len(sizes) < 2:
        raise ValueError(f"fd_infinity needs at least two subset sizes; got N={n}")
    rng = np.random.default_rng(seed)
    fds = [frechet_distance_stats(*gaussian_stats(gen[rng.choice(n, s, replace=False)]), mu, cov)
           for s in sizes]
    slope, intercept = np.polyfit(1.0 / sizes, fds, 1)
    return float(intercept)


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0
                      ) -> np.ndarray:
    """k(x, y) = (x.y / D + coef0) ** degree, (N, D) x (M, D) -> (N, M)."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3) -> float:
    """Unbiased MMD^2 with the polynomial kernel: mean off-diagonal k(x, x') + mean off-diagonal
    k(y, y') - 2 mean k(x, y)."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = (polynomial_kernel(x, x, degree), polynomial_kernel(y, y, degree),
                     polynomial_kernel(x, y, degree))
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean())


def kid(gen: np.ndarray, real: np.ndarray, subset_size: int = 1000, subsets: int = 50,
        degree: int = 3, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: (mean, std) of unbiased MMD^2 over random subsets of
    min(subset_size, N, M) items of each set (drawn without replacement)."""
    gen, real = np.asarray(gen, dtype=np.float64), np.asarray(real, dtype=np.float64)
    size = min(subset_size, len(gen), len(real))
    if size < 2:
        raise ValueError("kid needs at least two samples per set")
    rng = np.random.default_rng(seed)
    vals = [mmd2_unbiased(gen[rng.choice(len(gen), size, replace=False)],
                          real[rng.choice(len(real), size, replace=False)], degree)
            for _ in range(subsets)]
    return float(np.mean(vals)), float(np.std(vals))


def pitch_accuracy(pitch_logits: np.ndarray, target: np.ndarray, tolerance: int = 1,
                   mask: np.ndarray | None = None) -> float:
    """Fraction of rows whose arg-max MIDI pitch is within `tolerance` semitones of `target`
    (NaN when `mask` leaves no rows)."""
    pred = np.asarray(pitch_logits).argmax(-1)
    ok = np.abs(pred - np.round(np.asarray(target, dtype=np.float64))) <= tolerance
    if mask is not None:
        ok = ok[np.asarray(mask, dtype=bool)]
    return float(ok.mean()) if ok.size else float("nan")


def pitch_entropy(pitch_logits: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean entropy (nats) of softmax(pitch_logits) per row (NaN when no rows)."""
    p = softmax(pitch_logits)
    h = -(p * np.log(p + EPS)).sum(-1)
    if mask is not None:
        h = h[np.asarray(mask, dtype=bool)]
    return float(h.mean()) if h.size else float("nan")
