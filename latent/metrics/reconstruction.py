"""Reconstruction metrics: how close a re-synthesised sound is to the original.

All take (B, T) audio at one sample rate and return one value per item (B,):
- `mrstft_distance`: Parallel WaveGAN's multi-resolution STFT distance (spectral convergence +
  log-magnitude L1, averaged over (512, 1024, 2048)-point resolutions), the log term over the
  80 dB below the target's peak; 0 for identical audio. `mrstft_parts`: its terms, per
  resolution and, for the log term, per level band below the peak.
- `mel_l1`: mean |log-mel difference| under a FeatureSpec.
- `f0_error_cents`: median |cents| between torchcrepe f0 tracks over frames voiced in both
  (periodicity above a threshold); `voicing_agreement`: fraction of frames with the same
  voiced/unvoiced decision.
- `loudness_l1_db`: mean |A-weighted loudness difference| in dB over frames where the original is
  within 60 dB of its peak (silence on both sides is not counted).
"""

from __future__ import annotations

import torch

from synth.features import FeatureSpec, LogMel
from synth.pitch import PitchTrack, f0, loudness
from vocoders.losses import stft_magnitude

RESOLUTIONS = ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))


def mrstft_distance(pred: torch.Tensor, target: torch.Tensor, range_db: float = 80.0) -> torch.Tensor:
    """(B, T) x2 -> (B,) multi-resolution STFT distance.

    Both magnitudes are floored at `range_db` below the target's peak bin (per item and
    resolution) before the log term: corpus notes end in digital silence, and without a floor
    the log term would be dominated by differences 100+ dB down (Griffin-Lim's -120 dB noise vs
    exact zeros) that no one can hear.
    """
    parts = mrstft_parts(pred, target, range_db)
    return parts["sc"] + parts["log"]


def mrstft_parts(pred: torch.Tensor, target: torch.Tensor, range_db: float = 80.0,
                 bands: tuple[tuple[float, float], ...] = ()) -> dict[str, torch.Tensor]:
    """(B, T) x2 -> {name: (B,)}: the terms of `mrstft_distance` ("sc" + "log" is the distance).

    Per resolution n: "n/sc" (spectral convergence) and "n/log" (log-magnitude L1); "sc" and
    "log" are their means over the resolutions. For each (lo, hi) in `bands` (dB relative to
    the target's peak bin, lo < hi <= 0) also "log lo..hi dB" (and "n/log lo..hi dB"): the log
    term's sum over bins whose floored target level lies in (lo, hi], divided by all bins, so
    bands that tile (-range_db, 0] add up to "log"; the lowest band includes its lower edge
    (the bins at the floor).
    """
    n = min(pred.shape[-1], target.shape[-1])
    pred, target = pred[..., :n], target[..., :n]
    out: dict[str, torch.Tensor] = {}
    lowest = min((lo for lo, _ in bands), default=None)
    for n_fft, hop, win in RESOLUTIONS:
        p, t = stft_magnitude(pred, n_fft, hop, win), stft_magnitude(target, n_fft, hop, win)
        peak = t.amax(dim=(-2, -1), keepdim=True)
        floored = torch.maximum(t, peak * 10.0 ** (-range_db / 20.0))
        err = (floored.log() - torch.maximum(p, peak * 10.0 ** (-range_db / 20.0)).log()).abs()
        parts = {"sc": torch.linalg.vector_norm(t - p, dim=(-2, -1)) / torch.linalg.vector_norm(t, dim=(-2, -1)),
                 "log": err.mean((-2, -1))}
        if bands:
            level = 20.0 * torch.log10(floored / peak)
            for lo, hi in bands:
                inside = (level >= lo if lo == lowest else level > lo) & (level <= hi)
                parts[f"log {lo:g}..{hi:g} dB"] = (err * inside).mean((-2, -1))
        for key, val in parts.items():
            out[f"{n_fft}/{key}"] = val
            out[key] = out.get(key, 0.0) + val / len(RESOLUTIONS)
    return out


def mel_l1(pred: torch.Tensor, target: torch.Tensor, spec: FeatureSpec) -> torch.Tensor:
    """(B, T) x2 -> (B,) mean absolute log-mel difference."""
    n = min(pred.shape[-1], target.shape[-1])
    layer = LogMel(spec)
    return (layer(pred[..., :n]) - layer(target[..., :n])).abs().mean((-2, -1))


def pitch_tracks(audio: torch.Tensor, sample_rate: int, model: str = "tiny") -> PitchTrack:
    return f0(audio, sample_rate, model=model)


def f0_error_cents(pred: PitchTrack, target: PitchTrack, threshold: float = 0.5
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Median |cents| over frames voiced in both (NaN where none), and voicing agreement."""
    n = min(pred.f0_hz.shape[1], target.f0_hz.shape[1])
    pv, tv = pred.periodicity[:, :n] > threshold, target.periodicity[:, :n] > threshold
    cents = 1200 * torch.log2(pred.f0_hz[:, :n].clamp_min(1e-3) / target.f0_hz[:, :n].clamp_min(1e-3))
    both = pv & tv
    err = torch.stack([cents[i][both[i]].abs().median() if both[i].any() else
                       torch.tensor(float("nan")) for i in range(cents.shape[0])])
    return err, (pv == tv).float().mean(1)


def loudness_l1_db(pred: torch.Tensor, target: torch.Tensor, sample_rate: int,
                   range_db: float = 60.0) -> torch.Tensor:
    """(B, T) x2 -> (B,) mean |loudness difference| (dB) over the original's active frames."""
    n = min(pred.shape[-1], target.shape[-1])
    hop = sample_rate // 100
    lp = loudness(pred[..., :n], sample_rate, hop_length=hop)
    lt = loudness(target[..., :n], sample_rate, hop_length=hop)
    active = lt > lt.amax(1, keepdim=True) - range_db
    diff = (lp - lt).abs() * active
    return diff.sum(1) / active.sum(1).clamp_min(1)
