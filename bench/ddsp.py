"""DDSP synthesis speed on the CPU, ours against Magenta's ddsp on the same controls.

    python -m bench.ddsp [--repeats 3] [--oracle /work/ddsp-oracle/bin/python] [--no-oracle]

Signal path (ddsp's autoencoder defaults): harmonic synthesiser with 60 harmonics (window amplitude
resampling) + filtered noise with 65 bands (FIR window 257), summed, then a fixed FIR reverb of 3 s
(48000 taps at 16 kHz, ddsp's default ``reverb_length``; 144000 at 48 kHz) with the dry signal added.
Controls at 250 frames per second for a 4 s note (1000 frames): an A3 with 5 Hz vibrato, random
harmonic distributions and noise magnitudes passed through our get_controls (exp_sigmoid,
harmonics above Nyquist removed and renormalised). Cases: one note and a batch of 16, at 16 and
48 kHz.

Ours runs under ``torch.no_grad()`` with torch's default thread count (2 on the reference machine)
and float64 phase (the default; no drift), and again with 1 thread, with ``OMP_WAIT_POLICY=PASSIVE``
unless the environment sets it (see below; recorded with the load average). When the oracle
environment exists (tools/ddsp_oracle/README.md) the same controls are saved to .npz and timed by
Magenta's own ``synths.Harmonic`` + ``synths.FilteredNoise`` + ``effects.Reverb`` in a subprocess
(tools/ddsp_oracle/bench_magenta.py), eager and inside ``tf.function``, right after ours, so both
see the same machine load; the speed-up is Magenta's faster mode over ours (min of the repeats).
For one-note cases the harmonic part is also compared sample by sample with Magenta's output
(max |difference| / peak): our float32 phase mode matches it, our float64 default differs by
Magenta's float32 phase drift.
Results: a table on stdout and bench/results/ddsp.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# libgomp (torch's OpenMP) spin-waits actively by default: when another process holds one of the
# two cores, every torch op then waits for a descheduled thread (one note at 16 kHz: 0.8 s instead
# of 0.02 s). Passive waiting costs nothing measurable when idle. It must be set before torch
# loads; an OMP_WAIT_POLICY already in the environment wins. TensorFlow does not use OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import write_result  # noqa: E402
from synth import dsp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MAGENTA_SCRIPT = ROOT / "tools" / "ddsp_oracle" / "bench_magenta.py"
DEFAULT_ORACLE = Path(os.environ.get("DDSP_ORACLE_PYTHON", "/work/ddsp-oracle/bin/python"))
CASES = [(1, 16000), (16, 16000), (1, 48000), (16, 48000)]
SECONDS = 4.0
FRAME_RATE = 250
N_HARMONICS = 60
N_BANDS = 65
NOISE_WINDOW = 257
REVERB_SECONDS = 3.0


def make_controls(batch: int, sample_rate: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Bounded controls for one case (float32 numpy, ddsp's layout)."""
    gen = torch.Generator().manual_seed(seed)
    n_frames = int(SECONDS * FRAME_RATE)
    t = torch.arange(n_frames) / FRAME_RATE
    f0 = dsp.midi_to_hz(torch.tensor(57.0)) * (1.0 + 0.01 * torch.sin(2 * math.pi * 5.0 * t))
    f0 = f0[None, :, None].expand(batch, n_frames, 1).contiguous()
    envelope = 4.0 * torch.clamp(t / 0.05, max=1.0) - 1.5 * t - 2.0  # attack, then decay (raw)
    amp_raw = envelope[None, :, None] + 0.1 * torch.randn(batch, n_frames, 1, generator=gen)
    dist_raw = torch.randn(batch, n_frames, N_HARMONICS, generator=gen) - 0.1 * torch.arange(
        N_HARMONICS)
    noise_raw = torch.randn(batch, n_frames, N_BANDS, generator=gen)
    controls = dsp.harmonic_controls(amp_raw, dist_raw, f0, sample_rate)
    n_ir = int(REVERB_SECONDS * sample_rate)
    decay = torch.exp(-(2.0 + math.exp(4.0)) * torch.linspace(0.0, 1.0, n_ir))
    ir = 0.01 * decay * (torch.rand(n_ir, generator=gen) * 2.0 - 1.0)
    return {"f0_hz": controls.f0_hz.numpy(), "amplitudes": controls.amplitude.numpy(),
            "harmonic_distribution": controls.distribution.numpy(),
            "noise_magnitudes": dsp.noise_controls(noise_raw).numpy(), "ir": ir.numpy(),
            "n_samples": np.int64(SECONDS * sample_rate), "sample_rate": np.int64(sample_rate)}


def synthesize(c: dict[str, torch.Tensor], n_samples: int, sample_rate: int,
               generator: torch.Generator, phase_precision: str = "float64") -> torch.Tensor:
    """(harmonic + filtered noise) -> reverb, (B, n_samples)."""
    harmonic = dsp.harmonic_synthesis(c["f0_hz"], c["amplitudes"], c["harmonic_distribution"],
                                      n_samples, sample_rate, amp_resample_method="window",
                                      phase_precision=phase_precision)
    noise = dsp.filtered_noise(c["noise_magnitudes"], n_samples, generator=generator,
                               window_size=NOISE_WINDOW)
    return dsp.reverb(harmonic + noise, c["ir"])


def time_ours(c: dict[str, torch.Tensor], n_samples: int, sample_rate: int, repeats: int,
              threads: int | None = None) -> list[float]:
    """Seconds per synthesis call (after one warm-up), with `threads` torch threads if given."""
    gen = torch.Generator().manual_seed(0)
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads)
    times = []
    try:
        with torch.no_grad():
            synthesize(c, n_samples, sample_rate, gen)
            for _ in range(repeats):
                start = time.perf_counter()
                synthesize(c, n_samples, sample_rate, gen)
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(default_threads)
    return times


def time_magenta(oracle: Path, controls: dict[str, np.ndarray], repeats: int,
                 want_audio: bool) -> tuple[dict[str, Any] | None, np.ndarray | None, str | None]:
    """Magenta's timings (and harmonic audio) from the oracle python, or an error message."""
    with tempfile.TemporaryDirectory() as tmp:
        ctl, out, audio = Path(tmp, "controls.npz"), Path(tmp, "magenta.json"), Path(tmp, "h.npy")
        np.savez(ctl, **controls)
        cmd = [str(oracle), str(MAGENTA_SCRIPT), str(ctl), "--out", str(out),
               "--repeats", str(repeats)] + (["--audio-out", str(audio)] if want_audio else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            return None, None, proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"
        return json.loads(out.read_text()), (np.load(audio) if want_audio else None), None


def harmonic_difference(c: dict[str, torch.Tensor], n_samples: int, sample_rate: int,
                        reference: np.ndarray) -> dict[str, float]:
    """Max |ours - Magenta| / Magenta's peak for the harmonic part, per phase precision."""
    ref = torch.from_numpy(reference)
    peak = float(ref.abs().max())
    out = {}
    with torch.no_grad():
        for precision in ("float64", "float32"):
            ours = dsp.harmonic_synthesis(c["f0_hz"], c["amplitudes"], c["harmonic_distribution"],
                                          n_samples, sample_rate, amp_resample_method="window",
                                          phase_precision=precision)
            out[f"max_rel_diff_{precision}"] = float((ours - ref).abs().max()) / peak
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="DDSP synthesis speed, ours vs Magenta ddsp")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--oracle", type=Path, default=DEFAULT_ORACLE,
                        help="python of the ddsp oracle environment (env DDSP_ORACLE_PYTHON)")
    parser.add_argument("--no-oracle", action="store_true", help="time ours only")
    args = parser.parse_args()
    use_oracle = not args.no_oracle and args.oracle.exists()
    load_before = os.getloadavg()
    rows = []
    for batch, sample_rate in CASES:
        controls = make_controls(batch, sample_rate)
        n_samples = int(controls["n_samples"])
        tensors = {k: torch.from_numpy(v) for k, v in controls.items() if v.ndim}
        ours = time_ours(tensors, n_samples, sample_rate, args.repeats)
        ours_1 = time_ours(tensors, n_samples, sample_rate, args.repeats, threads=1)
        row: dict[str, Any] = {
            "batch": batch, "sample_rate": sample_rate, "seconds_audio": batch * SECONDS,
            "ours_seconds_min": min(ours), "ours_seconds_median": float(np.median(ours)),
            "ours_x_real_time": batch * SECONDS / min(ours),
            "ours_1thread_seconds_min": min(ours_1),
            "ours_1thread_x_real_time": batch * SECONDS / min(ours_1)}
        if use_oracle:
            magenta, audio, error = time_magenta(args.oracle, controls, args.repeats, batch == 1)
            if magenta is None:
                row["magenta_error"] = error
            else:
                best = min(m["seconds_min"] for m in magenta["modes"].values())
                row.update({"magenta": magenta, "magenta_seconds_min": best,
                            "magenta_x_real_time": batch * SECONDS / best,
                            "speedup_vs_magenta": best / min(ours),
                            "speedup_vs_magenta_1thread": best / min(ours_1)})
            if audio is not None:
                row["harmonic_vs_magenta"] = harmonic_difference(tensors, n_samples, sample_rate,
                                                                 audio)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    payload = {
        "description": "x real time of harmonic (60) + filtered noise (65 bands) + 3 s FIR reverb, "
                       "4 s notes at 250 frames/s; ours under torch.no_grad, float64 phase",
        "settings": {"seconds": SECONDS, "frame_rate": FRAME_RATE, "n_harmonics": N_HARMONICS,
                     "noise_bands": N_BANDS, "noise_window": NOISE_WINDOW,
                     "reverb_seconds": REVERB_SECONDS, "repeats": args.repeats,
                     "torch_threads": torch.get_num_threads(),
                     "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                     "amp_resample_method": "window",
                     "phase_precision": "float64"},
        "oracle": str(args.oracle) if use_oracle else None,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "results": rows}
    path = write_result("ddsp", payload)
    threads = torch.get_num_threads()
    print(f"{'batch':>5} {'rate':>6} {'ours s':>8} {'ours xRT':>9} {'1-thread xRT':>12} "
          f"{'Magenta s':>10} {'Mag. xRT':>9} {'speed-up':>8} {'1-thread':>8}")
    for r in rows:
        mag = (f"{r['magenta_seconds_min']:>10.3f} {r['magenta_x_real_time']:>9.1f} "
               f"{r['speedup_vs_magenta']:>7.1f}x {r['speedup_vs_magenta_1thread']:>7.1f}x") \
            if "magenta_seconds_min" in r else f"{'-':>10} {'-':>9} {'-':>8} {'-':>8}"
        print(f"{r['batch']:>5} {r['sample_rate']:>6} {r['ours_seconds_min']:>8.3f} "
              f"{r['ours_x_real_time']:>9.1f} {r['ours_1thread_x_real_time']:>12.1f} {mag}")
    print(f"torch threads {threads} (default; also timed with 1), OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY')}; Magenta: TF's default pool; "
          f"load average before {load_before}, after {payload['load_average_after']}; wrote {path}")


if __name__ == "__main__":
    main()
