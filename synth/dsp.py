"""Pure functional DSP core: oscillators, upsampling and helpers (differentiable torch ops).

Controls are frame-rate tensors; signals are sample-rate tensors. Shapes follow DDSP's
conventions but batch-first PyTorch style: amplitudes (B, frames, 1), harmonic distributions
(B, frames, H), frequencies in Hz (B, frames, 1) or (B, frames).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from synth.pitch import midi_to_hz  # noqa: F401  (re-exported: dsp.midi_to_hz)


def exp_sigmoid(x: torch.Tensor, exponent: float = 10.0, max_value: float = 2.0,
                threshold: float = 1e-7) -> torch.Tensor:
    """DDSP's scaled sigmoid: ``max_value * sigmoid(x) ** log(exponent) + threshold``."""
    return max_value * torch.sigmoid(x) ** math.log(exponent) + threshold


def upsample_linear(x: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Linear interpolation of frame controls to the audio rate.

    Args:
        x: (B, frames, C) controls, the first and last frame aligned with the first and last sample.
        n_samples: output length.
    Returns:
        (B, n_samples, C).
    """
    if x.shape[1] == 1:
        return x.expand(-1, n_samples, -1)
    y = F.interpolate(x.transpose(1, 2), size=n_samples, mode="linear", align_corners=True)
    return y.transpose(1, 2)


def remove_above_nyquist(frequencies: torch.Tensor, amplitudes: torch.Tensor,
                         sample_rate: int) -> torch.Tensor:
    """Zero the amplitude of every harmonic at or above Nyquist (anti-aliasing).

    Args:
        frequencies, amplitudes: (B, n, H) in Hz and linear amplitude.
    """
    return amplitudes * (frequencies < sample_rate / 2.0).to(amplitudes.dtype)


def harmonic_frequencies(f0_hz: torch.Tensor, n_harmonics: int) -> torch.Tensor:
    """(B, n, 1) fundamental -> (B, n, H) harmonic frequencies f0 * [1..H]."""
    ratios = torch.arange(1, n_harmonics + 1, device=f0_hz.device, dtype=f0_hz.dtype)
    return f0_hz * ratios


def normalized_harmonic_amplitudes(amplitude: torch.Tensor, distribution: torch.Tensor,
                                   f0_hz: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Harmonic amplitudes with harmonics above Nyquist removed and the distribution renormalised.

    Args:
        amplitude: (B, n, 1) overall amplitude.
        distribution: (B, n, H) non-negative harmonic weights.
        f0_hz: (B, n, 1).
    Returns:
        (B, n, H) per-harmonic amplitudes summing to `amplitude` (where any harmonic survives).
    """
    freqs = harmonic_frequencies(f0_hz, distribution.shape[-1])
    distribution = remove_above_nyquist(freqs, distribution, sample_rate)
    distribution = distribution / distribution.sum(-1, keepdim=True).clamp_min(1e-7)
    return amplitude * distribution


def oscillator_bank(frequencies: torch.Tensor, amplitudes: torch.Tensor, sample_rate: int,
                    initial_phase: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of sinusoids from sample-rate frequencies and amplitudes.

    Phase is the cumulative sum of angular frequency, accumulated in float64 so long notes do
    not drift (DDSP accumulates in float32; `synth.ddsp` offers that mode for parity tests).

    Args:
        frequencies: (B, T, H) Hz per sample.
        amplitudes: (B, T, H) linear amplitude per sample.
        initial_phase: optional (B, 1, H) radians.
    Returns:
        (B, T) audio.
    """
    amplitudes = remove_above_nyquist(frequencies, amplitudes, sample_rate)
    omega = 2.0 * math.pi * frequencies.double() / sample_rate
    phase = torch.cumsum(omega, dim=1)
    if initial_phase is not None:
        phase = phase + initial_phase.double()
    phase = torch.remainder(phase, 2.0 * math.pi).to(amplitudes.dtype)
    return (torch.sin(phase) * amplitudes).sum(-1)


def harmonic_synthesis(f0_hz: torch.Tensor, amplitude: torch.Tensor,
                       distribution: torch.Tensor, n_samples: int,
                       sample_rate: int) -> torch.Tensor:
    """Harmonic oscillator bank from frame-rate controls (linear upsampling).

    Args:
        f0_hz: (B, frames, 1) fundamental in Hz.
        amplitude: (B, frames, 1) overall amplitude.
        distribution: (B, frames, H) harmonic weights (renormalised after Nyquist removal).
        n_samples: output length in samples at `sample_rate`.
    Returns:
        (B, n_samples) audio.
    """
    amps = normalized_harmonic_amplitudes(amplitude, distribution, f0_hz, sample_rate)
    f0_up = upsample_linear(f0_hz, n_samples)
    amps_up = upsample_linear(amps, n_samples)
    freqs = harmonic_frequencies(f0_up, distribution.shape[-1])
    return oscillator_bank(freqs, amps_up, sample_rate)
