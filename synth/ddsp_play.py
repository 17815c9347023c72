"""Playing a DDSP model: resynthesis, timbre transfer from a recording, and MIDI rendering.

Timbre transfer follows the controls of the DDSP colab: f0 and loudness are measured from any
monophonic recording (torchcrepe + A-weighted loudness), optionally shifted by octaves/semitones
and in loudness, "auto-adjusted" to the model's trained pitch and loudness ranges, and frames
quieter than a threshold (or unvoiced) have their harmonic part muted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synth.base import Conditions
from synth.ddsp import LOUDNESS_FLOOR_DB, DDSPGenerator
from synth.errors import AudioError, ConfigError
from synth.pitch import f0 as crepe_f0
from synth.pitch import hz_to_midi, midi_to_hz


@dataclass
class TransferOptions:
    """DDSP-colab controls. `quiet_db`: frames this far below the recording's loudest are muted;
    `auto_adjust`: move the mean pitch by whole octaves into the model's range and match the
    loudness peak to the model's; `octave_shift`/`pitch_shift` (semitones) and `loudness_shift`
    (dB) are applied after that."""

    auto_adjust: bool = True
    octave_shift: int = 0
    pitch_shift: float = 0.0
    loudness_shift: float = 0.0
    quiet_db: float = 40.0
    voicing_threshold: float = 0.3
    crepe_model: str = "tiny"


def analyze(model: DDSPGenerator, audio: torch.Tensor, crepe_model: str = "tiny"
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(T,) audio at the model's rate -> f0 (1, F), periodicity (1, F), loudness (1, F)."""
    if audio.ndim != 1 or audio.numel() < model.hop_length * 4:
        raise AudioError("timbre transfer needs a mono recording of at least a few frames")
    n = audio.numel() // model.hop_length * model.hop_length
    x = audio[:n][None].float()
    frames = n // model.hop_length
    track = crepe_f0(x, model.sample_rate, hop_length=model.hop_length, model=crepe_model)
    return (track.f0_hz[:, :frames], track.periodicity[:, :frames],
            model.analyze_loudness(x))


@torch.no_grad()
def timbre_transfer(model: DDSPGenerator, audio: torch.Tensor, z: torch.Tensor | None = None,
                    options: TransferOptions | None = None, sample_rate: int | None = None,
                    controls: dict[str, float] | None = None) -> torch.Tensor:
    """Re-play a monophonic recording with the model's timbre.

    Args:
        audio: (T,) at `model.sample_rate`.
        z: (D,) or (1, D) timbre latent (default: the training mean, `latent_mean`).
    Returns:
        (T',) audio at `sample_rate` (default: the model's).
    """
    o = options or TransferOptions()
    f0, periodicity, ld = analyze(model, audio, o.crepe_model)
    voiced = periodicity > o.voicing_threshold
    loud = ld > ld.max() - o.quiet_db
    midi = hz_to_midi(f0.clamp_min(1.0))
    if o.auto_adjust:
        active = voiced & loud
        if active.any():
            lo, hi = (float(v) for v in model.pitch_range)
            mean = float(midi[active].mean())
            target = (lo + hi) / 2
            midi = midi + 12.0 * round((target - mean) / 12.0)
            ld = ld + (float(model.loudness_range[1]) - float(ld.max()))
    midi = midi + 12.0 * o.octave_shift + o.pitch_shift
    ld = ld + o.loudness_shift
    mute = ~(voiced & loud)
    ld = torch.where(mute, torch.full_like(ld, LOUDNESS_FLOOR_DB), ld)
    f0_hz = midi_to_hz(midi)
    z = model.latent_mean if z is None else z
    z = z.reshape(1, -1).to(f0_hz)
    return model.synthesize(f0_hz, ld, z, sample_rate=sample_rate, controls=controls)[0]


@dataclass(frozen=True)
class MidiNote:
    pitch: int
    velocity: int
    start: float
    end: float


def read_midi(path: str | Path) -> list[MidiNote]:
    """Notes of every track and channel of a MIDI file (drum channel 10 excluded), in seconds."""
    import mido

    try:
        midi = mido.MidiFile(str(path))
    except (OSError, EOFError, ValueError, KeyError, IndexError) as err:
        raise ConfigError(f"unreadable MIDI file {path}: {err}") from None
    notes: list[MidiNote] = []
    t = 0.0
    open_notes: dict[tuple[int, int], list[tuple[float, int]]] = {}
    for msg in midi:  # merged tracks, delta times in seconds
        t += msg.time
        if msg.type not in ("note_on", "note_off") or getattr(msg, "channel", 0) == 9:
            continue
        key = (msg.channel, msg.note)
        if msg.type == "note_on" and msg.velocity > 0:
            open_notes.setdefault(key, []).append((t, msg.velocity))
        elif open_notes.get(key):
            start, vel = open_notes[key].pop(0)
            if t > start:
                notes.append(MidiNote(msg.note, vel, start, t))
    if not notes:
        raise ConfigError(f"{path} contains no notes")
    return sorted(notes, key=lambda n: (n.start, n.pitch))


@torch.no_grad()
def render_midi(model: DDSPGenerator, notes: list[MidiNote], z: torch.Tensor | None = None,
                sample_rate: int | None = None, release: float | None = None,
                controls: dict[str, float] | None = None, seed: int = 0) -> torch.Tensor:
    """Render notes as separate voices (overlaps become polyphony) and sum them.

    Each voice lasts its note's duration plus the ADSR release, so note ends fade instead of
    clicking. Returns (T,) audio at `sample_rate` (default: the model's).
    """
    sr = sample_rate or model.sample_rate
    rel = model.config.adsr[3] if release is None else release
    total = int(np.ceil((max(n.end for n in notes) + rel) * sr))
    out = torch.zeros(total)
    z = (model.latent_mean if z is None else z).reshape(1, -1)
    for i, note in enumerate(notes):
        seconds = note.end - note.start + rel
        cond = Conditions.note(note.pitch, note.velocity, duration=seconds)
        gen = torch.Generator(device=z.device).manual_seed(seed * 100_003 + i)
        voice = model.decode(z.to(model.velocity_db.device), cond, controls=controls,
                             sample_rate=sr, generator=gen)[0].cpu()
        start = int(round(note.start * sr))
        end = min(total, start + voice.numel())
        out[start:end] += voice[: end - start]
    return out
