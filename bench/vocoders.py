"""Vocoder speed: times real time (x RT) on this machine's CPU at batch 1 and 16, and sizes.

Rows (4 s of audio per item; x RT = batch * 4 s / wall seconds, median of repeats after a warm-up):
- griffinlim: ours, 16 NNLS steps + 32 fast Griffin-Lim iterations (default 16 kHz spec);
- librosa mel_to_audio: librosa's NNLS (L-BFGS-B) + 32 Griffin-Lim iterations, same mel;
- librosa griffinlim: the 32 iterations alone, from librosa's own linear magnitude;
- hifigan v1 / v3 and istft (our default, Vocos-base dims) on the default 16 kHz spec;
- istft @ vocos spec: ours at Vocos-base dims on Vocos's mel-24 kHz spec (100 mels, n_fft 1024,
  hop 256), the same size as the next row;
- istft-gm size, Griffin-Lim phases: the bundled model's architecture (dim 256 / 768, magnitude
  head over the NNLS inversion, 32 fast Griffin-Lim iterations on its magnitude), from random
  phases and from phase-gradient integration (`gl_init="pghi"`, the bundled model's setting);
- vocos package: `vocos` built from its classes at its published mel-24 kHz configuration
  (VocosBackbone(100, 512, 1536, 8) + ISTFTHead(512, 1024, 256, "same")), random weights
  (speed does not depend on them), timed on `decode(mel)`. `vocos` is a bench-only install.

Neural models run under `torch.inference_mode()` in float32 with weight norm removed; the
critics are not built. Random weights everywhere; the Griffin-Lim rows get the log-mel of a
synthetic 4 s harmonic tone. Every row is timed with 1 torch thread and with all cores: OpenMP
threads spin-wait when another process holds a core, so on a shared machine the 1-thread figures
are the steadier ones (the load averages go into the JSON). Prints a table, writes
bench/results/vocoders.json.

    python -m bench.vocoders [--seconds 4] [--batches 1 16] [--threads 1 2] [--min-time 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Callable

import numpy as np
import torch

from bench.common import write_result
from synth.features import FeatureSpec, LogMel
from vocoders.griffinlim import GriffinLim, GriffinLimConfig
from vocoders.hifigan import HiFiGAN, HiFiGANConfig
from vocoders.istft import ISTFTConfig, ISTFTVocoder

DEFAULT_SPEC = FeatureSpec()
VOCOS_SPEC = FeatureSpec(sample_rate=24000, n_fft=1024, hop_length=256, n_mels=100, f_max=12000.0)


def _tone(spec: FeatureSpec, seconds: float) -> torch.Tensor:
    """(1, T) harmonic tone with vibrato and a little noise, T a multiple of hop."""
    n = int(seconds * spec.sample_rate) // spec.hop_length * spec.hop_length
    t = torch.arange(n, dtype=torch.float64) / spec.sample_rate
    vibrato = 0.5 * torch.sin(2 * torch.pi * 5 * t)
    y = sum(0.3 / k * torch.sin(2 * torch.pi * 220 * k * t + vibrato) for k in range(1, 10))
    noise = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (y * torch.exp(-0.5 * t) + 0.01 * noise).float()[None]


def _log_mel(spec: FeatureSpec, seconds: float, batch: int) -> torch.Tensor:
    """(batch, n_mels, seconds * rate / hop) log-mel of the tone."""
    return LogMel(spec)(_tone(spec, seconds))[..., :-1].expand(batch, -1, -1).contiguous()


def _time(fn: Callable[[], Any], warm_up: Callable[[], Any], min_time: float,
          max_repeats: int = 5) -> float:
    """Median wall seconds of `fn` after one `warm_up` call (the batch-1 call of the same model):
    at least one repeat, more until `min_time` has passed."""
    warm_up()
    times: list[float] = []
    while not times or (sum(times) < min_time and len(times) < max_repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _vocos_package() -> torch.nn.Module:
    from vocos import Vocos
    from vocos.feature_extractors import MelSpectrogramFeatures
    from vocos.heads import ISTFTHead
    from vocos.models import VocosBackbone

    return Vocos(
        feature_extractor=MelSpectrogramFeatures(sample_rate=24000, n_fft=1024, hop_length=256,
                                                 n_mels=100, padding="center"),
        backbone=VocosBackbone(input_channels=100, dim=512, intermediate_dim=1536, num_layers=8),
        head=ISTFTHead(dim=512, n_fft=1024, hop_length=256, padding="same"),
    ).eval()


def _librosa_rows(spec: FeatureSpec) -> list[tuple[str, FeatureSpec, int, Callable]]:
    import librosa

    kw = dict(n_fft=spec.n_fft, hop_length=spec.hop_length, n_iter=32)
    mel_kw = dict(sr=spec.sample_rate, n_fft=spec.n_fft, power=spec.power, fmin=spec.f_min,
                  fmax=spec.f_max, htk=False, norm="slaney")

    def mel_to_audio(mel: torch.Tensor) -> Any:
        m = mel.exp().numpy()
        return librosa.feature.inverse.mel_to_audio(m, hop_length=spec.hop_length, n_iter=32, **mel_kw)

    linear: dict[int, np.ndarray] = {}

    def griffinlim(mel: torch.Tensor) -> Any:
        if mel.shape[0] not in linear:  # the magnitude is an input here, not timed
            linear[mel.shape[0]] = librosa.feature.inverse.mel_to_stft(mel.exp().numpy(), **mel_kw)
        return librosa.griffinlim(linear[mel.shape[0]], **kw)

    return [("librosa mel_to_audio (NNLS + 32 it)", spec, 0, mel_to_audio),
            ("librosa griffinlim (32 it)", spec, 0, griffinlim)]


def rows(only: list[str] | None = None) -> list[tuple[str, FeatureSpec, int, Callable]]:
    """(name, spec, parameters, fn(mel) -> audio) for every benchmarked vocoder (or those whose
    name contains one of `only`)."""
    out: list[tuple[str, FeatureSpec, int, Callable]] = []
    gl = GriffinLim(GriffinLimConfig(feature_spec=DEFAULT_SPEC, n_iter=32)).eval()
    out.append(("griffinlim (ours, NNLS 16 + 32 it)", DEFAULT_SPEC, 0, gl))
    out.extend(_librosa_rows(DEFAULT_SPEC))
    for variant in ("v1", "v3"):
        model = HiFiGAN(HiFiGANConfig(feature_spec=DEFAULT_SPEC, variant=variant,
                                      discriminators=False)).eval().remove_weight_norm()
        out.append((f"hifigan {variant}", DEFAULT_SPEC, model.generator_parameters(), model))
    model = ISTFTVocoder(ISTFTConfig(discriminators=False)).eval()
    out.append(("istft (ours, default)", DEFAULT_SPEC, model.generator_parameters(), model))
    model = ISTFTVocoder(ISTFTConfig(feature_spec=VOCOS_SPEC, discriminators=False)).eval()
    out.append(("istft (ours) @ vocos spec", VOCOS_SPEC, model.generator_parameters(), model))
    model = ISTFTVocoder(ISTFTConfig(dim=256, intermediate_dim=768, phase="griffinlim",
                                     discriminators=False, mel_prior=True)).eval()
    out.append(("istft-gm size, griffin-lim phases", DEFAULT_SPEC, model.generator_parameters(), model))
    model = ISTFTVocoder(ISTFTConfig(dim=256, intermediate_dim=768, phase="griffinlim", gl_init="pghi",
                                     discriminators=False, mel_prior=True)).eval()
    out.append(("istft-gm size, griffin-lim phases from pghi", DEFAULT_SPEC,
                model.generator_parameters(), model))
    if not only or any(o in "vocos package (mel-24k, base)" for o in only):
        vocos = _vocos_package()  # a bench-only install: built only when asked for
        out.append(("vocos package (mel-24k, base)", VOCOS_SPEC, _params(vocos), vocos.decode))
    return [r for r in out if not only or any(o in r[0] for o in only)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}),
                        help="torch thread counts to time (default: 1 and all cores)")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of repeats per cell")
    parser.add_argument("--only", nargs="+", default=None,
                        help="time only rows whose name contains one of these")
    parser.add_argument("--name", default="vocoders", help="result name under bench/results/")
    args = parser.parse_args()
    load_before = os.getloadavg()
    models = rows(args.only)
    results = []
    header = f"{'vocoder':38s} {'spec':>13s} {'params':>7s} {'thr':>3s} " + " ".join(
        f"{'xRT b' + str(b):>9s}" for b in args.batches)
    print(header)
    print("-" * len(header))
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, spec, params, fn in models:
            row: dict[str, Any] = {"name": name, "threads": threads, "spec": spec.to_dict(),
                                   "parameters": params, "seconds_of_audio": args.seconds}
            small = _log_mel(spec, args.seconds, 1)
            for batch in args.batches:
                mel = _log_mel(spec, args.seconds, batch)
                with torch.inference_mode():
                    wall = _time(lambda: fn(mel), lambda: fn(small), args.min_time)
                row[f"wall_s_b{batch}"] = round(wall, 4)
                row[f"xrt_b{batch}"] = round(batch * args.seconds / wall, 2)
            results.append(row)
            label = f"{spec.sample_rate // 1000}k/{spec.n_mels}/{spec.hop_length}"
            cells = " ".join(f"{row[f'xrt_b{b}']:>9.2f}" for b in args.batches)
            print(f"{name:38s} {label:>13s} {params / 1e6:>6.2f}M {threads:>3d} {cells}", flush=True)
    path = write_result(args.name, {
        "seconds_of_audio": args.seconds, "batches": args.batches, "threads": args.threads,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "note": "x RT = batch * seconds / wall; the machine may be shared, see load averages",
        "rows": results,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
