"""Harmonic-comb templates in the mel domain, and the source-filter output head built on them.

A pitched note's magnitude spectrum is a comb of partials at k * f0 under a smooth envelope. A
convolutional decoder asked to draw that comb from a pitch embedding learns it slowly and blurs
it (our first mel VAE reached a median 625 cents error when its z was decoded at other pitches).
`HarmonicMelHead` draws the comb analytically instead: the decoder predicts two smooth log-mel
envelopes per frame, one for the harmonic part and one for the noise part, and the head returns

    log_mel = log(exp(harmonic) * comb(f0) + exp(noise))

where ``comb(f0)`` (`comb_mel`) is the mel spectrum of equal-amplitude cosines at every
harmonic of f0 below Nyquist, under the FeatureSpec's window, with random phases (so two
partials falling in one STFT bin add in power), divided by its dense-comb level so that it is
about 1 in bands that hold many partials and peaks in the low bands that resolve them. Pitch
then sits exactly where it is asked for, whatever the latent says, and the network only models
timbre (the envelopes) and time.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from synth.features import FeatureSpec, mel_filterbank
from synth.pitch import midi_to_hz

#: Bins either side of a partial where its window lobe is kept (Hann sidelobes beyond are below
#: -71 dB of the peak).
LOBE_BINS = 10
#: Oversampling of the tabulated window transform (points per bin).
TABLE_OVERSAMPLE = 64
#: Floor of the normalised comb before its log (-80 dB).
COMB_FLOOR = 1e-4


def hann_transform_table(n_fft: int, half_width: int = LOBE_BINS + 1,
                         oversample: int = TABLE_OVERSAMPLE) -> torch.Tensor:
    """|W(delta)| of the periodic Hann window of length n_fft (nnAudio's and scipy's "hann")
    for delta = -half_width .. half_width bins in steps of 1/oversample: (2 * half_width *
    oversample + 1,) float64, by direct DTFT."""
    n = np.arange(n_fft)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    delta = np.arange(-half_width * oversample, half_width * oversample + 1) / oversample
    transform = np.exp(-2j * np.pi * np.outer(delta, n) / n_fft) @ w
    return torch.from_numpy(np.abs(transform))


def comb_magnitude(f0_hz: torch.Tensor, spec: FeatureSpec, table: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """Expected STFT magnitude of sum_k cos(2 pi k f0 t + phi_k), phases random, k f0 < sr / 2:
    (B,) Hz -> (B, n_fft // 2 + 1).

    Each partial contributes (0.5 |W(bin - k f0 / bin_hz)|)^2 of power to the bins within
    `LOBE_BINS` of it, and its mirror image at -k f0 likewise; powers add (random phases), and
    the square root is the RMS magnitude.
    """
    table = hann_transform_table(spec.n_fft) if table is None else table
    table = table.to(f0_hz.device, torch.float32)
    n_bins = spec.n_fft // 2 + 1
    bin_hz = spec.sample_rate / spec.n_fft
    f0 = f0_hz.float().clamp_min(1.0)
    k_max = max(1, int(math.floor(spec.sample_rate / 2 / float(f0.min()))))
    k = torch.arange(1, k_max + 1, device=f0.device, dtype=torch.float32)
    centre = k[None] * f0[:, None] / bin_hz  # (B, K) in bins
    valid = centre < n_bins - 1
    power = torch.zeros(f0.shape[0], n_bins, device=f0.device)
    for bins, contrib in _lobe_powers(centre, valid, table, n_bins):
        power.scatter_add_(1, bins.flatten(1), contrib.flatten(1))
    return power.sqrt()


def _lobe_powers(centre: torch.Tensor, valid: torch.Tensor, table: torch.Tensor, n_bins: int):
    """Window lobes of unit cosines at `centre` (B, K) bins: yields (bins, power), each
    (B, K, 2 * LOBE_BINS + 1), once for the partials and once for their images at negative
    frequency; bins outside [0, n_bins) and invalid partials carry zero power."""
    half = (table.numel() - 1) // 2
    oversample = half // (LOBE_BINS + 1)
    offsets = torch.arange(-LOBE_BINS, LOBE_BINS + 1, device=centre.device)
    for sign in (1.0, -1.0):  # the partial and its image at negative frequency
        c = sign * centre
        bins = c.round().long()[..., None] + offsets  # (B, K, L)
        delta = bins.float() - c[..., None]
        pos = (delta * oversample + half).clamp(0, table.numel() - 1.001)
        lo = pos.floor().long()
        frac = pos - lo.float()
        mag = (1 - frac) * table[lo] + frac * table[lo + 1]
        inside = (bins >= 0) & (bins < n_bins)
        yield bins.clamp(0, n_bins - 1), (0.5 * mag).square() * valid[..., None] * inside


def grid_ratios(per_octave: int, octaves: float) -> torch.Tensor:
    """Frequency ratios to f0 of the inharmonic grid: 2 ** (j / per_octave) for j = 0 ..
    round(octaves * per_octave) - 1, (R,) float32."""
    n = int(round(octaves * per_octave))
    return torch.pow(2.0, torch.arange(n, dtype=torch.float64) / per_octave).float()


def partial_spectra(freq_hz: torch.Tensor, spec: FeatureSpec, table: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """STFT magnitude of each unit cosine at `freq_hz` (B, K) on its own: (B, K, n_fft // 2 + 1);
    partials at or above Nyquist are zero. Summing rows in magnitude is exact for partials whose
    lobes do not overlap (more than 2 * LOBE_BINS bins apart)."""
    table = hann_transform_table(spec.n_fft) if table is None else table
    table = table.to(freq_hz.device, torch.float32)
    n_bins = spec.n_fft // 2 + 1
    centre = freq_hz.float() / (spec.sample_rate / spec.n_fft)
    valid = centre < n_bins - 1
    power = torch.zeros(*centre.shape, n_bins, device=freq_hz.device)
    for bins, contrib in _lobe_powers(centre, valid, table, n_bins):
        power.scatter_add_(2, bins, contrib)
    return power.sqrt()


class HarmonicMelHead(nn.Module):
    """(B, `channels`, F) envelopes in natural-log magnitude units + pitch (B,) MIDI ->
    (B, n_mels, F) natural-log mel: log(exp(harmonic) * comb(f0) + exp(noise) [+ grid]).

    Channels [0, n_mels) are the harmonic envelope, [n_mels, 2 n_mels) the noise envelope.
    With ``grid_per_octave > 0`` the next R channels are the log amplitudes of an inharmonic
    grid: one cosine at every ratio of `grid_ratios` times f0 (R = octaves x per_octave),
    through the filterbank as `LogMel` would measure it alone (`partial_spectra`). A sound
    whose partials sit at fixed, non-integer ratios to its pitch (a bell, a music box's tines,
    a sample transposed across a key range) is then one pattern over the grid at every pitch,
    which the comb cannot draw and a band envelope could only draw by moving with the pitch.
    """

    def __init__(self, spec: FeatureSpec, grid_per_octave: int = 0, grid_octaves: float = 6.0
                 ) -> None:
        super().__init__()
        if grid_per_octave < 0 or grid_octaves <= 0:
            raise ValueError(f"HarmonicMelHead: grid_per_octave must be >= 0 and grid_octaves > 0, "
                             f"got {grid_per_octave}, {grid_octaves}")
        self.spec = spec
        window = hann_transform_table(spec.n_fft)
        self.register_buffer("table", window.float(), persistent=False)
        fb = mel_filterbank(spec).float()
        self.register_buffer("filterbank", fb, persistent=False)
        ratios = grid_ratios(grid_per_octave, grid_octaves) if grid_per_octave else torch.zeros(0)
        self.register_buffer("ratios", ratios, persistent=False)
        # Per-partial power summed over all bins = 0.25 * N * sum(w^2) (Parseval).
        w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(spec.n_fft) / spec.n_fft)
        self.partial_power = 0.25 * spec.n_fft * float(np.square(w).sum())

    @property
    def grid_size(self) -> int:
        """R, the inharmonic grid's channels (0 without a grid)."""
        return int(self.ratios.numel())

    @property
    def channels(self) -> int:
        """Envelope channels `forward` takes: 2 * n_mels + R."""
        return 2 * self.spec.n_mels + self.grid_size

    def comb_mel(self, pitch: torch.Tensor) -> torch.Tensor:
        """(B,) MIDI -> (B, n_mels) mel of the unit comb over its dense-comb level (about 1 in
        bands holding many partials; the level is band width x RMS magnitude per bin)."""
        f0 = midi_to_hz(pitch.float())
        mel = self.comb_raw(f0)
        spacing = f0 / (self.spec.sample_rate / self.spec.n_fft)  # bins between partials
        level = torch.sqrt(self.partial_power / spacing)[:, None] * self.filterbank.sum(1)[None]
        return mel / level.clamp_min(1e-12)

    def comb_raw(self, f0_hz: torch.Tensor) -> torch.Tensor:
        """(B,) Hz -> (B, n_mels): the filterbank applied to `comb_magnitude` (what `LogMel`
        measures, on average over phases, from unit-amplitude partials)."""
        return comb_magnitude(f0_hz, self.spec, self.table) @ self.filterbank.T

    def grid_mel(self, pitch: torch.Tensor) -> torch.Tensor:
        """(B,) MIDI -> (B, n_mels, R): the mel of a unit cosine at each grid ratio x f0."""
        freq = midi_to_hz(pitch.float())[:, None] * self.ratios[None]
        return (partial_spectra(freq, self.spec, self.table) @ self.filterbank.T).transpose(1, 2)

    def forward(self, envelopes: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
        n_mels = self.spec.n_mels
        if envelopes.ndim != 3 or envelopes.shape[1] != self.channels:
            raise ValueError(f"HarmonicMelHead: envelopes must be (B, {self.channels}, F), got "
                             f"{tuple(envelopes.shape)}")
        comb = self.comb_mel(pitch).clamp_min(COMB_FLOOR).log()[..., None]
        out = torch.logaddexp(envelopes[:, :n_mels] + comb, envelopes[:, n_mels: 2 * n_mels])
        if self.grid_size:
            amp = envelopes[:, 2 * n_mels:]
            top = amp.amax(1, keepdim=True).detach()
            grid = self.grid_mel(pitch) @ (amp - top).exp()  # (B, n_mels, F), stable
            out = torch.logaddexp(out, grid.clamp_min(1e-30).log() + top)
        return out
