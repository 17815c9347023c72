"""Vocoder losses: mel L1, multi-resolution STFT, least-squares GAN and feature matching.

All functions take audio shaped (B, T) (or discriminator outputs) and return scalar tensors.
`adversarial_losses` assembles the named losses of one GAN phase for any set of discriminators:

    "disc/adv/<name>"                 discriminator phase (generator output detached by the caller)
    "gen/adv/<name>", "gen/fm/<name>" generator phase

so one key both weights a term (`SynthModule.loss_weights`) and names its log line.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from synth.features import LogMel
from vocoders.discriminators import DiscriminatorOutput


def mel_l1_loss(log_mel: LogMel, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |log-mel(pred) - log-mel(target)| with the model's own `LogMel` (its FeatureSpec).

    Args:
        log_mel: the layer that defines the features (natural log, floor from its spec).
        pred, target: (B, T) audio of the same shape.
    """
    if pred.shape != target.shape:
        raise ValueError(f"mel loss inputs differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    return (log_mel(pred) - log_mel(target)).abs().mean()


def stft_magnitude(audio: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    """(B, T) -> (B, n_fft // 2 + 1, frames) magnitude, Hann window, centred frames."""
    window = torch.hann_window(win, device=audio.device, dtype=audio.dtype)
    spec = torch.stft(audio, n_fft, hop, win, window=window, center=True, return_complex=True)
    return spec.abs().clamp(min=1e-7)


#: Parallel WaveGAN's resolutions: (n_fft, hop, win).
STFT_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))


def multi_resolution_stft_loss(
    pred: torch.Tensor, target: torch.Tensor,
    resolutions: tuple[tuple[int, int, int], ...] = STFT_RESOLUTIONS,
) -> torch.Tensor:
    """Parallel WaveGAN's multi-resolution STFT loss, averaged over resolutions.

    Per resolution: spectral convergence ||S - S'||_F / ||S||_F over the whole batch plus mean
    |log S - log S'| (S the target magnitude).

    Args:
        pred, target: (B, T) audio of the same shape.
        resolutions: (n_fft, hop, win_length) triples.
    """
    if pred.shape != target.shape:
        raise ValueError(f"STFT loss inputs differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if not resolutions:
        raise ValueError("multi_resolution_stft_loss needs at least one resolution")
    total = pred.new_zeros(())
    for n_fft, hop, win in resolutions:
        p, t = stft_magnitude(pred, n_fft, hop, win), stft_magnitude(target, n_fft, hop, win)
        # Over the whole batch, as Parallel WaveGAN: a silent crop cannot blow the ratio up.
        convergence = torch.linalg.vector_norm(t - p) / torch.linalg.vector_norm(t)
        total = total + convergence + (t.log() - p.log()).abs().mean()
    return total / len(resolutions)


def lsgan_generator_loss(fake_logits: list[torch.Tensor], average: bool = False) -> torch.Tensor:
    """Sum (or mean) over sub-discriminators of mean((1 - D(G(s)))^2)."""
    losses = [torch.mean((1.0 - logit) ** 2) for logit in fake_logits]
    total = torch.stack(losses).sum()
    return total / len(losses) if average else total


def lsgan_discriminator_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor],
                             average: bool = False) -> torch.Tensor:
    """Sum (or mean) over sub-discriminators of mean((1 - D(x))^2) + mean(D(G(s))^2)."""
    if len(real_logits) != len(fake_logits):
        raise ValueError(f"{len(real_logits)} real vs {len(fake_logits)} fake logit tensors")
    losses = [torch.mean((1.0 - r) ** 2) + torch.mean(f ** 2)
              for r, f in zip(real_logits, fake_logits)]
    total = torch.stack(losses).sum()
    return total / len(losses) if average else total


def feature_matching_loss(real_features: list[list[torch.Tensor]],
                          fake_features: list[list[torch.Tensor]],
                          average: bool = False) -> torch.Tensor:
    """HiFi-GAN's feature matching: sum over sub-discriminators and layers of mean |r - g|
    (divided by the number of sub-discriminators when `average`, as Vocos does)."""
    total, count = None, 0
    for real, fake in zip(real_features, fake_features, strict=True):
        for r, g in zip(real, fake, strict=True):
            term = torch.mean(torch.abs(r.detach() - g))
            total = term if total is None else total + term
        count += 1
    if total is None:
        raise ValueError("feature_matching_loss got no feature maps")
    return total / count if average else total


def _split(out: DiscriminatorOutput, n: int) -> tuple[DiscriminatorOutput, DiscriminatorOutput]:
    """Split the output of a discriminator run on cat([real, fake]) into its two halves."""
    real = DiscriminatorOutput([x[:n] for x in out.logits], [[f[:n] for f in fm] for fm in out.features])
    fake = DiscriminatorOutput([x[n:] for x in out.logits], [[f[n:] for f in fm] for fm in out.features])
    return real, fake


def adversarial_losses(discriminators: Mapping[str, nn.Module], real: torch.Tensor,
                       fake: torch.Tensor, phase: str, average: bool = False) -> dict[str, torch.Tensor]:
    """Named LSGAN (and feature-matching) losses of one phase for several discriminators.

    Args:
        discriminators: name -> module mapping (B, T) audio to a `DiscriminatorOutput`.
        real, fake: (B, T) audio. In the "disc" phase pass a detached `fake`.
        phase: "disc" -> {"disc/adv/<name>"}; "gen" -> {"gen/adv/<name>", "gen/fm/<name>"}.
        average: divide each term by the number of sub-discriminators (Vocos) instead of
            summing (HiFi-GAN).
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} audio differ")
    n = real.shape[0]
    losses: dict[str, torch.Tensor] = {}
    for name, disc in discriminators.items():
        if phase == "disc":
            r, f = _split(disc(torch.cat([real, fake])), n)
            losses[f"disc/adv/{name}"] = lsgan_discriminator_loss(r.logits, f.logits, average)
        elif phase == "gen":
            with torch.no_grad():
                r = disc(real)
            f = disc(fake)
            losses[f"gen/adv/{name}"] = lsgan_generator_loss(f.logits, average)
            losses[f"gen/fm/{name}"] = feature_matching_loss(r.features, f.features, average)
        else:
            raise ValueError(f"unknown GAN phase {phase!r}; expected 'disc' or 'gen'")
    return losses
