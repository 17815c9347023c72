"""Regenerate tests/data/ddsp_goldens.npz with Magenta's own ddsp (3.7.0) in the oracle environment.

Run with the oracle python (recipe in tools/ddsp_oracle/README.md), from the repository root:

    /work/ddsp-oracle/bin/python tools/ddsp_oracle/make_goldens.py [--out tests/data/ddsp_goldens.npz]

Everything is float32 and short (1024 samples at 16 kHz, a few KB per array), made by ddsp's public
functions on fixed numpy inputs (seeded numpy RNG) and, for the noise, ddsp's own seeded
``synths.FilteredNoise``. tests/test_dsp.py loads the file with the project venv only.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.modules.setdefault("crepe", types.ModuleType("crepe"))  # crepe cannot install offline; unused

import ddsp  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from ddsp import core, effects, synths  # noqa: E402

SAMPLE_RATE = 16000
N_SAMPLES = 1024  # 64 ms: long enough to cross frames and Nyquist, short enough to stay small
N_FRAMES = 16  # 250 frames per second, hop 64 (ddsp's frame rate)
N_HARMONICS = 20
N_BANDS = 65  # ddsp's default noise bands
NOISE_FRAMES = 8
NOISE_SEED = 1234


def f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def harmonic_goldens(rng: np.random.Generator) -> dict[str, np.ndarray]:
    t = np.linspace(0.0, 1.0, N_FRAMES)
    f0 = np.stack([300.0 * (1000.0 / 300.0) ** t,  # glide: harmonics cross Nyquist (8 kHz)
                   220.0 * (1.0 + 0.03 * np.sin(2 * np.pi * 3 * t))])[..., None]  # vibrato
    amp_raw = rng.normal(0.0, 1.0, (2, N_FRAMES, 1))
    dist_raw = rng.normal(0.0, 2.0, (2, N_FRAMES, N_HARMONICS))
    f0, amp_raw, dist_raw = f32(f0), f32(amp_raw), f32(dist_raw)
    harmonic = synths.Harmonic(n_samples=N_SAMPLES, sample_rate=SAMPLE_RATE,
                               amp_resample_method="window")
    controls = harmonic.get_controls(amp_raw, dist_raw, f0)
    audio_window = harmonic.get_signal(**controls)
    audio_linear = core.harmonic_synthesis(
        f0, controls["amplitudes"], harmonic_distribution=controls["harmonic_distribution"],
        n_samples=N_SAMPLES, sample_rate=SAMPLE_RATE, amp_resample_method="linear")
    return {"harm_f0": f0, "harm_amp_raw": amp_raw, "harm_dist_raw": dist_raw,
            "harm_amp": f32(controls["amplitudes"]),
            "harm_dist": f32(controls["harmonic_distribution"]),
            "harm_audio_window": f32(audio_window), "harm_audio_linear": f32(audio_linear)}


def resample_goldens(rng: np.random.Generator) -> dict[str, np.ndarray]:
    x = f32(rng.uniform(0.0, 1.0, (1, 5, 2)))
    return {"up_x": x,
            "up_linear": f32(core.resample(x, 40, method="linear")),
            "up_linear_corners": f32(core.resample(x, 41, method="linear", add_endpoint=False)),
            "up_window": f32(core.upsample_with_windows(x, 40, add_endpoint=True)),
            "up_window_corners": f32(core.upsample_with_windows(x, 40, add_endpoint=False))}


def noise_goldens(rng: np.random.Generator) -> dict[str, np.ndarray]:
    raw = f32(rng.normal(0.0, 3.0, (1, NOISE_FRAMES, N_BANDS)) + 2.0)
    noise_synth = synths.FilteredNoise(n_samples=N_SAMPLES, window_size=257, initial_bias=-5.0)
    magnitudes = noise_synth.get_controls(raw)["magnitudes"]
    tf.random.set_seed(NOISE_SEED)
    audio = noise_synth.get_signal(magnitudes)
    tf.random.set_seed(NOISE_SEED)  # the same draw again, to store the noise FilteredNoise used
    noise = tf.random.uniform([1, N_SAMPLES], minval=-1.0, maxval=1.0)
    check = core.frequency_filter(noise, magnitudes, window_size=257)
    if not np.array_equal(check.numpy(), audio.numpy()):
        raise SystemExit("re-drawn noise does not reproduce FilteredNoise; golden not written")
    # frequency sampling with a window shorter than the IR (ddsp's zero-padded window branch)
    fir_mags = f32(rng.uniform(0.0, 1.0, (1, 2, 129)))
    return {"noise_raw": raw, "noise_mags": f32(magnitudes), "noise_signal": f32(noise),
            "noise_audio": f32(audio), "fir_mags": fir_mags,
            "fir_ir_w101": f32(core.frequency_impulse_response(fir_mags, window_size=101)),
            "fir_ir_w100": f32(core.frequency_impulse_response(fir_mags, window_size=100))}


def convolve_goldens(rng: np.random.Generator, dry: np.ndarray) -> dict[str, np.ndarray]:
    k = np.arange(256)
    ir = f32(rng.uniform(-1.0, 1.0, 256) * 0.3 * np.exp(-k / 40.0))
    reverb = effects.Reverb(trainable=False, add_dry=True)
    wet_dry = reverb(dry, ir)  # get_controls + get_signal, ir (K,) broadcast over the batch
    audio = f32(rng.uniform(-1.0, 1.0, (1, 256)))
    irs = f32(rng.normal(0.0, 0.3, (1, 4, 31)))
    return {"rev_ir": ir, "rev_out": f32(wet_dry), "conv_audio": audio, "conv_ir": irs,
            "conv_valid": f32(core.fft_convolve(audio, irs, padding="valid")),
            "conv_same_d0": f32(core.fft_convolve(audio, irs, padding="same",
                                                  delay_compensation=0))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/data/ddsp_goldens.npz"))
    args = parser.parse_args()
    rng = np.random.default_rng(20240607)
    goldens = harmonic_goldens(rng)
    goldens.update(resample_goldens(rng))
    goldens.update(noise_goldens(rng))
    goldens.update(convolve_goldens(rng, goldens["harm_audio_window"]))
    goldens["versions"] = np.array([f"ddsp {ddsp.__version__}", f"tensorflow {tf.__version__}",
                                    f"numpy {np.__version__}"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **goldens)
    total = sum(v.nbytes for v in goldens.values())
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes on disk, {total} raw): "
          + ", ".join(f"{k}{list(v.shape)}" for k, v in goldens.items()))


if __name__ == "__main__":
    main()
