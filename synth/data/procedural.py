"""Procedural instruments: six synthesis models rendered in numpy, no external files.

An instrument is a parameter preset drawn from a seeded RNG (`draw_preset`); `render_note` plays it
at one pitch and velocity through an ADSR envelope over held + release seconds, then scales the note
so its peak is `velocity_gain(velocity)` (-1 dBFS at 127, 30 dB lower at 0: never clipped, never
silent). The preset is the ground truth stored under `params` in every manifest row, with `type`,
the envelope under `adsr` and values derived per note (e.g. an FM index capped against aliasing)
under `note`.

Velocity sets the level and, per type, the brightness. Types (GM family) and their stored
`params` (v = velocity / 127):

- all: `adsr` {attack_s (linear rise), decay_s (time constant of the fall to sustain), sustain,
  release_s (linear fall to 0 after key-up)}.
- additive (synth lead): harmonic k at `tilt_db_per_octave` * log2 k dB, even harmonics
  `even_gain_db` more (odd/even balance); soft notes tilt `velocity_tilt_db` * (1 - v) dB/octave
  more. note.harmonics.
- fm (chromatic percussion for `style` "keys", else synth pad): carrier f0, modulator
  `modulator_ratio` * f0; `index` decays with time constant `index_decay_s` to `index_sustain` of
  itself, scaled by 1 - `velocity_index_depth` * (1 - v). note.index: after capping the sidebands
  below 0.45 * sample rate (Carson's rule).
- karplus (guitar): a Karplus-Strong string tuned by a fractional delay. `decay_s`: t60 of the
  fundamental at C4 (times sqrt(C4 / f0) elsewhere); loop low-pass [1 - S, S] with
  S = (1 - `brightness`) / 2; the pluck is the velocity wave of a string plucked at
  `pick_position`, plus `pluck_noise`, through a one-pole low-pass of coefficient
  `velocity_darkness` * (1 - v). note.loop_gain.
- saw (bass, as GM synth bass 1/2): two PolyBLEP saws, the second at half level `detune_cents`
  apart; a resonant (`resonance_q`) low-pass swept exponentially from `cutoff_start_ratio` to
  `cutoff_end_ratio` times f0 (time constant `filter_decay_s`; sweep octaves scaled by
  1 - `velocity_cutoff_depth` * (1 - v)).
- noise (percussive): noise band-passed with quality `q` around f0 (the labelled pitch), plus
  `tone_mix` of a sine at f0, decaying with time constant `decay_s`; soft hits are narrower
  (q * 2 ** (`velocity_q_depth` * (1 - v))). note.q.
- bell (chromatic percussion; Risset's bell): partials at `ratios` * f0 with `amps` and decay time
  constants `decays_s`, twins of the two lowest `beat_hz` apart; amplitudes times
  v ** (`velocity_brightness` * log2(ratio / lowest ratio)). The labelled pitch is the nominal f0;
  pitch trackers mostly report the strong 0.56 * f0 partial instead.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from synth.data.corpus import to_int16
from synth.data.descriptors import describe
from synth.data.gm import FAMILIES
from synth.data.shards import NoteGrid, finalize, options_hash, read_shards, shard_done, write_shard
from synth.errors import ConfigError, SynthStudioError
from synth.fileio import atomic_write_text

TYPES: tuple[str, ...] = ("additive", "fm", "karplus", "saw", "noise", "bell")
SILENCE_RMS = 1e-4
PEAK_DB = -1.0  # peak level of a velocity-127 note, dBFS
VELOCITY_RANGE_DB = 30.0  # velocity 0 would sit this far below PEAK_DB (linear in dB)
NYQUIST_FRACTION = 0.45  # no partial is placed above this fraction of the sample rate
C4_HZ = 261.6256
FM_RATIOS = (1, 2, 3, 4)
# Risset's bell (Dodge & Jerse, "Computer Music", fig. 4.28): ratios, amplitudes, relative decays.
BELL_RATIOS = (0.56, 0.92, 1.19, 1.71, 2.0, 2.74, 3.0, 3.76, 4.07)
BELL_AMPS = (1.0, 1.0, 2.67, 1.67, 1.46, 1.33, 1.33, 1.0, 1.33)
BELL_DECAYS = (1.0, 0.65, 0.325, 0.35, 0.25, 0.2, 0.15, 0.1, 0.075)


def velocity_gain(velocity: int) -> float:
    """Linear peak of a note at `velocity` (1-127), in dB PEAK_DB - 30 * (1 - velocity / 127)."""
    return float(10 ** ((PEAK_DB - VELOCITY_RANGE_DB * (1 - velocity / 127)) / 20))


def midi_hz(pitch: float) -> float:
    return 440.0 * 2 ** ((pitch - 69) / 12)


def family_of(kind: str, preset: dict[str, Any]) -> str:
    """The GM family of a preset of type `kind`."""
    if kind == "fm":
        return "chromatic percussion" if preset["style"] == "keys" else "synth pad"
    return {"additive": "synth lead", "karplus": "guitar", "saw": "bass",
            "noise": "percussive", "bell": "chromatic percussion"}[kind]


@dataclass
class ProceduralOptions(NoteGrid):
    types: tuple[str, ...] = TYPES
    instruments_per_type: int = 4
    pitch_low: int = 36
    pitch_high: int = 84
    pitch_step: int = 1
    velocities: tuple[int, ...] = (40, 80, 120)
    sample_rate: int = 16000
    held_seconds: float = 1.0
    release_seconds: float = 0.25
    seed: int = 0

    def validate(self) -> None:
        unknown = [t for t in self.types if t not in TYPES]
        if not self.types or unknown or len(set(self.types)) != len(self.types):
            raise ConfigError(f"types must be distinct names from {TYPES}, got {self.types}")
        if self.instruments_per_type < 1:
            raise ConfigError("instruments_per_type must be at least 1")
        self.check_grid()
        if midi_hz(self.pitch_high) > self.sample_rate / 8:
            raise ConfigError(f"pitch_high {self.pitch_high} is above sample_rate / 8 "
                              f"({self.sample_rate / 8:g} Hz); lower it or raise the sample rate")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative int, got {self.seed!r}")

    def jobs(self) -> list[tuple[str, int]]:
        return [(t, i) for t in self.types for i in range(self.instruments_per_type)]


# -- presets -------------------------------------------------------------------------------------
def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A uniform draw rounded to 4 decimals, so the stored JSON value is exactly the one used."""
    return round(float(rng.uniform(lo, hi)), 4)


def _adsr(rng: np.random.Generator, attack: tuple[float, float], decay: tuple[float, float],
          sustain: tuple[float, float], release_seconds: float) -> dict[str, float]:
    return {"attack_s": _u(rng, *attack), "decay_s": _u(rng, *decay), "sustain": _u(rng, *sustain),
            "release_s": round(_u(rng, 0.3, 0.9) * release_seconds, 4)}


def draw_preset(kind: str, seed: int, index: int, release_seconds: float) -> dict[str, Any]:
    """Instrument `index` of type `kind` for `seed`: a JSON-ready dict of its parameters."""
    rng = _rng(seed, TYPES.index(kind), index)
    rel = release_seconds
    if kind == "additive":
        return {"tilt_db_per_octave": _u(rng, -12, -3), "even_gain_db": _u(rng, -30, 0),
                "velocity_tilt_db": _u(rng, 2, 6),
                "adsr": _adsr(rng, (0.005, 0.08), (0.05, 0.4), (0.5, 0.9), rel)}
    if kind == "fm":
        keys = bool(rng.integers(2))
        return {"style": "keys" if keys else "pad", "modulator_ratio": int(rng.choice(FM_RATIOS)),
                "index": _u(rng, 1, 6),
                "index_decay_s": _u(rng, *((0.05, 0.6) if keys else (0.4, 2.0))),
                "index_sustain": _u(rng, *((0.0, 0.3) if keys else (0.3, 0.8))),
                "velocity_index_depth": _u(rng, 0.3, 0.8),
                "adsr": _adsr(rng, (0.001, 0.01) if keys else (0.05, 0.3), (0.2, 0.8),
                              (0.0, 0.2) if keys else (0.6, 0.9), rel)}
    if kind == "karplus":
        return {"decay_s": _u(rng, 0.8, 4.0), "brightness": _u(rng, 0.1, 0.9),
                "pick_position": _u(rng, 0.1, 0.45), "pluck_noise": _u(rng, 0.05, 0.3),
                "velocity_darkness": _u(rng, 0.7, 0.95),
                "adsr": _adsr(rng, (0.001, 0.002), (0.1, 0.1), (1.0, 1.0), rel)}
    if kind == "saw":
        return {"detune_cents": _u(rng, 0, 12), "cutoff_start_ratio": _u(rng, 8, 24),
                "cutoff_end_ratio": _u(rng, 2.5, 6), "filter_decay_s": _u(rng, 0.08, 0.8),
                "resonance_q": _u(rng, 0.7, 3.0), "velocity_cutoff_depth": _u(rng, 0.3, 0.9),
                "adsr": _adsr(rng, (0.003, 0.03), (0.1, 0.5), (0.5, 0.9), rel)}
    if kind == "noise":
        return {"q": _u(rng, 1.5, 8), "decay_s": _u(rng, 0.05, 0.5), "tone_mix": _u(rng, 0, 0.4),
                "velocity_q_depth": _u(rng, 0.3, 1.0),
                "adsr": _adsr(rng, (0.001, 0.002), (0.1, 0.1), (1.0, 1.0), rel)}
    if kind == "bell":
        length = float(rng.uniform(0.8, 3.0))
        return {"ratios": [round(r * float(rng.uniform(0.98, 1.02)), 4) for r in BELL_RATIOS],
                "amps": [round(a * float(rng.uniform(0.5, 1.5)), 4) for a in BELL_AMPS],
                "decays_s": [round(d * length, 4) for d in BELL_DECAYS],
                "beat_hz": _u(rng, 0.5, 2.0), "velocity_brightness": _u(rng, 0.5, 1.5),
                "adsr": _adsr(rng, (0.001, 0.003), (0.1, 0.1), (1.0, 1.0), rel)}
    raise ConfigError(f"unknown procedural type {kind!r}; use one of {TYPES}")


# -- oscillators and filters -------------------------------------------------------------------
def adsr_envelope(p: dict[str, float], held: int, total: int, sr: int) -> np.ndarray:
    """(total,) envelope: linear attack, exponential fall to sustain, linear release from `held`."""
    attack, decay = max(p["attack_s"], 1 / sr), max(p["decay_s"], 1 / sr)

    def gate(t: np.ndarray) -> np.ndarray:
        fall = p["sustain"] + (1 - p["sustain"]) * np.exp(-np.maximum(t - attack, 0) / decay)
        return np.where(t < attack, t / attack, fall)

    t = np.arange(total) / sr
    level = float(gate(np.array(held / sr)))
    release = level * np.clip(1 - (t - held / sr) / max(p["release_s"], 1 / sr), 0, 1)
    return np.where(np.arange(total) < held, gate(t), release)


def blep_saw(freq: float, total: int, sr: int) -> np.ndarray:
    """(total,) band-limited sawtooth in [-1, 1] (naive saw with PolyBLEP), phase 0 at t = 0."""
    dt = freq / sr
    ph = (np.arange(total) * dt) % 1.0
    saw = 2 * ph - 1
    lo, hi = ph < dt, ph > 1 - dt
    x = ph[lo] / dt
    saw[lo] -= 2 * x - x * x - 1
    x = (ph[hi] - 1) / dt
    saw[hi] -= x * x + 2 * x + 1
    return saw


def svf_lowpass(x: np.ndarray, cutoff: np.ndarray, q: float, sr: int) -> np.ndarray:
    """Time-varying resonant low-pass (Zavalishin's TPT state-variable filter).

    Args:
        x: (T,) input; cutoff: (T,) cutoff in Hz per sample (below sr / 2); q: resonance.
    """
    g = np.tan(np.pi * cutoff / sr)
    a1 = 1 / (1 + g * (g + 1 / q))
    a2, a3 = (g * a1).tolist(), (g * g * a1).tolist()
    out = np.empty(len(x))
    ic1 = ic2 = 0.0
    for n, (xn, b1, b2, b3) in enumerate(zip(x.tolist(), a1.tolist(), a2, a3)):
        v3 = xn - ic2
        v1 = b1 * ic1 + b2 * v3
        v2 = ic2 + b2 * ic1 + b3 * v3
        ic1, ic2 = 2 * v1 - ic1, 2 * v2 - ic2
        out[n] = v2
    return out


def _lagrange3(d: float) -> np.ndarray:
    """4-tap Lagrange fractional-delay FIR for a delay of `d` samples (best for 1 <= d <= 2)."""
    return np.array([np.prod([(d - m) / (k - m) for m in range(4) if m != k]) for k in range(4)])


def karplus_string(excitation: np.ndarray, period: float, t60_samples: float, stretch: float,
                   total: int) -> tuple[np.ndarray, float]:
    """Karplus-Strong: y[n] = x[n] + g * sum_j h[j] y[n - D - j], h = [1 - S, S] * Lagrange.

    The loop's phase delay at the fundamental is solved to equal `period` (samples, >= 4), so the
    string is in tune; g makes the fundamental fall 60 dB in `t60_samples`. Vectorised in blocks of
    D samples. Returns the (total,) output and the loop gain g.
    """
    w0 = 2 * np.pi / period
    lowpass = np.array([1 - stretch, stretch])
    base = int(np.floor(period - stretch - 1))
    d = period - base - stretch

    def response(delay: float) -> tuple[np.ndarray, complex]:
        h = np.convolve(lowpass, _lagrange3(delay))
        return h, complex(np.sum(h * np.exp(-1j * w0 * np.arange(len(h)))))

    for _ in range(3):  # fixed point on the loop filter's phase delay at the fundamental
        _, resp = response(d)
        d += period - base - (-np.angle(resp) / w0)
    h, resp = response(d)
    gain = min(10 ** (-3 * period / t60_samples) / abs(resp), 0.9999)
    pad = base + len(h)
    y = np.zeros(pad + total)
    x = np.zeros(total)
    x[:min(total, len(excitation))] = excitation[:total]
    for s in range(0, total, base):
        e = min(s + base, total)
        fb = sum(hj * y[pad + s - base - j: pad + e - base - j] for j, hj in enumerate(h))
        y[pad + s: pad + e] = x[s:e] + gain * fb
    return y[pad:], float(gain)


# -- the six instrument types: (preset, f0 Hz, velocity in (0, 1], t (T,) s, sr, rng) -> (T,), info
def _additive(p: dict, f0: float, v: float, t: np.ndarray, sr: int,
              rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    k = np.arange(1, int(NYQUIST_FRACTION * sr / f0) + 1)
    tilt = p["tilt_db_per_octave"] - p["velocity_tilt_db"] * (1 - v)
    amps = 10 ** ((tilt * np.log2(k) + np.where(k % 2 == 0, p["even_gain_db"], 0.0)) / 20)
    w = 2 * np.pi * f0 * t
    return sum(a * np.sin(n * w) for n, a in zip(k.tolist(), amps.tolist())), {"harmonics": len(k)}


def _fm(p: dict, f0: float, v: float, t: np.ndarray, sr: int,
        rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    m = p["modulator_ratio"]
    # Carson's rule: sidebands reach about f0 + (I + 1) * m * f0; keep them below the limit.
    cap = max(0.0, (NYQUIST_FRACTION * sr - f0) / (m * f0) - 1)
    index = round(min(p["index"] * (1 - p["velocity_index_depth"] * (1 - v)), cap), 4)
    s = p["index_sustain"]
    depth = index * (s + (1 - s) * np.exp(-t / p["index_decay_s"]))
    w = 2 * np.pi * f0 * t
    return np.sin(w + depth * np.sin(m * w)), {"index": index}


def _karplus(p: dict, f0: float, v: float, t: np.ndarray, sr: int,
             rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    period = sr / f0
    n = int(round(period))
    # Velocity wave of a string plucked at `pick_position` (the slope of the triangle the pick
    # makes: harmonics fall as sin(k pi beta) / k), plus some noise for the pick's scrape.
    beta = p["pick_position"]
    burst = np.where(np.arange(n) / n < beta, 1 - beta, -beta)
    burst = burst + p["pluck_noise"] * rng.uniform(-1, 1, n)
    dark = p["velocity_darkness"] * (1 - v)  # one-pole low-pass of the burst: soft = darker
    for i in range(1, n):
        burst[i] = (1 - dark) * burst[i] + dark * burst[i - 1]
    burst -= burst.mean()
    t60 = p["decay_s"] * np.sqrt(C4_HZ / f0) * sr
    y, gain = karplus_string(burst, period, t60, 0.5 * (1 - p["brightness"]), len(t))
    return y, {"loop_gain": round(gain, 6)}


def _saw(p: dict, f0: float, v: float, t: np.ndarray, sr: int,
         rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    detune = 2 ** (p["detune_cents"] / 2400)
    # A second saw at half level, detuned: it beats without ever cancelling the fundamental.
    osc = (blep_saw(f0 * detune, len(t), sr) + 0.5 * blep_saw(f0 / detune, len(t), sr)) / 1.5
    octaves = np.log2(p["cutoff_start_ratio"] / p["cutoff_end_ratio"])
    octaves *= 1 - p["velocity_cutoff_depth"] * (1 - v)
    cutoff = f0 * p["cutoff_end_ratio"] * 2 ** (octaves * np.exp(-t / p["filter_decay_s"]))
    return svf_lowpass(osc, np.minimum(cutoff, NYQUIST_FRACTION * sr), p["resonance_q"], sr), {}


def _noise(p: dict, f0: float, v: float, t: np.ndarray, sr: int,
           rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    q = p["q"] * 2 ** (p["velocity_q_depth"] * (1 - v))  # soft hits: a narrower band
    f = np.fft.rfftfreq(len(t), 1 / sr)
    f[0] = f[1]
    band = np.fft.irfft(np.fft.rfft(rng.standard_normal(len(t)))
                        / np.sqrt(1 + q * q * (f / f0 - f0 / f) ** 2), n=len(t))
    band /= np.sqrt(np.mean(band ** 2))
    mix = p["tone_mix"]
    y = (1 - mix) * band + mix * np.sqrt(2) * np.sin(2 * np.pi * f0 * t)
    return y * np.exp(-t / p["decay_s"]), {"q": round(q, 4)}


def _bell(p: dict, f0: float, v: float, t: np.ndarray, sr: int,
          rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    ratios = np.asarray(p["ratios"])
    amps = np.asarray(p["amps"]) * v ** (p["velocity_brightness"] * np.log2(ratios / ratios.min()))
    y = np.zeros(len(t))
    for k, (r, a, tau) in enumerate(zip(ratios.tolist(), amps.tolist(), p["decays_s"])):
        if r * f0 >= NYQUIST_FRACTION * sr:
            continue
        y += a * np.exp(-t / tau) * np.sin(2 * np.pi * r * f0 * t)
        if k < 2:  # Risset's beating twins of the two lowest partials
            twin = 2 * np.pi * (r * f0 + p["beat_hz"])
            y += 0.67 * a * np.exp(-t / (0.9 * tau)) * np.sin(twin * t)
    return y, {}


RENDERERS: dict[str, Callable[..., tuple[np.ndarray, dict]]] = {
    "additive": _additive, "fm": _fm, "karplus": _karplus, "saw": _saw, "noise": _noise,
    "bell": _bell,
}


def render_note(kind: str, preset: dict[str, Any], pitch: int, velocity: int, sample_rate: int,
                held_seconds: float, release_seconds: float,
                rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """One note of a preset.

    Returns:
        (audio, info): float32 (round((held + release) * sample_rate),) with peak
        `velocity_gain(velocity)`, and per-note derived values (stored as params["note"]).
    """
    held = int(round(held_seconds * sample_rate))
    total = int(round((held_seconds + release_seconds) * sample_rate))
    t = np.arange(total) / sample_rate
    raw, info = RENDERERS[kind](preset, midi_hz(pitch), velocity / 127, t, sample_rate, rng)
    y = raw * adsr_envelope(preset["adsr"], held, total, sample_rate)
    peak = float(np.max(np.abs(y)))
    if not np.isfinite(peak) or peak == 0:
        raise SynthStudioError(f"procedural {kind} rendered an empty note at pitch {pitch}")
    y = (y * (velocity_gain(velocity) / peak)).astype(np.float32)
    rms = float(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
    if rms <= SILENCE_RMS:
        raise SynthStudioError(f"procedural {kind} note at pitch {pitch}, velocity {velocity} "
                               f"is nearly silent (RMS {rms:.2e}); this is a builder bug")
    return y, info


# -- building -------------------------------------------------------------------------------------
def shard_name(kind: str, index: int) -> str:
    return f"{kind}_{index:02d}"


def render_job(job: tuple[dict[str, Any], str, int]) -> tuple[str, np.ndarray, list[dict]]:
    """Every (pitch, velocity) of one instrument: (shard name, int16 (notes, samples), rows)."""
    opts, kind, index = job
    o = ProceduralOptions(**opts)
    preset = draw_preset(kind, o.seed, index, o.release_seconds)
    family = family_of(kind, preset)
    pcm, rows = [], []
    for pitch in o.pitches:
        for velocity in o.velocities:
            rng = _rng(o.seed, TYPES.index(kind), index, pitch, velocity)
            audio, info = render_note(kind, preset, pitch, velocity, o.sample_rate,
                                      o.held_seconds, o.release_seconds, rng)
            pcm.append(to_int16(audio)[0])
            rows.append({
                "id": f"procedural-s{o.seed}-{kind}{index}-m{pitch:03d}-v{velocity:03d}",
                "source": "procedural", "instrument": f"procedural {kind} {index}",
                "instrument_id": f"procedural/{o.seed}/{kind}/{index}",
                "family": family, "family_id": FAMILIES.index(family), "program": None,
                "pitch": pitch, "velocity": velocity,
                "split": "train", "instrument_split": "train", "caption": "",
                "descriptors": describe(audio, o.sample_rate, pitch, o.held_seconds),
                "params": {"type": kind, **preset, "note": info},
            })
    return shard_name(kind, index), np.stack(pcm), rows


def _run(jobs: list[tuple[dict[str, Any], str, int]],
         workers: int) -> Iterator[tuple[str, np.ndarray, list[dict[str, Any]]]]:
    """Results of `render_job` in completion order; in this process when `workers` is 1."""
    if workers == 1:
        yield from map(render_job, jobs)
        return
    with mp.get_context("fork").Pool(workers) as pool:
        yield from pool.imap_unordered(render_job, jobs)


def build_procedural(out: str | Path, options: ProceduralOptions, workers: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Render (or resume) a procedural corpus into `out`; one shard per instrument.

    `workers` processes render (None: one per core; 1: in this process). Returns the build report,
    also written to `out/build_report.json`.
    """
    options.validate()
    out = Path(out)
    shard_dir = out / "shards"
    opts = asdict(options)
    opts_hash = options_hash(opts)
    names = [shard_name(k, i) for k, i in options.jobs()]
    todo = [(opts, k, i) for (k, i), n in zip(options.jobs(), names)
            if not shard_done(shard_dir, n, opts_hash)]
    per_job = len(options.pitches) * len(options.velocities)
    total_notes = per_job * len(names)
    done = (len(names) - len(todo)) * per_job
    if progress:
        progress(done, total_notes)
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    start = time.perf_counter()
    for name, audio, rows in _run(todo, workers):
        write_shard(shard_dir, name, audio, rows, opts_hash)
        done += per_job
        if progress:
            progress(done, total_notes)
    render_s = time.perf_counter() - start
    finalize(out, shard_dir, names, options.sample_rate, options.n_samples,
             {"builder": "procedural", "options": opts}, options.seed)
    rows, _ = read_shards(shard_dir, names)
    report = {
        "notes": len(rows), "instruments": len(names), "rendered_now": len(todo) * per_job,
        "rendered_shards": sorted(shard_name(k, i) for _, k, i in todo),
        "families": {f: sum(r["family"] == f for r in rows)
                     for f in sorted({r["family"] for r in rows})},
        "render_seconds": render_s, "workers": workers,
    }
    atomic_write_text(out / "build_report.json", json.dumps(report, indent=2, sort_keys=True))
    return report
