"""synth.dsp / synth.dsp_filters: numpy/scipy/librosa references, Magenta ddsp goldens, gradients.

The goldens (tests/data/ddsp_goldens.npz, ~50 KB) were made by Magenta's ddsp 3.7.0 itself
(tools/ddsp_oracle/make_goldens.py in the oracle environment); these tests need only this venv.
"""

from __future__ import annotations

import math
from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.signal
import torch

from synth import dsp
from synth.errors import ConfigError

GOLDENS = Path(__file__).parent / "data" / "ddsp_goldens.npz"
SR = 16000


def t64(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


# -- scaling, units ----------------------------------------------------------------------------
def test_exp_sigmoid_matches_formula_and_bounds():
    x = np.linspace(-20, 20, 101)
    ref = 2.0 * (1.0 / (1.0 + np.exp(-x))) ** np.log(10.0) + 1e-7
    np.testing.assert_allclose(dsp.exp_sigmoid(t64(x)).numpy(), ref, rtol=1e-12)
    y = dsp.exp_sigmoid(torch.tensor([-100.0, 100.0]))
    assert y[0] == pytest.approx(1e-7) and y[1] == pytest.approx(2.0)


def test_midi_to_hz_matches_librosa():
    notes = np.arange(0, 128, 0.5)
    np.testing.assert_allclose(dsp.midi_to_hz(t64(notes)).numpy(), librosa.midi_to_hz(notes),
                               rtol=1e-12)


# -- upsampling --------------------------------------------------------------------------------
@pytest.mark.parametrize("n_frames,n_samples", [(5, 40), (7, 100), (2, 3)])
def test_upsample_linear_matches_np_interp(n_frames, n_samples):
    x = np.random.default_rng(0).normal(size=(2, n_frames, 3))
    held = dsp.upsample_linear(t64(x), n_samples).numpy()  # frame k at k * n / F, end held
    corners = dsp.upsample_linear(t64(x), n_samples, add_endpoint=False).numpy()
    assert held.shape == corners.shape == (2, n_samples, 3)
    pos_held = np.arange(n_samples) * np.float32(n_frames / n_samples)
    pos_corners = np.arange(n_samples) * np.float32((n_frames - 1) / (n_samples - 1))
    for b in range(2):
        for c in range(3):
            np.testing.assert_allclose(held[b, :, c], np.interp(pos_held, np.arange(n_frames),
                                                                x[b, :, c]), atol=1e-6)
            np.testing.assert_allclose(corners[b, :, c], np.interp(
                pos_corners, np.arange(n_frames), x[b, :, c]), atol=1e-6)
    np.testing.assert_allclose(corners[:, [0, -1]], x[:, [0, -1]], atol=1e-6)


def test_upsample_single_frame_is_constant():
    x = torch.tensor([[[0.5, 2.0]]])
    assert torch.equal(dsp.upsample_linear(x, 7), x.expand(1, 7, 2))


def test_upsample_with_windows_reference_and_endpoints():
    """Constant-overlap-add Hann upsampling: numpy overlap-add reference; frame k lands exactly
    on sample k * hop; constants stay constant; the last frame is held (add_endpoint)."""
    x = np.random.default_rng(1).uniform(size=(2, 6, 3))
    hop, n = 8, 48
    out = dsp.upsample_with_windows(t64(x), n).numpy()
    assert out.shape == (2, n, 3)
    ext = np.concatenate([x, x[:, -1:]], axis=1)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(2 * hop) / (2 * hop))
    ola = np.zeros((2, (ext.shape[1] + 1) * hop, 3))
    for k in range(ext.shape[1]):
        ola[:, k * hop:k * hop + 2 * hop] += ext[:, k:k + 1] * window[None, :, None]
    np.testing.assert_allclose(out, ola[:, hop:hop + n], atol=1e-12)
    np.testing.assert_allclose(out[:, ::hop], x, atol=1e-12)
    np.testing.assert_allclose(out[:, -hop:], np.repeat(x[:, -1:], hop, axis=1), atol=1e-12)
    const = dsp.upsample_with_windows(torch.full((1, 4, 1), 0.3, dtype=torch.float64), 32)
    np.testing.assert_allclose(const.numpy(), 0.3, atol=1e-15)
    assert dsp.upsample_with_windows(t64(x), 50, add_endpoint=False).shape == (2, 50, 3)
    with pytest.raises(ConfigError, match="multiple"):
        dsp.upsample_with_windows(t64(x), 50)
    with pytest.raises(ConfigError):
        dsp.upsample(t64(x), 48, method="cubic")


# -- harmonic controls -------------------------------------------------------------------------
def test_normalize_harmonics_removes_above_nyquist_and_renormalises():
    dist = torch.rand(2, 5, 10, dtype=torch.float64) + 0.1
    f0 = torch.tensor([100.0, 1000.0, 3000.0, 7000.0, 9000.0], dtype=torch.float64)
    f0 = f0[None, :, None].expand(2, 5, 1)
    norm = dsp.normalize_harmonics(dist, f0, SR)
    harmonics = f0 * torch.arange(1, 11)
    assert torch.all(norm[harmonics >= SR / 2] == 0)
    sums = norm.sum(-1)
    torch.testing.assert_close(sums[:, :4], torch.ones(2, 4, dtype=torch.float64))
    assert torch.all(sums[:, 4] == 0) and torch.isfinite(norm).all()  # nothing below: zeros
    amps = dsp.normalized_harmonic_amplitudes(torch.full_like(f0, 0.5), dist, f0, SR)
    torch.testing.assert_close(amps.sum(-1)[:, :4], torch.full((2, 4), 0.5, dtype=torch.float64))


# -- oscillators -------------------------------------------------------------------------------
def _numpy_bank(freqs: np.ndarray, amps: np.ndarray, sr: int, float32: bool = False) -> np.ndarray:
    if float32:
        omega = freqs.astype(np.float32) * np.float32(2 * np.pi) / np.float32(sr)
        phase = np.cumsum(omega, axis=1, dtype=np.float32).astype(np.float64)
    else:
        phase = np.cumsum(2 * np.pi * freqs / sr, axis=1)
    return np.sum(np.where(freqs >= sr / 2, 0.0, amps) * np.sin(phase), axis=-1)


def test_oscillator_bank_matches_numpy_sinusoids():
    """float64 phase: 1e-9 from numpy's float64 sum of sines. float32 phase: ddsp's sequential
    float32 cumsum, equal to numpy's float32 cumsum (1e-5: sin of float32 phases)."""
    rng = np.random.default_rng(2)
    n = 4000
    chirp = np.linspace(100.0, 9000.0, n)[None, :, None]  # crosses Nyquist (8 kHz) at 89 %
    freqs = np.concatenate([np.full((1, n, 1), 440.0), chirp, np.full((1, n, 1), 2500.0)], -1)
    amps = rng.uniform(0.1, 1.0, (1, n, 3))
    out = dsp.oscillator_bank(t64(freqs), t64(amps), SR).numpy()
    np.testing.assert_allclose(out, _numpy_bank(freqs, amps, SR), atol=1e-9)
    out32 = dsp.oscillator_bank(t64(freqs).float(), t64(amps).float(), SR, phase_precision="float32")
    np.testing.assert_allclose(out32.numpy(), _numpy_bank(freqs, amps, SR, float32=True), atol=1e-5)
    each = dsp.oscillator_bank(t64(freqs), t64(amps), SR, sum_sinusoids=False)
    crossing = int(np.argmax(chirp[0, :, 0] >= SR / 2))
    assert each.shape == (1, n, 3) and torch.all(each[0, crossing:, 1] == 0)  # above Nyquist
    assert torch.all(each[0, crossing - 100:crossing, 1] != 0)
    shifted = dsp.oscillator_bank(t64(freqs), t64(amps), SR, sum_sinusoids=False,
                                  initial_phase=torch.full((1, 1, 3), math.pi, dtype=torch.float64))
    torch.testing.assert_close(shifted[0, :n // 2], -each[0, :n // 2])


@pytest.mark.parametrize("method", ["linear", "window"])
def test_harmonic_fast_path_equals_oscillator_bank(method):
    """The fast bank (f0 phase x k, segment matmul, chunked) equals ddsp's order of operations
    (upsampled k * f0 and amplitudes into oscillator_bank) to float64 rounding. In float32 the
    phase wrapped to [0, 2 pi) is within 2.4e-7 rad (half an ulp), so harmonic k is within
    k * 2.4e-7 rad: the bound is that times the harmonic amplitudes, plus output rounding."""
    gen = torch.Generator().manual_seed(3)
    f0 = torch.linspace(150.0, 900.0, 20, dtype=torch.float64).view(1, 20, 1).repeat(2, 1, 1)
    f0[1] = 330.0
    amp = torch.rand(2, 20, 1, generator=gen, dtype=torch.float64)
    dist = torch.rand(2, 20, 40, generator=gen, dtype=torch.float64)
    n = 20 * 48
    fast = dsp.harmonic_synthesis(f0, amp, dist, n, SR, amp_resample_method=method)
    freqs = dsp.upsample_linear(dsp.harmonic_frequencies(f0, 40), n)
    slow = dsp.oscillator_bank(freqs, dsp.upsample(amp * dist, n, method), SR)
    torch.testing.assert_close(fast, slow, atol=1e-10, rtol=0)
    chunked = dsp._harmonic_bank(dsp.upsample_linear(f0, n)[..., 0], amp * dist, n, SR, method,
                                 chunk_elements=1, max_chunks=100)  # one frame per chunk
    torch.testing.assert_close(chunked, fast, atol=1e-10, rtol=0)
    fast32 = dsp.harmonic_synthesis(f0.float(), amp.float(), dist.float(), n, SR,
                                    amp_resample_method=method)
    bound = 2.4e-7 * float(((amp * dist).amax(1) * torch.arange(1, 41)).sum(-1).max()) + 1e-6
    assert float((fast32.double() - slow).abs().max()) < bound


@pytest.mark.parametrize("method", ["linear", "window"])
def test_inharmonic_fast_path_equals_the_oscillator_bank(method):
    """Stiff-string partials k sqrt(1 + B k^2) f0: the fast bank (integer phase plus the stretch
    reduced mod 2 pi in float64) equals oscillator_bank on the upsampled partial frequencies to
    float64 rounding, chunked or not, with partials crossing Nyquist during the note; B = 0
    is the harmonic series exactly."""
    gen = torch.Generator().manual_seed(4)
    f0 = torch.linspace(150.0, 700.0, 20, dtype=torch.float64).view(1, 20, 1).repeat(3, 1, 1)
    amp = torch.rand(3, 20, 1, generator=gen, dtype=torch.float64)
    dist = torch.rand(3, 20, 40, generator=gen, dtype=torch.float64)
    b = torch.tensor([0.0, 4e-4, 3e-3], dtype=torch.float64)
    n = 20 * 48
    fast = dsp.harmonic_synthesis(f0, amp, dist, n, SR, amp_resample_method=method, inharmonicity=b)
    freqs = dsp.upsample_linear(dsp.harmonic_frequencies(f0, 40, b), n)
    crossing = (freqs[1:, 0] < SR / 2) & (freqs[1:, -1] >= SR / 2)
    assert crossing.any(-1).all()  # partials cross Nyquist during both inharmonic notes
    slow = dsp.oscillator_bank(freqs, dsp.upsample(amp * dist, n, method), SR)
    torch.testing.assert_close(fast, slow, atol=1e-9, rtol=0)
    chunked = dsp._harmonic_bank(dsp.upsample_linear(f0, n)[..., 0], amp * dist, n, SR, method,
                                 chunk_elements=1, max_chunks=100, inharmonicity=b)
    torch.testing.assert_close(chunked, fast, atol=1e-10, rtol=0)
    plain = dsp.harmonic_synthesis(f0[:1], amp[:1], dist[:1], n, SR, amp_resample_method=method)
    torch.testing.assert_close(fast[:1], plain, atol=1e-12, rtol=0)
    off_grid = dsp.harmonic_synthesis(f0, amp, dist, n + 7, SR, amp_resample_method="linear",
                                      inharmonicity=b)  # not a multiple of F: the slow path
    assert off_grid.shape == (3, n + 7) and torch.isfinite(off_grid).all()


def test_an_inharmonic_partial_sounds_where_the_stiff_string_formula_puts_it():
    sr, n = 16000, 16000
    f0 = torch.full((1, 100, 1), 110.0, dtype=torch.float64)
    dist = torch.zeros(1, 100, 30, dtype=torch.float64)
    dist[..., 19] = 1.0  # partial 20 only
    b = torch.tensor([1e-3], dtype=torch.float64)
    audio = dsp.harmonic_synthesis(f0, torch.ones(1, 100, 1, dtype=torch.float64), dist, n, sr,
                                   inharmonicity=b)
    peak_hz = float(torch.fft.rfft(audio[0] * torch.hann_window(n, dtype=torch.float64)).abs().argmax())
    assert peak_hz == pytest.approx(20 * 110.0 * math.sqrt(1 + 1e-3 * 400), abs=1.0)


def test_normalize_harmonics_drops_inharmonic_partials_above_nyquist():
    f0 = torch.full((1, 2, 1), 1000.0)
    b = torch.tensor([0.02])
    norm = dsp.normalize_harmonics(torch.ones(1, 2, 8), f0, SR, inharmonicity=b)
    ratios = dsp.inharmonic_ratios(b, 8)[0]
    alive = (1000.0 * ratios < SR / 2)
    assert alive.sum() < 8 and torch.all((norm[0, 0] > 0) == alive)
    torch.testing.assert_close(norm.sum(-1), torch.ones(1, 2))


def test_harmonic_synthesis_any_length_and_broadcast():
    f0 = torch.full((1, 8, 1), 220.0)
    out = dsp.harmonic_synthesis(f0, torch.full((3, 8, 1), 0.2), torch.rand(3, 8, 6), 1001, 8000)
    assert out.shape == (3, 1001) and torch.isfinite(out).all()
    with pytest.raises(ConfigError, match="phase_precision"):
        dsp.harmonic_synthesis(f0, f0, f0, 64, SR, phase_precision="float16")


def test_anti_aliasing_leaves_no_energy_at_alias_frequencies():
    """f0 = 3 kHz with 8 harmonics at 16 kHz: only 3 and 6 kHz are below Nyquist. Without the
    Nyquist mask harmonics 3..8 would fold back to 7, 4, 1, 2, 5 and 8 kHz; those bins stay
    empty (< 1e-6 of the peak), and the renormalised distribution keeps the total amplitude."""
    n = SR
    f0 = torch.full((1, 100, 1), 3000.0, dtype=torch.float64)
    controls = dsp.harmonic_controls(torch.zeros(1, 100, 1, dtype=torch.float64),
                                     torch.zeros(1, 100, 8, dtype=torch.float64), f0, SR)
    audio = dsp.harmonic_synthesis(*controls, n, SR, amp_resample_method="window")[0].numpy()
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(n)))
    peak = spectrum.max()
    for alias_hz in (1000, 2000, 4000, 5000, 7000, 8000):
        assert spectrum[alias_hz] < 1e-6 * peak
    assert spectrum[3000] > 0.4 * peak and spectrum[6000] > 0.4 * peak
    amplitude = float(controls.amplitude[0, 0, 0])
    dist = controls.distribution[0, 0].numpy()
    np.testing.assert_allclose(dist[:2].sum(), 1.0, rtol=1e-12)
    ref = amplitude * (dist[0] * np.sin(2 * np.pi * 3000 * np.arange(1, n + 1) / SR)
                       + dist[1] * np.sin(2 * np.pi * 6000 * np.arange(1, n + 1) / SR))
    np.testing.assert_allclose(audio, ref, atol=1e-8)  # float64 cumsum over 16000 samples


# -- FFT convolution and filters ---------------------------------------------------------------
def test_fft_convolve_static_ir_matches_scipy():
    rng = np.random.default_rng(4)
    audio, ir = rng.normal(size=(2, 1000)), rng.normal(size=(2, 77))
    full = np.stack([scipy.signal.fftconvolve(audio[b], ir[b]) for b in range(2)])
    same0 = dsp.fft_convolve(t64(audio), t64(ir), delay_compensation=0).numpy()
    np.testing.assert_allclose(same0, full[:, :1000], atol=1e-10)
    valid = dsp.fft_convolve(t64(audio), t64(ir), padding="valid", delay_compensation=0).numpy()
    np.testing.assert_allclose(valid, full, atol=1e-10)
    auto = dsp.fft_convolve(t64(audio), t64(ir)).numpy()  # ddsp's (K - 1) // 2 - 1 = 37
    np.testing.assert_allclose(auto, full[:, 37:1037], atol=1e-10)
    shared = dsp.fft_convolve(t64(audio), t64(ir[0]), delay_compensation=0).numpy()  # (K,)
    np.testing.assert_allclose(shared[1], scipy.signal.fftconvolve(audio[1], ir[0])[:1000],
                               atol=1e-10)


def test_fft_convolve_time_varying_matches_framewise_numpy():
    rng = np.random.default_rng(5)
    audio, irs = rng.normal(size=(1, 100)), rng.normal(size=(1, 7, 9))
    hop = 15  # ceil(100 / 7); the last frame is zero-padded
    padded = np.concatenate([audio, np.zeros((1, 7 * hop - 100))], axis=1)
    ref = np.zeros(7 * hop + 8)
    for f in range(7):
        ref[f * hop:f * hop + hop + 8] += np.convolve(padded[0, f * hop:(f + 1) * hop], irs[0, f])
    out = dsp.fft_convolve(t64(audio), t64(irs), padding="valid", delay_compensation=0)
    np.testing.assert_allclose(out[0].numpy(), ref[:108], atol=1e-10)
    with pytest.raises(ConfigError, match="frames"):
        dsp.fft_convolve(t64(audio), t64(rng.normal(size=(1, 60, 9))))  # 100 into 60 frames of 2
    with pytest.raises(ConfigError, match="batch"):
        dsp.fft_convolve(t64(audio).repeat(3, 1), t64(irs).repeat(2, 1, 1))
    with pytest.raises(ConfigError, match="delay_compensation"):  # ddsp returns garbage here
        dsp.fft_convolve(t64(audio), t64(irs), padding="valid", delay_compensation=50)


@pytest.mark.parametrize("window_size", [0, 101, 100])
def test_frequency_impulse_response_matches_numpy(window_size):
    """numpy: irfft of the magnitudes (zero phase), TF's Hann window (periodic for even sizes,
    symmetric for odd ones) centred on lag 0, rotated to causal form as ddsp crops it."""
    mags = np.random.default_rng(6).uniform(size=(2, 3, 129))
    ir = np.fft.irfft(mags)  # 256 taps
    if window_size == 0:
        window = scipy.signal.get_window("hann", 256, fftbins=True)
        ref = np.fft.fftshift(ir * np.fft.fftshift(window), axes=-1)
    else:
        window = scipy.signal.get_window("hann", window_size, fftbins=window_size % 2 == 0)
        half = (window_size + 1) // 2
        zero_phase = np.concatenate([window[half:], np.zeros(256 - window_size), window[:half]])
        ref = ir * zero_phase
        ref = np.concatenate([ref[..., 256 - half + 2:], ref[..., :half + 1]], axis=-1)
    out = dsp.frequency_impulse_response(t64(mags), window_size).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-12)
    if window_size == 0:  # linear phase: symmetric about tap 128 (ddsp's short windows are not)
        np.testing.assert_allclose(out[..., 1:], out[..., :0:-1], atol=1e-12)


def test_frequency_filter_shapes_the_spectrum():
    """A low-pass magnitude curve (0 Hz..2 kHz open, the rest closed) keeps white noise's energy
    below 2 kHz and removes >99.9 % of it above 3 kHz (transition of the 128-tap windowed FIR)."""
    gen = torch.Generator().manual_seed(7)
    mags = torch.zeros(1, 50, 65, dtype=torch.float64)
    mags[..., :17] = 1.0  # bins 0..16 of 65 cover 0..2 kHz at 16 kHz
    noise = dsp.filtered_noise(mags, SR, generator=gen).numpy()[0]
    freqs, psd = scipy.signal.welch(noise, SR, nperseg=512)
    low, high = psd[freqs < 1800].mean(), psd[freqs > 3000].mean()
    assert high < 1e-3 * low


def test_filtered_noise_is_seeded_and_uses_given_noise():
    mags = dsp.noise_controls(torch.randn(2, 10, 65))
    a = dsp.filtered_noise(mags, 640, generator=torch.Generator().manual_seed(1))
    b = dsp.filtered_noise(mags, 640, generator=torch.Generator().manual_seed(1))
    c = dsp.filtered_noise(mags, 640, generator=torch.Generator().manual_seed(2))
    assert a.shape == (2, 640) and torch.equal(a, b) and not torch.equal(a, c)
    noise = torch.rand(2, 640) * 2 - 1
    torch.testing.assert_close(dsp.filtered_noise(mags, 640, noise=noise),
                               dsp.frequency_filter(noise, mags, window_size=257))
    with pytest.raises(ConfigError, match="noise"):
        dsp.filtered_noise(mags, 640, noise=noise[:, :100])


def test_reverb_zeroes_the_direct_path_and_matches_scipy():
    rng = np.random.default_rng(8)
    audio, ir = rng.normal(size=(2, 500)), rng.normal(size=300)
    masked = ir.copy()
    masked[0] = 0.0
    wet = np.stack([scipy.signal.fftconvolve(audio[b], masked)[:500] for b in range(2)])
    np.testing.assert_allclose(dsp.reverb(t64(audio), t64(ir)).numpy(), audio + wet, atol=1e-10)
    np.testing.assert_allclose(dsp.reverb(t64(audio), t64(ir)[None, :, None], add_dry=False),
                               wet, atol=1e-10)
    impulse = torch.zeros(1, 300, dtype=torch.float64)
    impulse[0, 0] = 5.0  # a pure direct path is masked: dry signal only
    torch.testing.assert_close(dsp.reverb(t64(audio), impulse), t64(audio))


def test_trainable_reverb_init_and_learning_signal():
    torch.manual_seed(0)
    rev = dsp.TrainableReverb(4800, generator=torch.Generator().manual_seed(0))
    ir = rev.ir.detach()
    assert ir.shape == (4800,) and ir[:100].abs().max() > 10 * ir[-1000:].abs().max()
    assert ir.abs().max() <= 0.01
    ddsp_init = dsp.TrainableReverb(4800, init="ddsp").ir.detach()
    assert 0.5e-6 < float(ddsp_init.std()) < 2e-6
    audio = torch.randn(2, 1000)
    out = rev(audio)
    out.square().mean().backward()
    assert out.shape == (2, 1000) and rev.ir.grad is not None
    assert torch.isfinite(rev.ir.grad).all() and rev.ir.grad[1:1000].abs().sum() > 0
    inside = rev.ir.grad[1:1000].abs().max()
    assert rev.ir.grad[0] == 0 and rev.ir.grad[1000:].abs().max() < 1e-6 * inside  # beyond T
    with pytest.raises(ConfigError):
        dsp.TrainableReverb(100, init="zeros")


# -- gradients ---------------------------------------------------------------------------------
def _gradcheck(fn, *inputs):
    inputs = tuple(x.detach().double().requires_grad_(True) for x in inputs)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradcheck_scaling_and_upsampling():
    x = torch.randn(2, 4, 3)
    _gradcheck(dsp.exp_sigmoid, x)
    _gradcheck(lambda v: dsp.upsample_linear(v, 13), x)
    _gradcheck(lambda v: dsp.upsample_linear(v, 13, add_endpoint=False), x)
    _gradcheck(lambda v: dsp.upsample_with_windows(v, 16), x)
    f0 = torch.tensor([[[300.0], [2000.0], [5000.0], [700.0]]]).expand(2, 4, 1)
    _gradcheck(lambda d: dsp.normalize_harmonics(d, f0.double(), SR), torch.rand(2, 4, 3) + 0.1)


@pytest.mark.parametrize("method", ["linear", "window"])
def test_gradcheck_harmonic_synthesis(method):
    f0 = torch.tensor([[[300.0], [420.0], [2900.0], [3100.0]]])  # harmonic 3 crosses Nyquist
    amp, dist = torch.rand(1, 4, 1) + 0.1, torch.rand(1, 4, 3) + 0.1
    _gradcheck(lambda f, a, d: dsp.harmonic_synthesis(f, a, d, 32, SR, amp_resample_method=method),
               f0, amp, dist)
    freqs, amps = torch.rand(1, 20, 2) * 3000 + 100, torch.rand(1, 20, 2)
    _gradcheck(lambda f, a: dsp.oscillator_bank(f, a, SR), freqs, amps)


def test_gradcheck_filters():
    audio, irs = torch.randn(1, 24), torch.randn(1, 3, 5)
    _gradcheck(lambda a, h: dsp.fft_convolve(a, h), audio, irs)
    _gradcheck(lambda a, h: dsp.fft_convolve(a, h, padding="valid", delay_compensation=0),
               audio, irs[:, 0])
    mags = torch.rand(1, 3, 9)
    _gradcheck(lambda m: dsp.frequency_impulse_response(m, 7), mags)
    _gradcheck(lambda a, m: dsp.frequency_filter(a, m), audio, mags)
    _gradcheck(lambda a, h: dsp.reverb(a, h), audio, torch.randn(10))


def test_every_op_passes_finite_nonzero_gradients_in_float32():
    """The float32 training path, including ddsp's float32 phase mode (its numpy cumsum has a
    hand-written backward: compared with float64 autograd)."""
    def grads(loss_fn, *inputs):
        inputs = [x.clone().requires_grad_(True) for x in inputs]
        loss_fn(*inputs).square().sum().backward()
        for x in inputs:
            assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        return [x.grad for x in inputs]

    f0 = torch.full((2, 10, 1), 330.0)
    raw_amp, raw_dist = torch.randn(2, 10, 1), torch.randn(2, 10, 20)
    raw_noise = torch.randn(2, 10, 65)

    def ddsp_like(f, a, d, m, precision="float64"):
        c = dsp.harmonic_controls(a, d, f, SR)
        harmonic = dsp.harmonic_synthesis(*c, 640, SR, amp_resample_method="window",
                                          phase_precision=precision)
        noise = dsp.filtered_noise(dsp.noise_controls(m), 640,
                                   generator=torch.Generator().manual_seed(0))
        return dsp.reverb(harmonic + noise, torch.linspace(0.1, 0.0, 200))

    g64 = grads(ddsp_like, f0, raw_amp, raw_dist, raw_noise)
    g32 = grads(lambda *x: ddsp_like(*x, precision="float32"), f0, raw_amp, raw_dist, raw_noise)
    for a, b in zip(g64, g32):  # same function up to float32 phase rounding
        torch.testing.assert_close(a, b, rtol=0, atol=1e-2 * float(a.abs().max()))
    omega = torch.rand(2, 300, 3, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 300, 3, dtype=torch.float64)
    (dsp._Float32Cumsum.apply(omega) * weights).sum().backward()
    expected, = torch.autograd.grad((torch.cumsum(omega, 1) * weights).sum(), omega)
    torch.testing.assert_close(omega.grad, expected, rtol=1e-5, atol=1e-4)  # float32 sums


# -- Magenta ddsp goldens ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    with np.load(GOLDENS, allow_pickle=False) as data:
        return {k: torch.from_numpy(data[k]) for k in data.files if k != "versions"}


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a.double() - b.double()).abs().max())


def test_golden_controls_and_upsampling(golden):
    """ddsp's get_controls and resampling. Tolerance 1e-6: exp_sigmoid's pow rounds differently
    (measured 4.8e-7, two ulps, on values up to 2), Hann window cosines (6e-8); linear resampling
    is bit-identical because TF's float32 resize arithmetic is reproduced."""
    g = golden
    c = dsp.harmonic_controls(g["harm_amp_raw"], g["harm_dist_raw"], g["harm_f0"], SR)
    assert _max_err(c.amplitude, g["harm_amp"]) < 1e-6
    assert _max_err(c.distribution, g["harm_dist"]) < 1e-6
    assert _max_err(dsp.noise_controls(g["noise_raw"]), g["noise_mags"]) < 1e-6
    x = g["up_x"]
    assert _max_err(dsp.upsample_linear(x, 40), g["up_linear"]) == 0.0
    assert _max_err(dsp.upsample_linear(x, 41, add_endpoint=False), g["up_linear_corners"]) == 0.0
    assert _max_err(dsp.upsample_with_windows(x, 40), g["up_window"]) < 1e-6
    assert _max_err(dsp.upsample_with_windows(x, 40, add_endpoint=False),
                    g["up_window_corners"]) < 1e-6


@pytest.mark.parametrize("method", ["window", "linear"])
def test_golden_harmonic_synthesis(golden, method):
    """Magenta's harmonic synthesis of 1024 samples (a 300 -> 1000 Hz glide whose upper harmonics
    cross Nyquist, and a vibrato), 20 harmonics, peak ~1.3.

    - phase_precision="float32" reproduces ddsp's float32 computation order and sequential
      float32 cumsum exactly; tolerance 1e-6 (measured 1.2e-7, one ulp at 1.0: sin and the sum
      over harmonics round differently in Eigen and torch).
    - phase_precision="float64" (our default) differs from ddsp only by ddsp's float32 phase
      drift: the phase of harmonic 7 reaches ~2800 rad in 64 ms, where a float32 ulp is 2.4e-4 rad
      and each cumsum step rounds. Tolerance 1e-3 (measured 1.7e-4). Over a 4 s note the same
      drift reaches 10 % of the peak at 16 kHz and 40 % at 48 kHz (bench/ddsp.py measures it),
      which is why only short signals are compared this way.
    """
    g = golden
    ref = g[f"harm_audio_{method}"]
    args = (g["harm_f0"], g["harm_amp"], g["harm_dist"], 1024, SR)
    exact = dsp.harmonic_synthesis(*args, amp_resample_method=method, phase_precision="float32")
    assert _max_err(exact, ref) < 1e-6
    default = dsp.harmonic_synthesis(*args, amp_resample_method=method)
    assert _max_err(default, ref) < 1e-3


def test_golden_filtered_noise_and_filters(golden):
    """ddsp's seeded FilteredNoise (its noise stored beside it), frequency sampling with a short
    window (odd and even sizes), and fft_convolve ('valid', and 'same' without delay).
    Tolerance 5e-6 on signals of peak ~0.6-3: float32 FFT round-off differs between TF's and
    torch's FFT libraries (measured <= 6e-7)."""
    g = golden
    noise = dsp.filtered_noise(g["noise_mags"], 1024, window_size=257, noise=g["noise_signal"])
    assert _max_err(noise, g["noise_audio"]) < 5e-6
    for size in (101, 100):
        assert _max_err(dsp.frequency_impulse_response(g["fir_mags"], size),
                        g[f"fir_ir_w{size}"]) < 5e-6
    assert _max_err(dsp.fft_convolve(g["conv_audio"], g["conv_ir"], padding="valid"),
                    g["conv_valid"]) < 5e-6
    assert _max_err(dsp.fft_convolve(g["conv_audio"], g["conv_ir"], delay_compensation=0),
                    g["conv_same_d0"]) < 5e-6


def test_golden_reverb(golden):
    """ddsp's effects.Reverb (first tap masked, dry added) on ddsp's own harmonic output with a
    256-tap IR given as (K,). Tolerance 5e-6 (FFT round-off, measured 1.2e-7, peak 1.4)."""
    g = golden
    assert _max_err(dsp.reverb(g["harm_audio_window"], g["rev_ir"]), g["rev_out"]) < 5e-6


@pytest.mark.parametrize("bands", [9, 65, 257])
def test_band_weights_read_each_band_at_its_own_frequency(bands):
    """Each band's local mean of a spectrum that rises linearly with frequency is the band's own
    frequency (interior bands; a plain area average over equal chunks would be half a band off),
    and a flat spectrum reads flat."""
    from synth.dsp_filters import band_weights

    w = band_weights(513, bands, dtype=torch.float64)
    freq = torch.linspace(0.0, 1.0, 513, dtype=torch.float64)
    points = torch.linspace(0.0, 1.0, bands, dtype=torch.float64)
    torch.testing.assert_close((freq @ w)[1:-1], points[1:-1], atol=1e-9, rtol=0)
    torch.testing.assert_close(torch.ones(513, dtype=torch.float64) @ w,
                               torch.ones(bands, dtype=torch.float64))
