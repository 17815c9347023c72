"""How fine must DDSP's filtered noise be to carry what the harmonics miss? An oracle check.

    python -m bench.ddsp_noise_oracle --model ddsp-gm --n 48
    python -m bench.ddsp_noise_oracle --model ddsp-gm --n 96 --bands 65:128,129:256,257:512

For held-out notes (the `bench.ddsp_eval` picks) the model's own harmonic part (its resynthesis,
noise left out) is completed by an *oracle* noise: filtered noise whose band magnitudes, frame by
frame, are the original's power left over by that harmonic part (|X|^2 - |H|^2, floored at 0,
the model's `frame_power`: 1024-point STFT on its frame grid), read at M band points from 0 Hz
to Nyquist (`band_weights`: each band's local mean) and played through `synth.dsp_filters.filtered_noise`
with a W-tap window (each `--bands M:W`; the level calibrated on white noise). The bundled note
classifier's GM-family accuracy then says what a noise part of each resolution could carry if
the network drew it right. It sees the original, so it bounds a model of that resolution; it is
not a model. Rows: the originals, the model's resynthesis, the model's harmonic part with its
own noise (the resynthesis without the loudness lock), one row per resolution, and two rows that
split the oracle into a 65-band envelope per frame times one fine pattern per note (the whole
note's, or the first second's: `static_pattern`), what a static (z, pitch) -> fine-noise path
(`DDSPConfig.z_noise`) could add to a coarse frame-wise noise. With `--corrections`, rows that
keep the model's own noise and correct it: by one static gain per band and note (the note-mean
log ratio of the leftover to the model's noise power, at the model's bands; all of it, or only
where it raises the noise), and by adding noise shaped like the model's own harmonic part (its
STFT power read at the bands, at a fixed level below it, `--partial-db`; not an oracle: it sees
no original), what `DDSPConfig.partial_noise` draws. Also reports the fine contrast
(`fine_contrast`) of the model's noise filter and of the oracle's note-mean pattern at the
model's bands. Writes bench/results/<name>.json (default ddsp_noise_oracle).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.common import write_result  # noqa: E402
from bench.ddsp_eval import (accuracy_table, count_family_hits, heldout_setup,  # noqa: E402
                             note_batches, resynth)
from synth.base import Conditions  # noqa: E402
from synth.dsp_filters import (band_weights, filter_power_response, filtered_noise,  # noqa: E402
                                fine_pattern)
from synth.pitch import midi_to_hz  # noqa: E402

def to_bands(power: torch.Tensor, bands: int) -> torch.Tensor:
    """(B, F, K) power per STFT bin -> (B, F, bands): the local mean around each of the noise
    filter's band points (`band_weights`, triangular, centred on the band's frequency)."""
    return power @ band_weights(power.shape[-1], bands, power.device, power.dtype)


def static_pattern(left: torch.Tensor, coarse: int, fine: int, keep: int) -> torch.Tensor:
    """(B, F, K) leftover power -> (B, F, fine) band power: its `coarse`-band envelope, frame by
    frame, times one fine pattern per note (the log ratio of the fine to the coarse reading,
    averaged over the first `keep` frames weighted by their power). What a frame-wise coarse
    noise plus a static per-note fine filter could draw."""
    fine_p = to_bands(left, fine)
    env = F.interpolate(to_bands(left, coarse), size=fine, mode="linear", align_corners=True)
    ratio = torch.log((fine_p + 1e-10) / (env + 1e-10))
    w = fine_p.sum(-1)
    w[:, keep:] = 0.0
    w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
    return env * torch.einsum("bfm,bf->bm", ratio, w).exp()[:, None, :]


def fine_contrast(power: torch.Tensor, width: int = 9) -> float:
    """(B, F, M) band power -> the standard deviation (nats) of its log magnitude around a
    `width`-band moving average (`fine_pattern`; edges left out): how much fine pattern a noise
    filter draws."""
    log_mag = 0.5 * torch.log(power.clamp_min(1e-16))
    return float(fine_pattern(log_mag, width)[..., width:-width].std())


class OracleNoise:
    """Filtered noise whose per-band output power meets a target (calibrated once per
    resolution on a flat filter)."""

    def __init__(self, power: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """`power`: (B, T) audio -> (B, frames, bins) STFT power (the model's `frame_power`)."""
        self.power, self.gain = power, {}

    def __call__(self, target: torch.Tensor, window: int, n_samples: int) -> torch.Tensor:
        """target: (B, F, M) band power -> (B, n_samples) noise."""
        frames, bands = target.shape[1:]
        if (bands, window) not in self.gain:
            flat = filtered_noise(torch.ones(1, frames, bands), n_samples, window_size=window,
                                  generator=torch.Generator().manual_seed(1))
            got = to_bands(self.power(flat), bands)
            self.gain[bands, window] = float(got[..., 1:-1].mean())
        mags = (target / self.gain[bands, window]).sqrt()
        return filtered_noise(mags, n_samples, window_size=window,
                              generator=torch.Generator().manual_seed(0))


def corrected_noise(model, oracle: OracleNoise, audio: torch.Tensor, pitch: torch.Tensor,
                    harmonic: torch.Tensor, noise: torch.Tensor, left: torch.Tensor,
                    partial_db: list[float], raises: dict[str, list[float]]
                    ) -> dict[str, torch.Tensor]:
    """The `--corrections` rows: the model's own noise (read at its bands, replayed) corrected by
    one static gain per band and note, and completed by harmonic-shaped noise at fixed levels.
    audio, harmonic, noise: (B, T); pitch: (B,) MIDI; left: (B, F, K) leftover power ->
    {row: (B, T) audio}. Appends to `raises` the static gain's mean raise (nats, the positive
    part of the log ratio) over the bands by their distance to the nearest partial."""
    bands, window, n = model.config.n_noise_bands, model.noise_window(model.sample_rate), \
        audio.shape[-1]
    ours = to_bands(model.frame_power(noise), bands) + 1e-10
    log_ratio = (torch.log(to_bands(left, bands) + 1e-10) - torch.log(ours)).mean(1, keepdim=True)
    shaped = to_bands(model.frame_power(harmonic), bands)
    hz = torch.linspace(0, model.sample_rate / 2, bands)[None, :]
    ratio = hz / midi_to_hz(pitch)[:, None]
    away = (ratio - ratio.round()).abs()  # 0 on a partial, 0.5 half-way between two
    up = log_ratio[:, 0].clamp_min(0)
    for label, lo, hi in (("within 0.1 f0 of a partial", 0.0, 0.1), ("0.1-0.25 f0 away", 0.1, 0.25),
                          ("0.25-0.5 f0 away", 0.25, 0.51)):
        inside = (away >= lo) & (away < hi) & (ratio > 0.5)
        raises.setdefault(label, []).append(float(up[inside].mean()))
    rows = {"model harmonic + model noise, replayed": harmonic + oracle(ours, window, n),
            "model harmonic + model noise x one static gain per band (oracle)":
                harmonic + oracle(ours * log_ratio.exp(), window, n),
            "model harmonic + model noise x the same gain where it raises the noise (oracle)":
                harmonic + oracle(ours * log_ratio.clamp_min(0).exp(), window, n)}
    for db in partial_db:
        rows[f"model harmonic + model noise + harmonic-shaped noise at {db:g} dB"] = \
            harmonic + oracle(ours + shaped * 10 ** (db / 10), window, n)
    return rows


def resolutions(text: str) -> list[tuple[int, int]]:
    """'65:128,257:512' -> [(65, 128), (257, 512)] (bands:window taps)."""
    out = []
    for item in text.split(","):
        bands, window = (int(v) for v in item.split(":"))
        if bands < 2 or window < 3:
            raise ValueError(item)
        out.append((bands, window))
    return out


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ddsp-gm", help="bundled name or checkpoint path")
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--bands", type=resolutions, default=resolutions(
        "65:128,129:256,257:256,257:512,385:768,513:1024"),
        help="comma-separated BANDS:WINDOW noise resolutions (65:128 is ddsp's, as trained)")
    ap.add_argument("--static", type=lambda t: resolutions(t)[0], default=None,
                    help="BANDS:WINDOW of the static-pattern rows (default: the last --bands)")
    ap.add_argument("--corrections", action="store_true",
                    help="add the static-gain and harmonic-shaped-noise rows")
    ap.add_argument("--partial-db", default="-15,-20,-25",
                    help="levels (dB below the harmonic part) of the harmonic-shaped noise rows")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="ddsp_noise_oracle")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, clf, corpus, idx = heldout_setup(args.model, args.corpus, args.n)
    sr, hop = model.sample_rate, model.hop_length
    oracle = OracleNoise(model.frame_power)
    hits: dict[str, int] = {}
    raises: dict[str, list[float]] = {}
    contrast: dict[str, list[float]] = {"model noise": [], "oracle fine pattern": [],
                                        "model noise as played": [],
                                        "oracle fine pattern as played": []}
    taps = model.noise_window(sr)
    for done, audio, pitch, truth in note_batches(corpus, idx, args.batch):
        n = audio.shape[-1] // hop * hop
        audio, frames = audio[:, :n], n // hop
        f0 = midi_to_hz(pitch)[:, None].expand(-1, frames)
        ld = model.analyze_loudness(audio)
        z = model.encode(audio, Conditions(pitch=pitch))
        zf = z[:, None, :].expand(-1, frames, -1) if z.ndim == 2 else z
        harm, mags = model.get_controls(f0, ld, zf)
        harmonic, noise = model.get_parts(harm, mags, n, generator=0)
        rows = {"original": audio, "model resynthesis": resynth(model, audio, pitch),
                "model harmonic + model noise": harmonic + noise}
        left = (model.frame_power(audio) - model.frame_power(harmonic)).clamp_min(0)
        pattern = static_pattern(left, 65, mags.shape[-1], frames)
        contrast["model noise"].append(fine_contrast(mags.pow(2)))
        contrast["oracle fine pattern"].append(fine_contrast(pattern))
        # what the filter plays of each: its window smooths the band curve
        for key, m in (("model noise as played", mags), ("oracle fine pattern as played",
                                                          pattern.sqrt())):
            played = to_bands(filter_power_response(m, taps, 1024), mags.shape[-1])
            contrast[key].append(fine_contrast(played))
        for bands, window in args.bands:
            rows[f"model harmonic + oracle noise, {bands} bands, {window}-tap window"] = \
                harmonic + oracle(to_bands(left, bands), window, n)
        if args.corrections:
            rows.update(corrected_noise(model, oracle, audio, pitch, harmonic, noise, left,
                                        [float(v) for v in args.partial_db.split(",")], raises))
        bands, window = args.bands[-1] if args.static is None else args.static
        for label, keep in (("whole note", frames), ("first second", model.config.frame_rate)):
            rows[f"model harmonic + oracle noise, 65-band envelope per frame x the {label}'s "
                 f"mean fine pattern at {bands} bands, {window}-tap window"] = \
                harmonic + oracle(static_pattern(left, 65, bands, keep), window, n)
        count_family_hits(clf, rows, truth, sr, hits)
        print(f"{done}/{len(idx)} notes", flush=True)
    acc = accuracy_table(hits, len(idx))
    for label, values in raises.items():
        print(f"static gain, mean raise {label}: {sum(values) / len(values):.2f} nats")
    contrast_mean = {k: sum(v) / len(v) for k, v in contrast.items()}
    print(f"fine contrast at the model's {model.config.n_noise_bands} bands (nats): "
          + ", ".join(f"{k} {v:.2f}" for k, v in contrast_mean.items()))
    meta = getattr(model, "checkpoint_meta", {})
    path = write_result(args.name, {"model": args.model, "steps": meta.get("steps"),
                                    "n": len(idx), "family_accuracy": acc, "hits": hits,
                                    "noise_bands": model.config.n_noise_bands,
                                    "fine_contrast_nats": contrast_mean,
                                    "static_gain_raise_nats": {k: sum(v) / len(v)
                                                               for k, v in raises.items()},
                                    "wall_s": time.perf_counter() - start})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
