"""latent.metrics.quality on known cases: FD vs scipy sqrtm, KID vs brute force, IS bounds,
FD-infinity, and white noise through a (debug) classifier."""

import itertools

import numpy as np
import pytest
import scipy.linalg
import torch

from latent.metrics import quality as q
from synth.registry import build


def scipy_fd(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fd_matches_scipy_sqrtm_reference():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8))
    b = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8)) + 0.5
    assert q.frechet_distance(a, b) == pytest.approx(scipy_fd(a, b), rel=1e-6)
    assert q.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_fd_of_shifted_gaussians_is_the_squared_shift():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(20000, 4))
    b = rng.normal(size=(20000, 4)) + np.array([3.0, 0, 0, 0])
    assert q.frechet_distance(a, b) == pytest.approx(9.0, rel=0.02)


def test_fd_infinity_removes_the_small_sample_bias():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(20000, 16))
    gen = rng.normal(size=(400, 16))
    plain = q.frechet_distance(gen, real)
    inf = q.fd_infinity(gen, real, points=8, seed=0)
    assert plain > 0.15  # the finite-N bias: both sets come from one Gaussian (true FD 0)
    assert abs(inf) < plain / 2


def brute_mmd2(x, y):
    k = lambda a, b: (a @ b / len(a) + 1) ** 3
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_estimator_matches_brute_force():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(9, 5)) + 0.3
    assert q.mmd2_unbiased(x, y) == pytest.approx(brute_mmd2(x, y), rel=1e-9)
    # one subset holding every item is the plain estimator
    assert q.kid(x, y, subset_size=9, subsets=1, seed=0)[0] == pytest.approx(
        q.mmd2_unbiased(x[np.random.default_rng(0).choice(12, 9, replace=False)], y), rel=1e-6)


def test_kid_is_near_zero_for_one_distribution_and_positive_otherwise():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
    same, _ = q.kid(a, b, subset_size=300, subsets=20)
    diff, _ = q.kid(a, b + 1.0, subset_size=300, subsets=20)
    assert abs(same) < 0.01 and diff > 0.1


def test_inception_score_bounds():
    uniform_conf = np.eye(10)[np.arange(1000) % 10]
    assert q.inception_score(uniform_conf)[0] == pytest.approx(10.0, rel=1e-6)
    same = np.tile(q.softmax(np.random.default_rng(0).normal(size=(1, 10))), (100, 1))
    assert q.inception_score(same)[0] == pytest.approx(1.0, abs=1e-9)


def test_pitch_accuracy_and_entropy():
    logits = np.full((4, 128), -20.0)
    logits[np.arange(4), [60, 61, 63, 70]] = 10.0
    target = np.array([60, 60, 60, 70])
    assert q.pitch_accuracy(logits, target) == 0.75  # 61 counts (one semitone), 63 does not
    assert q.pitch_accuracy(logits, target, tolerance=0) == 0.5
    assert q.pitch_accuracy(logits, target, mask=[1, 1, 0, 0]) == 1.0
    assert q.pitch_entropy(logits) < 1e-6
    assert q.pitch_entropy(np.zeros((3, 128))) == pytest.approx(np.log(128))


def test_white_noise_gives_is_near_one_and_huge_fd():
    torch.manual_seed(0)
    clf = build("classifier", debug=True).eval()
    g = torch.Generator().manual_seed(0)
    t = torch.arange(8000) / 16000
    pitches = torch.arange(40, 80).float()
    tones = torch.sin(2 * torch.pi * 440 * 2 ** ((pitches[:, None] - 69) / 12) * t) * 0.5
    noise = torch.rand(40, 8000, generator=g) * 2 - 1
    e_tone, _, p_tone = clf.analyse(tones, 16000)
    e_noise, f_noise, p_noise = clf.analyse(noise, 16000)
    for logits in (f_noise, p_noise):
        assert q.inception_score(q.softmax(logits.numpy()))[0] < 1.05
    e_tone2, _, _ = clf.analyse(torch.sin(2 * torch.pi * 440 * 2 ** (
        (pitches[:, None] + 0.3 - 69) / 12) * t) * 0.5, 16000)
    fd_noise = q.frechet_distance(e_noise.numpy(), e_tone.numpy())
    fd_real = q.frechet_distance(e_tone2.numpy(), e_tone.numpy())
    assert fd_noise > 20 * max(fd_real, 1e-6)
