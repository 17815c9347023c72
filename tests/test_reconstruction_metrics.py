"""Reconstruction metrics: zero for identical audio, blind below the audibility floor, and
matching a direct numpy computation."""

import numpy as np
import torch

from latent.metrics.reconstruction import RESOLUTIONS, mel_l1, mrstft_distance, mrstft_parts
from synth.features import FeatureSpec

SR = 16000


def note(seconds: float = 1.0, f0: float = 220.0, silent_tail: float = 0.4) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    x = 0.5 * torch.sin(2 * torch.pi * f0 * t) * torch.exp(-3 * t)
    x[int((seconds - silent_tail) * SR):] = 0.0  # digital silence, as corpus notes end
    return x[None]


def test_identical_is_zero_and_audible_changes_count():
    x = note()
    assert float(mrstft_distance(x, x)) == 0.0
    louder = mrstft_distance(x * 2.0, x)  # +6 dB everywhere
    detuned = mrstft_distance(note(f0=233.1), x)  # one semitone up
    assert float(louder) > 0.3 and float(detuned) > 0.3


def test_inaudible_noise_in_silence_is_ignored():
    x = note()
    g = torch.Generator().manual_seed(0)
    hiss = 1e-7 * torch.randn(x.shape, generator=g)  # about -140 dB re the note
    audible = 1e-2 * torch.randn(x.shape, generator=g)  # -34 dB re the note
    assert float(mrstft_distance(x + hiss, x)) < 1e-3
    assert float(mrstft_distance(x + audible, x)) > 0.5


def test_matches_direct_numpy_computation():
    x, y = note(), note(f0=230.0) * 0.8
    want = 0.0
    for n_fft, hop, win in RESOLUTIONS:
        def mag(a):
            pad = np.pad(a[0].numpy().astype(np.float64), n_fft // 2, mode="reflect")
            frames = np.lib.stride_tricks.sliding_window_view(pad, n_fft)[::hop]
            return np.maximum(np.abs(np.fft.rfft(frames * np.hanning(win + 1)[:-1], axis=-1)), 1e-7)
        t, p = mag(x), mag(y)
        floor = t.max() * 1e-4
        want += np.linalg.norm(t - p) / np.linalg.norm(t)
        want += np.mean(np.abs(np.log(np.maximum(t, floor)) - np.log(np.maximum(p, floor))))
    assert abs(float(mrstft_distance(y, x)) - want / len(RESOLUTIONS)) < 1e-3


def test_parts_add_up_and_place_errors_at_their_level():
    """mrstft_parts: sc + log is the distance, per resolution and averaged; level bands tiling the
    80 dB range add up to the log term; hiss 50 dB under the note in its silent tail (target bins
    at the floor) counts in the lowest band and not in the top one, a louder copy (+6 dB) in
    every band."""
    x = note()
    bands = ((-80.0, -60.0), (-60.0, -40.0), (-40.0, -20.0), (-20.0, 0.0))
    g = torch.Generator().manual_seed(0)
    tail = torch.zeros_like(x)
    tail[:, -int(0.4 * SR):] = 3e-3 * torch.randn(1, int(0.4 * SR), generator=g)
    for pred, where in ((x + tail, "log -80..-60 dB"), (2.0 * x, None)):
        parts = mrstft_parts(pred, x, bands=bands)
        torch.testing.assert_close(parts["sc"] + parts["log"], mrstft_distance(pred, x))
        in_bands = sum(parts[f"log {lo:g}..{hi:g} dB"] for lo, hi in bands)
        torch.testing.assert_close(in_bands, parts["log"])
        for n_fft, _, _ in RESOLUTIONS:
            assert float(parts[f"{n_fft}/log"]) > 0
        if where:
            assert float(parts[where]) > 0.9 * float(parts["log"])
            assert float(parts["log -20..0 dB"]) < 1e-4
        else:
            assert all(float(parts[f"log {lo:g}..{hi:g} dB"]) > 1e-3 for lo, hi in bands)


def test_mel_l1_is_symmetric_and_zero_on_identity():
    spec = FeatureSpec()
    x, y = note(), note(f0=330.0)
    assert float(mel_l1(x, x, spec)) == 0.0
    assert abs(float(mel_l1(x, y, spec)) - float(mel_l1(y, x, spec))) < 1e-6
