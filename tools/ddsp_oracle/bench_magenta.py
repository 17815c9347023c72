"""Time Magenta ddsp's synthesis of given controls (run with the oracle python; used by bench/ddsp.py).

    /work/ddsp-oracle/bin/python tools/ddsp_oracle/bench_magenta.py CONTROLS.npz --out RESULT.json \\
        [--repeats 3] [--audio-out HARMONIC.npy]

CONTROLS.npz holds the bounded controls (after get_controls): ``f0_hz`` (B, F, 1), ``amplitudes``
(B, F, 1), ``harmonic_distribution`` (B, F, H), ``noise_magnitudes`` (B, F, M), ``ir`` (K,), and the
scalars ``n_samples``, ``sample_rate``. The synthesis timed is ddsp's own DDSP autoencoder signal
path: ``synths.Harmonic`` (window amplitude resampling, float32 cumsum) + ``synths.FilteredNoise``
(window 257) -> ``effects.Reverb`` (the IR tiled over the batch, as a trainable Reverb does), both
eagerly and inside a ``tf.function`` (traced once before timing). Prints and writes JSON with the
wall-clock seconds per call (min and median of the repeats) for each mode.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.modules.setdefault("crepe", types.ModuleType("crepe"))  # crepe cannot install offline; unused

import ddsp  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from ddsp import effects, synths  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("controls", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--audio-out", type=Path, default=None,
                        help="save the harmonic part (B, T) float32 .npy for a cross-check")
    args = parser.parse_args()
    c = np.load(args.controls)
    n_samples, sample_rate = int(c["n_samples"]), int(c["sample_rate"])
    f0 = tf.constant(c["f0_hz"], tf.float32)
    amps = tf.constant(c["amplitudes"], tf.float32)
    dist = tf.constant(c["harmonic_distribution"], tf.float32)
    mags = tf.constant(c["noise_magnitudes"], tf.float32)
    batch = int(f0.shape[0])
    ir = tf.tile(tf.constant(c["ir"], tf.float32)[tf.newaxis], [batch, 1])
    harmonic = synths.Harmonic(n_samples=n_samples, sample_rate=sample_rate,
                               amp_resample_method="window")
    noise = synths.FilteredNoise(n_samples=n_samples, window_size=257)
    reverb = effects.Reverb(trainable=False, add_dry=True)

    def synthesize(f0, amps, dist, mags, ir):
        dry = harmonic.get_signal(amps, dist, f0) + noise.get_signal(mags)
        return reverb.get_signal(dry, ir)

    modes = {"eager": synthesize, "tf_function": tf.function(synthesize)}
    result: dict = {"ddsp": ddsp.__version__, "tensorflow": tf.__version__,
                    "tf_threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                                   "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
                    "batch": batch, "n_samples": n_samples, "sample_rate": sample_rate, "modes": {}}
    for name, fn in modes.items():
        fn(f0, amps, dist, mags, ir).numpy()  # warm-up (and tracing for tf.function)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn(f0, amps, dist, mags, ir).numpy()
            times.append(time.perf_counter() - start)
        result["modes"][name] = {"seconds_min": min(times), "seconds_median": float(np.median(times)),
                                 "repeats": args.repeats}
    if args.audio_out is not None:
        np.save(args.audio_out, harmonic.get_signal(amps, dist, f0).numpy().astype(np.float32))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
