"""Corpus build speed: notes per second per core, against raw FluidSynth on the same notes.

Three ways of rendering the same notes, one process each (so the figures are per core):
- raw_s16: pyfluidsynth's own `get_samples` (dithered int16 stereo), nothing else;
- raw_float: FluidSynth's float renderer through ctypes, nothing else;
- pipeline: synthstudio's `render_job` (float render, mono mix, silence check, int16, descriptors).
Prints a table and writes bench/results/data_build.json.

    python bench/data_build.py [--soundfont PATH] [--programs 8] [--pitch-step 4]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

import numpy as np

from bench.common import write_result
from synth.data import soundfont as sfmod


def raw_s16(opts: sfmod.SoundfontOptions, jobs) -> float:
    import fluidsynth

    fs = fluidsynth.Synth(samplerate=float(opts.sample_rate), gain=opts.gain)
    fs.setting("synth.reverb.active", 0)
    fs.setting("synth.chorus.active", 0)
    sfid = fs.sfload(opts.soundfont)
    held = int(opts.held_seconds * opts.sample_rate)
    rest = opts.n_samples - held
    n = 0
    start = time.perf_counter()
    for bank, program in jobs:
        fs.program_select(0, sfid, bank, program)
        for pitch in opts.pitches:
            for velocity in opts.velocities:
                fs.noteon(0, pitch, velocity)
                fs.get_samples(held)
                fs.noteoff(0, pitch)
                fs.get_samples(rest)
                fs.all_notes_off(0)
                n += 1
    elapsed = time.perf_counter() - start
    fs.delete()
    return n / elapsed


def raw_float(opts: sfmod.SoundfontOptions, jobs) -> float:
    synth = sfmod.FloatSynth(opts.soundfont, opts.sample_rate, opts.gain)
    held = int(opts.held_seconds * opts.sample_rate)
    n = 0
    start = time.perf_counter()
    for bank, program in jobs:
        synth.select(bank, program)
        for pitch in opts.pitches:
            for velocity in opts.velocities:
                synth.note(pitch, velocity, held, opts.n_samples)
                n += 1
    elapsed = time.perf_counter() - start
    synth.close()
    return n / elapsed


def pipeline(opts: sfmod.SoundfontOptions, jobs) -> float:
    sfmod._init_worker(asdict(opts))
    n = 0
    start = time.perf_counter()
    for job in jobs:
        _, audio, rows, report = sfmod.render_job(job)
        n += len(rows) + len(report.get("silent", []))
    elapsed = time.perf_counter() - start
    sfmod._worker["synth"].close()
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--soundfont", default=sfmod.DEFAULT_SOUNDFONT)
    ap.add_argument("--programs", type=int, default=8, help="programs spread over the 128")
    ap.add_argument("--pitch-step", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    programs = tuple(np.linspace(0, 127, args.programs).round().astype(int).tolist())
    opts = sfmod.SoundfontOptions(soundfont=args.soundfont, programs=programs,
                                  pitch_step=args.pitch_step)
    jobs = opts.jobs()
    notes = len(jobs) * len(opts.pitches) * len(opts.velocities)
    rates: dict[str, list[float]] = {"raw_s16": [], "raw_float": [], "pipeline": []}
    for _ in range(args.repeats):  # interleaved so load changes hit every variant alike
        rates["raw_s16"].append(raw_s16(opts, jobs))
        rates["raw_float"].append(raw_float(opts, jobs))
        rates["pipeline"].append(pipeline(opts, jobs))
    best = {k: max(v) for k, v in rates.items()}
    result = {
        "notes_per_run": notes, "note_seconds": opts.n_samples / opts.sample_rate,
        "sample_rate": opts.sample_rate, "soundfont": opts.soundfont, "programs": programs,
        "notes_per_second_per_core": best, "all_runs": rates,
        "ratio_pipeline_to_raw_s16": best["pipeline"] / best["raw_s16"],
        "ratio_pipeline_to_raw_float": best["pipeline"] / best["raw_float"],
    }
    print(f"{notes} notes of {result['note_seconds']:.1f} s at {opts.sample_rate} Hz, best of "
          f"{args.repeats}, one core")
    print(f"{'variant':<12}{'notes/s/core':>14}")
    for k, v in best.items():
        print(f"{k:<12}{v:>14.1f}")
    print(f"pipeline / raw_s16 = {result['ratio_pipeline_to_raw_s16']:.2f}, "
          f"pipeline / raw_float = {result['ratio_pipeline_to_raw_float']:.2f}")
    print(f"wrote {write_result('data_build', result)}")


if __name__ == "__main__":
    main()
