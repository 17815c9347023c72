"""WaveGAN distance metrics: features against librosa, distances against brute force."""

import librosa
import numpy as np
import pytest
import torch

from latent.metrics import distance as D
from synth.audio import resample
from synth.errors import ConfigError


def notes(n=6, sr=16000, length=12000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(length) / sr
    out = []
    for _ in range(n):
        f0 = rng.uniform(110, 880)
        x = sum(rng.uniform(0.1, 0.5) / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 6))
        out.append(x * np.exp(-t * rng.uniform(1, 6)) + 0.01 * rng.normal(size=length))
    return np.stack(out).astype(np.float32)


def brute(q, r, exclude_self=False):
    d = np.sqrt(((q[:, None].astype(np.float64) - r[None].astype(np.float64)) ** 2).sum(-1))
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    return d.min(1)


def test_logmel_matches_librosa():
    """Stated tolerance: 2e-3 nepers where the mel energy is above 1e-4 (float32 nnAudio)."""
    audio = notes(3)
    ours = D.wavegan_logmel(audio, 16000).numpy()
    assert ours.shape == (3, 128, D.N_FRAMES)
    padded = np.pad(audio, ((0, 0), (0, D.N_SAMPLES - audio.shape[1])))
    ref = np.stack([np.log(np.maximum(librosa.feature.melspectrogram(
        y=x, sr=16000, n_fft=2048, hop_length=128, n_mels=128, fmin=40, fmax=7800, power=1.0,
        center=True, pad_mode="reflect"), 1e-6)) for x in padded])
    loud = ref > np.log(1e-4)
    assert loud.mean() > 0.3
    assert np.abs(ours - ref)[loud].max() < 2e-3
    # Normalised features = (logmel - mean[bin]) / std[bin] with the given statistics.
    stats = D.logmel_stats(torch.from_numpy(ref.astype(np.float32)))
    np.testing.assert_allclose(stats[0], ref.transpose(1, 0, 2).reshape(128, -1).mean(1), atol=1e-4)
    feats = D.wavegan_features(audio, 16000, stats)
    expect = ((ours - stats[0][None, :, None]) / stats[1][None, :, None]).reshape(3, -1)
    np.testing.assert_allclose(feats, expect, atol=1e-4)


def test_resampling_cropping_and_per_call_stats():
    audio = notes(2, sr=22050, length=30000)
    at16 = resample(torch.from_numpy(audio), 22050, 16000)
    np.testing.assert_allclose(D.wavegan_logmel(audio, 22050), D.wavegan_logmel(at16, 16000),
                               atol=1e-5)
    long = notes(2, length=20000)
    np.testing.assert_allclose(D.wavegan_logmel(long, 16000),
                               D.wavegan_logmel(long[:, :D.N_SAMPLES], 16000), atol=1e-6)
    stats = D.feature_stats(audio, 22050)
    np.testing.assert_allclose(D.wavegan_features(audio, 22050),
                               D.wavegan_features(audio, 22050, stats), atol=1e-5)
    with pytest.raises(ConfigError):
        D.wavegan_features(audio, 22050, stats=(np.zeros(3), np.ones(3)))


def test_distances_match_brute_force_in_chunks():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(37, 50)).astype(np.float32)
    r = rng.normal(size=(301, 50)).astype(np.float32)
    got, idx = D.nearest_distances(q, r, chunk_query=8, chunk_ref=64, return_index=True)
    np.testing.assert_allclose(got, brute(q, r), rtol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(r[idx] - q, axis=1), got, rtol=1e-6)
    self_d = D.nearest_distances(r, r, exclude_self=True, chunk_query=16, chunk_ref=50)
    np.testing.assert_allclose(self_d, brute(r, r, exclude_self=True), rtol=1e-10)
    assert D.diversity(r, chunk_ref=50) == pytest.approx(brute(r, r, True).mean(), rel=1e-10)
    assert D.originality(q, r) == pytest.approx(brute(q, r).mean(), rel=1e-10)
    with pytest.raises(ConfigError):
        D.nearest_distances(q, r[:, :10])
    with pytest.raises(ConfigError):
        D.diversity(q[:1])


def test_repeated_sound_has_zero_diversity_and_copies_zero_originality():
    train = notes(8)
    stats = D.feature_stats(train, 16000)
    train_f = D.wavegan_features(train, 16000, stats)
    same = D.wavegan_features(np.repeat(train[:1], 5, axis=0), 16000, stats)
    assert D.diversity(same) == 0.0
    copies = D.wavegan_features(train[[2, 5, 7]], 16000, stats)
    assert D.originality(copies, train_f) == 0.0
    fresh = D.wavegan_features(notes(3, seed=9), 16000, stats)
    assert D.originality(fresh, train_f) > 1.0 and D.diversity(train_f) > 1.0
