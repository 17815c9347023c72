"""`hifigan`: the HiFi-GAN generator (Kong, Kim and Bae, 2020) with its MPD + MSD training.

Generator: conv_pre (kernel 7) -> per stage [LeakyReLU(0.1), ConvTranspose1d(rate u, kernel k,
padding (k - u) / 2), multi-receptive-field fusion (the mean of resblocks of several kernel
sizes)] -> LeakyReLU(0.01) -> conv_post (kernel 7) -> tanh. All convolutions are weight-normed
(`torch.nn.utils.parametrizations.weight_norm`); `remove_weight_norm()` folds them for inference.
Weights are drawn from N(0, 0.01) before weight norm is applied (what the official code intends;
its `init_weights` runs after weight norm there and is overwritten).

`variant` picks the paper's V1, V2 or V3; any architecture field left as None comes from it.
The product of the upsample rates must equal the spec's hop length.

Training (`phases() == ["disc", "gen"]`): a batch is {"audio": (B, T)} with T a multiple of hop;
the mel is computed inside with the model's `LogMel`, its last frame dropped so that F = T / hop
frames give T samples. Losses: "disc/adv/{mpd,msd}" (LSGAN, generator output detached);
"gen/mel" (L1 of log-mels, weight 45), "gen/adv/{mpd,msd}", "gen/fm/{mpd,msd}" (weight 2).
With ``discriminators=False`` the model holds only the generator and trains on "gen/mel" alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from synth.errors import AudioError, ConfigError
from synth.features import FeatureSpec, LogMel
from vocoders.base import Vocoder
from vocoders.discriminators import (MPD_CHANNELS, MSD_CHANNELS, MultiPeriodDiscriminator,
                                     MultiScaleDiscriminator)
from vocoders.losses import adversarial_losses, mel_l1_loss, multi_resolution_stft_loss

LRELU_SLOPE = 0.1

#: The paper's configurations (config_v1/v2/v3.json of the official code).
VARIANTS: dict[str, dict] = {
    "v1": dict(upsample_rates=(8, 8, 2, 2), upsample_kernel_sizes=(16, 16, 4, 4),
               upsample_initial_channel=512, resblock=1, resblock_kernel_sizes=(3, 7, 11),
               resblock_dilation_sizes=((1, 3, 5), (1, 3, 5), (1, 3, 5))),
    "v2": dict(upsample_rates=(8, 8, 2, 2), upsample_kernel_sizes=(16, 16, 4, 4),
               upsample_initial_channel=128, resblock=1, resblock_kernel_sizes=(3, 7, 11),
               resblock_dilation_sizes=((1, 3, 5), (1, 3, 5), (1, 3, 5))),
    "v3": dict(upsample_rates=(8, 8, 4), upsample_kernel_sizes=(16, 16, 8),
               upsample_initial_channel=256, resblock=2, resblock_kernel_sizes=(3, 5, 7),
               resblock_dilation_sizes=((1, 2), (2, 6), (3, 12))),
}


@dataclass
class HiFiGANConfig:
    feature_spec: FeatureSpec = field(default_factory=FeatureSpec)
    variant: str = "v1"
    upsample_rates: tuple[int, ...] | None = None
    upsample_kernel_sizes: tuple[int, ...] | None = None
    upsample_initial_channel: int | None = None
    resblock: int | None = None
    resblock_kernel_sizes: tuple[int, ...] | None = None
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] | None = None
    discriminators: bool = True
    stft_loss_weight: float = 0.0  # > 0 adds a multi-resolution STFT loss (helps without critics)
    mpd_periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    mpd_channels: tuple[int, ...] = MPD_CHANNELS
    msd_channels: tuple[int, ...] = MSD_CHANNELS

    def resolved(self) -> "HiFiGANConfig":
        """This config with every None architecture field filled from `variant` (checked)."""
        if self.variant not in VARIANTS:
            raise ConfigError(f"hifigan variant must be one of {sorted(VARIANTS)}, got {self.variant!r}")
        fill = {k: v for k, v in VARIANTS[self.variant].items() if getattr(self, k) is None}
        c = replace(self, **fill)
        rates, kernels = c.upsample_rates, c.upsample_kernel_sizes
        if len(rates) != len(kernels) or not rates:
            raise ConfigError(f"hifigan: {len(rates)} upsample rates but {len(kernels)} kernel sizes")
        if any(k < u or (k - u) % 2 for u, k in zip(rates, kernels)):
            raise ConfigError(f"hifigan: each upsample kernel must be >= its rate with an even "
                              f"difference, got rates {rates} kernels {kernels}")
        total = 1
        for u in rates:
            total *= u
        if total != c.feature_spec.hop_length:
            raise ConfigError(f"hifigan: upsample rates {rates} multiply to {total}, but the "
                              f"feature spec's hop length is {c.feature_spec.hop_length}")
        if c.resblock not in (1, 2):
            raise ConfigError(f"hifigan: resblock must be 1 or 2, got {c.resblock}")
        if len(c.resblock_kernel_sizes) != len(c.resblock_dilation_sizes):
            raise ConfigError("hifigan: resblock_kernel_sizes and resblock_dilation_sizes differ in length")
        if c.upsample_initial_channel % 2 ** len(rates):
            raise ConfigError(f"hifigan: upsample_initial_channel {c.upsample_initial_channel} must "
                              f"be divisible by 2^{len(rates)}")
        return c


def _conv(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Module:
    conv = nn.Conv1d(cin, cout, kernel, 1, dilation=dilation, padding=dilation * (kernel - 1) // 2)
    nn.init.normal_(conv.weight, 0.0, 0.01)
    return weight_norm(conv)


class ResBlock(nn.Module):
    """Type 1: per dilation d, x + conv_1(lrelu(conv_d(lrelu(x)))); type 2: x + conv_d(lrelu(x)).

    (B, C, T) -> (B, C, T); receptive radius `radius` samples at this rate.
    """

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...], kind: int) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(_conv(channels, channels, kernel, d) for d in dilations)
        self.convs2 = (nn.ModuleList(_conv(channels, channels, kernel) for _ in dilations)
                       if kind == 1 else None)
        half = (kernel - 1) // 2
        self.radius = sum(half * d + (half if kind == 1 else 0) for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, c1 in enumerate(self.convs1):
            xt = c1(F.leaky_relu(x, LRELU_SLOPE))
            if self.convs2 is not None:
                xt = self.convs2[i](F.leaky_relu(xt, LRELU_SLOPE))
            x = x + xt
        return x


class HiFiGANGenerator(nn.Module):
    """(B, n_mels, F) mel -> (B, F * prod(upsample_rates)) audio in [-1, 1]."""

    def __init__(self, c: HiFiGANConfig) -> None:
        super().__init__()
        ch = c.upsample_initial_channel
        self.conv_pre = weight_norm(nn.Conv1d(c.feature_spec.n_mels, ch, 7, 1, padding=3))
        self.ups, self.mrfs = nn.ModuleList(), nn.ModuleList()
        for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes)):
            up = nn.ConvTranspose1d(ch // 2 ** i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            nn.init.normal_(up.weight, 0.0, 0.01)
            self.ups.append(weight_norm(up))
            self.mrfs.append(nn.ModuleList(
                ResBlock(ch // 2 ** (i + 1), kr, tuple(ds), c.resblock)
                for kr, ds in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes)
            ))
        self.conv_post = _conv(ch // 2 ** len(c.upsample_rates), 1, 7)
        self.rates, self.kernels = tuple(c.upsample_rates), tuple(c.upsample_kernel_sizes)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(mel)
        for up, mrf in zip(self.ups, self.mrfs):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            x = sum(block(x) for block in mrf) / len(mrf)
        x = self.conv_post(F.leaky_relu(x))  # the official code's default slope 0.01 here
        return torch.tanh(x).squeeze(1)

    def receptive_field(self) -> tuple[int, int]:
        """Frames (left, right) of the mel that reach output block c (samples c*hop..(c+1)*hop-1),
        by interval arithmetic through every layer from the output back to the input."""
        hop = 1
        for u in self.rates:
            hop *= u
        lo, hi = -3, hop - 1 + 3  # conv_post
        for u, k, mrf in reversed(list(zip(self.rates, self.kernels, self.mrfs))):
            r = max(block.radius for block in mrf)
            lo, hi = lo - r, hi + r
            p = (k - u) // 2  # ConvTranspose: output j <- inputs i with i*u - p <= j <= i*u - p + k - 1
            lo, hi = -((-(lo + p - k + 1)) // u), (hi + p) // u
        return -(lo - 3), hi + 3  # conv_pre


class HiFiGAN(Vocoder):
    """HiFi-GAN vocoder: generator plus (optionally) its multi-period and multi-scale critics."""

    kind = "hifigan"
    Config = HiFiGANConfig

    def __init__(self, config: HiFiGANConfig) -> None:
        super().__init__(config)
        self.arch = config.resolved()
        self.generator = HiFiGANGenerator(self.arch)
        self.log_mel = LogMel(config.feature_spec)
        self.discriminators = nn.ModuleDict()
        if config.discriminators:
            self.discriminators["mpd"] = MultiPeriodDiscriminator(config.mpd_periods, config.mpd_channels)
            self.discriminators["msd"] = MultiScaleDiscriminator(config.msd_channels)
        self.weight_norm_removed = False

    @classmethod
    def debug_config(cls) -> HiFiGANConfig:
        spec = FeatureSpec(sample_rate=8000, n_fft=64, hop_length=16, n_mels=16, f_max=4000.0)
        return HiFiGANConfig(
            feature_spec=spec, variant="v1", upsample_rates=(4, 4), upsample_kernel_sizes=(8, 8),
            upsample_initial_channel=16, resblock_kernel_sizes=(3, 5),
            resblock_dilation_sizes=((1, 3), (1, 3)), mpd_periods=(2, 3),
            mpd_channels=(4, 8, 8, 8, 8), msd_channels=(4, 4, 8, 8, 8, 8, 8),
        )

    # -- inference ------------------------------------------------------------------------------
    def forward(self, mel: torch.Tensor, spec: FeatureSpec | None = None) -> torch.Tensor:
        """(B, n_mels, F) log-mel (made under `spec`, if given) -> (B, F * hop) audio."""
        return self.generator(self.check_mel(mel, spec))

    def receptive_field(self) -> tuple[int, int]:
        """Mel frames (left, right) that influence one hop of output; see `HiFiGANGenerator`."""
        return self.generator.receptive_field()

    def remove_weight_norm(self) -> "HiFiGAN":
        """Fold weight norm into plain weights in the generator (inference only, in place).

        The state dict then no longer matches a freshly built model: save before, not after.
        """
        if not self.weight_norm_removed:
            for module in self.generator.modules():
                if parametrize.is_parametrized(module, "weight"):
                    parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            self.weight_norm_removed = True
        return self

    def generator_parameters(self) -> int:
        """Number of generator parameters (what the paper reports; critics excluded)."""
        return sum(p.numel() for p in self.generator.parameters())

    # -- training -------------------------------------------------------------------------------
    def example_batch(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {"audio": example_audio(self.feature_spec, batch_size, generator)}

    def phases(self) -> list[str]:
        return ["disc", "gen"] if self.config.discriminators else ["gen"]

    def make_optimizers(self, lr: float, betas: tuple[float, float] = (0.8, 0.99),
                        weight_decay: float = 0.0) -> dict[str, torch.optim.Optimizer]:
        """AdamW per phase. The Trainer passes its own lr/betas/weight decay: the paper used
        lr 2e-4, betas (0.8, 0.99), weight decay 0.01 (and an lr decay of 0.999 per epoch)."""
        return gan_optimizers(self, lr, betas, weight_decay)

    def loss_weights(self) -> dict[str, float]:
        return {"gen/mrstft": self.config.stft_loss_weight, "gen/mel": 45.0, "gen/fm/mpd": 2.0,
                "gen/fm/msd": 2.0}

    def training_step(self, batch: dict[str, torch.Tensor], phase: str = "gen") -> dict[str, torch.Tensor]:
        return gan_training_step(self, self.generator, batch, phase, average=False)


# -- shared by the GAN vocoders (hifigan, istft) -------------------------------------------------
def example_audio(spec: FeatureSpec, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """(B, 32 * hop) decaying sines plus a little noise."""
    n = 32 * spec.hop_length
    t = torch.arange(n) / spec.sample_rate
    f0 = 100.0 + (spec.sample_rate / 8) * torch.rand(batch_size, 1, generator=generator)
    audio = 0.4 * torch.sin(2 * torch.pi * f0 * t) * torch.exp(-4.0 * t)
    return audio + 0.01 * torch.randn(batch_size, n, generator=generator)


def gan_optimizers(model: Vocoder, lr: float, betas: tuple[float, float],
                    weight_decay: float) -> dict[str, torch.optim.Optimizer]:
    """AdamW for the generator ("gen") and, if present, one for all discriminators ("disc")."""
    opts = {}
    if len(model.discriminators):
        opts["disc"] = torch.optim.AdamW(model.discriminators.parameters(), lr=lr, betas=betas,
                                         weight_decay=weight_decay)
    opts["gen"] = torch.optim.AdamW(model.generator.parameters(), lr=lr, betas=betas,
                                    weight_decay=weight_decay)
    return opts


def gan_training_step(model: Vocoder, generator: nn.Module, batch: dict[str, torch.Tensor], phase: str,
              average: bool) -> dict[str, torch.Tensor]:
    """Named losses of one phase; the generator output is recomputed (without grad) for "disc"."""
    if phase not in model.phases():
        raise ConfigError(f"{model.kind}: unknown phase {phase!r}; phases are {model.phases()}")
    audio = batch["audio"]
    hop = model.feature_spec.hop_length
    if audio.ndim != 2 or audio.shape[-1] % hop:
        raise AudioError(f"{model.kind} trains on audio shaped (B, T) with T a multiple of "
                         f"hop={hop}; got {tuple(audio.shape)}")
    mel = model.log_mel(audio)[..., :-1]  # T / hop frames -> T samples
    if phase == "disc":
        with torch.no_grad():
            fake = generator(mel).to(audio.dtype)
        return adversarial_losses(model.discriminators, audio, fake, "disc", average)
    fake = generator(mel).to(audio.dtype)  # autocast may give bf16; STFT losses need fp32
    losses = {"gen/mel": mel_l1_loss(model.log_mel, fake, audio)}
    if model.config.stft_loss_weight > 0:
        losses["gen/mrstft"] = multi_resolution_stft_loss(fake, audio)
    if model.config.discriminators:
        losses.update(adversarial_losses(model.discriminators, audio, fake, "gen", average))
    return losses
