"""Partial analysis: the amplitude of each harmonic of a known f0, frame by frame.

The supervision behind `DDSPConfig.harmonic_loss_weight`: a note's harmonic distribution
(the relative level of each partial) is what makes it sound like its instrument
(bench/ddsp_harmonics.py: the bundled model's own amplitude envelope with a note's analysed
per-partial spectrum is recognised by the note classifier 4-5 times as often as with the model's
distribution, and the same spectrum smoothed over 5 neighbouring partials loses most of that).
A multi-scale spectral loss teaches that fine structure only weakly.
"""

from __future__ import annotations

import torch

from synth.errors import ConfigError


def partial_amplitudes(audio: torch.Tensor, f0_hz: torch.Tensor, sample_rate: int, hop: int,
                       frames: int, n_partials: int, inharmonicity: torch.Tensor | None = None,
                       n_fft: int = 2048, search_bins: int = 2) -> torch.Tensor:
    """Sine amplitudes of partials k f0 (k sqrt(1 + B k^2) f0 with `inharmonicity` B), k = 1..K.

    Read off a Hann STFT (frames centred every `hop` samples, the first at sample 0): the
    largest magnitude within +-`search_bins` bins of each partial's frequency, times
    2 / sum(window) (a steady sine of amplitude A reads A). Partials at or above Nyquist are 0.

    Args:
        audio: (B, T) waveforms; f0_hz: (B,) one f0 per note, or (B, frames) one per frame;
        inharmonicity: optional (B,).
    Returns:
        (B, frames, n_partials) amplitudes, float like `audio`.
    """
    if audio.ndim != 2 or f0_hz.shape not in ((audio.shape[0],), (audio.shape[0], frames)):
        raise ConfigError(f"partial_amplitudes: audio (B, T) and f0_hz (B,) or (B, frames), "
                          f"got {tuple(audio.shape)} and {tuple(f0_hz.shape)}")
    win = torch.hann_window(n_fft, dtype=audio.dtype, device=audio.device)
    spec = torch.stft(audio, n_fft, hop, window=win, center=True, pad_mode="constant",
                      return_complex=True).abs()
    spec = spec.transpose(1, 2)[:, :frames]  # (B, frames', bins)
    if spec.shape[1] < frames:
        spec = torch.nn.functional.pad(spec, (0, 0, 0, frames - spec.shape[1]))
    k = torch.arange(1, n_partials + 1, dtype=audio.dtype, device=audio.device)
    per_frame = f0_hz.expand(frames, -1).T if f0_hz.ndim == 1 else f0_hz
    freq = per_frame[..., None].to(audio.dtype) * k                      # (B, frames, K)
    if inharmonicity is not None:
        freq = freq * torch.sqrt(1 + inharmonicity[:, None, None].to(audio.dtype) * k ** 2)
    centre = (freq / sample_rate * n_fft).round().long()
    best = torch.zeros(audio.shape[0], frames, n_partials, dtype=audio.dtype, device=audio.device)
    for d in range(-search_bins, search_bins + 1):
        best = torch.maximum(best, spec.gather(2, (centre + d).clamp(0, n_fft // 2)))
    below = (freq < sample_rate / 2).to(audio.dtype)
    return 2 * best / win.sum() * below


def note_distribution(amplitudes: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(B, F, K) per-frame partial amplitudes -> (B, K) the note's mean distribution (sums to 1).

    Frames are weighted by `weights` (B, F) (default: their harmonic energy, sum of squared
    amplitudes), so the loud part of the note decides and silent frames count for nothing.
    """
    if weights is None:
        weights = amplitudes.pow(2).sum(-1)
    dist = amplitudes / amplitudes.sum(-1, keepdim=True).clamp_min(1e-12)
    w = weights[..., None]
    mean = (dist * w).sum(1) / w.sum(1).clamp_min(1e-12)
    return mean / mean.sum(-1, keepdim=True).clamp_min(1e-12)
