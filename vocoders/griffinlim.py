"""`griffinlim`: a parameter-free vocoder, mel -> linear magnitude -> fast Griffin-Lim.

1. Mel to linear magnitude. The log-mel is exponentiated, then ``mel = M @ |X|^power`` is solved
   for ``|X|^power >= 0`` (M the spec's Slaney filterbank, `synth.features.mel_filterbank`):
   ``inversion="nnls"`` (default) starts from the pseudo-inverse clamped at 0 and runs `nnls_iter`
   projected-gradient steps (step 1 / ||M||_2^2, clamp at 0 after each), a cheap stand-in for
   librosa's L-BFGS-B NNLS; ``inversion="pinv"`` stops at the clamped pseudo-inverse. Bins above
   f_max get zero magnitude. For a power mel the square root is taken.
2. Phase. The fast Griffin-Lim of Perraudin, Balazs and Sondergaard (2013) in librosa's form:
   ``angles <- P(rebuilt - momentum / (1 + momentum) * previous rebuilt)`` with P the projection
   to unit modulus; ``momentum=0`` is the classic algorithm. Initial phases are uniform random from
   `seed` (one draw shared by every batch item, so the output does not depend on the batch
   size) or zero (``init="zeros"``).

STFTs are `torch.stft`/`torch.istft` with the spec's conventions (Hann window of n_fft, centred
frames, reflect padding). F mel frames give F * hop samples: frame k is centred at sample k * hop,
and the last hop samples are covered by the tails of the last frames.

Griffin-Lim has no trainable parameters: `phases()` is empty and the Trainer refuses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from synth.errors import ConfigError
from synth.features import FeatureSpec, mel_filterbank
from vocoders.base import Vocoder


def seeded_angles(shape: torch.Size, seed: int, device: torch.device) -> torch.Tensor:
    """(bins, F) uniform random unit-modulus phases from `seed` (one draw, whatever the batch)."""
    gen = torch.Generator().manual_seed(seed)
    phase = 2.0 * math.pi * torch.rand(shape, generator=gen)
    return torch.polar(torch.ones_like(phase), phase).to(device)


def fast_griffin_lim(magnitude: torch.Tensor, angles: torch.Tensor, spec: FeatureSpec,
                     window: torch.Tensor, n_iter: int, momentum: float) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin et al. 2013, librosa's form) from given initial phases.

    magnitude: (B, bins, F) linear STFT magnitude under `spec`; angles: unit-modulus complex
    phases broadcastable to it; window: the (n_fft,) Hann window. Returns (B, F * hop) audio.
    """
    n_frames = magnitude.shape[-1]
    length = n_frames * spec.hop_length
    stft = dict(n_fft=spec.n_fft, hop_length=spec.hop_length, win_length=spec.n_fft,
                window=window, center=True)
    angles = angles.expand_as(magnitude)
    alpha = momentum / (1.0 + momentum)
    rebuilt = None
    for _ in range(n_iter):
        previous = rebuilt
        audio = torch.istft(magnitude * angles, **stft, length=length)
        rebuilt = torch.stft(audio, **stft, pad_mode="reflect", return_complex=True)[..., :n_frames]
        angles = rebuilt if previous is None else rebuilt - alpha * previous
        angles = angles / (angles.abs() + 1e-16)
    return torch.istft(magnitude * angles, **stft, length=length)


@dataclass
class GriffinLimConfig:
    feature_spec: FeatureSpec = field(default_factory=FeatureSpec)
    n_iter: int = 32
    momentum: float = 0.99
    init: str = "random"
    seed: int = 0
    inversion: str = "nnls"
    nnls_iter: int = 16


class GriffinLim(Vocoder):
    """Mel (B, n_mels, F) -> audio (B, F * hop) by mel inversion and fast Griffin-Lim."""

    kind = "griffinlim"
    Config = GriffinLimConfig

    def __init__(self, config: GriffinLimConfig) -> None:
        super().__init__(config)
        c, spec = config, config.feature_spec
        if c.n_iter < 0 or c.nnls_iter < 0:
            raise ConfigError(f"griffinlim: n_iter and nnls_iter must be >= 0, got {c.n_iter}, {c.nnls_iter}")
        if not 0.0 <= c.momentum < 1.0:
            raise ConfigError(f"griffinlim: momentum must be in [0, 1), got {c.momentum}")
        if c.init not in ("random", "zeros"):
            raise ConfigError(f"griffinlim: init must be 'random' or 'zeros', got {c.init!r}")
        if c.inversion not in ("nnls", "pinv"):
            raise ConfigError(f"griffinlim: inversion must be 'nnls' or 'pinv', got {c.inversion!r}")
        if spec.hop_length > spec.n_fft // 2:
            raise ConfigError(f"griffinlim needs hop_length <= n_fft / 2, got {spec.describe()}")
        basis = mel_filterbank(spec).double()  # (n_mels, bins)
        lipschitz = float(torch.linalg.matrix_norm(basis, ord=2)) ** 2
        self.register_buffer("basis", basis.float(), persistent=False)
        self.register_buffer("pinv", torch.linalg.pinv(basis).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(spec.n_fft), persistent=False)
        self.step_size = 1.0 / lipschitz

    @classmethod
    def debug_config(cls) -> GriffinLimConfig:
        spec = FeatureSpec(sample_rate=8000, n_fft=64, hop_length=16, n_mels=16, f_max=4000.0)
        return GriffinLimConfig(feature_spec=spec, n_iter=4, nnls_iter=2)

    # -- synthesis ------------------------------------------------------------------------------
    def linear_magnitude(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, F) log-mel -> (B, n_fft // 2 + 1, F) non-negative linear magnitude."""
        target = torch.exp(mel)
        x = torch.matmul(self.pinv, target).clamp(min=0.0)
        if self.config.inversion == "nnls":
            for _ in range(self.config.nnls_iter):
                residual = torch.matmul(self.basis, x) - target
                x = (x - self.step_size * torch.matmul(self.basis.T, residual)).clamp(min=0.0)
        return x.sqrt() if self.feature_spec.power == 2.0 else x

    def _initial_angles(self, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
        """(bins, F) unit-modulus complex phases, the same for every batch item."""
        if self.config.init == "zeros":
            return torch.ones(shape, dtype=torch.complex64, device=like.device)
        return seeded_angles(shape, self.config.seed, like.device)

    def griffin_lim(self, magnitude: torch.Tensor) -> torch.Tensor:
        """(B, bins, F) linear magnitude -> (B, F * hop) audio."""
        angles = self._initial_angles(magnitude.shape[-2:], magnitude).expand_as(magnitude)
        return fast_griffin_lim(magnitude, angles, self.feature_spec, self.window.to(magnitude.dtype),
                                self.config.n_iter, self.config.momentum)

    def forward(self, mel: torch.Tensor, spec: FeatureSpec | None = None) -> torch.Tensor:
        """(B, n_mels, F) log-mel (made under `spec`, if given) -> (B, F * hop) audio."""
        mel = self.check_mel(mel, spec)
        return self.griffin_lim(self.linear_magnitude(mel.to(self.basis.dtype)))

    # -- training hooks: there is nothing to train ------------------------------------------------
    def example_batch(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        n = 32 * self.feature_spec.hop_length
        return {"audio": 0.1 * torch.randn(batch_size, n, generator=generator)}

    def phases(self) -> list[str]:
        return []

    def make_optimizers(self, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                        weight_decay: float = 0.0) -> dict[str, torch.optim.Optimizer]:
        return {}

    def training_step(self, batch: dict[str, torch.Tensor], phase: str = "main") -> dict[str, torch.Tensor]:
        raise ConfigError("griffinlim has no trainable parameters; there is nothing to train")
