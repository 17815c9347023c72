"""Notes sliced from a user's own recordings and labelled with CREPE pitch.

Audio files (WAV, FLAC, OGG, AIFF), found recursively and taken in sorted order, are read with
`synth.audio` at their own rate. A file is skipped, and listed in the build report with its reason,
when it is

- unreadable: `synth.audio` raises `AudioError` (not audio, empty, NaN/Inf samples);
- silent: its peak is below `silence_db` dBFS;
- clipped: more than `clip_fraction` of its samples (any channel) sit at full scale
  (|x| >= `clip_level`);
- "no notes": no onset found, or every note dropped as too short or too quiet;
- unpitched: every note it yields is unpitched (below).

Single notes dropped from a usable file are listed too (reasons "short", "silent", "unpitched").
The rest are mixed to mono, resampled (soxr) to `sample_rate` and cut at onsets: log-magnitude
spectral flux where the level rises, peak-picked against a moving average, each peak moved back to
where a 5 ms RMS envelope starts its rise. A note runs from its onset to the next onset (or the end
of the file), trimmed to `note_seconds` with a 10 ms fade-out, or zero-padded to it. Hard cuts to
silence are not onsets; neither is a legato note no louder than the one before it.

Descriptors come from `describe`, with the held time (where sustain is measured) estimated as
80 % of the time the note stays within 40 dB of its peak.

Pitch: CREPE (`synth.pitch.f0`, model `crepe_model`) on 20 ms frames. Only active frames count,
those within `active_db` of the note's loudest. A note whose median periodicity over them is below
`min_periodicity` is unpitched and dropped (and listed); otherwise f0 is the median over active
frames with periodicity >= `min_periodicity`, `pitch` the nearest MIDI note, and the deviation in
cents is kept in the descriptors (`pitch_cents`, with `f0_hz` and `periodicity`).

Velocity comes from the note's peak, inverting the procedural builder's level mapping
(`procedural.velocity_gain`): velocity = 127 * (1 + (peak_dB - (-1)) / 30), clipped to 1-127, so a
note peaking at -1 dBFS is 127, at -16 dBFS about 64, and at -31 dBFS or below 1.

One job (and shard) per file, keyed on the file's size and modification time, so a re-run only
processes new or changed files.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from synth.audio import load_with_rate, resample
from synth.data.corpus import to_int16
from synth.data.descriptors import describe
from synth.data.gm import FAMILIES
from synth.data.procedural import PEAK_DB, VELOCITY_RANGE_DB
from synth.data.shards import finalize, options_hash, read_shards, shard_done, write_shard
from synth.errors import AudioError, ConfigError, SynthStudioError
from synth.fileio import atomic_write_text
from synth.pitch import MODELS, f0, hz_to_midi

SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".aifc")
FLUX_FLOOR_DB = 60.0  # spectral magnitudes are floored this far below the file's loudest bin
FADE_SECONDS = 0.01
RISE_DB = 1.0  # an onset's level must rise by this much (3 frames after vs 3 before)
PITCH_FRAME_RATE = 50  # CREPE frames per second for labelling (20 ms: plenty for one note)


@dataclass
class FolderOptions:
    sample_rate: int = 16000
    note_seconds: float = 4.0
    family: str = "sound effects"  # GM's family for recorded non-instrument sounds; set it
    instrument_from: str = "folder"  # "folder": one instrument per directory; "file": per file
    crepe_model: str = "tiny"
    min_periodicity: float = 0.5
    silence_db: float = -60.0
    clip_level: float = 0.999
    clip_fraction: float = 0.001
    min_note_seconds: float = 0.1
    onset_delta: float = 0.07
    active_db: float = 30.0
    seed: int = 0

    def validate(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"family {self.family!r} is not a GM family: {', '.join(FAMILIES)}")
        if self.instrument_from not in ("folder", "file"):
            raise ConfigError(f"instrument_from must be 'folder' or 'file', "
                              f"got {self.instrument_from!r}")
        if self.crepe_model not in MODELS:
            raise ConfigError(f"crepe_model must be one of {MODELS}, got {self.crepe_model!r}")
        if self.sample_rate < 8000 or self.note_seconds <= 0:
            raise ConfigError("sample rate must be >= 8000 Hz and note_seconds positive")
        if not 0 < self.min_note_seconds <= self.note_seconds:
            raise ConfigError("min_note_seconds must be in (0, note_seconds]")
        if not 0 <= self.min_periodicity <= 1 or not 0 < self.clip_level <= 1:
            raise ConfigError("min_periodicity must be in [0, 1] and clip_level in (0, 1]")
        if not 0 <= self.clip_fraction < 1 or self.silence_db >= 0 or self.active_db <= 0:
            raise ConfigError("clip_fraction must be in [0, 1), silence_db < 0, active_db > 0")

    @property
    def n_samples(self) -> int:
        return int(round(self.note_seconds * self.sample_rate))


def find_audio(src: Path) -> list[Path]:
    """Audio files under `src` (recursive, by suffix, case-insensitive), sorted by relative path."""
    return sorted((p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES),
                  key=lambda p: p.relative_to(src).as_posix())


def velocity_from_peak(peak: float) -> int:
    """MIDI velocity of a note peaking at linear level `peak` (module docstring)."""
    peak_db = 20 * np.log10(max(peak, 1e-10))
    return int(np.clip(round(127 * (1 + (peak_db - PEAK_DB) / VELOCITY_RANGE_DB)), 1, 127))


# -- onsets -------------------------------------------------------------------------------------
def onset_strength(x: np.ndarray, sr: int) -> tuple[np.ndarray, int, int]:
    """Log-magnitude spectral flux: ((1 + T // hop,) flux, hop, n_fft); frame k centred at k * hop.

    The first frame is compared with silence, so a sound starting at sample 0 has an onset. Flux is
    zeroed where the level does not rise (the 3 frames from k are not louder than the 3 before by
    RISE_DB), so the splatter of a sound cut off is no onset; nor is a legato note no louder than
    the one it follows.
    """
    n_fft = 2 ** int(round(np.log2(0.032 * sr)))
    hop = n_fft // 4
    padded = np.pad(x.astype(np.float32), (n_fft // 2, n_fft // 2 + hop))
    n_frames = 1 + len(x) // hop
    window = np.hanning(n_fft).astype(np.float32)
    mags = []
    for k0 in range(0, n_frames, 2048):  # bounded memory for long files
        idx = np.arange(k0, min(n_frames, k0 + 2048))[:, None] * hop + np.arange(n_fft)
        mags.append(np.abs(np.fft.rfft(padded[idx] * window, axis=1)).astype(np.float32))
    mag = np.concatenate(mags)
    floor = max(float(mag.max()) * 10 ** (-FLUX_FLOOR_DB / 20), 1e-10)
    logmag = np.log(np.maximum(mag, floor))
    prev = np.vstack([np.full((1, mag.shape[1]), np.log(floor), np.float32), logmag[:-1]])
    flux = np.maximum(logmag - prev, 0).mean(axis=1)
    level = 10 * np.log10(np.sum(mag.astype(np.float64) ** 2, axis=1) + floor ** 2 * mag.shape[1])
    mean3 = np.ones(3) / 3
    before = np.convolve(np.pad(level, (3, 0), constant_values=level.min()), mean3, "valid")
    after = np.convolve(np.pad(level, (0, 2), mode="edge"), mean3, "valid")
    return flux * (after > before[:-1] + RISE_DB), hop, n_fft


def pick_peaks(flux: np.ndarray, hop: int, sr: int, delta: float, min_gap: int) -> np.ndarray:
    """Frames where the max-normalised flux is a local maximum (+-30 ms) and exceeds its +-100 ms
    moving average by `delta`, at least `min_gap` samples apart."""
    if flux.max() <= 0:
        return np.zeros(0, np.int64)
    f = flux / flux.max()
    w_max = max(1, int(round(0.03 * sr / hop)))
    w_avg = max(1, int(round(0.1 * sr / hop)))
    local_max = np.lib.stride_tricks.sliding_window_view(
        np.pad(f, w_max, constant_values=-np.inf), 2 * w_max + 1).max(axis=1)
    kernel = np.ones(2 * w_avg + 1) / (2 * w_avg + 1)
    average = np.convolve(np.pad(f, w_avg, mode="edge"), kernel, mode="valid")
    kept: list[int] = []
    for k in np.flatnonzero((f >= local_max) & (f >= average + delta)).tolist():
        if not kept or (k - kept[-1]) * hop >= min_gap:
            kept.append(k)
    return np.asarray(kept, np.int64)


def backtrack(x: np.ndarray, centre: int, lo: int, reach: int, sr: int) -> int:
    """Move an onset found near sample `centre` to where the sound starts rising.

    In [centre - reach, centre + reach) (never before `lo`), a 5 ms RMS envelope on a 1 ms hop is
    taken; the onset is the last frame before its maximum still at or below 10 % of the way from
    the window's minimum to that maximum.
    """
    fine, win = max(1, sr // 1000), max(1, sr // 200)
    start = max(lo, centre - reach)
    stop = min(len(x), centre + reach)
    n = (stop - start - win) // fine + 1
    if n < 2:
        return max(lo, min(centre, len(x) - 1))
    power = np.concatenate([[0.0], np.cumsum(x[start:stop].astype(np.float64) ** 2)])
    at = np.arange(n) * fine
    env = np.sqrt((power[at + win] - power[at]) / win)
    peak = int(env.argmax())
    low = env[:peak + 1].min()
    below = np.flatnonzero(env[:peak + 1] <= low + 0.1 * (env[peak] - low))
    return start + int(below[-1]) * fine


def detect_onsets(x: np.ndarray, sr: int, delta: float, min_gap_s: float) -> np.ndarray:
    """Onset samples (increasing, at least `min_gap_s` apart) of (T,) audio."""
    flux, hop, n_fft = onset_strength(x, sr)
    min_gap = int(round(min_gap_s * sr))
    onsets: list[int] = []
    for k in pick_peaks(flux, hop, sr, delta, min_gap).tolist():
        lo = onsets[-1] + min_gap if onsets else 0
        if lo < len(x):
            onset = backtrack(x, k * hop, lo, n_fft, sr)
            if onset >= lo:
                onsets.append(onset)
    return np.asarray(onsets, np.int64)


def slice_notes(x: np.ndarray, onsets: np.ndarray, n_samples: int,
                sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, n_samples) float32 notes (onset to next onset, faded out and zero-padded) and (N,)
    their lengths in samples before padding."""
    ends = np.append(onsets[1:], len(x))
    notes = np.zeros((len(onsets), n_samples), np.float32)
    lengths = np.minimum(ends - onsets, n_samples)
    for i, (s, n) in enumerate(zip(onsets.tolist(), lengths.tolist())):
        fade = min(n, int(round(FADE_SECONDS * sr)))
        notes[i, :n] = x[s:s + n]
        notes[i, n - fade:n] *= np.linspace(1, 0, fade, dtype=np.float32)
    return notes, lengths


# -- pitch --------------------------------------------------------------------------------------
def label_pitch(notes: np.ndarray, sr: int, o: FolderOptions) -> list[dict[str, float]]:
    """Per note of (N, T) audio: {"periodicity"} and, when pitched, {"f0_hz", "midi"} (float)."""
    hop = sr // PITCH_FRAME_RATE
    track = f0(torch.from_numpy(notes), sr, hop_length=hop, model=o.crepe_model)
    n_frames = track.f0_hz.shape[1]
    padded = np.pad(notes, ((0, 0), (hop // 2, hop * n_frames)))
    idx = np.arange(n_frames)[:, None] * hop + np.arange(hop)
    level = 10 * np.log10(np.mean(padded[:, idx] ** 2, axis=2) + 1e-20)  # (N, frames) dB
    labels = []
    for b in range(len(notes)):
        active = level[b] >= level[b].max() - o.active_db
        per = track.periodicity[b].numpy()
        median_per = float(np.median(per[active]))
        if median_per < o.min_periodicity:
            labels.append({"periodicity": median_per})
            continue
        hz = float(np.median(track.f0_hz[b].numpy()[active & (per >= o.min_periodicity)]))
        labels.append({"periodicity": median_per, "f0_hz": hz, "midi": float(hz_to_midi(hz))})
    return labels


def held_estimate(note: np.ndarray, sr: int) -> float:
    """Seconds a recorded (T,) note counts as held, for the sustain descriptor: 80 % of the time
    until its 10 ms RMS envelope last sits within 40 dB of its peak (the key-up is unknown)."""
    hop = max(1, sr // 100)
    n = len(note) // hop
    env = np.sqrt(np.mean(note[:n * hop].astype(np.float64).reshape(n, hop) ** 2, axis=1))
    sounding = np.flatnonzero(env >= env.max() * 10 ** (-40 / 20))
    return 0.8 * (int(sounding[-1]) + 1) * hop / sr


# -- one file -----------------------------------------------------------------------------------
def instrument_of(rel: str, src_name: str, how: str) -> tuple[str, str]:
    """(instrument name, instrument_id) of the file at relative path `rel`."""
    path = Path(rel)
    if how == "file":
        return path.stem, "folder/" + path.with_suffix("").as_posix()
    parent = path.parent.as_posix()
    key = src_name if parent == "." else parent
    return Path(key).name, "folder/" + key


def check_file(x: np.ndarray, o: FolderOptions) -> tuple[str, str] | None:
    """(reason, detail) when (C, T) audio at its own rate is silent or clipped (in any channel)."""
    peak = float(np.abs(x).max())
    if peak < 10 ** (o.silence_db / 20):
        return "silent", f"peak {20 * np.log10(max(peak, 1e-10)):.1f} dBFS < {o.silence_db:g} dBFS"
    clipped = float(np.mean(np.abs(x) >= o.clip_level))
    if clipped > o.clip_fraction:
        return "clipped", f"{clipped:.2%} of samples at full scale (limit {o.clip_fraction:.2%})"
    return None


def cut_notes(x: np.ndarray, o: FolderOptions) -> tuple[np.ndarray, np.ndarray, list, list]:
    """(T,) audio -> (onsets (N,), notes (N, n_samples), indices of usable notes, dropped notes)."""
    sr = o.sample_rate
    onsets = detect_onsets(x, sr, o.onset_delta, o.min_note_seconds)
    notes, lengths = slice_notes(x, onsets, o.n_samples, sr)
    keep, dropped = [], []
    for i, (s, length) in enumerate(zip(onsets.tolist(), lengths.tolist())):
        peak = float(np.abs(notes[i]).max())
        if length < o.min_note_seconds * sr:
            dropped.append({"onset_s": s / sr, "reason": "short", "detail": f"{length / sr:.3f} s"})
        elif peak < 10 ** (o.silence_db / 20):
            dropped.append({"onset_s": s / sr, "reason": "silent", "detail": f"peak {peak:.1e}"})
        else:
            keep.append(i)
    return onsets, notes, keep, dropped


def note_row(note: np.ndarray, label: dict[str, float], k: int, rel: str, onset_s: float,
             instrument: tuple[str, str], o: FolderOptions) -> dict[str, Any]:
    """The manifest row of the k-th kept (n_samples,) note of file `rel`."""
    midi = int(round(label["midi"]))
    descriptors = describe(note, o.sample_rate, label["midi"], held_estimate(note, o.sample_rate))
    descriptors.update(f0_hz=label["f0_hz"], pitch_cents=100 * (label["midi"] - midi),
                       periodicity=label["periodicity"])
    return {
        "id": f"folder:{rel}#{k:03d}", "source": "folder", "instrument": instrument[0],
        "instrument_id": instrument[1], "family": o.family,
        "family_id": FAMILIES.index(o.family), "program": None, "pitch": midi,
        "velocity": velocity_from_peak(float(np.abs(note).max())),
        "split": "train", "instrument_split": "train", "caption": "",
        "descriptors": descriptors, "file": rel, "onset_s": onset_s,
    }


def _skip(name: str, n_samples: int, rel: str, reason: str, detail: str,
          dropped: list[dict[str, Any]] | None = None) -> tuple:
    report = {"file": rel, "skipped": {"reason": reason, "detail": detail},
              "dropped": dropped or []}
    return name, np.zeros((0, n_samples), np.int16), [], report


def process_file(job: tuple[dict[str, Any], str, str, str]) -> tuple[str, np.ndarray, list, dict]:
    """Notes of one file: (shard name, int16 (notes, samples), manifest rows, file report)."""
    opts, src, rel, name = job
    o = FolderOptions(**opts)
    try:
        channels, rate = load_with_rate(Path(src) / rel, mono=False)  # (C, T)
    except AudioError as err:
        return _skip(name, o.n_samples, rel, "unreadable", str(err))
    problem = check_file(channels.numpy(), o)
    if problem:
        return _skip(name, o.n_samples, rel, *problem)
    x = resample(channels.mean(dim=0), rate, o.sample_rate).numpy().astype(np.float32)
    onsets, notes, keep, dropped = cut_notes(x, o)
    if not keep:
        return _skip(name, o.n_samples, rel, "no notes", f"{len(onsets)} onsets, none usable",
                     dropped)
    labels = label_pitch(notes[keep], o.sample_rate, o)
    instrument = instrument_of(rel, Path(src).name, o.instrument_from)
    rows, pcm = [], []
    for i, label in zip(keep, labels):
        onset_s = float(onsets[i]) / o.sample_rate
        if "f0_hz" not in label:
            dropped.append({"onset_s": onset_s, "reason": "unpitched", "detail": f"median "
                            f"periodicity {label['periodicity']:.2f} < {o.min_periodicity:g}"})
            continue
        rows.append(note_row(notes[i], label, len(rows), rel, onset_s, instrument, o))
        pcm.append(to_int16(notes[i])[0])
    if not rows:
        return _skip(name, o.n_samples, rel, "unpitched", f"all {len(labels)} notes unpitched",
                     dropped)
    return name, np.stack(pcm), rows, {"file": rel, "skipped": None, "dropped": dropped}


# -- building -----------------------------------------------------------------------------------
def _init_worker() -> None:
    torch.set_num_threads(1)  # one CREPE thread per worker process


def _run(jobs: list[tuple], workers: int) -> Iterator[tuple]:
    """`process_file` results in completion order; in this process when `workers` is 1."""
    if workers == 1:
        yield from map(process_file, jobs)
        return
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap_unordered(process_file, jobs)


def summarize(reports: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The build report's lists and counts from the per-file reports."""
    skipped = [{"file": r["file"], **r["skipped"]} for r in reports if r["skipped"]]
    dropped = [{"file": r["file"], **d} for r in reports for d in r["dropped"]]

    def count(items: list[dict[str, Any]]) -> dict[str, int]:
        reasons = sorted({i["reason"] for i in items})
        return {k: sum(i["reason"] == k for i in items) for k in reasons}

    return {"notes": len(rows), "files": len(reports), "files_used": len(reports) - len(skipped),
            "skipped_files": skipped, "skipped_counts": count(skipped),
            "dropped_notes": dropped, "dropped_counts": count(dropped)}


def build_folder(src_dir: str | Path, out: str | Path, options: FolderOptions,
                 workers: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Slice (or resume slicing) the recordings under `src_dir` into a corpus at `out`.

    `workers` processes (spawned, one torch thread each) handle files; None or 1: this process,
    where CREPE uses torch's own threads (spawning costs seconds of torch import per worker).
    Returns the build report, also written to `out/build_report.json`.

    Raises:
        ConfigError: bad options, a missing `src_dir` or no audio files in it;
        SynthStudioError: no usable note in any file (the report is written first).
    """
    options.validate()
    src, out = Path(src_dir).resolve(), Path(out)
    if not src.is_dir():
        raise ConfigError(f"recordings folder not found: {src}")
    files = [p.relative_to(src).as_posix() for p in find_audio(src)]
    if not files:
        raise ConfigError(f"no audio files ({', '.join(SUFFIXES)}) under {src}")
    shard_dir = out / "shards"
    opts = asdict(options)
    names = ["f_" + hashlib.sha256(rel.encode()).hexdigest()[:16] for rel in files]
    stats = [(src / rel).stat() for rel in files]
    hashes = {n: options_hash({"options": opts, "file": rel, "size": st.st_size,
                               "mtime_ns": st.st_mtime_ns})
              for rel, n, st in zip(files, names, stats)}
    todo = [(opts, str(src), rel, n) for rel, n in zip(files, names)
            if not shard_done(shard_dir, n, hashes[n])]
    workers = max(1, min(workers or 1, len(todo) or 1))
    done = len(files) - len(todo)
    if progress:
        progress(done, len(files))
    start = time.perf_counter()
    for name, audio, rows, report in _run(todo, workers):
        write_shard(shard_dir, name, audio, rows, hashes[name], report)
        done += 1
        if progress:
            progress(done, len(files))
    rows, reports = read_shards(shard_dir, names)
    report = dict(summarize(reports, rows), processed_now=len(todo),
                  seconds=time.perf_counter() - start, workers=workers)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "build_report.json", json.dumps(report, indent=2, sort_keys=True))
    if not rows:
        (out / "corpus.json").unlink(missing_ok=True)  # no stale corpus passes for this build
        raise SynthStudioError(f"no usable notes in {src}; see {out / 'build_report.json'}")
    finalize(out, shard_dir, names, options.sample_rate, options.n_samples,
             {"builder": "folder", "source": str(src), "options": opts}, options.seed)
    return report
