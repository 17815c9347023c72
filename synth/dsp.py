"""Pure functional DSP core: scaling, upsampling and harmonic oscillators (differentiable torch ops).

The ops mirror Magenta's ``ddsp.core`` (3.7) in batch-first PyTorch form, and keep its split between
*controls* (network outputs -> bounded, normalised controls: `harmonic_controls`, `noise_controls`)
and *signals* (controls -> audio: `harmonic_synthesis`, `filtered_noise`, `reverb`). Shapes:

- frame-rate controls are (B, frames, C): f0 (B, F, 1) in Hz, amplitude (B, F, 1), harmonic
  distribution (B, F, H), noise magnitudes (B, F, M);
- sample-rate envelopes are (B, T, C); audio is (B, T).

Frame grid (ddsp's ``resample(..., add_endpoint=True)``): frame k sits at sample ``k * T / F`` and
the last frame is held to the end, so T samples split evenly into F segments.

Phase. ddsp accumulates phase with a float32 ``tf.cumsum`` over every harmonic, which drifts on
long notes: a harmonic at 13 kHz reaches 3e5 rad in 4 s, where a float32 step rounds by up to
0.015 rad (a 4 s A3 with 60 harmonics ends up 10 % of its peak away from exact synthesis at
16 kHz, 40 % at 48 kHz). ``phase_precision="float64"`` (default) accumulates the fundamental's
phase in float64 and derives harmonic k as ``k * phase``; ``"float32"`` reproduces ddsp's float32
sequential cumsum per harmonic (numpy on the CPU, exactly TF's CPU result) for parity tests.
Filters and reverb live in `synth.dsp_filters` and are re-exported here.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np
import torch

from synth.dsp_filters import (  # noqa: F401  (re-exported: dsp.fft_convolve, ...)
    TrainableReverb, fft_convolve, filtered_noise, frequency_filter, frequency_impulse_response,
    hann_window, reverb)
from synth.errors import ConfigError
from synth.pitch import midi_to_hz  # noqa: F401  (re-exported: dsp.midi_to_hz)

PhasePrecision = Literal["float64", "float32"]
ResampleMethod = Literal["linear", "window"]
_TWO_PI = 2.0 * math.pi


# -- scaling -----------------------------------------------------------------------------------
def exp_sigmoid(x: torch.Tensor, exponent: float = 10.0, max_value: float = 2.0,
                threshold: float = 1e-7) -> torch.Tensor:
    """ddsp's scaled sigmoid ``max_value * sigmoid(x) ** log(exponent) + threshold``, in
    ``[threshold, max_value + threshold]``; for x << 0 it grows by ``exponent`` per unit of x."""
    return max_value * torch.sigmoid(x) ** math.log(exponent) + threshold


def safe_divide(numerator: torch.Tensor, denominator: torch.Tensor,
                eps: float = 1e-7) -> torch.Tensor:
    """``numerator / denominator`` with exact zeros in the denominator replaced by eps (ddsp)."""
    safe = torch.where(denominator == 0.0, torch.full_like(denominator, eps), denominator)
    return numerator / safe


# -- upsampling --------------------------------------------------------------------------------
def _check_frames(x: torch.Tensor, n_samples: int, name: str) -> None:
    if x.dim() != 3:
        raise ConfigError(f"{name} expects (B, frames, channels), got shape {tuple(x.shape)}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ConfigError(f"n_samples must be a positive int, got {n_samples!r}")


def _linear_weights(n_frames: int, n_samples: int, add_endpoint: bool,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample (lower frame, upper frame, float32 weight), computed exactly as TF's legacy
    bilinear resize does in float32 (``tf.compat.v1.image.resize`` used by ``ddsp.core.resample``)."""
    if add_endpoint or n_samples == 1:
        scale = np.float32(n_frames) / np.float32(n_samples)
    else:
        scale = np.float32(n_frames - 1) / np.float32(n_samples - 1)
    pos = torch.arange(n_samples, dtype=torch.float32, device=device) * float(scale)
    lower = torch.floor(pos)
    lam = pos - lower
    lower = lower.long().clamp_max(n_frames - 1)
    upper = (lower + 1).clamp_max(n_frames - 1)
    return lower, upper, lam


def upsample_linear(x: torch.Tensor, n_samples: int, add_endpoint: bool = True) -> torch.Tensor:
    """Linear interpolation of frame controls to the audio rate (``ddsp.core.resample``, linear).

    Args:
        x: (B, frames, C) controls.
        n_samples: output length.
        add_endpoint: True (ddsp's default): frame k sits at sample ``k * n_samples / frames`` and
            the last frame is held to the end. False: the first and last frames land exactly on
            the first and last samples (``align_corners``).
    Returns:
        (B, n_samples, C).
    """
    _check_frames(x, n_samples, "upsample_linear")
    if x.shape[1] == 1:
        return x.expand(-1, n_samples, -1)
    lower, upper, lam = _linear_weights(x.shape[1], n_samples, add_endpoint, x.device)
    x_lo, x_hi = x[:, lower], x[:, upper]
    return x_lo + (x_hi - x_lo) * lam.to(x.dtype)[:, None]


def _window_weights(hop: int, dtype: torch.dtype,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(tail, head) weights of the two Hann windows overlapping each of the `hop` positions."""
    window = hann_window(2 * hop, dtype=dtype, device=device)
    return window[hop:], window[:hop]


def upsample_with_windows(x: torch.Tensor, n_samples: int, add_endpoint: bool = True) -> torch.Tensor:
    """Hann-window overlap-add upsampling (``ddsp.core.upsample_with_windows``), smooth for envelopes.

    Each frame is spread by a periodic Hann window of ``2 * hop`` samples at hop ``hop``
    (constant overlap-add), so a sample between frames k and k + 1 is
    ``x[k] * w[hop + r] + x[k + 1] * w[r]``.

    Args:
        x: (B, frames, C) controls.
        n_samples: output length; must be a multiple of ``frames`` (add_endpoint, the last frame
            held for one more hop) or of ``frames - 1`` (not add_endpoint), and larger.
    Returns:
        (B, n_samples, C).
    """
    _check_frames(x, n_samples, "upsample_with_windows")
    if add_endpoint:
        x = torch.cat([x, x[:, -1:]], dim=1)
    n_intervals = x.shape[1] - 1
    if x.shape[1] >= n_samples or n_intervals < 1 or n_samples % n_intervals:
        raise ConfigError(f"window upsampling needs n_samples ({n_samples}) to be a larger multiple "
                          f"of frames{'' if add_endpoint else ' - 1'} ({n_intervals}); "
                          "use upsample_linear for other lengths")
    hop = n_samples // n_intervals
    tail, head = _window_weights(hop, x.dtype, x.device)
    y = x[:, :-1, None, :] * tail[:, None] + x[:, 1:, None, :] * head[:, None]  # (B, I, hop, C)
    return y.reshape(x.shape[0], n_samples, x.shape[2])


def upsample(x: torch.Tensor, n_samples: int, method: ResampleMethod = "linear") -> torch.Tensor:
    """`upsample_linear` or `upsample_with_windows` (add_endpoint) by name."""
    if method == "linear":
        return upsample_linear(x, n_samples)
    if method == "window":
        return upsample_with_windows(x, n_samples)
    raise ConfigError(f"unknown resample method {method!r}; use 'linear' or 'window'")


# -- harmonic controls -------------------------------------------------------------------------
def remove_above_nyquist(frequencies: torch.Tensor, amplitudes: torch.Tensor,
                         sample_rate: int) -> torch.Tensor:
    """Zero the amplitude of every oscillator at or above Nyquist (same shapes, Hz and linear)."""
    return torch.where(frequencies >= sample_rate / 2.0, torch.zeros_like(amplitudes), amplitudes)


def inharmonic_ratios(inharmonicity: torch.Tensor, n_harmonics: int) -> torch.Tensor:
    """Stiff-string partial ratios ``k sqrt(1 + B k^2)``, k = 1..H (Fletcher 1964):
    (B,) inharmonicity coefficients B >= 0 -> (B, H); B = 0 gives the harmonic series."""
    b = inharmonicity.reshape(-1, 1)
    k = torch.arange(1, n_harmonics + 1, device=b.device, dtype=b.dtype)
    return k * torch.sqrt(1.0 + b * k.square())


def _ratios(f0_hz: torch.Tensor, n_harmonics: int, inharmonicity: torch.Tensor | None) -> torch.Tensor:
    """Partial ratios broadcastable against (B, n, 1) f0: (H,) or (B, 1, H)."""
    if inharmonicity is None:
        return torch.arange(1, n_harmonics + 1, device=f0_hz.device, dtype=f0_hz.dtype)
    return inharmonic_ratios(inharmonicity.to(f0_hz.dtype), n_harmonics)[:, None, :]


def harmonic_frequencies(f0_hz: torch.Tensor, n_harmonics: int,
                         inharmonicity: torch.Tensor | None = None) -> torch.Tensor:
    """(B, n, 1) fundamental -> (B, n, H) partial frequencies ``f0 * [1..H]``, or with a per-note
    inharmonicity (B,) ``f0 * k sqrt(1 + B k^2)`` (`inharmonic_ratios`)."""
    return f0_hz * _ratios(f0_hz, n_harmonics, inharmonicity)


def normalize_harmonics(distribution: torch.Tensor, f0_hz: torch.Tensor | None = None,
                        sample_rate: int | None = None,
                        inharmonicity: torch.Tensor | None = None) -> torch.Tensor:
    """ddsp's ``normalize_harmonics``: zero harmonics at or above Nyquist (when f0 and the sample
    rate are given), then divide by the sum over harmonics (an all-zero frame stays zero).

    Args:
        distribution: (B, F, H) non-negative weights; f0_hz: (B, F, 1);
        inharmonicity: optional (B,) coefficients (partials at `harmonic_frequencies`).
    Returns:
        (B, F, H) summing to 1 over H wherever any harmonic survives.
    """
    if f0_hz is not None and sample_rate is not None:
        freqs = harmonic_frequencies(f0_hz, distribution.shape[-1], inharmonicity)
        distribution = remove_above_nyquist(freqs, distribution, sample_rate)
    return safe_divide(distribution, distribution.sum(-1, keepdim=True))


def normalized_harmonic_amplitudes(amplitude: torch.Tensor, distribution: torch.Tensor,
                                   f0_hz: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """(B, F, 1) amplitude x `normalize_harmonics` (B, F, H) -> (B, F, H) per-harmonic amplitudes
    summing to `amplitude` where any harmonic is below Nyquist."""
    return amplitude * normalize_harmonics(distribution, f0_hz, sample_rate)


class HarmonicControls(NamedTuple):
    """Bounded controls for `harmonic_synthesis`, in its argument order."""

    f0_hz: torch.Tensor  # (B, F, 1) Hz
    amplitude: torch.Tensor  # (B, F, 1) > 0
    distribution: torch.Tensor  # (B, F, H), sums to 1 below Nyquist


def harmonic_controls(amplitude: torch.Tensor, distribution: torch.Tensor, f0_hz: torch.Tensor,
                      sample_rate: int, normalize_below_nyquist: bool = True,
                      inharmonicity: torch.Tensor | None = None) -> HarmonicControls:
    """ddsp's ``synths.Harmonic.get_controls``: exp_sigmoid on raw network outputs, then
    `normalize_harmonics` (harmonics above Nyquist removed first unless told otherwise).

    Args:
        amplitude: (B, F, 1) raw; distribution: (B, F, H) raw; f0_hz: (B, F, 1) Hz;
        inharmonicity: optional (B,) per-note coefficients, for the Nyquist test.
    """
    amplitude = exp_sigmoid(amplitude)
    distribution = normalize_harmonics(exp_sigmoid(distribution), f0_hz,
                                       sample_rate if normalize_below_nyquist else None,
                                       inharmonicity)
    return HarmonicControls(f0_hz, amplitude, distribution)


def noise_controls(magnitudes: torch.Tensor, initial_bias: float = -5.0) -> torch.Tensor:
    """ddsp's ``synths.FilteredNoise.get_controls``: ``exp_sigmoid(raw + initial_bias)``.

    Args:
        magnitudes: (B, F, M) raw network outputs -> (B, F, M) filter magnitudes in (0, 2].
    """
    return exp_sigmoid(magnitudes + initial_bias)


# -- oscillators -------------------------------------------------------------------------------
class _Float32Cumsum(torch.autograd.Function):
    """Sequential float32 running sum along dim 1, bit-identical to ``tf.cumsum`` on the CPU
    (numpy accumulates in the output dtype, element after element; torch's CPU cumsum
    accumulates in float64). Runs on the CPU; the gradient is the reversed cumsum."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = np.cumsum(x.detach().to("cpu", torch.float32).numpy(), axis=1, dtype=np.float32)
        return torch.from_numpy(y).to(x.device)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return grad.flip(1).cumsum(1).flip(1)


def _check_precision(phase_precision: str) -> None:
    if phase_precision not in ("float64", "float32"):
        raise ConfigError(f"phase_precision must be 'float64' or 'float32', got {phase_precision!r}")


def oscillator_bank(frequencies: torch.Tensor, amplitudes: torch.Tensor, sample_rate: int,
                    sum_sinusoids: bool = True, phase_precision: PhasePrecision = "float64",
                    initial_phase: torch.Tensor | None = None) -> torch.Tensor:
    """Sinusoids from sample-rate frequencies and amplitudes (``ddsp.core.oscillator_bank``).

    Oscillators at or above Nyquist are silenced sample by sample; the phase of sample t is
    ``sum_{s<=t} 2 pi f[s] / sample_rate`` (ddsp's convention: the first sample has already advanced).

    Args:
        frequencies: (B, T, H) Hz per sample.
        amplitudes: (B, T, H) linear amplitude per sample.
        sum_sinusoids: sum over oscillators -> (B, T); else return (B, T, H).
        phase_precision: "float64" accumulates in float64 (no drift); "float32" reproduces ddsp's
            float32 sequential cumsum (CPU, parity tests).
        initial_phase: optional (B, 1, H) radians added to every phase.
    """
    _check_precision(phase_precision)
    amplitudes = remove_above_nyquist(frequencies, amplitudes, sample_rate)
    if phase_precision == "float32":
        f32 = frequencies.float()
        omega = f32 * torch.tensor(_TWO_PI, dtype=torch.float32) / torch.tensor(
            float(sample_rate), dtype=torch.float32)
        phase = _Float32Cumsum.apply(omega)
        if initial_phase is not None:
            phase = phase + initial_phase.float()
    else:
        phase = torch.cumsum(frequencies.double() * (_TWO_PI / sample_rate), dim=1)
        if initial_phase is not None:
            phase = phase + initial_phase.double()
        phase = torch.remainder(phase, _TWO_PI)
    audio = torch.sin(phase.to(amplitudes.dtype)) * amplitudes
    return audio.sum(-1) if sum_sinusoids else audio


def _harmonic_bank(f0_up: torch.Tensor, amps: torch.Tensor, n_samples: int, sample_rate: int,
                   method: ResampleMethod, chunk_elements: int = 1 << 21,
                   max_chunks: int = 16, inharmonicity: torch.Tensor | None = None) -> torch.Tensor:
    """Fast harmonic bank for n_samples a multiple of the frame count (see `harmonic_synthesis`).

    Upsampled amplitudes are never materialised: within segment k (hop samples) both methods
    interpolate ``tail[r] * a[k] + head[r] * a[k + 1]``, so the segment's sines (hop, H) are
    multiplied by the two frames' amplitudes (H, 2). Work goes in chunks of frames of at least
    `chunk_elements` sines and at most `max_chunks` chunks: few, large ops, because each op is an
    OpenMP parallel region, and with libgomp's default active waiting on a busy 2-core machine
    every region waits for a descheduled thread (smaller chunks: ~1.3x faster idle, 10x slower
    busy; ``OMP_WAIT_POLICY=PASSIVE`` removes the penalty). Harmonics at or above Nyquist over a
    whole chunk are skipped and the per-sample Nyquist mask is applied to the rest. Without
    autograd the sines are computed in place in one buffer.

    Inharmonic partials (ratio r_k = k sqrt(1 + B k^2) = k + d_k): the phase k * (fundamental
    phase mod 2 pi) is exact only for integer k, so the stretch d_k * (unreduced fundamental
    phase) is added separately, reduced mod 2 pi in float64.

    Args:
        f0_up: (B, T) upsampled f0 in Hz; amps: (B, F, H) frame-rate harmonic amplitudes;
        inharmonicity: optional (B,) coefficients B.
    """
    batch, n_frames, n_harm = amps.shape
    hop = n_samples // n_frames
    dtype, device = amps.dtype, amps.device
    total = torch.cumsum(f0_up.double() * (_TWO_PI / sample_rate), dim=1)
    phase = torch.remainder(total, _TWO_PI).to(dtype).view(batch, n_frames, hop, 1)
    stretch = None
    if inharmonicity is not None:
        full = inharmonic_ratios(inharmonicity.double().expand(batch), n_harm)  # (B, H)
        stretch = (full - torch.arange(1, n_harm + 1, device=device, dtype=torch.float64))
        stretch = stretch[:, None, None, :]  # d_k, (B, 1, 1, H)
        total = total.view(batch, n_frames, hop, 1)
        full = full.to(dtype)
    f0_seg = f0_up.reshape(batch, n_frames, hop, 1)
    if method == "window":
        tail, head = _window_weights(hop, dtype, device)  # (hop,)
    else:  # ddsp's float32 positions, measured from each segment's start frame: (F, hop)
        lower, _, lam = _linear_weights(n_frames, n_samples, True, device)
        segment = torch.arange(n_samples, device=device) // hop
        head = (lam + (lower - segment)).to(dtype).view(n_frames, hop)
        tail = 1.0 - head
    ends = torch.cat([amps, amps[:, -1:]], dim=1)
    pairs = torch.stack([ends[:, :-1], ends[:, 1:]], dim=-1)  # (B, F, H, 2)
    ratios = torch.arange(1, n_harm + 1, dtype=dtype, device=device)
    nyquist = sample_rate / 2.0
    # harmonics below Nyquist per sample, up to rounding (the exact mask is applied below)
    if stretch is None:
        n_below = torch.where(f0_up > 0, torch.ceil(nyquist / f0_up.clamp_min(1e-30)) - 1,
                              torch.full_like(f0_up, float(n_harm))).clamp(0, n_harm)
    else:  # ratios increase with k: count those below nyquist / f0
        limit = (nyquist / f0_up.clamp_min(1e-30)).to(full.dtype)
        n_below = torch.searchsorted(full.contiguous(), limit.contiguous()).to(f0_up.dtype)
    n_below = n_below.view(batch, n_frames, hop)
    per_frame = max(1, batch * hop * n_harm)
    step = max(1, max(chunk_elements, -(-n_frames * per_frame // max_chunks)) // per_frame)
    lows = n_below.amin(dim=(0, 2)).cpu().tolist()
    highs = n_below.amax(dim=(0, 2)).cpu().tolist()
    in_place = not (torch.is_grad_enabled() and (f0_up.requires_grad or amps.requires_grad or (
        inharmonicity is not None and inharmonicity.requires_grad)))
    buffer = torch.empty(batch * min(step, n_frames) * hop * n_harm, dtype=dtype, device=device)
    outputs = []
    for start in range(0, n_frames, step):
        stop = min(n_frames, start + step)
        lo = max(0, int(min(lows[start:stop])) - 1)
        hi = min(n_harm, int(max(highs[start:stop])) + 1)
        ph, fs = phase[:, start:stop], f0_seg[:, start:stop]
        extra = None
        if stretch is None:
            below = (fs * ratios[lo:hi] < nyquist).to(dtype)
        else:
            below = (fs * full[:, None, None, lo:hi] < nyquist).to(dtype)
            extra = torch.remainder(total[:, start:stop] * stretch[..., :hi], _TWO_PI).to(dtype)
        if in_place:
            sines = buffer[:ph.numel() * hi].view(*ph.shape[:3], hi)
            torch.mul(ph, ratios[:hi], out=sines)
            if extra is not None:
                sines.add_(extra)
            sines.sin_()
            sines[..., lo:].mul_(below)
        else:
            arg = ph * ratios[:hi] if extra is None else ph * ratios[:hi] + extra
            sines = torch.sin(arg)  # (B, c, hop, hi)
            sines = torch.cat([sines[..., :lo], sines[..., lo:] * below], dim=-1)
        y = torch.matmul(sines, pairs[:, start:stop, :hi])  # (B, c, hop, 2)
        if tail.dim() == 2:
            outputs.append(y[..., 0] * tail[start:stop] + y[..., 1] * head[start:stop])
        else:
            outputs.append(y[..., 0] * tail + y[..., 1] * head)
    return torch.cat(outputs, dim=1).reshape(batch, n_samples)


def harmonic_synthesis(f0_hz: torch.Tensor, amplitude: torch.Tensor, distribution: torch.Tensor,
                       n_samples: int, sample_rate: int,
                       amp_resample_method: ResampleMethod = "linear",
                       phase_precision: PhasePrecision = "float64",
                       inharmonicity: torch.Tensor | None = None) -> torch.Tensor:
    """Monophonic harmonic oscillator bank from frame-rate controls (``ddsp.core.harmonic_synthesis``).

    Semantics are ddsp's exactly: harmonic k has frequency ``k * f0`` (linearly upsampled) and
    amplitude ``amplitude * distribution[..., k]`` (upsampled by `amp_resample_method`); the
    distribution is NOT normalised here, only silenced sample by sample at or above Nyquist. Pass
    controls through `harmonic_controls` / `normalize_harmonics` first to remove harmonics above
    Nyquist at frame rate and renormalise (what ddsp's ``synths.Harmonic`` does).

    Args:
        f0_hz: (B, F, 1) fundamental in Hz.
        amplitude: (B, F, 1) overall amplitude.
        distribution: (B, F, H) harmonic weights.
        n_samples: output length in samples at `sample_rate`.
        amp_resample_method: "linear" (any length) or "window" (Hann overlap-add, ddsp's default;
            n_samples must be a multiple of F).
        phase_precision: "float64" (default; no phase drift) or "float32" (ddsp's exact float32
            computation order and cumsum, for parity; slower). float64 takes a fast path when
            n_samples is a multiple of F (see `_harmonic_bank`), else `oscillator_bank` (same
            result to float rounding, slower).
        inharmonicity: optional (B,) per-note coefficients B >= 0: partial k sounds at
            ``k sqrt(1 + B k^2) f0`` (stiff strings: piano, guitar, bass), not ``k f0``.
    Returns:
        (B, n_samples) audio.
    """
    _check_precision(phase_precision)
    if f0_hz.dim() == 2:
        f0_hz = f0_hz[..., None]
    _check_frames(distribution, n_samples, "harmonic_synthesis")
    harm_amps = amplitude * distribution  # (B, F, H)
    batch, n_frames = max(harm_amps.shape[0], f0_hz.shape[0]), harm_amps.shape[1]
    harm_amps = harm_amps.expand(batch, -1, -1)
    f0_hz = f0_hz.expand(batch, n_frames, 1)
    if phase_precision == "float64" and n_samples % n_frames == 0 and n_frames < n_samples:
        if amp_resample_method not in ("linear", "window"):
            raise ConfigError(f"unknown resample method {amp_resample_method!r}")
        f0_up = upsample_linear(f0_hz, n_samples)[..., 0]
        return _harmonic_bank(f0_up, harm_amps, n_samples, sample_rate, amp_resample_method,
                              inharmonicity=inharmonicity)
    freqs = upsample_linear(harmonic_frequencies(f0_hz, harm_amps.shape[-1], inharmonicity), n_samples)
    amps = upsample(harm_amps, n_samples, amp_resample_method)
    return oscillator_bank(freqs, amps, sample_rate, phase_precision=phase_precision)
