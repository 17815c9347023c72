"""Inharmonicity analysis: the stiff-string coefficient B of a recorded note.

A stiff string's partial k sounds at ``f_k = k f0 sqrt(1 + B k^2)`` (Fletcher 1964), so upper
partials run sharp: with B = 1e-4 (a typical GM piano or guitar note in our corpus) partial 40 is
128 cents above 40 f0. A harmonic synthesizer (integer multiples of f0) cannot place them and
fills the gaps with noise instead, which is what `bench/ddsp_diagnose.py` found on struck and
plucked families. Like f0 (torchcrepe), B is an analysis control measured from the audio.

Estimation (`estimate_inharmonicity`): the note's first `seconds` (from the loudest point of its
first 100 ms), Hann window, zero-padded FFT, log magnitude floored 80 dB below the peak, resampled
to a 1-cent log-frequency grid (maximum over the bins of each cell) and max-pooled over
+-`tolerance_cents`. Every hypothesis (f0 offset in cents from the nominal pitch, B on a log grid
plus 0) scores the mean log magnitude at its first K partials, K fixed per note (the partials
below `f_max` at the largest B of the grid, at most `max_partials`) so that hypotheses are
compared over the same partials. The best hypothesis wins; a B that does not beat B = 0 by
`min_gain` nats is reported as 0 (the note is harmonic within what the spectrum shows).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from synth.errors import ConfigError
from synth.pitch import midi_to_hz

#: Lowest frequency of the log-frequency grid, Hz.
GRID_FMIN = 20.0
#: B grid: 0 and 36 values from 1e-6 to 10^-2.5 (log-spaced).
DEFAULT_B_GRID = (0.0,) + tuple(10 ** (-6 + 3.5 * i / 35) for i in range(36))


def _cent_grid_spectrum(audio: torch.Tensor, sample_rate: int, n_fft: int, f_max: float
                        ) -> torch.Tensor:
    """(B, T) -> (B, C) log magnitude on a 1-cent grid from GRID_FMIN to f_max (max over the
    FFT bins in each cell; cells narrower than a bin take the nearest bin)."""
    window = torch.hann_window(audio.shape[-1], periodic=False, dtype=torch.float64)
    mag = torch.fft.rfft(audio.double() * window, n=n_fft).abs()
    floor = mag.amax(-1, keepdim=True) * 1e-4  # -80 dB
    logmag = torch.maximum(mag, floor).log()
    n_cells = int(math.floor(1200 * math.log2(f_max / GRID_FMIN))) + 1
    freqs = torch.arange(logmag.shape[-1], dtype=torch.float64) * sample_rate / n_fft
    cell = torch.round(1200 * torch.log2(freqs.clamp_min(1e-9) / GRID_FMIN)).long()
    inside = (freqs >= GRID_FMIN) & (cell < n_cells)
    out = torch.full((audio.shape[0], n_cells), -math.inf, dtype=torch.float64)
    out.scatter_reduce_(1, cell[inside].expand(audio.shape[0], -1), logmag[:, inside],
                        reduce="amax", include_self=True)
    # cells no bin fell into: the nearest bin's value
    centre_hz = GRID_FMIN * 2 ** (torch.arange(n_cells, dtype=torch.float64) / 1200)
    nearest = torch.round(centre_hz * n_fft / sample_rate).long().clamp_max(logmag.shape[-1] - 1)
    return torch.where(torch.isinf(out), logmag[:, nearest], out)


@torch.no_grad()
def estimate_inharmonicity(audio: torch.Tensor, sample_rate: int, pitch: torch.Tensor, *,
                           seconds: float = 1.0, f_max: float | None = None,
                           max_partials: int = 60, cents_range: float = 30.0,
                           cents_step: float = 2.5, tolerance_cents: int = 4,
                           b_grid: tuple[float, ...] = DEFAULT_B_GRID, min_gain: float = 0.05
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stiff-string coefficient and tuning of each note.

    Args:
        audio: (B, T) notes starting at their onsets; pitch: (B,) nominal MIDI pitch.
        seconds: analysis length after the loudest point of the first 100 ms.
        f_max: highest partial considered (default 0.45 x sample rate).
    Returns:
        (B,) coefficient B >= 0 and (B,) f0 offset in cents from the nominal pitch, float32.
    """
    if audio.ndim != 2 or pitch.shape != (audio.shape[0],):
        raise ConfigError(f"estimate_inharmonicity: audio (B, T) and pitch (B,), got "
                          f"{tuple(audio.shape)} and {tuple(pitch.shape)}")
    f_max = 0.45 * sample_rate if f_max is None else float(f_max)
    length = int(seconds * sample_rate)
    lead = int(0.1 * sample_rate)
    starts = audio[:, :lead].abs().argmax(-1)
    segments = torch.stack([F.pad(a[s:s + length], (0, max(0, length - a[s:].numel())))
                            for a, s in zip(audio, starts.tolist())])
    n_fft = 1 << int(math.ceil(math.log2(2 * length)))
    spec = _cent_grid_spectrum(segments, sample_rate, n_fft, f_max)
    spec = F.max_pool1d(spec[:, None], 2 * tolerance_cents + 1, stride=1,
                        padding=tolerance_cents)[:, 0]
    b = torch.tensor(b_grid, dtype=torch.float64)
    offsets = torch.arange(-cents_range, cents_range + 1e-9, cents_step, dtype=torch.float64)
    coef, tune = [], []
    for i in range(audio.shape[0]):
        f0 = float(midi_to_hz(torch.tensor(float(pitch[i]), dtype=torch.float64)))
        k_all = torch.arange(1, max_partials + 1, dtype=torch.float64)
        top = f0 * 2 ** (cents_range / 1200) * k_all * torch.sqrt(1 + b.max() * k_all ** 2)
        k = k_all[top < f_max]
        if k.numel() < 3:  # too few partials to tell: harmonic
            coef.append(0.0)
            tune.append(0.0)
            continue
        # (offsets, B, K) partial positions in cents on the grid
        cents = (1200 * math.log2(f0 / GRID_FMIN) + offsets[:, None, None]
                 + 600 * torch.log2(1 + b[None, :, None] * k ** 2) + 1200 * torch.log2(k))
        idx = torch.round(cents).long().clamp(0, spec.shape[-1] - 1)
        score = spec[i][idx].mean(-1)  # (offsets, B)
        best = int(score.argmax())
        o, j = divmod(best, b.numel())
        if j > 0 and float(score[o, j] - score[:, 0].max()) < min_gain:
            o, j = int(score[:, 0].argmax()), 0
        coef.append(float(b[j]))
        tune.append(float(offsets[o]))
    return torch.tensor(coef, dtype=torch.float32), torch.tensor(tune, dtype=torch.float32)
