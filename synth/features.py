"""Feature specifications and spectral layers (STFT, log-mel, CQT) built on nnAudio.

`FeatureSpec` is the single description of how a mel spectrogram was made. Every model that makes
or consumes mels stores one, and `FeatureSpec.require` refuses features made under another spec with
an error naming both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from synth.errors import AudioError, ConfigError, SpecMismatchError


@dataclass(frozen=True)
class FeatureSpec:
    """How a (log-)mel spectrogram is computed.

    Attributes:
        sample_rate: audio sample rate in Hz.
        n_fft: FFT size (and window length, Hann window, centred frames with reflect padding).
        hop_length: samples between frames.
        n_mels: mel bands (Slaney mel scale and area normalisation, as librosa's defaults).
        f_min: lowest mel band edge in Hz.
        f_max: highest mel band edge in Hz (at most sample_rate / 2).
        log_floor: magnitudes are clamped to at least this before the natural log.
        power: 1.0 for a magnitude mel, 2.0 for a power mel.
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0
    log_floor: float = 1e-5
    power: float = 1.0

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ConfigError(f"FeatureSpec.sample_rate must be positive, got {self.sample_rate}")
        if self.n_fft <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ConfigError(f"FeatureSpec sizes must be positive: {self.describe()}")
        if not 0.0 <= self.f_min < self.f_max <= self.sample_rate / 2 + 1e-6:
            raise ConfigError(
                f"FeatureSpec needs 0 <= f_min < f_max <= sample_rate/2, got {self.describe()}"
            )
        if self.log_floor <= 0:
            raise ConfigError(f"FeatureSpec.log_floor must be positive, got {self.log_floor}")
        if self.power not in (1.0, 2.0):
            raise ConfigError(f"FeatureSpec.power must be 1.0 or 2.0, got {self.power}")

    # -- identity ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict with canonical number types."""
        return {
            "sample_rate": int(self.sample_rate),
            "n_fft": int(self.n_fft),
            "hop_length": int(self.hop_length),
            "n_mels": int(self.n_mels),
            "f_min": float(self.f_min),
            "f_max": float(self.f_max),
            "log_floor": float(self.log_floor),
            "power": float(self.power),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureSpec":
        """Rebuild from `to_dict` output; unknown keys are an error, never silently dropped."""
        if not isinstance(data, dict):
            raise ConfigError(f"a FeatureSpec must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown FeatureSpec fields: {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        """Stable 12-hex-digit identity: the same in every process, Python version and platform."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:12]

    def describe(self) -> str:
        """One-line human description used in error messages."""
        return (
            f"{self.sample_rate} Hz, n_fft={self.n_fft}, hop={self.hop_length}, "
            f"{self.n_mels} mels {self.f_min:g}-{self.f_max:g} Hz, floor={self.log_floor:g}, "
            f"power={self.power:g}"
        )

    def __str__(self) -> str:
        return f"FeatureSpec[{self.hash}]({self.describe()})"

    # -- checks -----------------------------------------------------------------------------
    def require(self, other: "FeatureSpec | None", what: str = "mel") -> None:
        """Raise `SpecMismatchError` unless `other` equals this spec.

        Args:
            other: the spec the features were made under (None: unknown, refused).
            what: name of the thing being checked, for the message.
        """
        if other is None:
            raise SpecMismatchError(f"{what} carries no FeatureSpec; this consumer expects {self}")
        if other != self:
            raise SpecMismatchError(f"{what} was made with {other} but this consumer expects {self}")

    def frames(self, n_samples: int) -> int:
        """Number of centred frames for `n_samples` of audio."""
        return n_samples // self.hop_length + 1


# -- spectral layers ----------------------------------------------------------------------------
# nnAudio computes transforms as conv1d with fixed Fourier/CQT kernels held as buffers, so every
# layer below is differentiable, moves with `.to(device)` and runs in float64 after `.double()`.
# nnAudio 0.3.4 imports and builds without warnings under numpy 2 / scipy 1.17; nothing is
# filtered here. Layers are built with verbose=False (nnAudio prints timings otherwise).
# nnAudio is imported when the first layer is built: it pulls in scipy.signal (about 1 s), and
# every model and checkpoint imports FeatureSpec from this module.
#
# Magnitudes are taken from nnAudio's complex output rather than its "Magnitude" mode: that mode is
# sqrt(re^2 + im^2) and its gradient is NaN wherever a bin is exactly zero (digital silence, e.g.
# zero-padded batch items); `_magnitude` gives the same values with a zero gradient there.
#
# The kernels are constants derived from the FeatureSpec (4 MB at n_fft=1024, 16 MB at 2048), so
# they are kept out of state_dict: a model holding a layer saves only its own weights and its spec.


def _nnaudio() -> Any:
    """The `nnAudio.features` module, imported on first use."""
    from nnAudio import features

    return features


def _constant(module: nn.Module) -> nn.Module:
    """Re-register every buffer of an nnAudio layer as non-persistent (rebuilt, never saved)."""
    for sub in module.modules():
        for name, buffer in list(sub.named_buffers(recurse=False)):
            sub.register_buffer(name, buffer, persistent=False)
    return module


def _as_batch(audio: torch.Tensor, min_samples: int, layer: nn.Module) -> torch.Tensor:
    """(T,) or (B, T) -> (B, T), checked against the layer's dtype and reflect padding."""
    if audio.ndim == 1:
        audio = audio.unsqueeze(0)
    if audio.ndim != 2:
        raise ValueError(f"expected audio shaped (T,) or (B, T), got {tuple(audio.shape)}")
    dtype = next(layer.buffers()).dtype
    if audio.dtype != dtype:
        raise TypeError(
            f"audio is {audio.dtype} but the layer is {dtype}; convert one (e.g. layer.double())"
        )
    if audio.shape[-1] <= min_samples:
        raise AudioError(
            f"audio of {audio.shape[-1]} samples is too short: this layer pads {min_samples} "
            f"samples by reflection on each side and needs more than that"
        )
    return audio


def _magnitude(power: torch.Tensor) -> torch.Tensor:
    """sqrt(power) with a zero (not NaN) gradient where power == 0."""
    nonzero = power > 0
    root = torch.sqrt(torch.where(nonzero, power, torch.ones_like(power)))
    return torch.where(nonzero, root, torch.zeros_like(power))


def _complex_power(stacked: torch.Tensor) -> torch.Tensor:
    """(..., 2) real/imag pairs from nnAudio -> (...) squared magnitude."""
    return stacked[..., 0].square() + stacked[..., 1].square()


def _stft_args(spec: FeatureSpec) -> dict[str, Any]:
    return dict(
        n_fft=spec.n_fft,
        win_length=spec.n_fft,
        hop_length=spec.hop_length,
        window="hann",
        center=True,
        pad_mode="reflect",
        verbose=False,
    )


class Spectrogram(nn.Module):
    """Magnitude STFT: (T,) or (B, T) audio -> (B, n_fft // 2 + 1, T // hop + 1).

    Hann window of length n_fft, centred frames, reflect padding (librosa.stft's conventions).
    """

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__()
        self.feature_spec = spec
        self.stft = _constant(
            _nnaudio().STFT(
                **_stft_args(spec), freq_scale="no", sr=spec.sample_rate, output_format="Complex"
            )
        )

    def power(self, audio: torch.Tensor) -> torch.Tensor:
        """Squared magnitude |X|^2, (B, n_fft // 2 + 1, frames)."""
        x = _as_batch(audio, self.feature_spec.n_fft // 2, self)
        return _complex_power(self.stft(x, output_format="Complex"))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return _magnitude(self.power(audio))


class LogMel(nn.Module):
    """Natural-log mel spectrogram: (T,) or (B, T) audio -> (B, n_mels, T // hop + 1).

    mel = M @ |STFT|^power with M the Slaney-scale, Slaney-normalised filterbank (librosa's
    defaults, `mel_filterbank(spec)`); output = log(clamp(mel, min=spec.log_floor)).
    """

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__()
        self.feature_spec = spec
        self.melspec = _constant(
            _nnaudio().MelSpectrogram(
                **_stft_args(spec),
                sr=spec.sample_rate,
                n_mels=spec.n_mels,
                power=spec.power,
                htk=False,
                fmin=spec.f_min,
                fmax=spec.f_max,
                norm=1,
            )
        )

    def mel(self, audio: torch.Tensor) -> torch.Tensor:
        """Linear mel before the log, (B, n_mels, frames)."""
        x = _as_batch(audio, self.feature_spec.n_fft // 2, self)
        power = _complex_power(self.melspec.stft(x, output_format="Complex"))
        spectrum = power if self.feature_spec.power == 2.0 else _magnitude(power)
        return torch.matmul(self.melspec.mel_basis, spectrum)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel(audio).clamp(min=self.feature_spec.log_floor))


def mel_filterbank(spec: FeatureSpec) -> torch.Tensor:
    """The float32 (n_mels, n_fft // 2 + 1) filterbank `LogMel(spec)` multiplies by."""
    from nnAudio.librosa_functions import get_mel  # what nnAudio's MelSpectrogram calls

    basis = get_mel(
        spec.sample_rate, spec.n_fft, spec.n_mels, spec.f_min, spec.f_max, htk=False, norm=1
    )
    return torch.from_numpy(basis)


def log_mel(audio: torch.Tensor, spec: FeatureSpec) -> torch.Tensor:
    """One-off `LogMel(spec)(audio)` on audio's device and dtype: (T,) or (B, T) -> (B, n_mels, F).

    Builds a fresh layer on every call (tens of milliseconds for the Fourier kernels) and keeps no
    cache; code that runs repeatedly should hold a `LogMel` instead.
    """
    return LogMel(spec).to(device=audio.device, dtype=audio.dtype)(audio)


class CQT(nn.Module):
    """Constant-Q magnitude (nnAudio CQT1992v2, librosa-style scaling).

    (T,) or (B, T) audio -> (B, n_bins, T // hop_length + 1). Bin k is centred on
    fmin * 2 ** (k / bins_per_octave) Hz (`frequencies`). Input must be longer than half the
    longest (lowest-bin) kernel, `min_samples`.
    """

    def __init__(
        self,
        sample_rate: int,
        hop_length: int = 256,
        fmin: float = 32.70,
        n_bins: int = 84,
        bins_per_octave: int = 12,
    ) -> None:
        super().__init__()
        if min(sample_rate, hop_length, fmin, n_bins, bins_per_octave) <= 0:
            raise ConfigError(
                f"CQT needs positive sample_rate, hop_length, fmin, n_bins, bins_per_octave; got "
                f"{sample_rate}, {hop_length}, {fmin}, {n_bins}, {bins_per_octave}"
            )
        top = fmin * 2.0 ** ((n_bins - 1) / bins_per_octave)
        if top >= sample_rate / 2:
            raise ConfigError(
                f"CQT top bin {top:.1f} Hz is not below Nyquist ({sample_rate / 2:g} Hz): "
                f"lower n_bins={n_bins} or fmin={fmin}"
            )
        self.sample_rate, self.hop_length = int(sample_rate), int(hop_length)
        self.fmin, self.n_bins = float(fmin), int(n_bins)
        self.bins_per_octave = int(bins_per_octave)
        self.cqt = _constant(
            _nnaudio().CQT1992v2(
                sr=sample_rate,
                hop_length=hop_length,
                fmin=fmin,
                n_bins=n_bins,
                bins_per_octave=bins_per_octave,
                window="hann",
                center=True,
                pad_mode="reflect",
                output_format="Complex",
                verbose=False,
            )
        )
        self.min_samples = int(self.cqt.kernel_width // 2)
        self.frequencies = torch.as_tensor(self.cqt.frequencies, dtype=torch.float64)

    @classmethod
    def from_spec(
        cls,
        spec: FeatureSpec,
        fmin: float = 32.70,
        bins_per_octave: int = 12,
        n_bins: int | None = None,
    ) -> "CQT":
        """A CQT at the spec's rate and hop; `n_bins` defaults to every bin up to spec.f_max."""
        if n_bins is None:
            n_bins = int(math.floor(bins_per_octave * math.log2(spec.f_max / fmin) + 1e-9)) + 1
            nyquist = spec.sample_rate / 2
            while n_bins > 1 and fmin * 2.0 ** ((n_bins - 1) / bins_per_octave) >= nyquist:
                n_bins -= 1
        return cls(spec.sample_rate, spec.hop_length, fmin, n_bins, bins_per_octave)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = _as_batch(audio, self.min_samples, self)
        return _magnitude(_complex_power(self.cqt(x, output_format="Complex")))
