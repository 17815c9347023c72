"""Playing any generator from MIDI: monophonic lines or overlapping notes as summed voices."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synth.base import Conditions, Generator
from synth.errors import ConfigError


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
def render_midi(model: Generator, notes: list[MidiNote], z: torch.Tensor | None = None,
                sample_rate: int | None = None, release: float | None = None,
                controls: dict[str, float] | None = None, seed: int = 0) -> torch.Tensor:
    """Render notes as separate voices (overlaps become polyphony) and sum them.

    Works for any pitch-conditioned generator through `Generator.render`. Each voice lasts its
    note's duration plus the model's `release_seconds`, so note ends fade instead of clicking;
    models with a longest note (`max_duration`) play longer notes cut to it. Voice i is seeded
    from (seed, i). Returns (T,) audio at `sample_rate` (default: the model's).
    """
    if not notes:
        raise ConfigError("no MIDI notes to render")
    sr = sample_rate or model.sample_rate
    rel = model.release_seconds if release is None else release
    total = int(np.ceil((max(n.end for n in notes) + rel) * sr))
    out = torch.zeros(total)
    z = (model.latent_mean[None] if z is None else z)
    z = z if z.ndim >= 2 and z.shape[0] == 1 else z.reshape(1, -1)
    for i, note in enumerate(notes):
        seconds = note.end - note.start + rel
        if model.max_duration is not None:
            seconds = min(seconds, model.max_duration)
        cond = Conditions.note(note.pitch, note.velocity, duration=seconds)
        voice = model.render(z.to(model.latent_mean.device), cond, sample_rate=sr,
                             controls=controls, seed=seed * 100_003 + i)[0].cpu()
        start = int(round(note.start * sr))
        end = min(total, start + voice.numel())
        out[start:end] += voice[: end - start]
    return out
