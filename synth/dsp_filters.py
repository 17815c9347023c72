"""Filters of the functional DSP core: FFT convolution, frequency-sampled FIRs, filtered noise, reverb.

Mirrors ``ddsp.core.fft_convolve`` / ``frequency_impulse_response`` / ``frequency_filter``,
``ddsp.synths.FilteredNoise`` and ``ddsp.effects.Reverb`` (ddsp 3.7), batch-first and
differentiable. Audio is (B, T); time-varying impulse responses are (B, F, K), one per frame of
``ceil(T / F)`` samples; a fixed one is (B, K) or (K,). Re-exported by `synth.dsp`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from synth.errors import ConfigError

Padding = Literal["same", "valid"]


def hann_window(n: int, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> torch.Tensor:
    """``tf.signal.hann_window(n)`` (periodic=True), in TF's order of float operations.

    ``0.5 - 0.5 cos(2 pi t / d)`` with d = n for even n (periodic) but d = n - 1 for odd n: TF's
    "periodic" window of odd length is the symmetric one, and ddsp's filters inherit that.
    """
    if n == 1:
        return torch.ones(1, dtype=dtype, device=device)
    count = torch.arange(n, dtype=dtype, device=device)
    denominator = float(n if n % 2 == 0 else n - 1)
    return 0.5 - 0.5 * torch.cos(torch.tensor(2.0 * math.pi, dtype=dtype) * count / denominator)


def _overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """(B, F, L) frames at hop `hop` -> (B, (F - 1) * hop + L) summed signal."""
    batch, n_frames, length = frames.shape
    n_chunks = -(-length // hop)
    frames = nn.functional.pad(frames, (0, n_chunks * hop - length))
    chunks = frames.view(batch, n_frames, n_chunks, hop)
    out = frames.new_zeros(batch, n_frames + n_chunks - 1, hop)
    for i in range(n_chunks):
        out = out.index_add(1, torch.arange(i, i + n_frames, device=frames.device), chunks[:, :, i])
    return out.reshape(batch, -1)[:, :(n_frames - 1) * hop + length]


def fft_convolve(audio: torch.Tensor, impulse_response: torch.Tensor, padding: Padding = "same",
                 delay_compensation: int = -1) -> torch.Tensor:
    """Frame-wise (time-varying) FIR filtering by FFT (``ddsp.core.fft_convolve``).

    The audio is cut into F frames of ``ceil(T / F)`` samples (zero-padded at the end); frame f is
    convolved with IR f (zero-padded FFT of the next power of two >= frame + K - 1, so no
    circular wrap) and the results are overlap-added.

    Args:
        audio: (B, T).
        impulse_response: (B, F, K) time-varying, (B, K) or (K,) fixed; a batch of 1 broadcasts.
        padding: "same" -> (B, T); "valid" -> (B, T + K - 1), the full convolution.
        delay_compensation: samples dropped from the front. Negative means ddsp's automatic
            ``(K - 1) // 2 - 1``: the whole delay of `frequency_impulse_response`'s odd windowed
            FIRs, 2 samples short of that of its full-length (even K) ones, which so come out
            2 samples late, as in ddsp. 0 keeps the plain causal convolution.
    Returns:
        (B, T) or (B, T + K - 1).
    """
    if audio.dim() != 2:
        raise ConfigError(f"audio must be (B, T), got shape {tuple(audio.shape)}")
    ir = impulse_response
    if ir.dim() == 1:
        ir = ir[None]
    if ir.dim() == 2:
        ir = ir[:, None]
    if ir.dim() != 3:
        raise ConfigError(f"impulse_response must be (B, F, K), (B, K) or (K,), got "
                          f"{tuple(impulse_response.shape)}")
    batch, n_audio = audio.shape
    if ir.shape[0] not in (1, batch):  # a batch of 1 broadcasts (its FFT is taken once)
        raise ConfigError(f"batch of audio ({batch}) and impulse response ({ir.shape[0]}) differ")
    n_frames, ir_size = ir.shape[1], ir.shape[2]
    hop = -(-n_audio // n_frames)
    if -(-n_audio // hop) != n_frames:
        raise ConfigError(f"{n_audio} samples cannot be cut into {n_frames} frames of {hop}; use a "
                          "frame count that divides the audio length")
    frames = nn.functional.pad(audio, (0, n_frames * hop - n_audio)).view(batch, n_frames, hop)
    fft_size = 1 << math.ceil(math.log2(hop + ir_size - 1)) if hop + ir_size > 2 else 1
    spectrum = torch.fft.rfft(frames, fft_size) * torch.fft.rfft(ir, fft_size)
    out = _overlap_add(torch.fft.irfft(spectrum, fft_size), hop)
    start = (ir_size - 1) // 2 - 1 if delay_compensation < 0 else delay_compensation
    if start < 0:
        raise ConfigError(f"automatic delay compensation needs an IR of at least 3 samples "
                          f"(got {ir_size}); pass delay_compensation >= 0")
    if padding not in ("same", "valid"):
        raise ConfigError(f"padding must be 'same' or 'valid', got {padding!r}")
    size = n_audio if padding == "same" else n_audio + ir_size - 1
    if start + size > out.shape[1]:
        raise ConfigError(f"delay_compensation {start} leaves fewer than {size} samples "
                          f"({out.shape[1]} convolved); use a smaller one or padding='same'")
    return out[:, start:start + size]


def frequency_impulse_response(magnitudes: torch.Tensor, window_size: int = 0) -> torch.Tensor:
    """Windowed linear-phase FIRs by frequency sampling (``ddsp.core.frequency_impulse_response``).

    The magnitudes are a zero-phase transfer curve on M bins from 0 Hz to Nyquist; their inverse
    real FFT (2 (M - 1) taps, zero-phase) is multiplied by a periodic Hann window of
    `window_size` taps centred on lag 0, then rotated to causal form (peak in the middle).

    Args:
        magnitudes: (..., M), e.g. (B, F, M) per frame or (B, M).
        window_size: taps of the window; <= 0 or larger than 2 (M - 1) means 2 (M - 1).
    Returns:
        (..., K) causal IRs: K = 2 (M - 1) for the full window (linear phase, peak at tap M - 1),
        else `window_size` (odd) or ``window_size - 1`` (even). ddsp crops a shorter window one
        tap off centre (its peak lands on lag -1, lag 0 sits at tap ``(window_size + 1) // 2 - 2``
        and the last taps are zero); mirrored as is for parity.
    """
    ir = torch.fft.irfft(magnitudes.to(torch.complex64 if magnitudes.dtype != torch.float64
                                       else torch.complex128))
    ir_size = ir.shape[-1]
    if window_size <= 0 or window_size > ir_size:
        window_size = ir_size
    window = hann_window(window_size, dtype=ir.dtype, device=ir.device)
    padding = ir_size - window_size
    if padding > 0:
        half = (window_size + 1) // 2
        window = torch.cat([window[half:], window.new_zeros(padding), window[:half]])
        ir = ir * window
        first_half_start = ir_size - (half - 1) + 1
        return torch.cat([ir[..., first_half_start:], ir[..., :half + 1]], dim=-1)
    return torch.fft.fftshift(ir * torch.fft.fftshift(window), dim=-1)


def frequency_filter(audio: torch.Tensor, magnitudes: torch.Tensor, window_size: int = 0,
                     padding: Padding = "same") -> torch.Tensor:
    """Filter (B, T) audio with the time-varying FIRs of (B, F, M) or fixed (B, M) magnitudes
    (``ddsp.core.frequency_filter``: `frequency_impulse_response` then `fft_convolve` with
    automatic delay compensation). Returns (B, T) ("same") or (B, T + K - 1) ("valid")."""
    return fft_convolve(audio, frequency_impulse_response(magnitudes, window_size), padding=padding)


def filter_power_response(magnitudes: torch.Tensor, window_size: int = 0,
                          n_fft: int = 1024) -> torch.Tensor:
    """(..., M) filter magnitudes -> (..., n_fft // 2 + 1): the power response |H(f)|^2 of the
    FIR `frequency_impulse_response` makes of them, on an n_fft-point grid from 0 Hz to
    Nyquist. The window smooths the sampled curve (a Hann of K taps over a main lobe 4 / K of
    the sample rate wide), so a pattern finer than that is not what the filter plays; losses on
    the noise should see this, not the magnitudes themselves. Differentiable."""
    ir = frequency_impulse_response(magnitudes, window_size)
    step = math.ceil(ir.shape[-1] / n_fft)  # an IR longer than n_fft: a finer grid, subsampled
    return torch.fft.rfft(ir, n=n_fft * step).abs().pow(2)[..., ::step]


def filtered_noise(magnitudes: torch.Tensor, n_samples: int,
                   generator: torch.Generator | None = None, window_size: int = 257,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
    """Uniform white noise in [-1, 1) shaped by time-varying FIRs (``ddsp.synths.FilteredNoise``'s
    get_signal; `synth.dsp.noise_controls` is its get_controls).

    Args:
        magnitudes: (B, F, M) filter magnitudes, bins from 0 Hz to Nyquist (ddsp: 65 bands).
        n_samples: output length; F must divide it into frames (see `fft_convolve`).
        generator: draws the noise (on the magnitudes' device); None uses torch's global RNG.
        window_size: FIR window taps (ddsp's default 257, capped at 2 (M - 1)).
        noise: optional (B, n_samples) noise to use instead of drawing (parity tests).
    Returns:
        (B, n_samples).
    """
    if noise is None:
        noise = torch.rand(magnitudes.shape[0], n_samples, generator=generator,
                           device=magnitudes.device, dtype=magnitudes.dtype) * 2.0 - 1.0
    elif noise.shape != (magnitudes.shape[0], n_samples):
        raise ConfigError(f"noise must be ({magnitudes.shape[0]}, {n_samples}), got "
                          f"{tuple(noise.shape)}")
    return frequency_filter(noise, magnitudes, window_size=window_size)


def band_weights(n_bins: int, n_bands: int, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n_bins, n_bands) triangular weights that read a spectrum (n_bins from 0 Hz to Nyquist)
    at `filtered_noise`'s band points (n_bands from 0 Hz to Nyquist, equally spaced): band j
    weighs the bins within one band spacing of its point, linearly falling to 0, normalised to
    sum to 1 (the first and last bands are half triangles). `spectrum @ weights` is each band's
    local mean, centred on its own frequency."""
    bins = torch.linspace(0.0, 1.0, n_bins, dtype=torch.float64)[:, None]
    points = torch.linspace(0.0, 1.0, n_bands, dtype=torch.float64)[None, :]
    spacing = 1.0 / max(n_bands - 1, 1)
    w = (1.0 - (bins - points).abs() / spacing).clamp_min(0.0)
    w = w / w.sum(0, keepdim=True).clamp_min(1e-12)
    return w.to(device=device, dtype=dtype)


def partial_noise_power(amplitudes: torch.Tensor, freqs_hz: torch.Tensor, n_bands: int,
                        sample_rate: int, level: torch.Tensor | float) -> torch.Tensor:
    """Squared noise-filter magnitudes for noise laid on the partials: (B, F, H) sinusoid
    amplitudes at (B, F, H) frequencies and a power ratio `level` ((B, F, 1) or a float) ->
    (B, F, n_bands), zero away from the partials (add to the squared magnitudes of other noise,
    then take the root: the root of a zero has no gradient).

    Each partial's power (A^2 / 2) is spread over the three band points nearest its frequency
    with quadratic B-spline weights (so the noise centres on the partial wherever it falls
    between the points), and scaled so that `filtered_noise` with these magnitudes would carry
    `level` x the partials' power if the filter played its band curve exactly (uniform noise
    has variance 1/3; a band point's magnitude m covers one band spacing, (M - 1) of which span
    0 Hz to Nyquist: m^2 / (3 (M - 1))). The FIR's window smooths that curve and plays less
    (`partial_noise_gain`). Partials at or above Nyquist add nothing."""
    pos = freqs_hz / (sample_rate / 2) * (n_bands - 1)
    power = 0.5 * amplitudes.pow(2) * ((pos >= 0) & (pos < n_bands - 1)).to(amplitudes.dtype)
    centre = pos.clamp(0, n_bands - 1).round()
    u = pos.clamp(0, n_bands - 1) - centre + 0.5  # in [0, 1]
    bands = amplitudes.new_zeros(*amplitudes.shape[:-1], n_bands)
    for offset, weight in ((-1, 0.5 * (1 - u).pow(2)), (0, 0.5 + u * (1 - u)), (1, 0.5 * u.pow(2))):
        index = (centre.long() + offset).clamp(0, n_bands - 1)
        bands = bands.scatter_add(-1, index, power * weight)
    return 3.0 * (n_bands - 1) * level * bands


def partial_noise_gain(n_bands: int, window_size: int, sample_rate: int = 16000) -> float:
    """The power `filtered_noise` actually plays of `partial_noise_power` at level 1, as a
    fraction of the partials' power: the windowed FIR smooths the three-point spread and loses
    some of it (about 1.6-2.0 dB at 257 bands and 512 taps, depending on where the partial falls
    between two band points; this is the mean over eight such positions, mid-band)."""
    points = 8
    pos = (n_bands - 1) / 2 + torch.arange(points, dtype=torch.float64) / points
    freqs = (pos * (sample_rate / 2) / (n_bands - 1))[:, None, None]
    power = partial_noise_power(torch.ones_like(freqs), freqs, n_bands, sample_rate, 1.0)
    response = filter_power_response(power[:, 0].sqrt(), window_size, n_fft=8 * (n_bands - 1))
    return float((response.mean(-1) / 3.0 / 0.5).mean())


def fine_pattern(log_power: torch.Tensor, width: int = 9) -> torch.Tensor:
    """(..., M) log band power -> (..., M): its fine pattern, the log power minus its moving
    average over `width` bands (the average over the bands that exist at the edges). A smooth
    spectrum gives zeros; a comb across the bands keeps its teeth."""
    flat = log_power.reshape(-1, 1, log_power.shape[-1])
    smooth = nn.functional.avg_pool1d(flat, width, 1, width // 2, count_include_pad=False)
    return log_power - smooth.reshape(log_power.shape)


def reverb(audio: torch.Tensor, ir: torch.Tensor, add_dry: bool = True) -> torch.Tensor:
    """Convolution reverb (``ddsp.effects.Reverb.get_signal``).

    The first IR tap is zeroed (the dry path comes only from `add_dry`, never through the IR),
    then the audio is convolved causally with no delay compensation and cropped to its length.

    Args:
        audio: (B, T) dry audio.
        ir: (B, K), (K,) or (B, K, 1) impulse response; a batch of 1 broadcasts.
        add_dry: return dry + wet (ddsp's default) or only the wet signal.
    Returns:
        (B, T).
    """
    if ir.dim() == 1:
        ir = ir[None]
    if ir.dim() == 3:
        ir = ir[..., 0]
    ir = torch.cat([ir.new_zeros(ir.shape[0], 1), ir[:, 1:]], dim=1)
    wet = fft_convolve(audio, ir, padding="same", delay_compensation=0)
    return wet + audio if add_dry else wet


class TrainableReverb(nn.Module):
    """One learned FIR reverb for a whole dataset (``ddsp.effects.Reverb(trainable=True)``).

    Initialisation ``"exp_decay"`` (default): uniform noise in [-1, 1) times ``init_gain *
    exp(-(2 + exp(init_decay)) * t)``, t from 0 to 1 over the IR (the IR of ddsp's
    ``ExpDecayReverb`` at its initial decay of 4.0; the gain of 0.01 puts the wet signal about
    20 dB below the dry one, where ddsp's ExpDecayReverb starts 25 dB above it). ``"ddsp"``: ddsp's
    own trainable Reverb init, normal noise of std 1e-6 (an almost dry start).
    """

    def __init__(self, reverb_length: int = 48000, add_dry: bool = True,
                 init: Literal["exp_decay", "ddsp"] = "exp_decay", init_gain: float = 0.01,
                 init_decay: float = 4.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if reverb_length < 2:
            raise ConfigError(f"reverb_length must be at least 2, got {reverb_length}")
        self.add_dry = add_dry
        if init == "exp_decay":
            t = torch.linspace(0.0, 1.0, reverb_length)
            noise = torch.rand(reverb_length, generator=generator) * 2.0 - 1.0
            ir = init_gain * torch.exp(-(2.0 + math.exp(init_decay)) * t) * noise
        elif init == "ddsp":
            ir = 1e-6 * torch.randn(reverb_length, generator=generator)
        else:
            raise ConfigError(f"unknown reverb init {init!r}; use 'exp_decay' or 'ddsp'")
        self.ir = nn.Parameter(ir)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, T) dry -> (B, T) dry + wet (or wet only)."""
        return reverb(audio, self.ir, add_dry=self.add_dry)
