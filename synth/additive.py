"""`additive`: the reference generator, a small oscillator-bank autoencoder.

A global latent z (B, D) plus pitch and velocity drive a harmonic distribution and an amplitude
envelope, rendered by `synth.dsp.harmonic_synthesis`. It is deliberately simple: it exercises
every contract (encode, decode, sample, controls, training, checkpoints) in milliseconds, and is a
baseline for the richer DDSP model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from synth import dsp
from synth.base import Conditions, Generator
from synth.errors import ConfigError
from synth.losses import multiscale_spectral_loss


@dataclass
class AdditiveConfig:
    sample_rate: int = 16000
    latent_dim: int = 8
    n_harmonics: int = 48
    n_envelope: int = 32
    hidden: int = 128
    n_fft: int = 1024
    note_seconds: float = 1.0


class AdditiveGenerator(Generator):
    """Harmonic oscillator bank driven by (z, pitch, velocity)."""

    kind = "additive"
    Config = AdditiveConfig

    def __init__(self, config: AdditiveConfig) -> None:
        super().__init__(config)
        c = config
        n_bins = c.n_fft // 2 + 1
        self.encoder = nn.Sequential(
            nn.Linear(n_bins, c.hidden), nn.GELU(), nn.Linear(c.hidden, c.latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(c.latent_dim + 2, c.hidden), nn.GELU(),
            nn.Linear(c.hidden, c.hidden), nn.GELU(),
            nn.Linear(c.hidden, c.n_harmonics + c.n_envelope),
        )
        self.register_buffer("window", torch.hann_window(c.n_fft), persistent=False)

    @classmethod
    def debug_config(cls) -> AdditiveConfig:
        return AdditiveConfig(sample_rate=8000, latent_dim=4, n_harmonics=8, n_envelope=8,
                              hidden=16, n_fft=256, note_seconds=0.25)

    def _n_samples(self, cond: Conditions) -> int:
        seconds = cond.duration if cond.duration is not None else self.config.note_seconds
        if seconds <= 0:
            raise ConfigError(f"duration must be positive, got {seconds}")
        return int(round(seconds * self.sample_rate))

    def encode(self, audio: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """(B, T) audio -> (B, D) latent from the time-averaged log spectrum."""
        spec = torch.stft(audio, self.config.n_fft, hop_length=self.config.n_fft // 4,
                          window=self.window, return_complex=True).abs()
        feats = torch.log(spec.mean(-1) + 1e-5)
        return self.encoder(feats)

    def decode(self, latent: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """(B, D) latent + pitch/velocity -> (B, T) audio."""
        if cond.pitch is None:
            raise ConfigError("the additive generator needs a pitch condition")
        b = latent.shape[0]
        cond = cond.expand(b).to(latent.device)
        velocity = cond.velocity if cond.velocity is not None else torch.full_like(cond.pitch, 100.0)
        x = torch.cat([latent, (cond.pitch[:, None] - 60.0) / 24.0,
                       velocity[:, None] / 127.0], dim=-1)
        out = self.decoder(x)
        h = self.config.n_harmonics
        distribution = torch.softmax(out[:, :h], dim=-1)
        envelope = dsp.exp_sigmoid(out[:, h:], max_value=1.0)[..., None]  # (B, E, 1)
        e = envelope.shape[1]
        f0 = dsp.midi_to_hz(cond.pitch).to(latent)[:, None, None].expand(b, e, 1)
        dist = dsp.normalize_harmonics(distribution[:, None, :].expand(b, e, h), f0, self.sample_rate)
        return dsp.harmonic_synthesis(f0, envelope, dist, self._n_samples(cond), self.sample_rate)

    def example_batch(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        n = int(self.config.note_seconds * self.sample_rate)
        pitch = torch.randint(48, 72, (batch_size,), generator=generator).float()
        t = torch.arange(n) / self.sample_rate
        f0 = dsp.midi_to_hz(pitch)[:, None]
        audio = 0.3 * torch.sin(2 * torch.pi * f0 * t) * torch.exp(-3 * t)
        audio = audio + 0.01 * torch.randn(batch_size, n, generator=generator)
        return {"audio": audio, "pitch": pitch,
                "velocity": torch.randint(20, 127, (batch_size,), generator=generator).float()}

    def training_step(self, batch: dict[str, torch.Tensor], phase: str = "main") -> dict[str, torch.Tensor]:
        audio = batch["audio"]
        cond = Conditions(pitch=batch["pitch"], velocity=batch.get("velocity"),
                          duration=audio.shape[-1] / self.sample_rate)
        recon = self.decode(self.encode(audio, cond), cond)
        sizes = tuple(s for s in (2048, 1024, 512, 256, 128, 64) if s <= audio.shape[-1])
        return {"recon/mss": multiscale_spectral_loss(recon, audio, fft_sizes=sizes)}
