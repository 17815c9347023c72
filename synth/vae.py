"""`vae`: a whole-note mel VAE whose latent carries timbre, with pitch and velocity given.

Encoder: the note's log-mel (B, n_mels, n_frames), normalised by the config's fixed
offset/scale and padded with silence to a multiple of 2**(len(channels) - 1) frames, through a
strided conv stack (`DownStack`), flattened -> mu, logvar (B, D): one global z per note.
Decoder: [z, pitch embedding (MIDI 0-127, interpolated between rows for fractional pitches),
velocity embedding] -> MLP -> (B, channels[-1], frames') -> upsampling conv stack with FiLM from
the same vector (`UpStack`) -> log-mel (B, n_mels, n_frames). With `harmonic_head` (default) the
stack emits harmonic and noise envelopes (B, 2 n_mels, n_frames) and the pitch's harmonic comb is
drawn analytically (`synth.harmonic_mel.HarmonicMelHead`), so z carries timbre and pitch is
exact. `inharmonic_grid` adds cosines at fixed ratios to f0 on a log grid (bells, music box;
`HarmonicMelHead`). Audio comes from the vocoder (`MelGenerator.decode`).

Loss: L1 (+ optional L2) on the normalised log-mel, plus beta * KL with a linear warm-up over
`kl_warmup_steps` and free bits: each dimension's batch-mean KL counts as at least `free_bits`
nats (Kingma et al. 2016), so no dimension is pushed into collapse. The warm-up reads the model's
own step counter (a buffer set by `on_train_step_end`, saved and resumed with the weights).
With `morph_weight` / `morph_linear_weight`, the morph regulariser (`synth.morph`) keeps the
centroid of decoded interpolations between batch pairs in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from synth.base import Conditions
from synth.errors import ConfigError
from synth.features import FeatureSpec
from synth.melgen import DownStack, FractionalEmbedding, MelGenerator, UpStack
from synth.losses import spectral_convergence
from synth.morph import MelCentroid, morph_losses


@dataclass
class VAEConfig:
    feature_spec: FeatureSpec = field(default_factory=FeatureSpec)
    vocoder: str = "griffinlim"  # until a trained vocoder beats it (bench/vocoder_eval.py)
    note_seconds: float = 4.0
    latent_dim: int = 16
    channels: tuple[int, ...] = (64, 96, 128, 160, 192)
    kernel_size: int = 5
    pitch_dim: int = 32
    velocity_dim: int = 8
    cond_hidden: int = 256
    mel_offset: float = -8.0
    mel_scale: float = 3.0
    beta: float = 1e-3
    kl_warmup_steps: int = 2000
    free_bits: float = 0.25
    l2_weight: float = 0.0
    sc_weight: float = 0.0  # spectral convergence on the linear mel (energy-weighted; see training_step)
    harmonic_head: bool = True  # source-filter output (synth/harmonic_mel.py)
    inharmonic_grid: int = 0  # bins per octave of the head's inharmonic grid (0 = none)
    inharmonic_octaves: float = 6.0  # the grid spans ratios 1 .. 2 ** octaves of f0
    morph_weight: float = 0.0  # centroid-order hinge on interpolations (synth/morph.py)
    morph_linear_weight: float = 0.0  # log-mel linearity along interpolations (synth/morph.py)
    morph_shrink: float = 0.0  # chords also between endpoints pulled towards the mean (synth/morph.py)
    morph_sc_weight: float = 0.0  # energy-weighted distance to the chord's crossfade (synth/morph.py)
    morph_shrink_share: float = 1.0  # share of the chords that morph_shrink pulls inwards

    def __post_init__(self) -> None:
        if self.morph_weight < 0 or self.morph_linear_weight < 0:
            raise ConfigError("vae: morph_weight and morph_linear_weight must be >= 0")
        if self.morph_sc_weight < 0:
            raise ConfigError("vae: morph_sc_weight must be >= 0")
        if not 0.0 <= self.morph_shrink_share <= 1.0:
            raise ConfigError(f"vae: morph_shrink_share must be in [0, 1], got {self.morph_shrink_share}")
        if not 0.0 <= self.morph_shrink < 1.0:
            raise ConfigError(f"vae: morph_shrink must be in [0, 1), got {self.morph_shrink}")
        if self.inharmonic_grid < 0 or self.inharmonic_octaves <= 0:
            raise ConfigError("vae: inharmonic_grid must be >= 0 and inharmonic_octaves > 0")
        if self.inharmonic_grid and not self.harmonic_head:
            raise ConfigError("vae: inharmonic_grid needs harmonic_head")
        if self.latent_dim < 1 or not self.channels or min(self.channels) < 1:
            raise ConfigError(f"vae: latent_dim and channels must be positive, got {self.latent_dim}, "
                              f"{self.channels}")
        if min(self.beta, self.free_bits, self.kl_warmup_steps, self.l2_weight, self.sc_weight) < 0:
            raise ConfigError("vae: beta, free_bits, kl_warmup_steps, l2_weight and sc_weight must be >= 0")
        if self.mel_scale <= 0:
            raise ConfigError(f"vae: mel_scale must be positive, got {self.mel_scale}")


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per item and dimension, (B, D) nats."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


def free_bits_kl(kl: torch.Tensor, free_bits: float) -> torch.Tensor:
    """(B, D) KL -> scalar: sum over dimensions of max(batch-mean KL, free_bits)."""
    return kl.mean(0).clamp_min(free_bits).sum()


class VAEGenerator(MelGenerator):
    """Mel VAE: global z (B, D) per note; decode needs pitch (and velocity, default 100)."""

    kind = "vae"
    Config = VAEConfig

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        c, n_mels = config, config.feature_spec.n_mels
        self.encoder = DownStack(n_mels, tuple(c.channels), c.kernel_size)
        self.factor = self.encoder.factor
        self.code_frames = -(-self.n_frames // self.factor)  # ceil
        flat = c.channels[-1] * self.code_frames
        self.to_posterior = nn.Sequential(nn.LayerNorm(flat), nn.Linear(flat, 2 * c.latent_dim))
        self.pitch_emb = FractionalEmbedding(128, c.pitch_dim)
        self.velocity_emb = FractionalEmbedding(128, c.velocity_dim)
        cond_in = c.latent_dim + c.pitch_dim + c.velocity_dim
        self.cond_mlp = nn.Sequential(nn.Linear(cond_in, c.cond_hidden), nn.LeakyReLU(0.2),
                                      nn.Linear(c.cond_hidden, c.cond_hidden), nn.LeakyReLU(0.2))
        self.to_frames = nn.Linear(c.cond_hidden, flat)
        self.decoder = UpStack(self.decoder_channels, tuple(c.channels), c.kernel_size, c.cond_hidden)
        self.register_buffer("train_step", torch.zeros((), dtype=torch.long))
        self.morph_centroid = (MelCentroid(config.feature_spec)
                               if c.morph_weight > 0 or c.morph_linear_weight > 0 or c.morph_sc_weight > 0
                               else None)

    @classmethod
    def debug_config(cls) -> VAEConfig:
        spec = FeatureSpec(sample_rate=8000, n_fft=64, hop_length=16, n_mels=16, f_max=4000.0)
        return VAEConfig(feature_spec=spec, vocoder="griffinlim", note_seconds=0.5, latent_dim=4,
                         channels=(8, 12, 16), kernel_size=3, pitch_dim=4, velocity_dim=2,
                         cond_hidden=16, kl_warmup_steps=10)

    # -- encoder ------------------------------------------------------------------------------
    def posterior(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n_mels, n_frames) log-mel -> (mu, logvar), each (B, D)."""
        x = self.pad_frames(self.normalize(mel), self.factor)
        h = self.encoder(x).flatten(1)
        mu, logvar = self.to_posterior(h).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 6.0)

    def encode(self, audio: torch.Tensor, cond: Conditions | None = None) -> torch.Tensor:
        """(B, T) audio (cropped/padded to the note length) -> (B, D) posterior mean."""
        return self.posterior(self.mel(audio))[0]

    # -- decoder ------------------------------------------------------------------------------
    def decode_normalized(self, z: torch.Tensor, pitch: torch.Tensor, velocity: torch.Tensor
                          ) -> torch.Tensor:
        """z (B, D), pitch (B,), velocity (B,) -> (B, n_mels, n_frames) normalised log-mel."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ConfigError(f"vae: latent must be (B, {self.latent_dim}), got {tuple(z.shape)}")
        h = self.cond_mlp(torch.cat([z, self.pitch_emb(pitch), self.velocity_emb(velocity)], -1))
        x = self.to_frames(h).reshape(z.shape[0], self.config.channels[-1], self.code_frames)
        return self.output_head(self.decoder(x, h)[..., : self.n_frames], pitch)

    def decode_mel(self, latent: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """z (B, D) + conditions (pitch required) -> (B, n_mels, n_frames) log-mel."""
        pitch, velocity = self.require_note(cond, latent.shape[0], latent.device)
        return self.denormalize(self.decode_normalized(latent, pitch, velocity))

    # -- training -----------------------------------------------------------------------------
    def kl_weight(self, step: int | None = None) -> float:
        """beta * min(1, step / kl_warmup_steps) at `step` (default: the model's own count)."""
        step = int(self.train_step) if step is None else step
        warm = self.config.kl_warmup_steps
        return self.config.beta * (1.0 if warm == 0 else min(1.0, step / warm))

    def loss_weights(self) -> dict[str, float]:
        return {"vae/kl": self.kl_weight(), "recon/l2": self.config.l2_weight, "recon/sc": self.config.sc_weight,
                "morph/order": self.config.morph_weight, "morph/anchor": self.config.morph_weight,
                "morph/linear": self.config.morph_linear_weight, "morph/sc": self.config.morph_sc_weight}

    def on_train_step_end(self, step: int) -> None:
        self.train_step.fill_(step)

    def training_step(self, batch: dict[str, torch.Tensor], phase: str = "main") -> dict[str, torch.Tensor]:
        """Batch {"audio" (B, T), "pitch" (B,), "velocity" (B,)} -> {"recon/l1", "vae/kl", ...}.

        "vae/kl" is the free-bits KL (weighted by `kl_weight` through `loss_weights`);
        "log/vae/kl" is the plain KL per note, logged only.
        """
        mel = self.mel(batch["audio"])
        target = self.normalize(mel)
        mu, logvar = self.posterior(mel)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        pred = self.decode_normalized(z, batch["pitch"], batch["velocity"])
        kl = kl_per_dim(mu, logvar)
        out = {"recon/l1": (pred - target).abs().mean(),
               "vae/kl": free_bits_kl(kl, self.config.free_bits),
               "log/vae/kl": kl.sum(1).mean().detach()}
        if self.config.l2_weight > 0:
            out["recon/l2"] = (pred - target).square().mean()
        if self.config.sc_weight > 0:
            out["recon/sc"] = spectral_convergence(self.denormalize(pred), mel)
        if self.morph_centroid is not None:
            out.update(morph_losses(self.decode_normalized, self.denormalize, self.morph_centroid, z,
                                    pred, batch["pitch"], batch["velocity"], ceiling=mel.max().detach(), target=mel,
                                    linear=self.config.morph_linear_weight > 0,
                                    shrink=self.config.morph_shrink,
                                    shrink_share=self.config.morph_shrink_share,
                                    sc=self.config.morph_sc_weight > 0))
        return out

