"""NSynth-style notes rendered from General MIDI SoundFonts through FluidSynth.

Each note: the key is held for `held_seconds` (3 s), then released for `release_seconds` (1 s),
rendered in float (not the dithered int16 of pyfluidsynth's `get_samples`) with reverb and chorus
off, mixed to mono. One job per (bank, program) renders all its pitches and velocities into one
shard, so a build uses every core and re-running skips finished programs.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from synth.data.corpus import to_int16
from synth.data.descriptors import describe
from synth.data.gm import DRUM_BANK, FAMILIES, family_of, program_name
from synth.data.shards import (NoteGrid, existing_build, finalize, options_hash, read_shards,
                               remove_shards, shard_done, write_shard)
from synth.errors import ConfigError, SynthStudioError

DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
SILENCE_RMS = 1e-4


@dataclass
class SoundfontOptions(NoteGrid):
    soundfont: str = DEFAULT_SOUNDFONT
    programs: tuple[int, ...] = tuple(range(128))
    drum_kits: tuple[int, ...] = ()
    pitch_low: int = 24
    pitch_high: int = 96
    pitch_step: int = 1
    velocities: tuple[int, ...] = (25, 50, 75, 100, 127)
    sample_rate: int = 16000
    held_seconds: float = 3.0
    release_seconds: float = 1.0
    gain: float = 0.9  # FluidR3 at velocity 127 peaks at 0.9 x gain (measured over all programs)
    seed: int = 0

    def validate(self) -> None:
        if not Path(self.soundfont).is_file():
            raise ConfigError(f"SoundFont not found: {self.soundfont}")
        if not self.programs and not self.drum_kits:
            raise ConfigError("no programs or drum kits selected")
        if any(not 0 <= p < 128 for p in (*self.programs, *self.drum_kits)):
            raise ConfigError("programs and drum kits must be in 0-127")
        self.check_grid()

    def jobs(self) -> list[tuple[int, int]]:
        return [(0, p) for p in self.programs] + [(DRUM_BANK, k) for k in self.drum_kits]


class FloatSynth:
    """A FluidSynth instance with one SoundFont, rendering float audio (effects off)."""

    def __init__(self, soundfont: str, sample_rate: int, gain: float) -> None:
        try:
            import fluidsynth
        except ImportError as err:  # pragma: no cover - the binding is a hard dependency
            raise SynthStudioError(f"pyfluidsynth cannot load libfluidsynth: {err}") from None
        self.fs = fluidsynth.Synth(samplerate=float(sample_rate), gain=float(gain))
        self.fs.setting("synth.reverb.active", 0)
        self.fs.setting("synth.chorus.active", 0)
        self.sfid = self.fs.sfload(soundfont)
        if self.sfid < 0:
            raise SynthStudioError(f"FluidSynth could not load the SoundFont {soundfont}")
        self._write = fluidsynth._fl.fluid_synth_write_float
        self._write.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                                ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        self._write.restype = ctypes.c_int
        self._off = fluidsynth._fl.fluid_synth_all_sounds_off
        self._off.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self._off.restype = ctypes.c_int
        self.left = np.zeros(0, np.float32)
        self.right = np.zeros(0, np.float32)
        self.select(0, 0)  # the very first note of a new synth differs too; select() warms it up

    def select(self, bank: int, program: int) -> bool:
        """Select a preset and play one throwaway note: the first note after a program change
        differs (by ~1e-8) from later ones, so every real note is independent of history."""
        if self.fs.program_select(0, self.sfid, bank, program) != 0:
            return False
        self.note(60, 100, 1024, 2048)
        return True

    def render(self, n: int, offset: int = 0) -> None:
        """Render `n` samples into the stereo buffers at `offset`."""
        if n <= 0:
            return
        if offset + n > self.left.size:
            raise ValueError(f"render of {n} samples at {offset} overflows a {self.left.size} buffer")
        lp = self.left.ctypes.data + 4 * offset
        rp = self.right.ctypes.data + 4 * offset
        if self._write(self.fs.synth, n, lp, 0, 1, rp, 0, 1) != 0:
            raise SynthStudioError("FluidSynth failed to render")

    def note(self, pitch: int, velocity: int, held: int, total: int) -> np.ndarray:
        """One note: key down for `held` samples, then released; (total,) float32 mono."""
        if self.left.size != total:
            self.left = np.zeros(total, np.float32)
            self.right = np.zeros(total, np.float32)
        self.fs.noteon(0, pitch, velocity)
        self.render(held)
        self.fs.noteoff(0, pitch)
        self.render(total - held, held)
        mono = (self.left + self.right) * 0.5
        # Kill the voice, then render (and discard) a short tail so nothing leaks into the next note.
        self._off(self.fs.synth, 0)
        self.render(min(256, total), 0)
        return mono

    def close(self) -> None:
        self.fs.delete()


_worker: dict[str, Any] = {}


def _init_worker(opts: dict[str, Any]) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    o = SoundfontOptions(**opts)
    _worker["opts"] = o
    _worker["synth"] = FloatSynth(o.soundfont, o.sample_rate, o.gain)


def render_job(job: tuple[int, int]) -> tuple[str, np.ndarray, list[dict[str, Any]], dict[str, Any]]:
    """Render every (pitch, velocity) of one program: (name, int16 audio, rows, report)."""
    o: SoundfontOptions = _worker["opts"]
    synth: FloatSynth = _worker["synth"]
    bank, program = job
    name = f"b{bank:03d}_p{program:03d}"
    sf_name = Path(o.soundfont).stem
    held = int(round(o.held_seconds * o.sample_rate))
    total = o.n_samples
    rows, kept, silent, clipped = [], [], [], 0
    if not synth.select(bank, program):
        return name, np.zeros((0, total), np.int16), [], {"missing_preset": True, "silent": []}
    fam = family_of(program, bank)
    for pitch in o.pitches:
        for velocity in o.velocities:
            audio = synth.note(pitch, velocity, held, total)
            rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
            note_id = f"{sf_name}-{name}-m{pitch:03d}-v{velocity:03d}"
            if rms < SILENCE_RMS or not np.isfinite(rms):
                silent.append(note_id)
                continue
            pcm, n_clip = to_int16(audio)
            clipped += n_clip
            kept.append(pcm)
            rows.append({
                "id": note_id, "source": f"soundfont:{sf_name}",
                "instrument": program_name(program, bank),
                "instrument_id": f"{sf_name}/{bank}/{program}",
                "family": FAMILIES[fam], "family_id": fam, "program": program, "bank": bank,
                "pitch": pitch, "velocity": velocity,
                "split": "train", "instrument_split": "train", "caption": "",
                "descriptors": describe(audio, o.sample_rate, pitch, o.held_seconds),
            })
    audio = np.stack(kept) if kept else np.zeros((0, total), np.int16)
    return name, audio, rows, {"silent": silent, "clipped_samples": clipped}


def build_soundfont(out: str | Path, options: SoundfontOptions, workers: int | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    keep_shards: bool = False) -> dict[str, Any]:
    """Render (or resume) a SoundFont corpus into `out`. Returns a build report.

    Finished programs are kept as shards until the corpus is written, so an interrupted build
    resumes where it stopped; a finished corpus with the same options is not rebuilt.
    """
    options.validate()
    out = Path(out)
    shard_dir = out / "shards"
    opts = asdict(options)
    opts_hash = options_hash(opts)
    finished = existing_build(out, opts_hash)
    if finished is not None:
        return finished
    jobs = options.jobs()
    names = [f"b{b:03d}_p{p:03d}" for b, p in jobs]
    todo = [j for j, n in zip(jobs, names) if not shard_done(shard_dir, n, opts_hash)]
    per_job = len(options.pitches) * len(options.velocities)
    total_notes = per_job * len(jobs)
    done = (len(jobs) - len(todo)) * per_job
    if progress:
        progress(done, total_notes)
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    start = time.perf_counter()
    rendered = 0
    if todo:
        ctx = mp.get_context("fork")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(opts,)) as pool:
            for name, audio, rows, report in pool.imap_unordered(render_job, todo):
                write_shard(shard_dir, name, audio, rows, opts_hash, report)
                done += per_job
                rendered += per_job
                if progress:
                    progress(done, total_notes)
    render_s = time.perf_counter() - start
    rows, reports = read_shards(shard_dir, names)
    report = {
        "notes": len(rows), "attempted": total_notes, "rendered_now": rendered,
        "silent": sum(len(r.get("silent", [])) for r in reports),
        "silent_ids": [i for r in reports for i in r.get("silent", [])],
        "clipped_samples": sum(r.get("clipped_samples", 0) for r in reports),
        "missing_presets": [n for n, r in zip(names, reports) if r.get("missing_preset")],
        "render_seconds": render_s, "workers": workers,
    }
    builder = {"builder": "soundfont", "options": opts, "options_hash": opts_hash,
               "report": report}
    finalize(out, shard_dir, names, options.sample_rate, options.n_samples, builder, options.seed)
    if not keep_shards:
        remove_shards(shard_dir, names)
    return report
