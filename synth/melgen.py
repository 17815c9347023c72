"""`MelGenerator`: base of the mel-domain generators (VAE, VQ-VAE, mel GAN).

A mel generator decodes a latent to a natural-log mel (B, n_mels, F) under its `FeatureSpec`
(`decode_mel`), then to audio (B, F * hop) through a vocoder (`decode`). The vocoder is named in
the config: a catalog name (a bundled or user checkpoint, loaded lazily through
`synth.catalog.load_named`) or the literal ``"griffinlim"`` (parameter-free, built with the same
FeatureSpec). It is cached on the instance but never registered as a submodule, so it is not part
of the generator's state dict or checkpoint; `attach_vocoder` hands one in directly.

Notes have a fixed length of `note_seconds`: ``n_frames = round(note_seconds * sr / hop)`` mel
frames, ``n_frames * hop`` samples. Audio given to `mel` is zero-padded or cropped to that length;
mel frame k is centred at sample k * hop (the vocoders' convention).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from synth.base import Conditions, Generator
from synth.errors import ConfigError, SynthStudioError
from synth.features import FeatureSpec, LogMel
from synth.harmonic_mel import HarmonicMelHead

#: Length of the fade applied when `decode` truncates a note to a shorter duration.
FADE_SECONDS = 0.010


class MelGenerator(Generator):
    """A generator that makes log-mels and vocodes them.

    Subclass configs carry ``feature_spec: FeatureSpec``, ``vocoder: str`` and
    ``note_seconds: float``; subclasses implement `decode_mel`.
    """

    #: Decoders are conditioned on pitch: recordings are pitch-tracked before re-synthesis.
    needs_pitch: bool = True

    @property
    def max_duration(self) -> float:  # type: ignore[override]
        return float(self.config.note_seconds)

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        spec = config.feature_spec
        if not isinstance(spec, FeatureSpec):
            raise ConfigError(f"{self.kind}: feature_spec must be a FeatureSpec, got {type(spec).__name__}")
        if config.note_seconds <= 0:
            raise ConfigError(f"{self.kind}: note_seconds must be positive, got {config.note_seconds}")
        self.n_frames = max(1, int(round(config.note_seconds * spec.sample_rate / spec.hop_length)))
        if self.n_frames * spec.hop_length <= spec.n_fft // 2:
            raise ConfigError(f"{self.kind}: note_seconds={config.note_seconds} is shorter than "
                              f"one STFT window ({spec.describe()})")
        self.logmel = LogMel(spec)
        # Subclass configs with ``harmonic_head`` (default True) draw the pitch's harmonic comb
        # analytically (`synth.harmonic_mel`); their decoders then output 2 * n_mels channels.
        # ``inharmonic_grid`` (bins per octave, 0 = none) adds the head's inharmonic grid.
        self.harmonic_head = (HarmonicMelHead(spec, getattr(config, "inharmonic_grid", 0),
                                              getattr(config, "inharmonic_octaves", 6.0))
                              if getattr(config, "harmonic_head", False) else None)
        object.__setattr__(self, "_vocoder", None)  # not a submodule: never in the checkpoint

    # -- identity -----------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.config.feature_spec.sample_rate)

    @property
    def hop_length(self) -> int:
        return int(self.config.feature_spec.hop_length)

    @property
    def n_samples(self) -> int:
        """Samples of one note: n_frames * hop."""
        return self.n_frames * self.hop_length

    # -- vocoder ------------------------------------------------------------------------------
    def attach_vocoder(self, vocoder: nn.Module) -> "MelGenerator":
        """Use `vocoder` (a `vocoders.base.Vocoder`) for `decode`; its FeatureSpec must equal ours
        (`SpecMismatchError` naming both otherwise). Returns self."""
        spec = getattr(vocoder, "feature_spec", None)
        self.config.feature_spec.require(spec, what=f"vocoder {getattr(vocoder, 'kind', '?')!r}")
        object.__setattr__(self, "_vocoder", vocoder)
        return self

    @property
    def vocoder(self) -> nn.Module:
        """The vocoder named by `config.vocoder`, loaded on first use and cached (not saved)."""
        if self._vocoder is None:
            self.attach_vocoder(self._load_vocoder(self.config.vocoder))
        return self._vocoder

    def _load_vocoder(self, name: str) -> nn.Module:
        from synth.registry import build, family

        if name == "griffinlim":
            return build("griffinlim", {"feature_spec": self.config.feature_spec.to_dict()}).eval()
        from synth.catalog import load_named

        try:
            model = load_named(name)
        except SynthStudioError as err:
            raise SynthStudioError(
                f"{self.kind}: vocoder {name!r} not found ({err}); train or install it, or use "
                f'vocoder="griffinlim"') from None
        if family(model.kind) != "vocoder":
            raise ConfigError(f"{self.kind}: {name!r} is a {model.kind} generator, not a vocoder")
        return model

    # -- analysis -----------------------------------------------------------------------------
    def fit_length(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, n_samples): crop or zero-pad to the model's note length."""
        if audio.ndim == 1:
            audio = audio.unsqueeze(0)
        if audio.ndim != 2:
            raise ConfigError(f"{self.kind}: audio must be (B, T), got {tuple(audio.shape)}")
        n = self.n_samples
        return audio[:, :n] if audio.shape[-1] >= n else F.pad(audio, (0, n - audio.shape[-1]))

    @torch.no_grad()
    def mel(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, T) audio -> (B, n_mels, n_frames) log-mel of the note (cropped/padded first)."""
        audio = self.fit_length(audio).to(next(self.logmel.buffers()).dtype)
        return self.logmel(audio)[..., : self.n_frames]

    def normalize(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel -> network scale: (mel - mel_offset) / mel_scale (fixed in the config)."""
        return (mel - self.config.mel_offset) / self.config.mel_scale

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Network scale -> log-mel, floored at log(log_floor) like a measured mel."""
        floor = math.log(self.config.feature_spec.log_floor)
        return (x * self.config.mel_scale + self.config.mel_offset).clamp_min(floor)

    @property
    def decoder_channels(self) -> int:
        """Channels the decoder's last layer emits: n_mels, or with the harmonic head 2 * n_mels
        (harmonic and noise envelopes) + the inharmonic grid's R."""
        n_mels = self.config.feature_spec.n_mels
        return self.harmonic_head.channels if self.harmonic_head is not None else n_mels

    def output_head(self, raw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
        """Decoder output (B, `decoder_channels`, F) in network scale + pitch (B,) MIDI ->
        (B, n_mels, F) normalised log-mel (identity without the harmonic head)."""
        if self.harmonic_head is None:
            return raw
        log_mel = self.harmonic_head(raw * self.config.mel_scale + self.config.mel_offset, pitch)
        return self.normalize(log_mel)

    def pad_frames(self, x: torch.Tensor, multiple: int) -> torch.Tensor:
        """(B, n_mels, F) normalised mel -> (B, n_mels, ceil(F / multiple) * multiple), padded on
        the right with the normalised silence floor (a note's tail is its release)."""
        extra = -x.shape[-1] % multiple
        floor = (math.log(self.config.feature_spec.log_floor) - self.config.mel_offset) / self.config.mel_scale
        return F.pad(x, (0, extra), value=floor) if extra else x

    # -- synthesis ----------------------------------------------------------------------------
    def decode_mel(self, latent: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """Latent + conditions -> (B, n_mels, n_frames) log-mel under `feature_spec`."""
        raise NotImplementedError

    def vocode(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, F) log-mel -> (B, F * hop) audio through the vocoder (on mel's device)."""
        voc = self.vocoder
        for tensor in itertools.chain(voc.parameters(), voc.buffers()):
            if tensor.device != mel.device:
                voc.to(mel.device)
            break
        return voc(mel)

    def decode(self, latent: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """Latent + conditions -> (B, T) audio: `decode_mel`, the vocoder, then the duration.

        ``cond.duration`` None gives the whole note (n_frames * hop samples); a shorter duration
        is truncated with a 10 ms fade-out; a longer one than `note_seconds` is refused.
        """
        n = self.duration_samples(cond.duration)
        audio = self.vocode(self.decode_mel(latent, cond))
        return self.trim(audio, n)

    @torch.no_grad()
    def sample(self, n: int, cond: Conditions, seed: int = 0, temperature: float = 1.0,
               **prior_options: Any) -> torch.Tensor:
        """`n` notes (n, T): latents from `prior_sample` (item i from (seed, i)), decoded one item
        at a time, so item i is bit-identical whatever the batch size (batched convolutions
        differ in the last bits, and an iterative vocoder such as Griffin-Lim magnifies that)."""
        cond = cond.expand(n).to(self.latent_mean.device)
        latent = self.prior_sample(n, cond, seed, temperature, **prior_options)
        return torch.cat([self.decode(latent[i:i + 1], cond.select(slice(i, i + 1)))
                          for i in range(n)])

    def duration_samples(self, duration: float | None) -> int:
        if duration is None:
            return self.n_samples
        if duration <= 0:
            raise ConfigError(f"{self.kind}: duration must be positive, got {duration}")
        n = int(round(duration * self.sample_rate))
        if n > self.n_samples and duration <= self.config.note_seconds + 1e-9:
            return self.n_samples  # note_seconds itself, where hops do not divide it exactly
        if n > self.n_samples:
            raise ConfigError(
                f"{self.kind}: duration {duration:g} s is longer than the model's notes "
                f"({self.config.note_seconds:g} s = {self.n_samples} samples)")
        return n

    def trim(self, audio: torch.Tensor, n: int) -> torch.Tensor:
        """(B, T) -> (B, n); when cut short, the last 10 ms fade out (half cosine)."""
        if n >= audio.shape[-1]:
            return audio
        audio = audio[:, :n]
        fade = min(n, max(1, int(round(FADE_SECONDS * self.sample_rate))))
        ramp = 0.5 * (1 + torch.cos(math.pi * torch.arange(1, fade + 1, device=audio.device) / fade))
        return torch.cat([audio[:, : n - fade], audio[:, n - fade:] * ramp], dim=-1)

    # -- shared helpers -----------------------------------------------------------------------
    def require_note(self, cond: Conditions, batch: int, device: torch.device
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(pitch (B,), velocity (B,)) from `cond`; pitch is required, velocity defaults to 100."""
        if cond.pitch is None:
            raise ConfigError(f"{self.kind} decodes notes: conditions need a pitch (MIDI number)")
        cond = cond.expand(batch)
        vel = cond.velocity if cond.velocity is not None else torch.full((batch,), 100.0)
        return cond.pitch.to(device).float(), vel.to(device).float()

    def example_batch(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Whole notes of decaying harmonic tones (B, n_samples) with pitch, velocity, family."""
        from synth.pitch import midi_to_hz

        n, sr = self.n_samples, self.sample_rate
        pitch = torch.randint(48, 72, (batch_size,), generator=generator).float()
        bright = torch.rand(batch_size, 1, generator=generator)
        t = torch.arange(n) / sr
        f0 = midi_to_hz(pitch)[:, None]
        audio = sum(0.3 / k * bright ** (k - 1) * torch.sin(2 * math.pi * k * f0 * t)
                    for k in (1, 2, 3, 4))
        audio = audio * torch.exp(-3 * t) + 0.003 * torch.randn(batch_size, n, generator=generator)
        return {"audio": audio.float(), "pitch": pitch,
                "velocity": torch.randint(40, 128, (batch_size,), generator=generator).float(),
                "family": torch.randint(0, 16, (batch_size,), generator=generator)}


class FractionalEmbedding(nn.Module):
    """Embedding of a continuous index in [0, n-1] (MIDI pitch or velocity): linear interpolation
    between the two neighbouring rows, so fractional pitches (augmentation, glides) work.

    (B,) float -> (B, dim).
    """

    def __init__(self, n: int, dim: int) -> None:
        super().__init__()
        if n < 2:
            raise ConfigError(f"FractionalEmbedding needs at least 2 rows, got {n}")
        self.n = n
        self.table = nn.Embedding(n, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().clamp(0, self.n - 1)
        lo = x.floor().long().clamp(max=self.n - 2)
        w = (x - lo.float())[:, None]
        return (1 - w) * self.table(lo) + w * self.table(lo + 1)


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class ResBlock(nn.Module):
    """Pre-activation residual block, (B, C, T) -> (B, C, T); with `cond_dim`, the middle is
    modulated by FiLM from a (B, cond_dim) vector: h * (1 + scale) + shift."""

    def __init__(self, channels: int, kernel_size: int, cond_dim: int = 0) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.norm1 = nn.GroupNorm(_groups(channels), channels)
        self.conv1 = nn.Conv1d(channels, channels, kernel_size, padding=pad)
        self.norm2 = nn.GroupNorm(_groups(channels), channels)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size, padding=pad)
        self.film = nn.Linear(cond_dim, 2 * channels) if cond_dim else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm2(self.conv1(F.leaky_relu(self.norm1(x), 0.2)))
        if self.film is not None:
            scale, shift = self.film(cond).chunk(2, dim=-1)
            h = h * (1 + scale[..., None]) + shift[..., None]
        return x + self.conv2(F.leaky_relu(h, 0.2))


class DownStack(nn.Module):
    """Conv encoder over time: (B, n_in, T) -> (B, channels[-1], T / 2**(len(channels) - 1)).

    T must be a multiple of 2**(len(channels) - 1); each step is a residual block then a
    stride-2 convolution (kernel 4) to the next width.
    """

    def __init__(self, n_in: int, channels: tuple[int, ...], kernel_size: int) -> None:
        super().__init__()
        self.inp = nn.Conv1d(n_in, channels[0], kernel_size, padding=kernel_size // 2)
        self.blocks = nn.ModuleList()
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            self.blocks.append(ResBlock(c_in, kernel_size))
            self.blocks.append(nn.Conv1d(c_in, c_out, 4, stride=2, padding=1))
        self.blocks.append(ResBlock(channels[-1], kernel_size))

    @property
    def factor(self) -> int:
        return 2 ** sum(isinstance(b, nn.Conv1d) for b in self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = block(x)
        return x


class UpStack(nn.Module):
    """Conv decoder over time, FiLM-conditioned: (B, channels[-1], T'), (B, cond_dim) ->
    (B, n_out, T' * 2**(len(channels) - 1)); `channels` is given encoder-order (narrow first)."""

    def __init__(self, n_out: int, channels: tuple[int, ...], kernel_size: int, cond_dim: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        rev = tuple(reversed(channels))
        self.first = ResBlock(rev[0], kernel_size, cond_dim)
        self.ups = nn.ModuleList(nn.Conv1d(a, b, kernel_size, padding=pad) for a, b in zip(rev[:-1], rev[1:]))
        self.res = nn.ModuleList(ResBlock(b, kernel_size, cond_dim) for b in rev[1:])
        self.norm = nn.GroupNorm(_groups(rev[-1]), rev[-1])
        self.out = nn.Conv1d(rev[-1], n_out, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.first(x, cond)
        for up, res in zip(self.ups, self.res):
            x = res(up(F.interpolate(x, scale_factor=2.0, mode="nearest")), cond)
        return self.out(F.leaky_relu(self.norm(x), 0.2))
