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
   size), zero (``init="zeros"``), or from the magnitude itself (``init="pghi"``,
   `pghi_angles`: phase-gradient integration after Prusa, Balazs and Sondergaard (2017)).

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


#: Hann window's time-frequency spread as a Gaussian's, gamma = GAMMA_HANN * n_fft^2 (Prusa et al. 2017).
GAMMA_HANN = 0.25645


#: Log-magnitude differences (nats) below this count as equal when `pghi_angles` splits lobes.
PGHI_FLAT = 1e-4


def pghi_angles(magnitude: torch.Tensor, spec: FeatureSpec, tol_db: float = 60.0) -> torch.Tensor:
    """Phases from a magnitude by phase-gradient integration (Prusa, Balazs and Sondergaard 2017).

    For a Gaussian-like window the phase gradient follows from the log-magnitude s: the phase
    advance per hop is 2 pi hop m / n_fft + (hop n_fft / gamma) ds/dm (a partial's instantaneous
    frequency, from where it sits within its lobe), and the phase step per bin is
    -pi - (gamma / (hop n_fft)) ds/dn (where an event sits within the frame; -pi is torch.stft's
    frame-start reference for a centred window). Instead of the paper's heap over the whole
    plane, each frame is integrated at once: bins are split into lobes at the local minima of s;
    each lobe's peak advances in time from the previous frame (trapezoid rule) and the rest of
    the lobe follows the frequency gradient from its peak. Bins more than `tol_db` below the
    loudest bin only advance in time. Vectorised over the batch and bins, one step per frame.

    magnitude: (B, n_fft // 2 + 1, F) under `spec`; returns unit-modulus complex (B, bins, F).
    On an exact magnitude this alone gives a consistent spectrogram, and it is a far better
    start for fast Griffin-Lim than random phases (tests/test_vocoders.py).
    """
    b, k, f = magnitude.shape
    n_fft, hop = spec.n_fft, spec.hop_length
    gamma = GAMMA_HANN * n_fft ** 2
    s = magnitude.double().clamp_min(1e-12).log()
    bins = torch.arange(k, device=s.device, dtype=s.dtype)
    ds_dm = torch.zeros_like(s)
    ds_dm[:, 1:-1] = 0.5 * (s[:, 2:] - s[:, :-2])
    ds_dn = torch.zeros_like(s)
    if f > 1:
        ds_dn[..., 1:-1] = 0.5 * (s[..., 2:] - s[..., :-2])
        ds_dn[..., 0], ds_dn[..., -1] = s[..., 1] - s[..., 0], s[..., -1] - s[..., -2]
    advance = 2 * math.pi * hop * bins[:, None] / n_fft + (hop * n_fft / gamma) * ds_dm
    slope = -math.pi - (gamma / (hop * n_fft)) * ds_dn
    # running frequency integral of the slope (trapezoid), per frame: (B, bins, F)
    along = torch.cat([torch.zeros_like(s[:, :1]), (0.5 * (slope[:, 1:] + slope[:, :-1])).cumsum(1)], 1)
    edge = torch.full_like(s[:, :1], math.inf)
    # a lobe boundary is a local minimum by more than float32 rounding (PGHI_FLAT nats): on a
    # flat stretch (an impulse's spectrum) rounding noise would otherwise cut the lobe at random
    lower = ((s <= torch.cat([edge, s[:, :-1]], 1) + PGHI_FLAT)
             & (s < torch.cat([s[:, 1:], edge], 1) - PGHI_FLAT))
    lobe = lower.long().cumsum(1)  # (B, bins, F): lobe index of each bin
    quiet = s < s.amax(dim=(1, 2), keepdim=True) - tol_db / 20 * math.log(10)
    index = bins.long().expand(b, k)
    phase = torch.zeros_like(s)
    prev = None
    for n in range(f):
        sn, ln, an = s[..., n], lobe[..., n], along[..., n]
        top = torch.full((b, k + 1), -math.inf, dtype=s.dtype, device=s.device).scatter_reduce(1, ln, sn, "amax")
        at_top = sn >= top.gather(1, ln)
        peak = torch.zeros((b, k + 1), dtype=torch.long, device=s.device).scatter_reduce(
            1, ln, torch.where(at_top, index, torch.zeros_like(index)), "amax").gather(1, ln)
        start = (torch.zeros_like(sn) if prev is None
                 else prev + 0.5 * (advance[..., n - 1] + advance[..., n]))
        ph = start.gather(1, peak) + an - an.gather(1, peak)
        if prev is not None:
            ph = torch.where(quiet[..., n], prev + advance[..., n], ph)
        phase[..., n] = ph
        prev = ph
    phase = torch.remainder(phase, 2 * math.pi).to(magnitude.dtype)
    return torch.polar(torch.ones_like(phase), phase)


def initial_angles(init: str, magnitude: torch.Tensor, spec: FeatureSpec, seed: int) -> torch.Tensor:
    """Griffin-Lim's start for a (B, bins, F) magnitude: "random" (one seeded draw shared by the
    batch), "zeros" or "pghi" (`pghi_angles`, per item). Broadcastable to the magnitude."""
    if init == "pghi":
        return pghi_angles(magnitude, spec)
    if init == "zeros":
        return torch.ones(magnitude.shape[-2:], dtype=torch.complex64, device=magnitude.device)
    return seeded_angles(magnitude.shape[-2:], seed, magnitude.device)


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


def hann_peak(offset: torch.Tensor) -> torch.Tensor:
    """|DFT| of an n-point Hann window at `offset` bins from a sinusoid's frequency, relative to
    its value at 0 (1 at 0, 0.5 at +-1, 0 at every other integer; cut to the 4-bin main lobe and
    first side lobes, |offset| < 4)."""
    d = offset.abs()
    near_one = (d - 1.0).abs() < 1e-6
    safe = torch.where((d < 1e-6) | near_one, torch.full_like(d, 0.5), d)
    value = torch.sin(math.pi * safe) / (math.pi * safe * (1.0 - safe * safe))
    value = torch.where(d < 1e-6, torch.ones_like(d), torch.where(near_one, torch.full_like(d, 0.5), value))
    return value.abs() * (d < 4.0).to(d.dtype)


def _nnls_fista(matrix: torch.Tensor, target: torch.Tensor, n_iter: int) -> torch.Tensor:
    """min ||matrix @ x - target||^2 over x >= 0 by accelerated projected gradient (FISTA).
    matrix (m, k), target (m, F) -> x (k, F)."""
    step = 1.0 / float(torch.linalg.matrix_norm(matrix, ord=2)) ** 2
    x = torch.zeros(matrix.shape[1], target.shape[1], dtype=target.dtype, device=target.device)
    y, t = x, 1.0
    for _ in range(n_iter):
        x_new = (y - step * (matrix.T @ (matrix @ y - target))).clamp(min=0.0)
        t_new = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        y, x, t = x_new + (t - 1.0) / t_new * (x_new - x), x_new, t_new
    return x


def harmonic_magnitude(mel: torch.Tensor, f0_hz: float, spec: FeatureSpec, search_cents: float = 40.0,
                       n_iter: int = 300) -> torch.Tensor:
    """Mel -> linear magnitude with a harmonic dictionary, given the note's pitch (an oracle for
    bench/vocoder_eval.py's bounds, not a vocoder: it needs f0).

    The magnitude is modelled as a sum of Hann-window peaks at k * f0 (every harmonic below
    Nyquist) plus one flat atom per mel band (noise), non-negative weights per frame fitted so that
    the filterbank reproduces the mel (`_nnls_fista`). f0 is refined first: the harmonic-only fit
    with the least residual over `f0_hz` +- `search_cents` in 5-cent steps. Unlike the per-bin NNLS
    inversion, which spreads each band's energy over the band, this puts it on the partials.

    mel: (n_mels, F) log-mel of one magnitude mel (power 1). Returns (n_fft // 2 + 1, F).
    """
    if spec.power != 1.0:
        raise ConfigError(f"harmonic_magnitude needs a magnitude mel (power 1), got {spec.describe()}")
    basis = mel_filterbank(spec).to(mel.dtype)
    bins = spec.n_fft // 2 + 1
    bin_hz = spec.sample_rate / spec.n_fft
    k = torch.arange(bins, dtype=mel.dtype)
    target = torch.exp(mel)

    def atoms(f0: float) -> torch.Tensor:
        centres = torch.arange(1, int((spec.sample_rate / 2 - bin_hz) // f0) + 1, dtype=mel.dtype) * f0 / bin_hz
        return hann_peak(k[:, None] - centres[None, :])                            # (bins, H)

    best, best_f0 = float("inf"), f0_hz
    for cents in torch.arange(-search_cents, search_cents + 1e-9, 5.0).tolist():
        f0 = f0_hz * 2.0 ** (cents / 1200.0)
        harm = basis @ atoms(f0)
        err = float(((harm @ _nnls_fista(harm, target, 60) - target) ** 2).sum())
        if err < best:
            best, best_f0 = err, f0
    dictionary = torch.cat([atoms(best_f0), (basis.T > 0).to(mel.dtype)], dim=1)  # peaks + flat bands
    return dictionary @ _nnls_fista(basis @ dictionary, target, n_iter)


INITS = ("random", "zeros", "pghi")


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
        if c.init not in INITS:
            raise ConfigError(f"griffinlim: init must be one of {INITS}, got {c.init!r}")
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

    def griffin_lim(self, magnitude: torch.Tensor) -> torch.Tensor:
        """(B, bins, F) linear magnitude -> (B, F * hop) audio."""
        angles = initial_angles(self.config.init, magnitude, self.feature_spec, self.config.seed)
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
