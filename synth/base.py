"""The generator contract: `Generator`, `Conditions`, `ControlSpec` and latent statistics.

Audio is float32 (B, T), mono, in [-1, 1]; the sample rate travels with the model. A latent is
(B, D) for a global code or (B, D, frames) for a time-varying one.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from synth.errors import ConfigError, SynthStudioError
from synth.module import SynthModule


@dataclass(frozen=True)
class ControlSpec:
    """One playable control: UIs and CLIs are generated from these, never hand-listed per model.

    `low`/`high` are the range the model was trained on (for latent components, the 1st and 99th
    percentiles of the training corpus in PCA-normalised coordinates).
    """

    name: str
    low: float
    high: float
    default: float
    description: str = ""
    unit: str = ""

    def __post_init__(self) -> None:
        if not self.low <= self.default <= self.high:
            raise ConfigError(
                f"control {self.name}: default {self.default} outside [{self.low}, {self.high}]"
            )

    def clamp(self, value: float) -> float:
        return min(max(float(value), self.low), self.high)


def _as_batch(value: Any, n: int | None = None) -> torch.Tensor | None:
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=torch.float32)
    if t.ndim == 0:
        t = t.reshape(1)
    if n is not None and t.shape[0] == 1 and n > 1:
        t = t.expand(n, *t.shape[1:]).clone()
    return t


@dataclass
class Conditions:
    """What a generator is asked to make. Every field is optional; models use what they need.

    Attributes:
        pitch: (B,) MIDI note numbers (float; 60 = C4).
        f0_hz: (B, frames) fundamental frequency curve in Hz.
        velocity: (B,) MIDI velocity 0-127.
        loudness_db: (B, frames) A-weighted loudness curve in dB.
        duration: seconds of audio to make (None: the model's default note length).
        text_embedding: (B, E) caption embedding.
        mel: (B, n_mels, frames) log-mel to condition on.
        family: (B,) instrument family index (0-15, GM families).
    """

    pitch: torch.Tensor | None = None
    f0_hz: torch.Tensor | None = None
    velocity: torch.Tensor | None = None
    loudness_db: torch.Tensor | None = None
    duration: float | None = None
    text_embedding: torch.Tensor | None = None
    mel: torch.Tensor | None = None
    family: torch.Tensor | None = None

    _TENSORS = ("pitch", "f0_hz", "velocity", "loudness_db", "text_embedding", "mel", "family")

    @classmethod
    def note(cls, pitch: float | Iterable[float], velocity: float | Iterable[float] = 100,
             duration: float | None = None) -> "Conditions":
        """Conditions for plain notes: MIDI pitch(es), velocity(ies) and a duration."""
        p = _as_batch(list(pitch) if not isinstance(pitch, (int, float)) else pitch)
        v = _as_batch(list(velocity) if not isinstance(velocity, (int, float)) else velocity)
        n = max(p.shape[0], v.shape[0])
        return cls(pitch=_as_batch(p, n), velocity=_as_batch(v, n), duration=duration)

    @property
    def batch_size(self) -> int | None:
        for name in self._TENSORS:
            value = getattr(self, name)
            if value is not None:
                return int(value.shape[0])
        return None

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in self._TENSORS if getattr(self, k) is not None}

    def to(self, device: torch.device | str) -> "Conditions":
        return dataclasses.replace(self, **{k: v.to(device) for k, v in self.tensors().items()})

    def expand(self, n: int) -> "Conditions":
        """Broadcast a batch of one to `n` items (a batch of `n` is returned unchanged)."""
        out = {}
        for k, v in self.tensors().items():
            if v.shape[0] == n:
                out[k] = v
            elif v.shape[0] == 1:
                out[k] = v.expand(n, *v.shape[1:]).clone()
            else:
                raise ConfigError(f"conditions field {k} has batch {v.shape[0]}, cannot expand to {n}")
        return dataclasses.replace(self, **out)

    def select(self, index: slice | torch.Tensor | list[int]) -> "Conditions":
        return dataclasses.replace(self, **{k: v[index] for k, v in self.tensors().items()})

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict (for render manifests)."""
        out: dict[str, Any] = {"duration": self.duration}
        for k, v in self.tensors().items():
            out[k] = v.detach().cpu().tolist()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Conditions":
        kwargs: dict[str, Any] = {"duration": data.get("duration")}
        for k in cls._TENSORS:
            if data.get(k) is not None:
                dtype = torch.long if k == "family" else torch.float32
                kwargs[k] = torch.tensor(data[k], dtype=dtype)
        return cls(**kwargs)


def item_seeds(seed: int, n: int) -> list[int]:
    """Per-item seeds so item i of a batch is the same whatever the batch size (torchsynth)."""
    out = []
    for i in range(n):
        digest = hashlib.sha256(f"{int(seed)}:{i}".encode()).digest()
        out.append(int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF)
    return out


def seeded_normal(seed: int, n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """(n, *shape) standard normal draws, item i from `item_seeds(seed, n)[i]`, made on the CPU
    so the result is identical on every device."""
    rows = []
    for s in item_seeds(seed, n):
        g = torch.Generator().manual_seed(s)
        rows.append(torch.randn(shape, generator=g))
    return torch.stack(rows) if rows else torch.zeros((0, *shape))


class Generator(SynthModule):
    """Base of the six generator families.

    Subclasses implement `encode` and `decode` and set `latent_dim`. The latent statistics
    (mean, std, PCA basis and 1st/99th percentiles in PCA-normalised coordinates) are buffers, so
    they travel in the checkpoint; `fit_latent_stats` measures them on the training corpus.
    """

    #: True when `encode` returns (B, D, frames) rather than (B, D).
    temporal_latent: bool = False
    #: Seconds a played note sounds after its key is released (MIDI rendering adds this).
    release_seconds: float = 0.3
    #: Longest `cond.duration` the model can make (None: any length).
    max_duration: float | None = None

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        d = self.latent_dim
        self.register_buffer("latent_mean", torch.zeros(d))
        self.register_buffer("latent_std", torch.ones(d))
        self.register_buffer("latent_components", torch.eye(d))
        self.register_buffer("latent_scale", torch.ones(d))
        self.register_buffer("latent_low", torch.full((d,), -2.326))
        self.register_buffer("latent_high", torch.full((d,), 2.326))
        self.register_buffer("latent_fitted", torch.zeros((), dtype=torch.bool))

    @property
    def latent_dim(self) -> int:
        return int(self.config.latent_dim)

    # -- the contract -------------------------------------------------------------------------
    def encode(self, audio: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """(B, T) audio -> (B, D) or (B, D, frames) latent."""
        raise NotImplementedError

    def decode(self, latent: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """Latent -> (B, T) audio at `self.sample_rate`."""
        raise NotImplementedError

    def prior_sample(self, n: int, cond: Conditions, seed: int = 0,
                     temperature: float = 1.0) -> torch.Tensor:
        """Draw `n` latents. Default: a Gaussian fitted to the training latents (PCA space),
        scaled by `temperature`; item i depends only on (seed, i)."""
        eps = seeded_normal(seed, n, (self.latent_dim,)).to(self.latent_mean.device)
        return self.from_pca(eps * float(temperature))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one note's latent without the batch axis: (D,), or (D, frames) for models
        whose note latent is a fixed-length sequence (the VQ-VAE)."""
        return (self.latent_dim,)

    def default_latent(self, cond: Conditions, seed: int = 0) -> torch.Tensor:
        """The latent (1, *latent_shape) a render uses when none is given: the training mean
        (the centre of the timbre space); sequence models draw one from their prior."""
        return self.latent_mean[None].clone()

    @torch.no_grad()
    def render(self, latent: torch.Tensor, cond: Conditions, *, sample_rate: int | None = None,
               controls: dict[str, float] | None = None, seed: int = 0) -> torch.Tensor:
        """The playing entry point: latent + conditions -> (B, T) audio at `sample_rate`.

        `controls` are the model's non-latent ControlSpecs by name (an unknown name is an
        error); all randomness comes from `seed`, so a render is reproducible on a device. This
        default decodes at the model's rate under a forked, seeded RNG and resamples (soxr);
        models that synthesise at any rate (DDSP) override it.
        """
        if controls:
            self.check_controls(controls)
            latent = self.apply_controls(latent, controls)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            audio = self.decode(latent, cond)
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            from synth.audio import resample

            audio = resample(audio, self.sample_rate, int(sample_rate))
        return audio

    @torch.no_grad()
    def render_recording(self, audio: torch.Tensor, latent: torch.Tensor | None = None, *,
                         velocity: float = 100.0, sample_rate: int | None = None,
                         controls: dict[str, float] | None = None, seed: int = 0,
                         octave_shift: int = 0, loudness_shift: float = 0.0) -> torch.Tensor:
        """Re-play a monophonic recording (T,) at the model's rate -> (T',) at `sample_rate`.

        This default is the autoencoder path: the recording is encoded (its own latent; `latent`
        is not used), cut to `max_duration`, pitch-tracked when the decoder needs a pitch (the
        median voiced f0, moved by `octave_shift` octaves, played at `velocity`), decoded with
        `render`, and scaled by `loudness_shift` dB. Models that follow a recording frame by
        frame (DDSP timbre transfer) override it and use `latent` as the timbre.
        """
        seconds = audio.numel() / self.sample_rate
        if self.max_duration is not None:
            seconds = min(seconds, self.max_duration)
        cond = Conditions(duration=seconds)
        if getattr(self, "needs_pitch", False):
            from synth.pitch import f0, hz_to_midi

            track = f0(audio[None], self.sample_rate)
            voiced = track.f0_hz[0][track.periodicity[0] > 0.5]
            if voiced.numel() == 0:
                raise SynthStudioError(f"no pitch found in the recording to condition {self.kind} on")
            pitch = float(hz_to_midi(voiced.median()).round()) + 12 * int(octave_shift)
            cond = Conditions.note(pitch, velocity, duration=seconds)
        out = self.render(self.encode(audio[None], cond), cond, sample_rate=sample_rate,
                          controls=controls, seed=seed)[0]
        return out * 10 ** (loudness_shift / 20) if loudness_shift else out

    def check_controls(self, controls: dict[str, float]) -> None:
        """Raise a ConfigError naming any control this model does not have."""
        known = {c.name for c in self.controls}
        unknown = sorted(set(controls) - known)
        if unknown:
            raise ConfigError(f"{self.kind} has no control(s) {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(known)) or 'none'}")

    def apply_controls(self, latent: torch.Tensor, controls: dict[str, float]) -> torch.Tensor:
        """Apply named controls to a latent. Default: "pcK" controls set PCA coordinate K."""
        pcs = {k: v for k, v in controls.items() if k.startswith("pc") and k[2:].isdigit()}
        if not pcs:
            return latent
        coords = self.to_pca(latent).clone()
        for name, value in pcs.items():
            k = int(name[2:]) - 1
            if latent.ndim == 3:
                coords[:, k, :] = float(value)
            else:
                coords[:, k] = float(value)
        return self.from_pca(coords)

    @torch.no_grad()
    def sample(self, n: int, cond: Conditions, seed: int = 0,
               temperature: float = 1.0) -> torch.Tensor:
        """`n` sounds (n, T), reproducible for a given seed on a given device."""
        cond = cond.expand(n).to(self.latent_mean.device)
        return self.decode(self.prior_sample(n, cond, seed, temperature), cond)

    # -- latent statistics --------------------------------------------------------------------
    @torch.no_grad()
    def fit_latent_stats(self, latents: torch.Tensor) -> None:
        """Measure mean, PCA basis and percentile ranges from training latents.

        Args:
            latents: (N, D) or (N, D, frames); frames are pooled as extra observations.
        """
        z = latents.detach().to(torch.float64)
        if z.ndim == 3:
            z = z.transpose(1, 2).reshape(-1, z.shape[1])
        if z.ndim != 2 or z.shape[1] != self.latent_dim or z.shape[0] < 2:
            raise ConfigError(f"fit_latent_stats needs (N>=2, {self.latent_dim}) latents, got "
                              f"{tuple(latents.shape)}")
        mean = z.mean(0)
        centred = z - mean
        cov = centred.T @ centred / (z.shape[0] - 1)
        evals, evecs = torch.linalg.eigh(cov)
        order = torch.argsort(evals, descending=True)
        evals, evecs = evals[order].clamp_min(1e-12), evecs[:, order]
        # Sign convention: the largest-magnitude loading of each component is positive.
        signs = torch.sign(evecs.gather(0, evecs.abs().argmax(0, keepdim=True))).squeeze(0)
        evecs = evecs * torch.where(signs == 0, torch.ones_like(signs), signs)
        scale = evals.sqrt()
        coords = centred @ evecs / scale
        self.latent_mean.copy_(mean.float())
        self.latent_std.copy_(z.std(0).float())
        self.latent_components.copy_(evecs.T.float())
        self.latent_scale.copy_(scale.float())
        self.latent_low.copy_(torch.quantile(coords, 0.01, dim=0).float())
        self.latent_high.copy_(torch.quantile(coords, 0.99, dim=0).float())
        self.latent_fitted.fill_(True)

    def to_pca(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent (B, D[, frames]) -> PCA-normalised coordinates of the same shape."""
        if latent.ndim == 3:
            return self.to_pca(latent.transpose(1, 2)).transpose(1, 2)
        return (latent - self.latent_mean) @ self.latent_components.T / self.latent_scale

    def from_pca(self, coords: torch.Tensor) -> torch.Tensor:
        """PCA-normalised coordinates -> latent (inverse of `to_pca`)."""
        if coords.ndim == 3:
            return self.from_pca(coords.transpose(1, 2)).transpose(1, 2)
        return (coords * self.latent_scale) @ self.latent_components + self.latent_mean

    def latent_stats_dict(self) -> dict[str, Any]:
        """The statistics as plain lists (for checkpoint metadata and UIs)."""
        return {
            "fitted": bool(self.latent_fitted),
            "mean": self.latent_mean.tolist(),
            "std": self.latent_std.tolist(),
            "pca_scale": self.latent_scale.tolist(),
            "p01": self.latent_low.tolist(),
            "p99": self.latent_high.tolist(),
        }

    @property
    def controls(self) -> list[ControlSpec]:
        """Playable controls: one per PCA component, ranged by the training percentiles."""
        var = self.latent_scale.double() ** 2
        share = (var / var.sum()).tolist()
        out = []
        for k in range(self.latent_dim):
            low, high = float(self.latent_low[k]), float(self.latent_high[k])
            out.append(ControlSpec(
                name=f"pc{k + 1}", low=low, high=high, default=min(max(0.0, low), high),
                description=f"latent principal component {k + 1}: {100 * share[k]:.1f}% of the "
                            f"latent variance; range = 1st-99th percentile of the training corpus",
                unit="sd",
            ))
        return out

    def example_conditions(self, n: int) -> Conditions:
        """Valid conditions for `n` items (debug/smoke tests)."""
        return Conditions.note([60.0 + i for i in range(n)], 100, duration=None)
