"""GAN discriminators for the neural vocoders: multi-period, multi-scale, multi-resolution.

- `MultiPeriodDiscriminator` (HiFi-GAN, Kong et al. 2020): audio (B, T) reshaped to
  (B, 1, T / p, p) for each period p and judged by 2-D convolutions with (k, 1) kernels.
- `MultiScaleDiscriminator` (MelGAN / HiFi-GAN): 1-D grouped convolutions on the raw audio and on
  2x and 4x average-pooled copies; the first scale uses spectral norm, the others weight norm.
- `MultiResolutionDiscriminator` (UnivNet / DAC, as used by Vocos): 2-D convolutions over the
  real/imaginary STFT of the audio at several FFT sizes, split into frequency bands.

Every discriminator maps audio (B, T) to a `DiscriminatorOutput`: one logit tensor (B, N_i) per
sub-discriminator and its intermediate feature maps (for the feature-matching loss). Channel
widths are configurable so that debug configs stay tiny; the defaults are the papers'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

LRELU_SLOPE = 0.1

#: HiFi-GAN's DiscriminatorS layers: (kernel, stride, groups); channel widths are separate.
MSD_LAYERS = ((15, 1, 1), (41, 2, 4), (41, 2, 16), (41, 4, 16), (41, 4, 16), (41, 1, 16), (5, 1, 1))
MSD_CHANNELS = (128, 128, 256, 512, 1024, 1024, 1024)
MPD_CHANNELS = (32, 128, 512, 1024, 1024)
MRD_BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


@dataclass
class DiscriminatorOutput:
    """What a multi-discriminator says about a batch.

    Attributes:
        logits: one (B, N_i) tensor per sub-discriminator (flattened patch scores).
        features: one list of intermediate activations per sub-discriminator.
    """

    logits: list[torch.Tensor]
    features: list[list[torch.Tensor]]


def _as_input(audio: torch.Tensor) -> torch.Tensor:
    if audio.ndim != 2:
        raise ValueError(f"discriminators take audio shaped (B, T), got {tuple(audio.shape)}")
    return audio


class PeriodDiscriminator(nn.Module):
    """One period p of the MPD: (B, T) -> logits (B, N) and 2-D feature maps (B, C, T'/p, p)."""

    def __init__(self, period: int, channels: tuple[int, ...] = MPD_CHANNELS,
                 kernel_size: int = 5, stride: int = 3) -> None:
        super().__init__()
        self.period = int(period)
        widths = (1, *channels)
        pad = (kernel_size - 1) // 2
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(cin, cout, (kernel_size, 1),
                                  (stride if i < len(channels) - 1 else 1, 1), padding=(pad, 0)))
            for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:]))
        )
        self.post = weight_norm(nn.Conv2d(channels[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, t = audio.shape
        if t % self.period:
            pad = self.period - t % self.period
            mode = "reflect" if pad < t else "constant"
            audio = F.pad(audio, (0, pad), mode=mode)
        x = audio.view(b, 1, -1, self.period)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            features.append(x)
        x = self.post(x)
        features.append(x)
        return x.flatten(1), features


class MultiPeriodDiscriminator(nn.Module):
    """HiFi-GAN's MPD: one `PeriodDiscriminator` per period (2, 3, 5, 7, 11 by default)."""

    def __init__(self, periods: tuple[int, ...] = (2, 3, 5, 7, 11),
                 channels: tuple[int, ...] = MPD_CHANNELS) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels) for p in periods)

    def forward(self, audio: torch.Tensor) -> DiscriminatorOutput:
        """(B, T) audio -> logits and features of each period."""
        audio = _as_input(audio)
        outs = [d(audio) for d in self.discriminators]
        return DiscriminatorOutput([o[0] for o in outs], [o[1] for o in outs])


class ScaleDiscriminator(nn.Module):
    """One scale of the MSD: (B, T) -> logits (B, N) and 1-D feature maps (B, C, T')."""

    def __init__(self, channels: tuple[int, ...] = MSD_CHANNELS, spectral: bool = False) -> None:
        super().__init__()
        if len(channels) != len(MSD_LAYERS):
            raise ValueError(f"MSD needs {len(MSD_LAYERS)} channel widths, got {channels}")
        norm = spectral_norm if spectral else weight_norm
        widths = (1, *channels)
        layers = []
        for (kernel, stride, groups), cin, cout in zip(MSD_LAYERS, widths[:-1], widths[1:]):
            groups = math.gcd(groups, math.gcd(cin, cout))  # the paper's groups, or fewer if narrow
            layers.append(norm(nn.Conv1d(cin, cout, kernel, stride, groups=groups,
                                         padding=(kernel - 1) // 2)))
        self.convs = nn.ModuleList(layers)
        self.post = norm(nn.Conv1d(channels[-1], 1, 3, 1, padding=1))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = audio.unsqueeze(1)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            features.append(x)
        x = self.post(x)
        features.append(x)
        return x.flatten(1), features


class MultiScaleDiscriminator(nn.Module):
    """HiFi-GAN's MSD: scales 1, 1/2, 1/4 (AvgPool1d(4, 2, padding=2) between them)."""

    def __init__(self, channels: tuple[int, ...] = MSD_CHANNELS, scales: int = 3) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            ScaleDiscriminator(channels, spectral=(i == 0)) for i in range(scales)
        )
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, audio: torch.Tensor) -> DiscriminatorOutput:
        """(B, T) audio -> logits and features of each scale."""
        x = _as_input(audio)
        logits, features = [], []
        for i, d in enumerate(self.discriminators):
            if i > 0:
                x = self.pool(x.unsqueeze(1)).squeeze(1)
            score, fmap = d(x)
            logits.append(score)
            features.append(fmap)
        return DiscriminatorOutput(logits, features)


class ResolutionDiscriminator(nn.Module):
    """One FFT size of the MRD (Vocos/DAC): complex STFT split in bands, 2-D convs per band.

    (B, T) -> logits (B, N) and feature maps (B, C, frames, bins'). The audio is made zero-mean
    and peak-normalised to 0.8 first, as in Vocos.
    """

    def __init__(self, n_fft: int, channels: int = 32, hop_factor: float = 0.25,
                 bands: tuple[tuple[float, float], ...] = MRD_BANDS) -> None:
        super().__init__()
        self.n_fft, self.hop = int(n_fft), max(1, int(n_fft * hop_factor))
        n_bins = n_fft // 2 + 1
        self.bands = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in bands]
        if any(hi <= lo for lo, hi in self.bands):
            raise ValueError(f"MRD n_fft={n_fft} is too small for its {len(bands)} bands")
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

        def stack() -> nn.ModuleList:
            return nn.ModuleList([
                weight_norm(nn.Conv2d(2, channels, (3, 9), (1, 1), padding=(1, 4))),
                weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4))),
                weight_norm(nn.Conv2d(channels, channels, (3, 3), (1, 1), padding=(1, 1))),
            ])

        self.band_convs = nn.ModuleList(stack() for _ in self.bands)
        self.post = weight_norm(nn.Conv2d(channels, 1, (3, 3), (1, 1), padding=(1, 1)))

    def spectrogram(self, audio: torch.Tensor) -> list[torch.Tensor]:
        """(B, T) -> one (B, 2, frames, band bins) real/imag tensor per band."""
        x = audio - audio.mean(dim=-1, keepdim=True)
        x = 0.8 * x / (x.abs().amax(dim=-1, keepdim=True) + 1e-9)
        spec = torch.stft(x, self.n_fft, self.hop, self.n_fft, window=self.window, center=True,
                          return_complex=True)
        x = torch.view_as_real(spec).permute(0, 3, 2, 1)  # (B, 2, frames, bins)
        return [x[..., lo:hi] for lo, hi in self.bands]

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features, outs = [], []
        for band, stack in zip(self.spectrogram(audio), self.band_convs):
            for conv in stack:
                band = F.leaky_relu(conv(band), LRELU_SLOPE)
                features.append(band)
            outs.append(band)
        x = self.post(torch.cat(outs, dim=-1))
        features.append(x)
        return x.flatten(1), features


class MultiResolutionDiscriminator(nn.Module):
    """Vocos's MRD: one `ResolutionDiscriminator` per FFT size (2048, 1024, 512 by default)."""

    def __init__(self, fft_sizes: tuple[int, ...] = (2048, 1024, 512), channels: int = 32) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            ResolutionDiscriminator(n, channels) for n in fft_sizes
        )

    def forward(self, audio: torch.Tensor) -> DiscriminatorOutput:
        """(B, T) audio -> logits and features of each FFT size."""
        audio = _as_input(audio)
        outs = [d(audio) for d in self.discriminators]
        return DiscriminatorOutput([o[0] for o in outs], [o[1] for o in outs])
