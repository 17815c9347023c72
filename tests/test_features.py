"""synth.features: FeatureSpec identity and the nnAudio layers, checked against librosa.

Parity bound: ||ours - librosa|| / ||librosa|| < 1e-5, librosa run in float64 numpy. The layers meet
it in their normal float32 mode (measured 1e-7 to 2e-7; nnAudio's conv1d STFT accumulates in
float32). After `.double()` the error drops to 2e-9 to 3e-8, limited by nnAudio building its Fourier
kernels and mel basis as float32 (librosa's mel basis is float32 too), so float64 is held to 1e-6.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import librosa
import numpy as np
import pytest
import torch

from synth.errors import AudioError, ConfigError, SpecMismatchError
from synth.features import CQT, FeatureSpec, LogMel, Spectrogram, log_mel, mel_filterbank

SPECS = [
    FeatureSpec(16000, 1024, 256, 80, 0.0, 8000.0, power=1.0),
    FeatureSpec(22050, 1024, 256, 80, 0.0, 8000.0, power=2.0),
    FeatureSpec(24000, 1024, 256, 100, 30.0, 12000.0, power=1.0),
    FeatureSpec(16000, 2048, 128, 128, 40.0, 7800.0, power=2.0),  # WaveGAN's metric features
]
SPEC_IDS = ["16k-80", "22k-pow2", "24k-fmin30", "16k-wavegan"]


def _signal(kind: str, sr: int, seconds: float = 0.75) -> np.ndarray:
    n = int(sr * seconds)
    if kind == "noise":
        return 0.3 * np.random.default_rng(0).standard_normal(n)
    t = np.arange(n) / sr
    return 0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.1 * np.sin(2 * np.pi * 3150.0 * t)


def _rel(ours: torch.Tensor, ref: np.ndarray) -> float:
    a = ours.detach().double().numpy()
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


def _librosa_mel(y: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    return librosa.feature.melspectrogram(
        y=y, sr=spec.sample_rate, n_fft=spec.n_fft, hop_length=spec.hop_length,
        win_length=spec.n_fft, window="hann", center=True, pad_mode="reflect",
        power=spec.power, n_mels=spec.n_mels, fmin=spec.f_min, fmax=spec.f_max,
        htk=False, norm="slaney",
    )  # fmt: skip


# -- parity with librosa ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["noise", "sine"])
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_mel_matches_librosa(spec, kind):
    y = _signal(kind, spec.sample_rate)
    ref = _librosa_mel(y, spec)
    layer = LogMel(spec)
    ours32 = layer.mel(torch.from_numpy(y).float())[0]
    assert ours32.shape == ref.shape
    assert _rel(ours32, ref) < 1e-5
    ours64 = layer.double().mel(torch.from_numpy(y))[0]
    assert _rel(ours64, ref) < 1e-6


@pytest.mark.parametrize("kind", ["noise", "sine"])
@pytest.mark.parametrize("spec", SPECS[:1] + SPECS[3:], ids=["1024", "2048"])
def test_stft_magnitude_matches_librosa(spec, kind):
    y = _signal(kind, spec.sample_rate)
    ref = np.abs(
        librosa.stft(y, n_fft=spec.n_fft, hop_length=spec.hop_length, win_length=spec.n_fft,
                     window="hann", center=True, pad_mode="reflect")
    )  # fmt: skip
    layer = Spectrogram(spec)
    ours = layer(torch.from_numpy(y).float())[0]
    assert ours.shape == (spec.n_fft // 2 + 1, spec.frames(y.size)) == ref.shape
    assert _rel(ours, ref) < 1e-5
    assert _rel(layer.double()(torch.from_numpy(y))[0], ref) < 1e-6
    power = layer.power(torch.from_numpy(y))[0]  # |X|^2 without the square root
    assert _rel(power, ref**2) < 1e-6


def test_filterbank_is_the_layers_and_matches_librosa():
    spec = SPECS[2]
    fb = mel_filterbank(spec)
    assert fb.shape == (spec.n_mels, spec.n_fft // 2 + 1) and fb.dtype == torch.float32
    assert torch.equal(fb, LogMel(spec).melspec.mel_basis)
    ref = librosa.filters.mel(
        sr=spec.sample_rate, n_fft=spec.n_fft, n_mels=spec.n_mels, fmin=spec.f_min,
        fmax=spec.f_max, htk=False, norm="slaney",
    )  # fmt: skip
    assert np.allclose(fb.numpy(), ref, rtol=1e-5, atol=1e-9)


def test_log_mel_shapes_floor_and_helper():
    spec = SPECS[0]
    layer = LogMel(spec)
    assert layer.feature_spec is spec
    batch = torch.randn(3, 4000, generator=torch.Generator().manual_seed(0))
    batch[1] = 0.0
    out = layer(batch)
    assert out.shape == (3, spec.n_mels, spec.frames(4000))
    assert torch.all(out[1] == math.log(spec.log_floor))
    assert torch.allclose(layer(batch[2]), out[2:3], atol=1e-5)  # float32 conv, batched or not
    assert torch.allclose(log_mel(batch, spec), out)
    assert log_mel(batch.double(), spec).dtype == torch.float64


def test_layers_move_but_save_no_constants():
    """Kernels are rebuilt from the spec, so a model holding a layer saves only its own weights."""
    spec = SPECS[0]
    for layer in (Spectrogram(spec), LogMel(spec), CQT.from_spec(spec, fmin=110.0)):
        assert layer.state_dict() == {}
        assert len(list(layer.buffers())) > 0 and len(list(layer.parameters())) == 0
        assert all(b.dtype == torch.float64 for b in layer.double().buffers())
    model = torch.nn.Sequential(LogMel(spec), torch.nn.Conv1d(spec.n_mels, 4, 1))
    assert set(model.state_dict()) == {"1.weight", "1.bias"}


def test_layers_refuse_bad_input():
    layer = LogMel(SPECS[0])
    with pytest.raises(AudioError, match="too short"):
        layer(torch.zeros(SPECS[0].n_fft // 2))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        layer(torch.zeros(1, 1, 4000))
    with pytest.raises(TypeError, match="float64"):
        layer(torch.zeros(4000, dtype=torch.float64))


# -- gradients ---------------------------------------------------------------------------------
def test_gradient_flows_through_log_mel_even_with_silence():
    """Digital silence gives exactly-zero STFT bins; nnAudio's own magnitude has NaN grads there."""
    for spec in SPECS[:2]:  # power 1 and power 2
        audio = 0.1 * torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
        audio[1] = 0.0
        audio.requires_grad_(True)
        LogMel(spec)(audio).mean().backward()
        assert torch.isfinite(audio.grad).all()
        assert audio.grad[0].abs().sum() > 0


def test_gradient_check_float64():
    spec = FeatureSpec(8000, 64, 16, 8, 0.0, 4000.0)
    layer = LogMel(spec).double()
    audio = torch.randn(1, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    # fast_mode checks a random projection of the Jacobian: a few forwards instead of one per sample
    assert torch.autograd.gradcheck(layer, (audio.requires_grad_(True),), fast_mode=True)


# -- CQT ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("freq", [110.0, 440.0, 1000.0, 3000.0])
def test_cqt_peak_bin_is_the_sine_frequency(freq):
    sr, fmin, bpo = 16000, 32.70, 12
    layer = CQT(sr, hop_length=256, fmin=fmin, n_bins=84, bins_per_octave=bpo)
    t = torch.arange(sr, dtype=torch.float64) / sr
    out = layer(torch.sin(2 * torch.pi * freq * t).float())
    assert out.shape == (1, 84, sr // 256 + 1)
    peak = int(out[0, :, 10:-10].mean(dim=-1).argmax())
    assert peak == round(bpo * math.log2(freq / fmin))
    assert abs(float(layer.frequencies[peak]) / freq - 1) < 2 ** (1 / (2 * bpo)) - 1


def test_cqt_from_spec_validation_and_gradient():
    spec = FeatureSpec(16000, 1024, 256, 80, 0.0, 8000.0)
    layer = CQT.from_spec(spec, fmin=110.0, bins_per_octave=12)
    assert layer.hop_length == 256 and float(layer.frequencies[-1]) < 8000.0
    assert layer.n_bins == 75  # 110 Hz .. 7824 Hz; the next bin (8289 Hz) is above f_max
    with pytest.raises(ConfigError, match="Nyquist"):
        CQT(16000, fmin=32.70, n_bins=120)
    with pytest.raises(AudioError, match="too short"):
        layer(torch.zeros(layer.min_samples))
    audio = torch.zeros(2, 2 * layer.min_samples)
    audio[0].normal_(generator=torch.Generator().manual_seed(0))
    audio.requires_grad_(True)
    layer(audio).sum().backward()
    assert torch.isfinite(audio.grad).all() and audio.grad[0].abs().sum() > 0


# -- spec identity --------------------------------------------------------------------------------
def test_hash_is_stable_across_processes():
    spec = FeatureSpec(22050, 1024, 256, 80, 0.0, 8000.0, 1e-5, 2.0)
    code = (
        "from synth.features import FeatureSpec;"
        "print(FeatureSpec(22050, 1024, 256, 80, 0.0, 8000.0, 1e-5, 2.0).hash)"
    )
    seed = "12345" if os.environ.get("PYTHONHASHSEED") != "12345" else "54321"
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == spec.hash
    assert len(spec.hash) == 12 and int(spec.hash, 16) >= 0


def test_hash_changes_with_every_field():
    base = FeatureSpec()
    changes = {
        "sample_rate": 22050, "n_fft": 2048, "hop_length": 128, "n_mels": 64, "f_min": 20.0,
        "f_max": 7600.0, "log_floor": 1e-4, "power": 2.0,
    }  # fmt: skip
    assert set(changes) == {f.name for f in dataclasses.fields(FeatureSpec)}
    hashes = {base.hash} | {dataclasses.replace(base, **{k: v}).hash for k, v in changes.items()}
    assert len(hashes) == len(changes) + 1
    assert FeatureSpec(16000, 1024, 256, 80, 0, 8000).hash == base.hash  # int vs float spelling


def test_require_names_both_specs():
    a, b = SPECS[0], SPECS[1]
    a.require(FeatureSpec(**a.to_dict()))
    with pytest.raises(SpecMismatchError) as info:
        a.require(b)
    assert a.hash in str(info.value) and b.hash in str(info.value)
    with pytest.raises(SpecMismatchError, match=a.hash):
        a.require(None)
