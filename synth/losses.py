"""Spectral losses shared by generators and vocoders."""

from __future__ import annotations

import torch


def _stft_mag(x: torch.Tensor, n_fft: int, overlap: float = 0.75) -> torch.Tensor:
    hop = max(1, int(n_fft * (1.0 - overlap)))
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, n_fft, hop_length=hop, win_length=n_fft, window=window, center=True,
                      return_complex=True)
    return spec.abs()


def multiscale_spectral_loss(pred: torch.Tensor, target: torch.Tensor,
                             fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64),
                             log_weight: float = 1.0, eps: float = 1e-7) -> torch.Tensor:
    """DDSP's multi-scale spectral loss: mean |S - S'| + log_weight * mean |log S - log S'|,
    summed over FFT sizes (Hann window, 75 % overlap).

    Args:
        pred, target: (B, T) audio.
    Returns:
        scalar tensor.
    """
    if pred.shape != target.shape:
        raise ValueError(f"loss inputs differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    total = pred.new_zeros(())
    for n_fft in fft_sizes:
        if n_fft > pred.shape[-1]:
            continue
        p, t = _stft_mag(pred, n_fft), _stft_mag(target, n_fft)
        total = total + (p - t).abs().mean()
        if log_weight:
            total = total + log_weight * (torch.log(p + eps) - torch.log(t + eps)).abs().mean()
    return total


def spectral_convergence(pred_mel: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
    """Mean over notes of ||exp(mel) - exp(pred_mel)||_F / ||exp(mel)||_F for (B, n_mels, F)
    log-mels: the error weighted by energy, where the log-mel L1 weighs every bin alike. A bell's
    one loud high partial (the music box: 16 % of its energy in two mel bands) costs the L1 little
    but carries the note's brightness; this term makes it count."""
    true, est = mel.exp(), pred_mel.exp()
    return ((true - est).flatten(1).norm(dim=1) / true.flatten(1).norm(dim=1).clamp_min(1e-8)).mean()
