"""synth.audio: file round trips, mixdown, resampling, error messages, atomic saves, levels."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from synth import audio as A
from synth.errors import AudioError, ConfigError

SR = 16000


def _sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(sr * seconds), dtype=torch.float64) / sr
    return (amp * torch.sin(2 * torch.pi * freq * t)).float()


def _full_scale_ramp(n: int = 20000) -> torch.Tensor:
    """Covers the whole range, both ends included, plus off-grid values."""
    return torch.linspace(-1.0, 1.0, n, dtype=torch.float32)


# -- round trips ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "suffix, subtype, bound",
    [
        # code = round(x * 2^15): half a step off-grid, a full step only where +1.0 clips to 32767.
        (".wav", "PCM_16", 1 / 32768 + 1e-7),
        (".flac", "PCM_16", 1 / 32768 + 1e-7),
        (".wav", "PCM_24", 1 / 2**23 + 1e-7),
        (".flac", "PCM_24", 1 / 2**23 + 1e-7),
        (".wav", "FLOAT", 0.0),  # float32 stored verbatim
    ],
)
def test_round_trip_error_bounds(tmp_path, suffix, subtype, bound):
    x = _full_scale_ramp()
    path = A.save(tmp_path / f"a{suffix}", x, SR, subtype=subtype)
    y, sr = A.load_with_rate(path)
    assert sr == SR and y.dtype == torch.float32 and y.shape == x.shape
    err = (y - x).abs()
    assert err.max().item() <= bound
    if subtype in ("PCM_16", "PCM_24"):
        step = 2.0 ** -(15 if subtype == "PCM_16" else 23)
        assert err[:-1].max().item() <= step / 2 + 1e-7  # everywhere but the +1.0 end
        assert sf.info(str(path)).subtype == subtype


def test_pcm_clips_out_of_range_and_float_keeps_it(tmp_path):
    x = torch.tensor([-1.7, -1.0, 0.0, 1.0, 1.3])
    pcm, _ = A.load_with_rate(A.save(tmp_path / "c.wav", x, SR))
    assert pcm.tolist() == pytest.approx([-1.0, -1.0, 0.0, 32767 / 32768, 32767 / 32768])
    flt, _ = A.load_with_rate(A.save(tmp_path / "f.wav", x, SR, subtype="FLOAT"))
    assert torch.equal(flt, x)


def test_ogg_round_trip_is_close(tmp_path):
    x = _sine(440.0, SR, 1.0)
    y = A.load(A.save(tmp_path / "a.ogg", x, SR), SR)
    assert abs(y.numel() - x.numel()) <= 1
    n = min(x.numel(), y.numel())
    assert torch.linalg.norm(y[:n] - x[:n]) / torch.linalg.norm(x) < 0.1  # lossy codec


def test_save_accepts_numpy_and_one_by_t(tmp_path):
    x = np.linspace(-0.5, 0.5, 1000, dtype=np.float64)
    a = A.load(A.save(tmp_path / "n.wav", x[None, :], SR, subtype="FLOAT"), SR)
    assert np.allclose(a.numpy(), x, atol=1e-7)


def test_stereo_is_mixed_to_mono(tmp_path):
    left, right = np.full(800, 0.5, np.float32), np.linspace(-1, 1, 800, dtype=np.float32)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), SR, subtype="FLOAT")
    mono = A.load(tmp_path / "st.wav", SR)
    assert mono.shape == (800,)
    assert np.allclose(mono.numpy(), (left + right) / 2, atol=1e-7)
    both = A.load(tmp_path / "st.wav", SR, mono=False)
    assert both.shape == (2, 800) and np.allclose(both[1].numpy(), right)


def test_to_wav_bytes_decodes_back():
    x = _full_scale_ramp(4000)
    data = A.to_wav_bytes(x, SR)
    assert data[:4] == b"RIFF"
    y, sr = sf.read(io.BytesIO(data), dtype="float32")
    assert sr == SR and np.abs(y - x.numpy()).max() <= 1 / 32768 + 1e-7


# -- resampling -----------------------------------------------------------------------------
def _peak_hz(x: torch.Tensor, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.double().numpy() * np.hanning(x.numel())))
    return float(np.argmax(spectrum) * sr / x.numel())


def test_resample_keeps_frequency_and_length_ratio(tmp_path):
    x = _sine(1000.0, 44100, 1.0)
    y = A.resample(x, 44100, 16000)
    assert y.dtype == torch.float32 and abs(y.numel() - 16000) <= 1
    assert _peak_hz(y, 16000) == pytest.approx(1000.0, abs=1.0)
    # the same through load(): a 44.1 kHz file read at 16 kHz
    A.save(tmp_path / "hi.wav", x, 44100, subtype="FLOAT")
    z = A.load(tmp_path / "hi.wav", 16000)
    assert torch.allclose(z, y, atol=1e-6)


def test_resample_batches_leading_dims_and_is_identity_at_equal_rates():
    x = torch.randn(2, 3, 4410, dtype=torch.float64)
    y = A.resample(x, 44100, 22050)
    assert y.shape[:2] == (2, 3) and y.dtype == torch.float64 and abs(y.shape[-1] - 2205) <= 1
    assert torch.allclose(y[1, 2], A.resample(x[1, 2], 44100, 22050))
    assert A.resample(x, 16000, 16000) is x
    with pytest.raises(ConfigError):
        A.resample(x, 0, 16000)


# -- read errors name the path ----------------------------------------------------------------
def _write_nan_wav(path):
    sf.write(path, np.array([0.1, np.nan, 0.2], np.float32), SR, subtype="FLOAT")


def _write_inf_wav(path):
    sf.write(path, np.array([0.1, np.inf, 0.2], np.float32), SR, subtype="FLOAT")


@pytest.mark.parametrize(
    "make, words",
    [
        (None, "not found"),
        (lambda p: p.write_text("this is not audio"), "cannot read"),
        (lambda p: p.write_bytes(b""), "cannot read"),
        (lambda p: sf.write(p, np.zeros(0, np.float32), SR), "no samples"),
        (_write_nan_wav, "NaN or infinite"),
        (_write_inf_wav, "NaN or infinite"),
        (lambda p: p.mkdir(), "directory"),
    ],
    ids=["missing", "text", "zero-bytes", "zero-frames", "nan", "inf", "directory"],
)
def test_load_errors_name_the_path(tmp_path, make, words):
    path = tmp_path / "x.wav"
    if make is not None:
        make(path)
    with pytest.raises(AudioError) as info:
        A.load(path, SR)
    message = str(info.value)
    assert str(path) in message and words in message and "\n" not in message


# -- saving -----------------------------------------------------------------------------------
def test_failed_save_keeps_existing_file_and_leaves_no_temp(tmp_path):
    path = A.save(tmp_path / "keep.wav", _sine(220.0, SR, 0.1), SR)
    before = path.read_bytes()
    bad = torch.tensor([0.0, float("nan"), 0.1])
    with pytest.raises(AudioError, match="NaN"):
        A.save(path, bad, SR)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav"]


def test_write_failure_inside_soundfile_is_atomic(tmp_path, monkeypatch):
    path = A.save(tmp_path / "keep.wav", _sine(220.0, SR, 0.1), SR)
    before = path.read_bytes()

    def broken_write(file, *args, **kwargs):
        with open(file, "wb") as fh:
            fh.write(b"RIFF half")
        raise sf.LibsndfileError(0, prefix="simulated failure ")

    monkeypatch.setattr(A.sf, "write", broken_write)
    with pytest.raises(AudioError, match="keep.wav"):
        A.save(path, _sine(440.0, SR, 0.1), SR)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav"]


@pytest.mark.parametrize(
    "name, audio, rate, subtype, error",
    [
        ("a.mp4", torch.zeros(10), SR, None, AudioError),
        ("a.wav", torch.zeros(2, 10), SR, None, AudioError),
        ("a.wav", torch.zeros(0), SR, None, AudioError),
        ("a.wav", torch.zeros(10, dtype=torch.int16), SR, None, AudioError),
        ("a.wav", torch.zeros(10), 0, None, ConfigError),
        ("a.flac", torch.zeros(10), SR, "FLOAT", ConfigError),
        ("a.ogg", torch.zeros(10), SR, "PCM_16", ConfigError),
    ],
)
def test_save_validates(tmp_path, name, audio, rate, subtype, error):
    with pytest.raises(error):
        A.save(tmp_path / name, audio, rate, subtype=subtype)
    assert list(tmp_path.iterdir()) == []


# -- levels -----------------------------------------------------------------------------------
def test_peak_normalize_per_signal_and_silence_unchanged():
    x = torch.stack([_sine(440.0, SR, 0.1, amp=0.1), torch.zeros(1600)])
    y = A.peak_normalize(x, peak_db=-6.0)
    assert y[0].abs().max().item() == pytest.approx(10 ** (-6 / 20), rel=1e-6)
    assert torch.equal(y[1], x[1])
    with pytest.raises(AudioError):
        A.peak_normalize(torch.tensor([float("nan")]))


def test_lufs_normalize_hits_target_on_noise():
    noise = 0.05 * torch.randn(2 * SR, generator=torch.Generator().manual_seed(0))
    out = A.lufs_normalize(noise, SR, target_lufs=-23.0)
    assert A.loudness(out, SR) == pytest.approx(-23.0, abs=0.1)
    assert out.abs().max().item() <= 10 ** (-1 / 20) + 1e-6


def test_lufs_normalize_respects_peak_limit():
    noise = 0.05 * torch.randn(2 * SR, generator=torch.Generator().manual_seed(1))
    out = A.lufs_normalize(noise, SR, target_lufs=-3.0, peak_limit_db=-1.0)
    assert out.abs().max().item() == pytest.approx(10 ** (-1 / 20), rel=1e-5)
    assert A.loudness(out, SR) < -3.0


def test_short_sound_falls_back_to_peak_and_silence_is_unchanged():
    short = _sine(440.0, SR, 0.2, amp=0.1)  # under pyloudnorm's 0.4 s block
    out = A.lufs_normalize(short, SR, target_lufs=-23.0, peak_limit_db=-3.0)
    assert torch.allclose(out, A.peak_normalize(short, -3.0))
    with pytest.raises(AudioError, match="0.4 s"):
        A.loudness(short, SR)
    silent = torch.zeros(SR)
    assert A.loudness(silent, SR) == float("-inf")
    assert torch.equal(A.lufs_normalize(silent, SR), silent)
