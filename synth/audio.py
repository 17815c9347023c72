"""Audio files and levels: load, resample, normalise, save.

Audio in synthstudio is float32, mono, nominally in [-1, 1]: (T,) for one signal, (B, T) for a
batch. The sample rate always travels beside the data; nothing here assumes one.

- Reading always goes through soundfile (any format libsndfile reads: WAV, FLAC, OGG, AIFF,
  MP3...), never torchaudio. Channels are averaged to mono; soxr ('VHQ') resamples when rates
  differ.
- Writing is atomic (`synth.fileio.atomic_path`): a failed save never leaves a half-written file
  and never destroys the file it would have replaced.
- PCM quantisation uses the same convention as the reader: code = round(x * 2**(bits-1)), clipped
  to the integer range, so a round trip errs by at most half a step (one step at exactly +1.0).

Every problem with a file or its samples raises `AudioError`, one line naming the path.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pyloudnorm
import soundfile as sf
import soxr
import torch

from synth.errors import AudioError, ConfigError
from synth.fileio import atomic_path

PathLike = str | os.PathLike
ArrayLike = torch.Tensor | np.ndarray

#: File suffix -> libsndfile container format understood by `save`.
FORMATS: dict[str, str] = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}
#: Sample encodings `save` accepts per container (the first one is the default).
SUBTYPES: dict[str, tuple[str, ...]] = {
    "WAV": ("PCM_16", "PCM_24", "FLOAT"),
    "FLAC": ("PCM_16", "PCM_24"),
    "OGG": ("VORBIS",),
}
_PCM_BITS = {"PCM_16": 16, "PCM_24": 24}
RESAMPLE_QUALITY = "VHQ"


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _check_rate(sample_rate: int, what: str = "sample_rate") -> int:
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ConfigError(f"{what} must be a positive integer number of Hz, got {sample_rate!r}")
    return int(sample_rate)


# -- reading --------------------------------------------------------------------------------
def load_with_rate(path: PathLike, *, mono: bool = True) -> tuple[torch.Tensor, int]:
    """Read an audio file at its own sample rate.

    Returns:
        (audio, sample_rate): float32 audio (T,) when `mono` (channels averaged), else (C, T).

    Raises:
        AudioError: the path is missing, a directory, not readable audio, has no samples, or holds
            any NaN/Inf sample.
    """
    p = Path(path)
    if not p.exists():
        raise AudioError(f"audio file not found: {p}")
    if p.is_dir():
        raise AudioError(f"expected an audio file but found a directory: {p}")
    try:
        data, sample_rate = sf.read(str(p), dtype="float32", always_2d=True)  # (T, C)
    except (sf.LibsndfileError, OSError) as err:
        raise AudioError(f"cannot read audio from {p}: {_one_line(err)}") from err
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(f"audio file has no samples: {p}")
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        raise AudioError(f"audio file has {bad} NaN or infinite samples of {data.size}: {p}")
    out = data.mean(axis=1) if mono else data.T  # (T,) or (C, T)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)), int(sample_rate)


def load(path: PathLike, sample_rate: int, *, mono: bool = True) -> torch.Tensor:
    """Read an audio file as float32 at `sample_rate` (soxr 'VHQ' resampling when the file differs).

    Returns:
        (T,) mono audio (channels averaged), or (C, T) when `mono=False`.

    Raises:
        AudioError: see `load_with_rate`; ConfigError for a non-positive `sample_rate`.
    """
    target = _check_rate(sample_rate)
    audio, file_rate = load_with_rate(path, mono=mono)
    return resample(audio, file_rate, target)


def resample(audio: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample (..., T) audio along the last axis with soxr 'VHQ'.

    Every leading index is resampled independently (one soxr call, one channel per signal). The
    result keeps the dtype (float32 or float64) and device; output length is about
    T * new_sr / orig_sr. Runs in numpy, so it is not differentiable. Equal rates return `audio`
    itself.
    """
    orig_sr, new_sr = _check_rate(orig_sr, "orig_sr"), _check_rate(new_sr, "new_sr")
    if orig_sr == new_sr:
        return audio
    if audio.ndim == 0 or audio.shape[-1] == 0:
        raise AudioError(f"cannot resample empty audio of shape {tuple(audio.shape)}")
    if audio.dtype not in (torch.float32, torch.float64):
        raise AudioError(f"resample needs float32 or float64 audio, got {audio.dtype}")
    lead = audio.shape[:-1]
    frames = audio.detach().cpu().reshape(-1, audio.shape[-1]).numpy().T  # (T, N)
    out = soxr.resample(np.ascontiguousarray(frames), orig_sr, new_sr, quality=RESAMPLE_QUALITY)
    out = torch.from_numpy(np.ascontiguousarray(out.T)).reshape(*lead, -1)
    return out.to(device=audio.device, dtype=audio.dtype)


# -- levels ---------------------------------------------------------------------------------
def _require_finite(audio: torch.Tensor, what: str) -> None:
    if not torch.isfinite(audio).all():
        raise AudioError(f"cannot {what} audio that contains NaN or infinite samples")


def peak_normalize(audio: torch.Tensor, peak_db: float = -1.0) -> torch.Tensor:
    """Scale each signal of (..., T) audio so its absolute peak is `peak_db` dBFS.

    Signals that are entirely zero are returned unchanged (no division by zero).
    """
    _require_finite(audio, "peak-normalise")
    peak = audio.abs().amax(dim=-1, keepdim=True)
    target = 10.0 ** (peak_db / 20.0)
    gain = torch.where(peak > 0, target / torch.where(peak > 0, peak, torch.ones_like(peak)), 1.0)
    return audio * gain


def loudness(audio: torch.Tensor, sample_rate: int) -> float:
    """Integrated loudness (ITU-R BS.1770-4, LUFS) of a mono (T,) signal, via pyloudnorm.

    Returns -inf for silence (every 400 ms block below the -70 LUFS absolute gate).

    Raises:
        AudioError: the signal is shorter than one 0.4 s gating block, or not finite.
    """
    sample_rate = _check_rate(sample_rate)
    if audio.ndim != 1:
        raise AudioError(f"loudness needs mono (T,) audio, got shape {tuple(audio.shape)}")
    _require_finite(audio, "measure the loudness of")
    meter = pyloudnorm.Meter(sample_rate)
    if audio.numel() < meter.block_size * sample_rate:
        raise AudioError(
            f"audio of {audio.numel()} samples at {sample_rate} Hz is shorter than the "
            f"{meter.block_size:g} s block that loudness is measured over"
        )
    samples = audio.detach().cpu().double().numpy()
    with np.errstate(divide="ignore"):
        return float(meter.integrated_loudness(samples))


def lufs_normalize(
    audio: torch.Tensor,
    sample_rate: int,
    target_lufs: float = -23.0,
    peak_limit_db: float | None = -1.0,
) -> torch.Tensor:
    """Scale each signal of (..., T) audio to `target_lufs` integrated loudness.

    - If the gain would push the peak above `peak_limit_db` dBFS, the gain is lowered so the peak
      sits exactly at the limit (the result is then quieter than the target). None disables this.
    - Signals too short to measure (under 0.4 s, pyloudnorm's gating block) fall back to
      `peak_normalize` at `peak_limit_db` (0 dBFS when the limit is None).
    - Silent signals (below the -70 LUFS absolute gate) are returned unchanged.
    """
    sample_rate = _check_rate(sample_rate)
    _require_finite(audio, "loudness-normalise")
    limit = 0.0 if peak_limit_db is None else peak_limit_db
    if audio.shape[-1] < pyloudnorm.Meter(sample_rate).block_size * sample_rate:
        return peak_normalize(audio, limit)
    rows = audio.reshape(-1, audio.shape[-1])
    gains = []
    for row in rows:
        measured = loudness(row, sample_rate)
        gain = 1.0 if not np.isfinite(measured) else 10.0 ** ((target_lufs - measured) / 20.0)
        peak = float(row.abs().max())
        if peak_limit_db is not None and peak * gain > 10.0 ** (peak_limit_db / 20.0):
            gain = 10.0 ** (peak_limit_db / 20.0) / peak
        gains.append(gain)
    scale = torch.tensor(gains, dtype=audio.dtype, device=audio.device)
    return audio * scale.reshape(*audio.shape[:-1], 1)


# -- writing --------------------------------------------------------------------------------
def _encode(audio: ArrayLike, subtype: str, where: str) -> np.ndarray:
    """Validate audio and turn it into the array soundfile writes verbatim: (T,)."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    if not isinstance(audio, np.ndarray):
        raise AudioError(f"expected a tensor or ndarray for {where}, got {type(audio).__name__}")
    if audio.ndim == 2 and audio.shape[0] == 1:
        audio = audio[0]
    if audio.ndim != 1:
        raise AudioError(f"can only write mono (T,) or (1, T) audio to {where}, got {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise AudioError(f"expected floating-point samples for {where}, got {audio.dtype}")
    if audio.size == 0:
        raise AudioError(f"refusing to write empty audio to {where}")
    if not np.isfinite(audio).all():
        raise AudioError(f"refusing to write NaN or infinite samples to {where}")
    if subtype in _PCM_BITS:
        # Same scale as the reader (2**(bits-1)); +1.0 clips to the top code, 1 - 2**-(bits-1).
        bits = _PCM_BITS[subtype]
        scale = 2.0 ** (bits - 1)
        codes = np.clip(np.round(audio.astype(np.float64) * scale), -scale, scale - 1)
        if bits == 16:
            return codes.astype(np.int16)
        return codes.astype(np.int32) << (32 - bits)  # libsndfile keeps the top 24 bits
    if subtype == "VORBIS":
        return np.clip(audio, -1.0, 1.0).astype(np.float32)
    return audio.astype(np.float32)  # FLOAT: stored as is, values beyond +-1 kept


def _format_for(path: Path, subtype: str | None) -> tuple[str, str]:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(FORMATS)
        raise AudioError(f"cannot tell the audio format of {path}: suffix must be one of {known}")
    chosen = SUBTYPES[fmt][0] if subtype is None else subtype
    if chosen not in SUBTYPES[fmt]:
        raise ConfigError(
            f"{fmt} cannot store {chosen} samples ({path}); use one of {', '.join(SUBTYPES[fmt])}"
        )
    return fmt, chosen


def save(
    path: PathLike, audio: ArrayLike, sample_rate: int, *, subtype: str | None = None
) -> Path:
    """Write mono audio to `path` atomically; the format comes from the suffix.

    Args:
        path: destination ending in .wav, .flac or .ogg.
        audio: float samples, (T,) or (1, T), tensor or ndarray, all finite.
        sample_rate: positive rate in Hz.
        subtype: "PCM_16" (default for .wav/.flac), "PCM_24" or "FLOAT" (.wav only); .ogg is always
            "VORBIS". PCM and Vorbis hard-clip to [-1, 1]; FLOAT stores values unchanged.

    Returns:
        The path written.

    Raises:
        AudioError: unknown suffix, bad shape/dtype, empty or non-finite audio, or a write failure;
            ConfigError: bad sample rate or a subtype the format cannot store.
    """
    target = Path(path)
    sample_rate = _check_rate(sample_rate)
    fmt, chosen = _format_for(target, subtype)
    data = _encode(audio, chosen, str(target))
    try:
        with atomic_path(target) as tmp:
            sf.write(str(tmp), data, sample_rate, subtype=chosen, format=fmt)
    except (sf.LibsndfileError, OSError) as err:
        raise AudioError(f"cannot write audio to {target}: {_one_line(err)}") from err
    return target


def to_wav_bytes(audio: ArrayLike, sample_rate: int, subtype: str = "PCM_16") -> bytes:
    """Encode mono (T,) or (1, T) audio as an in-memory WAV file (e.g. for a browser player)."""
    sample_rate = _check_rate(sample_rate)
    if subtype not in SUBTYPES["WAV"]:
        raise ConfigError(f"WAV cannot store {subtype} samples; use one of {SUBTYPES['WAV']}")
    data = _encode(audio, subtype, "WAV bytes")
    buffer = io.BytesIO()
    sf.write(buffer, data, sample_rate, subtype=subtype, format="WAV")
    return buffer.getvalue()
