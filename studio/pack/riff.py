"""A small RIFF/WAVE chunk writer: sampler metadata (`smpl`, `inst`) on PCM WAV files.

python-soundfile cannot write these chunks, so the audio is encoded by soundfile (through
`synth.audio.to_wav_bytes`, the project's own PCM quantisation) and the chunks are appended to the
top-level RIFF list here. Layouts (little-endian):

- `smpl` (36 bytes + 24 per loop): manufacturer, product, sample period in ns (1e9 / rate),
  MIDI unity note, MIDI pitch fraction (fraction of a semitone above the unity note, in units of
  1/2**32), SMPTE format, SMPTE offset, loop count, sampler-data size; then per loop: cue id,
  type (0 = forward), start, end (inclusive sample frames), fraction, play count (0 = infinite).
- `inst` (7 bytes, padded to 8): unshifted note, fine tune (cents, signed), gain (dB, signed),
  low note, high note, low velocity, high velocity.

Files are written atomically (`synth.fileio`): a reader never sees a half-written WAV.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synth.audio import to_wav_bytes
from synth.errors import AudioError, ConfigError
from synth.fileio import atomic_write_bytes

_SMPL_HEAD = struct.Struct("<9I")
_SMPL_LOOP = struct.Struct("<6I")
_INST = struct.Struct("<BbbBBBB")


@dataclass(frozen=True)
class SamplerChunk:
    """`smpl`: the unity note (plus a fraction of a semitone) and an optional forward loop.

    `loop_start`/`loop_end` are sample frames, `loop_end` inclusive (the RIFF convention).
    """

    midi_note: int
    pitch_fraction: float = 0.0  # semitones above midi_note, in [0, 1)
    loop_start: int | None = None
    loop_end: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= int(self.midi_note) <= 127:
            raise ConfigError(f"smpl unity note must be a MIDI note 0-127, got {self.midi_note}")
        if not 0.0 <= self.pitch_fraction < 1.0:
            raise ConfigError(f"smpl pitch fraction must be in [0, 1), got {self.pitch_fraction}")
        if (self.loop_start is None) != (self.loop_end is None):
            raise ConfigError("a loop needs both loop_start and loop_end")
        if self.loop_start is not None and not 0 <= self.loop_start < self.loop_end:
            raise ConfigError(f"bad loop {self.loop_start}-{self.loop_end}: need 0 <= start < end")

    def to_bytes(self, sample_rate: int) -> bytes:
        period_ns = int(round(1e9 / sample_rate))
        fraction = min(int(round(self.pitch_fraction * 2**32)), 2**32 - 1)
        loops = [] if self.loop_start is None else [(0, 0, int(self.loop_start),
                                                     int(self.loop_end), 0, 0)]
        head = _SMPL_HEAD.pack(0, 0, period_ns, int(self.midi_note), fraction, 0, 0, len(loops), 0)
        return head + b"".join(_SMPL_LOOP.pack(*loop) for loop in loops)


@dataclass(frozen=True)
class InstrumentChunk:
    """`inst`: the key and velocity range a sampler should map the file to."""

    unshifted_note: int
    low_note: int = 0
    high_note: int = 127
    low_velocity: int = 1
    high_velocity: int = 127
    fine_tune: int = 0  # cents, -50..50
    gain: int = 0  # dB, -64..64

    def __post_init__(self) -> None:
        for name in ("unshifted_note", "low_note", "high_note", "low_velocity", "high_velocity"):
            if not 0 <= int(getattr(self, name)) <= 127:
                raise ConfigError(f"inst {name} must be 0-127, got {getattr(self, name)}")
        if not self.low_note <= self.high_note or not self.low_velocity <= self.high_velocity:
            raise ConfigError(f"inst ranges are empty: notes {self.low_note}-{self.high_note}, "
                              f"velocities {self.low_velocity}-{self.high_velocity}")
        if not -50 <= self.fine_tune <= 50 or not -64 <= self.gain <= 64:
            raise ConfigError(f"inst fine tune must be -50..50 cents and gain -64..64 dB, got "
                              f"{self.fine_tune}, {self.gain}")

    def to_bytes(self) -> bytes:
        return _INST.pack(int(self.unshifted_note), int(self.fine_tune), int(self.gain),
                          int(self.low_note), int(self.high_note), int(self.low_velocity),
                          int(self.high_velocity))


def chunk(ident: bytes, payload: bytes) -> bytes:
    """One RIFF chunk: id, little-endian size, payload, pad byte when the size is odd."""
    if len(ident) != 4:
        raise ValueError(f"chunk ids are four bytes, got {ident!r}")
    return ident + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) % 2 else b"")


def read_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Top-level chunks of a RIFF/WAVE byte string as (id, payload) pairs, in file order."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError("not a RIFF/WAVE file")
    end = min(len(data), 8 + struct.unpack_from("<I", data, 4)[0])
    pos, out = 12, []
    while pos + 8 <= end:
        ident, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if pos + 8 + size > end:
            raise AudioError(f"truncated RIFF chunk {ident!r} at byte {pos}")
        out.append((ident, data[pos + 8:pos + 8 + size]))
        pos += 8 + size + (size % 2)
    return out


def with_chunks(wav: bytes, extra: list[tuple[bytes, bytes]]) -> bytes:
    """`wav` with the `extra` chunks appended after the existing ones; chunks of the same ids
    already present are replaced. The RIFF size is rewritten."""
    ids = {ident for ident, _ in extra}
    kept = [(i, p) for i, p in read_chunks(wav) if i not in ids]
    body = b"WAVE" + b"".join(chunk(i, p) for i, p in kept + list(extra))
    return b"RIFF" + struct.pack("<I", len(body)) + body


def sampler_wav_bytes(audio: torch.Tensor | np.ndarray, sample_rate: int,
                      smpl: SamplerChunk | None, inst: InstrumentChunk | None,
                      subtype: str = "PCM_24") -> bytes:
    """Encode mono audio as a WAV (soundfile) and add `smpl`/`inst` chunks."""
    wav = to_wav_bytes(audio, sample_rate, subtype)
    n = len(audio[0] if getattr(audio, "ndim", 1) == 2 else audio)
    if smpl is not None and smpl.loop_end is not None and smpl.loop_end >= n:
        raise ConfigError(f"loop end {smpl.loop_end} is past the last frame ({n - 1})")
    extra = []
    if smpl is not None:
        extra.append((b"smpl", smpl.to_bytes(sample_rate)))
    if inst is not None:
        extra.append((b"inst", inst.to_bytes()))
    return with_chunks(wav, extra)


def write_sampler_wav(path: str | os.PathLike, audio: torch.Tensor | np.ndarray,
                      sample_rate: int, smpl: SamplerChunk | None = None,
                      inst: InstrumentChunk | None = None, subtype: str = "PCM_24") -> Path:
    """Write a (24-bit by default) WAV with sampler chunks to `path` atomically."""
    data = sampler_wav_bytes(audio, sample_rate, smpl, inst, subtype)
    try:
        atomic_write_bytes(path, data)
    except OSError as err:
        raise AudioError(f"cannot write audio to {path}: {err.strerror or err}") from err
    return Path(path)


def parse_smpl(payload: bytes) -> dict:
    """Decode a `smpl` payload (our own reader; tests use an independent one)."""
    (_, _, period, note, fraction, _, _, n_loops, _) = _SMPL_HEAD.unpack_from(payload)
    loops = [_SMPL_LOOP.unpack_from(payload, _SMPL_HEAD.size + k * _SMPL_LOOP.size)
             for k in range(n_loops)]
    return {"sample_period_ns": period, "midi_note": note, "pitch_fraction": fraction / 2**32,
            "loops": [{"type": lp[1], "start": lp[2], "end": lp[3]} for lp in loops]}


def parse_inst(payload: bytes) -> dict:
    keys = ("unshifted_note", "fine_tune", "gain", "low_note", "high_note", "low_velocity",
            "high_velocity")
    return dict(zip(keys, _INST.unpack_from(payload)))
