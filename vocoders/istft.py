"""`istft`: a Vocos-style vocoder (Siuzdak, 2023): ConvNeXt backbone, STFT head, inverse STFT.

Backbone: Conv1d(n_mels, dim, 7) embedding -> LayerNorm -> N ConvNeXt blocks (depthwise conv 7,
LayerNorm, Linear(dim, intermediate) -> GELU -> Linear(intermediate, dim), layer scale, residual)
-> LayerNorm. Every layer keeps the frame rate; nothing mixes frames but the depthwise convs.

Head: Linear(dim, n_fft + 2) -> log-magnitude m and angle p per bin; the spectrum is
exp(min(m, log 100)) * (cos p + i sin p) (Vocos clips the magnitude at 100 the same way) and
`torch.istft` with the spec's n_fft and hop, Hann window, ``center=True`` and
``length = F * hop``. So frame k is centred at sample k * hop, exactly as in `synth.features`
(Vocos's "same" padding would centre it at k * hop + hop / 2). The window-envelope division does
not depend on the input, so the model is translation-equivariant in frames and chunked synthesis
is exact (`vocoders.chunked`).

The default config is Vocos-base (dim 512, intermediate 1536, 8 layers) on the default 16 kHz
FeatureSpec (80 mels, n_fft 1024, hop 256): 13.46M generator parameters. Training: the same
phases as `hifigan`, with Vocos's critics and weights: multi-period ("mpd") and multi-resolution
("mrd") discriminators, each LSGAN / feature-matching term averaged over sub-discriminators,
weights "gen/mel" 45 and 0.1 on every "mrd" term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from synth.errors import AudioError, ConfigError
from synth.features import FeatureSpec, LogMel
from vocoders.base import Vocoder
from vocoders.discriminators import MPD_CHANNELS, MultiPeriodDiscriminator, MultiResolutionDiscriminator
from vocoders.griffinlim import INITS, GriffinLim, GriffinLimConfig, fast_griffin_lim, initial_angles
from vocoders.hifigan import example_audio, gan_optimizers, gan_training_step


@dataclass
class ISTFTConfig:
    feature_spec: FeatureSpec = field(default_factory=FeatureSpec)
    dim: int = 512
    intermediate_dim: int = 1536
    num_layers: int = 8
    kernel_size: int = 7
    layer_scale_init: float | None = None  # None: 1 / num_layers, as Vocos
    max_log_magnitude: float = math.log(100.0)
    discriminators: bool = True
    stft_loss_weight: float = 0.0  # > 0 adds a multi-resolution STFT loss (helps without critics)
    mpd_periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    mpd_channels: tuple[int, ...] = MPD_CHANNELS
    mrd_fft_sizes: tuple[int, ...] = (2048, 1024, 512)
    mrd_channels: int = 32
    # "predict": the phase head (Vocos); "griffinlim": magnitude head only, phases by fast
    # Griffin-Lim on the predicted magnitude, trained on the STFT magnitude alone (no critics).
    phase: str = "predict"
    gl_iters: int = 32
    gl_momentum: float = 0.99
    gl_seed: int = 0
    gl_init: str = "random"  # Griffin-Lim's start: "random", "zeros" or "pghi" (vocoders/griffinlim.py)
    magnitude_floor: float = 1e-4  # "griffinlim" training: log-magnitude L1 counts above this
    # ... and, when set, above this many dB below each crop's peak bin (the evaluation's
    # MR-STFT counts 80 dB below the note's peak: bins further down are inaudible and, in the
    # corpus, a third of all bins)
    magnitude_range_db: float | None = None
    # The head's log-magnitude is a residual over the mel's NNLS inversion (the Griffin-Lim
    # vocoder's `linear_magnitude`, floored at magnitude_floor): training starts from it.
    mel_prior: bool = False
    # "griffinlim" training: > 0 adds "gen/gl": the multi-resolution STFT distance (the evaluation's
    # own, latent.metrics) of the audio that `gl_train_iters` fast Griffin-Lim iterations make
    # from the predicted magnitude, gradients through every iteration. It trains the magnitude
    # for what Griffin-Lim makes of it (consistency across resolutions), not only bin by bin.
    gl_loss_weight: float = 0.0
    gl_train_iters: int = 16


class ConvNeXtBlock(nn.Module):
    """(B, C, F) -> (B, C, F): x + gamma * MLP(LayerNorm(depthwise_conv(x)))."""

    def __init__(self, dim: int, intermediate_dim: int, kernel_size: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).transpose(1, 2))
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.transpose(1, 2)


class ISTFTGenerator(nn.Module):
    """(B, n_mels, F) log-mel -> (B, F * hop) audio through backbone, STFT head and iSTFT."""

    def __init__(self, c: ISTFTConfig) -> None:
        super().__init__()
        spec = c.feature_spec
        self.n_fft, self.hop, self.kernel_size = spec.n_fft, spec.hop_length, c.kernel_size
        self.max_log_magnitude = float(c.max_log_magnitude)
        self.embed = nn.Conv1d(spec.n_mels, c.dim, c.kernel_size, padding=c.kernel_size // 2)
        self.norm = nn.LayerNorm(c.dim, eps=1e-6)
        scale = c.layer_scale_init if c.layer_scale_init is not None else 1.0 / c.num_layers
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(c.dim, c.intermediate_dim, c.kernel_size, scale) for _ in range(c.num_layers)
        )
        self.final_norm = nn.LayerNorm(c.dim, eps=1e-6)
        self.phase = c.phase
        bins = spec.n_fft // 2 + 1
        self.head = nn.Linear(c.dim, 2 * bins if c.phase == "predict" else bins)
        self.spec, self.gl_iters, self.gl_momentum, self.gl_seed = spec, c.gl_iters, c.gl_momentum, c.gl_seed
        self.gl_init = c.gl_init
        self.register_buffer("window", torch.hann_window(spec.n_fft), persistent=False)
        for m in self.modules():  # Vocos's init
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.inversion = None
        if c.mel_prior:  # residual over the mel inversion: a zero head reproduces it
            self.inversion = GriffinLim(GriffinLimConfig(feature_spec=spec))
            self.log_floor = math.log(c.magnitude_floor)
            with torch.no_grad():
                self.head.weight[:bins].zero_()
        elif c.phase == "griffinlim":  # start near a quiet spectrum (|X| ~ 0.02), not |X| = 1
            nn.init.constant_(self.head.bias, -4.0)

    def head_output(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, F) -> (B, bins or 2 bins, F) float32 head output."""
        x = self.norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        x = self.head(self.final_norm(x.transpose(1, 2))).transpose(1, 2)
        return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # iSTFT needs fp32

    def prior(self, mel: torch.Tensor) -> torch.Tensor | float:
        """The log-magnitude the head adds to: the floored NNLS inversion of the mel
        (B, bins, F) with `mel_prior`, else 0."""
        if self.inversion is None:
            return 0.0
        with torch.no_grad():
            mag = self.inversion.linear_magnitude(mel.float())
        return mag.clamp_min(math.exp(self.log_floor)).log()

    def log_magnitude(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, F) -> (B, n_fft // 2 + 1, F) natural-log magnitude, clipped at log 100."""
        out = self.head_output(mel)[:, : self.n_fft // 2 + 1] + self.prior(mel)
        return out.clamp(max=self.max_log_magnitude)

    def spectrum(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, F) -> complex (B, n_fft // 2 + 1, F) STFT (the "predict" phase head)."""
        if self.phase != "predict":
            raise ConfigError(f"istft: the complex spectrum needs phase='predict', not {self.phase!r}")
        log_mag, angle = self.head_output(mel).chunk(2, dim=1)
        mag = torch.exp((log_mag + self.prior(mel)).clamp(max=self.max_log_magnitude))
        return torch.complex(mag * torch.cos(angle), mag * torch.sin(angle))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        length = mel.shape[-1] * self.hop
        if self.phase == "griffinlim":
            mag = self.log_magnitude(mel).exp()
            angles = initial_angles(self.gl_init, mag, self.spec, self.gl_seed)
            return fast_griffin_lim(mag, angles, self.spec, self.window.to(mag.dtype),
                                    self.gl_iters, self.gl_momentum)
        spec = self.spectrum(mel)
        return torch.istft(spec, self.n_fft, self.hop, self.n_fft, window=self.window.to(spec.real.dtype),
                           center=True, length=length)

    def receptive_field(self) -> tuple[int, int]:
        """Frames (left, right) of the mel that reach output block c (samples c*hop..(c+1)*hop-1).

        The convolutions reach R = (kernel // 2) * (1 + layers) frames each way; the iSTFT adds
        the frames k whose open window support (k*hop - n_fft/2, k*hop + n_fft/2) meets the block.
        """
        r = (self.kernel_size // 2) * (1 + len(self.blocks))
        half = self.n_fft // 2
        left = math.ceil(half / self.hop) - 1
        right = math.ceil((half + self.hop - 1) / self.hop) - 1
        return r + left, r + right


class ISTFTVocoder(Vocoder):
    """Vocos-style vocoder: `ISTFTGenerator` plus (optionally) MPD and MRD critics."""

    kind = "istft"
    Config = ISTFTConfig

    def __init__(self, config: ISTFTConfig) -> None:
        super().__init__(config)
        spec = config.feature_spec
        if spec.hop_length > spec.n_fft // 2:
            raise ConfigError(f"istft needs hop_length <= n_fft / 2, got {spec.describe()}")
        if config.kernel_size % 2 == 0 or min(config.dim, config.intermediate_dim, config.num_layers) < 1:
            raise ConfigError(f"istft needs an odd kernel_size and positive sizes, got {config}")
        if config.phase not in ("predict", "griffinlim"):
            raise ConfigError(f"istft: phase must be 'predict' or 'griffinlim', got {config.phase!r}")
        if config.magnitude_range_db is not None and config.magnitude_range_db <= 0:
            raise ConfigError(f"istft: magnitude_range_db must be > 0 dB, got {config.magnitude_range_db}")
        if config.gl_loss_weight < 0 or config.gl_train_iters < 1:
            raise ConfigError(f"istft: gl_loss_weight must be >= 0 and gl_train_iters >= 1, got "
                              f"{config.gl_loss_weight} and {config.gl_train_iters}")
        if config.gl_init not in INITS:
            raise ConfigError(f"istft: gl_init must be one of {INITS}, got {config.gl_init!r}")
        if config.gl_iters < 0 or not 0.0 <= config.gl_momentum < 1.0:
            raise ConfigError(f"istft: gl_iters must be >= 0 and gl_momentum in [0, 1), got "
                              f"{config.gl_iters}, {config.gl_momentum}")
        self.generator = ISTFTGenerator(config)
        self.log_mel = LogMel(spec)
        self.discriminators = nn.ModuleDict()
        if config.discriminators and config.phase == "predict":
            self.discriminators["mpd"] = MultiPeriodDiscriminator(config.mpd_periods, config.mpd_channels)
            self.discriminators["mrd"] = MultiResolutionDiscriminator(config.mrd_fft_sizes,
                                                                      config.mrd_channels)

    @classmethod
    def debug_config(cls) -> ISTFTConfig:
        spec = FeatureSpec(sample_rate=8000, n_fft=64, hop_length=16, n_mels=16, f_max=4000.0)
        return ISTFTConfig(feature_spec=spec, dim=32, intermediate_dim=64, num_layers=2,
                           mpd_periods=(2, 3), mpd_channels=(4, 8, 8, 8, 8),
                           mrd_fft_sizes=(128, 64), mrd_channels=4)

    def forward(self, mel: torch.Tensor, spec: FeatureSpec | None = None) -> torch.Tensor:
        """(B, n_mels, F) log-mel (made under `spec`, if given) -> (B, F * hop) audio."""
        return self.generator(self.check_mel(mel, spec))

    def receptive_field(self) -> tuple[int, int]:
        return self.generator.receptive_field()

    def generator_parameters(self) -> int:
        """Number of generator parameters (critics excluded)."""
        return sum(p.numel() for p in self.generator.parameters())

    # -- training -------------------------------------------------------------------------------
    def example_batch(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {"audio": example_audio(self.feature_spec, batch_size, generator)}

    def phases(self) -> list[str]:
        return ["disc", "gen"] if len(self.discriminators) else ["gen"]

    def make_optimizers(self, lr: float, betas: tuple[float, float] = (0.8, 0.9),
                        weight_decay: float = 0.0) -> dict[str, torch.optim.Optimizer]:
        """AdamW per phase; the Trainer passes its own settings (Vocos: lr 5e-4, betas (0.8, 0.9))."""
        return gan_optimizers(self, lr, betas, weight_decay)

    def loss_weights(self) -> dict[str, float]:
        return {"gen/mrstft": self.config.stft_loss_weight, "gen/mel": 45.0, "gen/logmag": 1.0, "gen/sc": 1.0,
                "gen/gl": self.config.gl_loss_weight,
                "gen/adv/mrd": 0.1, "gen/fm/mrd": 0.1, "disc/adv/mrd": 0.1}

    def training_step(self, batch: dict[str, torch.Tensor], phase: str = "gen") -> dict[str, torch.Tensor]:
        if self.config.phase == "griffinlim":
            return self.magnitude_step(batch, phase)
        return gan_training_step(self, self.generator, batch, phase, average=True)

    def magnitude_step(self, batch: dict[str, torch.Tensor], phase: str) -> dict[str, torch.Tensor]:
        """phase="griffinlim" training: the predicted log-magnitude against the audio's STFT
        (the spec's n_fft, hop and window). "gen/logmag": L1 of natural logs, both floored at
        `magnitude_floor` (and at `magnitude_range_db` below the crop's peak bin); "gen/sc":
        spectral convergence ||S - S'||_F / ||S||_F over the batch; with `gl_loss_weight`,
        "gen/gl" (`griffin_lim_distance`)."""
        if phase != "gen":
            raise ConfigError(f"istft: phase='griffinlim' trains one phase, 'gen', not {phase!r}")
        audio = batch["audio"]
        spec = self.feature_spec
        if audio.ndim != 2 or audio.shape[-1] % spec.hop_length:
            raise AudioError(f"istft trains on audio shaped (B, T) with T a multiple of "
                             f"hop={spec.hop_length}; got {tuple(audio.shape)}")
        mel = self.log_mel(audio)[..., :-1]
        target = torch.stft(audio, spec.n_fft, spec.hop_length, spec.n_fft,
                            window=self.generator.window.to(audio.dtype), center=True,
                            pad_mode="reflect", return_complex=True)[..., : mel.shape[-1]].abs()
        log_pred = self.generator.log_magnitude(mel)
        floor = torch.full_like(target[:, :1, :1], math.log(self.config.magnitude_floor))
        if self.config.magnitude_range_db is not None:
            peak = target.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12).log()
            floor = torch.maximum(floor, peak - self.config.magnitude_range_db * math.log(10.0) / 20.0)
        logmag = (torch.maximum(log_pred, floor) - torch.maximum(target.clamp_min(1e-12).log(), floor)).abs()
        # over the whole batch: a silent crop has no norm of its own to divide by
        sc = torch.linalg.vector_norm(target - log_pred.exp()) / torch.linalg.vector_norm(target).clamp_min(1e-8)
        out = {"gen/logmag": logmag.mean(), "gen/sc": sc}
        if self.config.gl_loss_weight > 0:
            out["gen/gl"] = self.griffin_lim_distance(log_pred, audio[..., : mel.shape[-1] * spec.hop_length])
        return out

    def griffin_lim_distance(self, log_magnitude: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Mean multi-resolution STFT distance between `audio` (B, T) and what `gl_train_iters`
        fast Griffin-Lim iterations make of exp(log_magnitude) (B, bins, F), F * hop = T. The start
        phases come from the detached magnitude (PGHI is not differentiable); the gradient flows
        through every iteration's magnitude."""
        from latent.metrics.reconstruction import mrstft_distance  # latent imports vocoders

        g, c = self.generator, self.config
        mag = log_magnitude.exp()
        angles = initial_angles(c.gl_init, mag.detach(), self.feature_spec, c.gl_seed)
        rebuilt = fast_griffin_lim(mag, angles, self.feature_spec, g.window.to(mag.dtype),
                                   c.gl_train_iters, c.gl_momentum)
        keep = audio.abs().amax(-1) > 0  # a silent crop has no peak to measure against
        if not keep.any():
            return mag.sum() * 0.0
        return mrstft_distance(rebuilt[keep], audio[keep]).mean()
