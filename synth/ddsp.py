"""`ddsp`: the DDSP autoencoder (Engel et al. 2020) in PyTorch.

Encoder: MFCCs -> GRU -> z per frame; the note's global z is the loudness-weighted mean over its
active frames (`z_mode="global"`, the default: one timbre code per note, the latent that morphing
and sample packs move through) or the per-frame z is kept (`z_mode="frames"`).
Decoder (ddsp's RnnFcDecoder): f0, loudness and z each through an MLP, a GRU, an MLP, then one
dense layer -> harmonic amplitude, harmonic distribution and noise band magnitudes
(`get_controls`), rendered by the functional DSP core (`get_signal`): harmonic oscillator bank +
filtered noise + a trainable FIR reverb (`reverb=False`: none). The synthesis runs at any output rate from the
frame-rate controls, so one model renders at 16, 44.1 or 48 kHz.

Frames: `hop = sample_rate // frame_rate`; audio of T samples (a multiple of hop) has T / hop
frames, frame k covering samples [k hop, (k + 1) hop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from synth import dsp
from synth.base import Conditions, ControlSpec, Generator, item_seeds
from synth.dsp_filters import (TrainableReverb, band_weights, filter_power_response,
                                filtered_noise, fine_pattern, partial_noise_gain,
                                partial_noise_power)
from synth.errors import ConfigError
from synth.features import FeatureSpec, LogMel, Spectrogram
from synth.losses import multiscale_spectral_loss
from synth.pitch import hz_to_midi, loudness, midi_to_hz

LOUDNESS_FLOOR_DB = -120.0

#: Where filtered noise comes from: a batch generator, a per-item seed, or torch's global RNG.
NoiseSource = torch.Generator | int | None

#: Knots of a `SpectralOffsets` noise curve, spread evenly over the noise bands.
NOISE_OFFSET_KNOTS = 24


class SpectralOffsets(NamedTuple):
    """A note's static spectral correction on top of what the decoder plays from its z, found by
    analysis by synthesis (`synth.ddsp_play.refine_note`): `harmonic` (B, H) is added to the
    harmonic distribution's logits at every frame, `noise` (B, K) is a curve of K >= 2 knots
    spread evenly over the noise bands and added to their logits. Through `exp_sigmoid` an
    offset of y at logit l moves a level by 20 (1 - sigmoid(l)) y dB (10 y dB at l = 0, up to
    20 y dB for quiet partials); zeros change nothing."""

    harmonic: torch.Tensor
    noise: torch.Tensor

    @classmethod
    def zeros(cls, batch: int, n_harmonics: int, knots: int = NOISE_OFFSET_KNOTS
              ) -> "SpectralOffsets":
        return cls(torch.zeros(batch, n_harmonics), torch.zeros(batch, knots))

    def noise_bands(self, n_bands: int) -> torch.Tensor:
        """(B, K) knots -> (B, n_bands) offsets, linear between the knots."""
        return F.interpolate(self.noise[:, None, :], size=n_bands, mode="linear",
                             align_corners=True)[:, 0]

    def to(self, like: torch.Tensor) -> "SpectralOffsets":
        return SpectralOffsets(self.harmonic.to(like), self.noise.to(like))

    def to_record(self) -> dict[str, list[float]]:
        """The first note's offsets as JSON lists: {"harmonic": H numbers, "noise": K numbers}."""
        return {"harmonic": self.harmonic[0].tolist(), "noise": self.noise[0].tolist()}

    @classmethod
    def from_record(cls, record: Any) -> "SpectralOffsets":
        """`to_record`'s dict -> (1, H), (1, K) float32 offsets (the same values); ConfigError
        when it is not one. Shapes against a model: `DDSPGenerator.check_offsets`."""
        try:
            return cls(*(torch.tensor([[float(v) for v in record[part]]])
                         for part in ("harmonic", "noise")))
        except (KeyError, TypeError, ValueError):
            raise ConfigError("unreadable spectral offsets: need {\"harmonic\": [...], "
                              "\"noise\": [...]} lists of numbers") from None


def seeded_uniform_noise(seed: int, n: int, n_samples: int) -> torch.Tensor:
    """(n, n_samples) uniform noise in [-1, 1), item i from `item_seeds(seed, n)[i]` (CPU)."""
    rows = [torch.rand(n_samples, generator=torch.Generator().manual_seed(s)) for s in
            item_seeds(seed, n)]
    return torch.stack(rows) * 2.0 - 1.0


#: Offset of the log-inharmonicity the head predicts (B below it is harmonic for our purposes).
INHARM_EPS = 1e-7
#: Largest log10(B) the head can predict (B = 1e-2; the analysis grid ends at 10^-2.5, inside
#: the sigmoid's range rather than at its saturated end).
INHARM_LOG_MAX = -2.0


@dataclass
class DDSPConfig:
    sample_rate: int = 16000
    frame_rate: int = 250
    n_harmonics: int = 60
    n_noise_bands: int = 65
    #: Taps of the noise filter's window at the model's rate (scaled with the output rate;
    #: capped at 2 (n_noise_bands - 1), the filter's own length). None: ddsp's 257 at every
    #: rate. 65 bands (125 Hz apart, a 128-tap filter) cannot shape the noise between the widely
    #: spaced partials of a high note, where it carries much of the timbre; 257 bands with a
    #: 512-tap window can (docs/DDSP.md, "Finer noise").
    noise_window: int | None = None
    hidden: int = 512
    latent_dim: int = 16
    z_mode: str = "global"
    n_mfcc: int = 30
    n_mels: int = 128
    reverb_seconds: float = 1.0
    #: The trainable FIR reverb (ddsp's `effects.Reverb`). False: a dry model with no reverb and
    #: no `reverb_mix` control. Our corpus is rendered dry; on it the learned IR smears the
    #: partial pattern (bench/results/ddsp_eval_reverb_mix.json, docs/DDSP.md).
    reverb: bool = True
    note_seconds: float = 4.0
    loudness_n_fft: int = 1024
    fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64)
    adsr: tuple[float, float, float, float] = (0.01, 0.3, -6.0, 0.3)
    #: Inference only: scale each rendered note so its A-weighted loudness meets the requested
    #: loudness curve (`loudness_gain_db`); training never applies it.
    loudness_lock: bool = True
    loudness_lock_range_db: float = 40.0
    #: Stiff-string partials k sqrt(1 + B k^2) f0 with a per-note B: analysed from the audio in
    #: training (`synth.inharmonicity`), predicted from z and pitch by a small head otherwise.
    inharmonicity: bool = False
    inharmonicity_weight: float = 0.1
    #: Learning rate of the head's output offset relative to the model's: Adam moves a weight by
    #: about the learning rate per step, and a fine-tune's 3e-4 would need ~20k steps to cross
    #: the head's range from its harmonic start.
    inharmonicity_lr_scale: float = 30.0
    #: Weight of the harmonic-distribution term (`synth.partials`): L1 between the log of the
    #: model's and the analysed note-mean partial distribution (floor -60 dB), over the
    #: partials below Nyquist. 0 (off): multi-scale spectral loss only, as ddsp.
    harmonic_loss_weight: float = 0.0
    harmonic_loss_floor: float = 1e-3
    #: Weight of a per-frame version of that term ("harm/frames"): the same log L1, frame by
    #: frame, each frame weighted by its share of the crop's analysed harmonic amplitude. The
    #: note-mean term leaves the distribution's course over the note free (a piano's high
    #: partials dying first); this one supervises it too. 0: off.
    harmonic_frame_loss_weight: float = 0.0
    #: How "harm/frames" weighs the frames: "amplitude" (each by its share of the crop's partial
    #: amplitude, so the loud start dominates) or "level" (every frame within 60 dB of the
    #: crop's loudest alike, so the decay counts as much as the start: a per-frame spectral
    #: correction on the resyntheses names far more notes when it acts after the first 0.25 s
    #: than within it, `bench/ddsp_eq_oracle.py`).
    harmonic_frame_weighting: str = "amplitude"
    #: Only partials below this frequency (Hz, at the note's f0) count in "harm/frames" (None:
    #: every partial below Nyquist). A spectral correction on the resyntheses that acts below
    #: 3 kHz names nearly as many notes as one over the whole band, while one range alone does
    #: little (`bench/ddsp_eq_oracle.py`): the first partials' balance is what names the note,
    #: and an equal weight per partial lets a low note's many high partials outweigh them.
    #: Not in the bundled model: 2,000 steps at 3 kHz did not raise recognition (docs/DDSP.md).
    harmonic_frame_max_hz: float | None = None
    #: Partials the encoder reads besides its MFCCs (0: MFCCs only, as ddsp): each frame's log
    #: partial distribution at the note's f0 (`synth.partials`), through a small MLP added to
    #: the GRU's z. 30 MFCCs of a 128-band mel keep the spectral envelope but merge partials
    #: above the 5th or so, and the per-partial pattern is what identifies an instrument
    #: (bench/ddsp_harmonics.py). Its last layer starts at zero, so `--init` from a model
    #: without it starts from that model's exact outputs.
    encoder_partials: int = 0
    #: A direct path from (z, pitch) to the harmonic distribution: a small MLP whose output is
    #: added to the decoder's distribution logits at every frame, so a note's static partial
    #: pattern (what identifies it, docs/DDSP.md) need not pass through the decoder's GRU. Its
    #: last layer starts at zero, so `--init` from a model without it starts from that model's
    #: exact outputs.
    z_distribution: bool = False
    #: A second direct path to the harmonic distribution that also reads the frame's loudness:
    #: an MLP of (z, pitch, loudness) whose output is added to the distribution logits, so a
    #: note's partial pattern can follow its level (darker as a struck note dies away) without
    #: passing through the decoder's GRU. The spectral shape's course over the note is what the
    #: resyntheses miss (bench/ddsp_eq_oracle.py, docs/DDSP.md); the loudness is read as is, so
    #: a 1 s crop from the middle of a note trains it the same as the whole note. Its last layer
    #: starts at zero (`--init` keeps the checkpoint's outputs) and learns at
    #: `z_level_lr_scale` x the learning rate. Not in the bundled model: in a 1,200-step run it
    #: hardly moved and recognition did not rise (docs/DDSP.md, session 21).
    z_level_distribution: bool = False
    z_level_lr_scale: float = 5.0
    #: Weight of a direct noise term ("noise/frames"): per frame and band, the log-L1 between
    #: the noise part's expected power (the power response of the FIR its band magnitudes make,
    #: `dsp_filters.filter_power_response`, times the STFT gain of filtered uniform noise; the
    #: filter's window smooths the band curve, so the magnitudes squared would overstate any
    #: fine pattern, session 20) and the power the original has left over above the model's own
    #: harmonic part (|X|^2 - |H|^2, floored at 0; `frame_power` read at the band points by
    #: `dsp_filters.band_weights`), both floored 60 dB below the crop's peak. The spectral loss
    #: sees one random draw of the noise, whose fine spectrum is itself random; this term sees
    #: its expectation, so a fine noise filter (`n_noise_bands` 257) gets a clean gradient
    #: towards what the harmonics miss. 0: off (as ddsp).
    noise_loss_weight: float = 0.0
    #: Weight of the noise pattern term ("noise/pattern"): the L1 between the fine patterns
    #: (log power minus its 9-band moving average) of the crop-mean expected noise power and of
    #: the crop-mean leftover power, the two readings of `noise_loss_weight`. Per frame, each
    #: band's leftover is one random draw (its log spreads by about a nat), so the frame term's
    #: gradient hardly sees a pattern that averaging over the crop shows plainly; the note-mean
    #: fine pattern is what the noise oracle says the high notes lack (docs/DDSP.md). Needs no
    #: `noise_loss_weight`. 0: off.
    noise_pattern_loss_weight: float = 0.0
    #: Weight of a static noise term ("noise/static"): per band, the L1 between the crop-mean
    #: log expected noise power and the crop-mean log leftover power (the two readings of
    #: `noise_loss_weight`, the same floor): the note-mean log ratio that, as one static gain per
    #: band on the model's noise, names 83 of 96 held-out notes against 76
    #: (`bench.ddsp_noise_oracle --corrections`), at every spectral scale, where the pattern term
    #: sees the fine scale alone and the frame term each frame's draw. 0: off. Not in the
    #: bundled model: 2,000 steps took part of the gap on the partials, not the recognition
    #: (docs/DDSP.md, session 22).
    noise_static_loss_weight: float = 0.0
    #: Weight of a log-mel term ("recon/mel"): the L1 between the natural-log mel spectrograms
    #: (the encoder's 128-band mel, 1024-point frames) of the resynthesis and the original, both
    #: floored 60 dB below the original crop's peak. The multi-scale loss reads linear-frequency
    #: bins, most of them above the partials that identify an instrument; a mel reading weighs
    #: the low bands' course over the note as the ear (and the note classifier) does.
    #: 0: off (as ddsp). Not in the bundled model: at weight 2 it brought the spectra a little
    #: closer, not the recognition (docs/DDSP.md, session 21).
    mel_loss_weight: float = 0.0
    #: A direct path from (z, pitch) to the noise filter: a small MLP whose output is added to
    #: the decoder's noise band logits at every frame (as `z_distribution` does for the
    #: harmonics). What the harmonics miss in a note is largely one fixed fine pattern (31 Hz
    #: bands): the frame-wise coarse envelope of the leftover power times its note-mean fine
    #: pattern is recognised as often as the leftover itself (bench/ddsp_noise_oracle.py,
    #: docs/DDSP.md). Its last layer starts at zero (`--init` keeps the checkpoint's outputs)
    #: and learns at `z_noise_lr_scale` x the learning rate.
    z_noise: bool = False
    z_noise_lr_scale: float = 5.0
    #: Spectrum bands the encoder reads besides its MFCCs and partials (0: none, as ddsp): each
    #: frame's log power (1024-point STFT, read at that many band points from 0 Hz to Nyquist,
    #: relative to the note's loudest band, floor -60 dB), through a small MLP added to the GRU's
    #: z. MFCCs and the partial distribution do not see the fine pattern between the partials
    #: that `z_noise` is to draw. Its last layer starts at zero, as `encoder_partials`.
    encoder_spectrum: int = 0
    #: Noise laid on the partials: filtered noise whose band power follows the harmonic part's
    #: own partials (each partial's power spread over the three noise band points around it,
    #: `dsp_filters.partial_noise_power`), at a level per frame relative to the partials' power
    #: from a zero-started MLP of (z, pitch, loudness): `partial_noise_db` + `partial_noise_
    #: range_db` x tanh(path). Real partials are not pure lines (detuned unison strings, bow and
    #: breath noise, vibrato): the leftover power above the harmonic part peaks on the partials,
    #: and the 257-band noise, one filter per frame shared by every pitch, does not follow them
    #: there (filling the resyntheses' noise up to the leftover with one static gain per band
    #: names 83 of 96 held-out notes against 76; harmonic-shaped noise at one fixed level
    #: 79; docs/DDSP.md, session 22). The noise terms see it as part of the noise; the partials'
    #: amplitudes are detached in it, so only its level learns from it. The path's last layer
    #: learns at `partial_noise_lr_scale` x the learning rate. `partial_noise_range_db` 0: no
    #: path, the level is `partial_noise_db` throughout. Not in the bundled model: the training
    #: losses pull a learned level down to about -31 dB, and a fixed -20 dB named more of three
    #: 96-note sets but fewer of the README's 48 + 48 (docs/DDSP.md, session 22).
    partial_noise: bool = False
    partial_noise_db: float = -20.0
    partial_noise_range_db: float = 20.0
    partial_noise_lr_scale: float = 5.0
    #: A perceptual term ("percep/features"): how differently a frozen note classifier
    #: (`latent.metrics.classifier.NoteClassifier` checkpoint at `perceptual_model`, run at the
    #: model's rate) hears the resynthesis and the original: per layer, the mean |difference|
    #: of its activations over the mean |original's|, averaged over the last three conv blocks
    #: and the embedding (the first block reads little more than the log-mel, which
    #: `mel_loss_weight` covers). Every term so far matched a spectral reading and left the
    #: family the bundled classifier names where it was (docs/DDSP.md); this one matches what a
    #: classifier reads. The loss network is a separate classifier from the bundled
    #: `classifier-gm` that measures recognition (another seed, front end and widths, trained on
    #: the training instruments only), so a gain is not one network agreeing with itself. It
    #: is loaded for training only and is not part of the model's weights. 0: off (as ddsp).
    perceptual_loss_weight: float = 0.0
    perceptual_model: str | None = None

    def __post_init__(self) -> None:
        if self.sample_rate % self.frame_rate:
            raise ConfigError(f"frame_rate {self.frame_rate} must divide sample_rate {self.sample_rate}")
        if self.z_mode not in ("global", "frames"):
            raise ConfigError(f"z_mode must be 'global' or 'frames', got {self.z_mode!r}")
        if self.harmonic_frame_weighting not in ("amplitude", "level"):
            raise ConfigError("harmonic_frame_weighting must be 'amplitude' or 'level', got "
                              f"{self.harmonic_frame_weighting!r}")
        for name in ("inharmonicity_weight", "harmonic_loss_weight", "harmonic_frame_loss_weight",
                     "noise_loss_weight", "noise_pattern_loss_weight", "mel_loss_weight",
                     "noise_static_loss_weight", "perceptual_loss_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite weight >= 0, got {value}")
        for name in ("inharmonicity_lr_scale", "z_noise_lr_scale", "z_level_lr_scale",
                     "partial_noise_lr_scale"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be finite and > 0, got {value}")
        if self.harmonic_frame_max_hz is not None and not (
                math.isfinite(self.harmonic_frame_max_hz) and self.harmonic_frame_max_hz > 0):
            raise ConfigError(f"harmonic_frame_max_hz must be > 0 Hz (or null), got "
                              f"{self.harmonic_frame_max_hz}")
        if not math.isfinite(self.partial_noise_db):
            raise ConfigError(f"partial_noise_db must be finite, got {self.partial_noise_db}")
        if not (math.isfinite(self.partial_noise_range_db) and self.partial_noise_range_db >= 0):
            raise ConfigError(f"partial_noise_range_db must be finite and >= 0, got "
                              f"{self.partial_noise_range_db}")
        if self.perceptual_loss_weight > 0 and not self.perceptual_model:
            raise ConfigError("perceptual_loss_weight needs perceptual_model (a note classifier "
                              "checkpoint)")
        if self.n_noise_bands < 2:
            raise ConfigError(f"n_noise_bands must be at least 2, got {self.n_noise_bands}")
        if self.noise_window is not None and self.noise_window < 3:
            raise ConfigError(f"noise_window must be at least 3 taps (or null), got {self.noise_window}")


def _mlp(n_in: int, hidden: int, layers: int = 3) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(n_in if i == 0 else hidden, hidden), nn.LayerNorm(hidden), nn.LeakyReLU()]
    return nn.Sequential(*mods)


def _zero_started_reading(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """LayerNorm -> Linear -> LeakyReLU -> Linear, the last layer zeroed: an extra encoder input
    added to z that starts unread, so `--init` from a model without it keeps that model's z."""
    net = nn.Sequential(nn.LayerNorm(n_in), nn.Linear(n_in, hidden), nn.LeakyReLU(),
                        nn.Linear(hidden, n_out))
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


def _zero_started_path(n_in: int, hidden: int, n_out: int, layers: int) -> nn.Sequential:
    """`layers` x (Linear -> LeakyReLU), then a Linear whose weights and bias start at zero: a
    direct path added to decoder logits that starts silent, so `--init` from a model without it
    keeps that model's exact outputs. (Module indices 0, 2, 4, ...: the checkpoints' names.)"""
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(n_in if i == 0 else hidden, hidden), nn.LeakyReLU()]
    mods.append(nn.Linear(hidden, n_out))
    nn.init.zeros_(mods[-1].weight)
    nn.init.zeros_(mods[-1].bias)
    return nn.Sequential(*mods)


def _dct_matrix(n_mels: int, n_mfcc: int) -> torch.Tensor:
    """Orthonormal DCT-II, (n_mels, n_mfcc) (as librosa / scipy `dct(norm='ortho')`)."""
    n = torch.arange(n_mels, dtype=torch.float64)
    k = torch.arange(n_mfcc, dtype=torch.float64)
    basis = torch.cos(math.pi / n_mels * (n[:, None] + 0.5) * k[None, :]) * math.sqrt(2.0 / n_mels)
    basis[:, 0] /= math.sqrt(2.0)
    return basis.float()


class DDSPGenerator(Generator):
    """Harmonic-plus-noise autoencoder conditioned on f0 and loudness."""

    kind = "ddsp"
    Config = DDSPConfig

    def __init__(self, config: DDSPConfig) -> None:
        super().__init__(config)
        c = config
        self.hop_length = c.sample_rate // c.frame_rate
        self.mel = LogMel(FeatureSpec(sample_rate=c.sample_rate, n_fft=1024,
                                      hop_length=self.hop_length, n_mels=c.n_mels, f_min=20.0,
                                      f_max=c.sample_rate / 2, log_floor=1e-5, power=2.0))
        self.register_buffer("dct", _dct_matrix(c.n_mels, c.n_mfcc), persistent=False)
        self.enc_norm = nn.LayerNorm(c.n_mfcc)
        self.enc_gru = nn.GRU(c.n_mfcc, c.hidden, batch_first=True)
        self.enc_out = nn.Linear(c.hidden, c.latent_dim)
        if c.encoder_partials:
            self.enc_partials = _zero_started_reading(c.encoder_partials, c.hidden, c.latent_dim)
        if c.encoder_spectrum:
            self.enc_spectrum = _zero_started_reading(c.encoder_spectrum, c.hidden, c.latent_dim)
        # the fine spectrum that `encoder_spectrum` and the noise term read (`frame_power`)
        self.spectrogram = Spectrogram(FeatureSpec(sample_rate=c.sample_rate, n_fft=1024,
                                                   hop_length=self.hop_length,
                                                   f_max=c.sample_rate / 2))
        self.f0_mlp = _mlp(1, c.hidden)
        self.ld_mlp = _mlp(1, c.hidden)
        self.z_mlp = _mlp(c.latent_dim, c.hidden)
        self.dec_gru = nn.GRU(3 * c.hidden, c.hidden, batch_first=True)
        self.out_mlp = _mlp(4 * c.hidden, c.hidden)
        self.dense = nn.Linear(c.hidden, 1 + c.n_harmonics + c.n_noise_bands)
        if c.z_distribution:  # (z, pitch)
            self.z_dist = _zero_started_path(c.latent_dim + 1, c.hidden, c.n_harmonics, 1)
        if c.z_level_distribution:  # (z, pitch, loudness)
            self.z_level_dist = _zero_started_path(c.latent_dim + 2, c.hidden, c.n_harmonics, 2)
        if c.z_noise:  # (z, pitch)
            self.z_noise = _zero_started_path(c.latent_dim + 1, c.hidden, c.n_noise_bands, 2)
        if c.partial_noise and c.partial_noise_range_db > 0:  # (z, pitch, loudness) -> its level
            self.partial_noise = _zero_started_path(c.latent_dim + 2, c.hidden, 1, 2)
        if c.partial_noise:
            self._partial_noise_gain = partial_noise_gain(
                c.n_noise_bands, self.noise_window(c.sample_rate), c.sample_rate)
        self.reverb = TrainableReverb(int(c.reverb_seconds * c.sample_rate)) if c.reverb else None
        if c.inharmonicity:
            self.inharm_head = nn.Sequential(nn.Linear(c.latent_dim + 1, 64), nn.LeakyReLU(),
                                             nn.Linear(64, 1))
            with torch.no_grad():  # starts at B ~ 0: the harmonic model it is fine-tuned from
                self.inharm_head[-1].weight.mul_(0.01)
                self.inharm_head[-1].bias.fill_(-4.0)  # sigmoid 0.018: log10 B ~ -6.9
        # Velocity -> sustain loudness (dB), measured on the corpus by fit_corpus_stats.
        self.register_buffer("velocity_db", torch.linspace(-50.0, -10.0, 128))
        self.register_buffer("loudness_range", torch.tensor([-80.0, 0.0]))
        self.register_buffer("pitch_range", torch.tensor([24.0, 96.0]))

    def adapt_init_state(self, state: dict[str, torch.Tensor], source: "DDSPGenerator"
                         ) -> dict[str, torch.Tensor]:
        """`--init` from a checkpoint with another `n_noise_bands`: the rows that output band
        logits (the dense layer's noise rows and, if both models have it, the `z_noise` path's
        last layer; weights and biases) are resampled along frequency by linear interpolation
        between the bands' centre frequencies (both span 0 Hz to Nyquist), so the model starts
        with the checkpoint's noise filter drawn at the new resolution; every other tensor is
        untouched. Returns the adapted copy of `state`."""
        old, new = source.config.n_noise_bands, self.config.n_noise_bands
        if old == new:
            return state
        state = dict(state)
        heads = {"dense": 1 + self.config.n_harmonics, "z_noise.4": 0}
        for prefix, keep in heads.items():
            for name in (f"{prefix}.weight", f"{prefix}.bias"):
                if name not in state:
                    continue
                t = state[name]
                head, rows = t[:keep], t[keep:]
                x = rows.T if rows.ndim == 2 else rows[None]  # (in, old bands)
                grid = F.interpolate(x[:, None, :], size=new, mode="linear",
                                     align_corners=True)[:, 0]
                state[name] = torch.cat([head, grid.T if rows.ndim == 2 else grid[0]])
        return state

    @property
    def note_analyses(self) -> tuple[str, ...]:
        """Whole-note analyses the training data should carry (`NoteDataset(analyses=...)`)."""
        return ("inharmonicity",) if self.config.inharmonicity else ()

    @property
    def temporal_latent(self) -> bool:  # type: ignore[override]
        return self.config.z_mode == "frames"

    @classmethod
    def debug_config(cls) -> DDSPConfig:
        return DDSPConfig(sample_rate=8000, frame_rate=125, n_harmonics=8, n_noise_bands=9,
                          hidden=16, latent_dim=4, n_mfcc=8, n_mels=20, reverb_seconds=0.05,
                          note_seconds=0.256, loudness_n_fft=256, fft_sizes=(256, 128, 64))

    # -- analysis -----------------------------------------------------------------------------
    def frames(self, n_samples: int) -> int:
        return n_samples // self.hop_length

    def analyze_loudness(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T // hop) A-weighted loudness in dB."""
        ld = loudness(audio, self.sample_rate, hop_length=self.hop_length,
                      n_fft=self.config.loudness_n_fft)
        return ld[:, : self.frames(audio.shape[-1])]

    def encode_frames(self, audio: torch.Tensor, f0_hz: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) audio -> (B, frames, D) per-frame z (MFCC -> GRU -> dense).

        With `config.encoder_partials`, plus the partial-distribution path, which needs the
        note's f0: `f0_hz` (B,) or (B, frames) Hz (the median of voiced frames is used), else
        estimated with CREPE ("tiny").
        """
        mfcc = (self.mel(audio).transpose(1, 2) @ self.dct)[:, : self.frames(audio.shape[-1])]
        hidden, _ = self.enc_gru(self.enc_norm(mfcc))
        z = self.enc_out(hidden)
        if self.config.encoder_partials:
            z = z + self.enc_partials(self.partial_features(audio, f0_hz)[:, : z.shape[1]])
        if self.config.encoder_spectrum:
            z = z + self.enc_spectrum(self.spectrum_features(audio)[:, : z.shape[1]])
        return z

    @torch.no_grad()
    def frame_power(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, T) audio -> (B, frames, 513) STFT power on the frame grid (`synth.features.
        Spectrogram`: 1024-point Hann, centred): what `encoder_spectrum` and the noise term read."""
        return self.spectrogram.power(audio).transpose(1, 2)[:, : self.frames(audio.shape[-1])]

    @torch.no_grad()
    def spectrum_features(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, T) audio -> (B, frames, encoder_spectrum) log10 power per frame at the band
        points (`band_weights`), relative to the note's loudest band, floored at -6 (60 dB)."""
        power = self.frame_power(audio)
        bands = power @ band_weights(power.shape[-1], self.config.encoder_spectrum,
                                     audio.device, audio.dtype)
        peak = bands.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
        return torch.log10(bands / peak + 1e-6)

    @torch.no_grad()
    def partial_features(self, audio: torch.Tensor, f0_hz: torch.Tensor | None = None
                         ) -> torch.Tensor:
        """(B, T) audio -> (B, frames, encoder_partials) log10 partial distribution per frame
        (each frame's partial amplitudes over their sum, floor -60 dB; 0 above Nyquist)."""
        from synth.partials import partial_amplitudes

        note_f0 = self.note_f0(audio, f0_hz)
        k = self.config.encoder_partials
        amps = partial_amplitudes(audio, note_f0, self.sample_rate, self.hop_length,
                                  self.frames(audio.shape[-1]), k)
        dist = amps / amps.sum(-1, keepdim=True).clamp_min(1e-8)
        return torch.log10(dist + 1e-3)

    def note_f0(self, audio: torch.Tensor, f0_hz: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) one f0 per note: the median of the voiced frames of `f0_hz` ((B,) or (B, F)),
        else of CREPE's confident frames (all frames where none is confident). (torch 2.11's
        median along an expanded, stride-0 dim returns garbage; `torch.where` materialises it.)"""
        if f0_hz is not None:
            f0_hz = f0_hz.to(audio)
            if f0_hz.ndim == 1:
                return f0_hz
            voiced = f0_hz > 0
            filled = torch.where(voiced, f0_hz, torch.full_like(f0_hz, float("nan")))
            med = filled.nanmedian(1).values
            return torch.where(voiced.any(1), med, torch.full_like(med, 100.0))
        from synth.pitch import f0 as crepe_f0

        track = crepe_f0(audio, self.sample_rate, hop_length=self.hop_length, model="tiny")
        hz = track.f0_hz
        conf = track.periodicity > 0.5
        conf = torch.where(conf.any(1, keepdim=True), conf, torch.ones_like(conf))
        return torch.where(conf, hz, torch.full_like(hz, float("nan"))).nanmedian(1).values

    def encode(self, audio: torch.Tensor, cond: Conditions | None = None) -> torch.Tensor:
        """(B, T) -> (B, D) global z (loudness-weighted mean of active frames) or (B, D, frames).

        `cond.f0_hz` or `cond.pitch`, when given, tell a model with `encoder_partials` the
        note's f0 (else it is estimated from the audio)."""
        f0_hz = None
        if cond is not None and self.config.encoder_partials:
            if cond.f0_hz is not None:
                f0_hz = cond.f0_hz
            elif cond.pitch is not None:
                f0_hz = midi_to_hz(cond.pitch.float())
        z = self.encode_frames(audio, f0_hz)
        if self.config.z_mode == "frames":
            return z.transpose(1, 2)
        return self._pool(z, self.analyze_loudness(audio))

    @staticmethod
    def _pool(z: torch.Tensor, ld: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax((ld - ld.amax(1, keepdim=True)) / 10.0, dim=1)  # ~ active frames
        return (z * weights[..., None]).sum(1)

    # -- inharmonicity ------------------------------------------------------------------------
    def inharmonicity_log10(self, z: torch.Tensor, f0_hz: torch.Tensor) -> torch.Tensor:
        """Predicted log10(B + INHARM_EPS) in [log10(INHARM_EPS), INHARM_LOG_MAX], (B,), from
        the note's z ((B, D) or (B, F, D): frame mean) and its mean pitch over voiced frames.
        Inputs are detached: the head learns from the analysis without moving the timbre space."""
        zg = (z.mean(1) if z.ndim == 3 else z).detach()
        midi = hz_to_midi(f0_hz.detach().clamp_min(1.0))
        voiced = (f0_hz > 0).float()
        pitch = (midi * voiced).sum(1) / voiced.sum(1).clamp_min(1.0)
        x = self.inharm_head(torch.cat([zg, (pitch / 127.0)[:, None]], dim=-1))[:, 0]
        low = math.log10(INHARM_EPS)
        return low + (INHARM_LOG_MAX - low) * torch.sigmoid(x)

    def predict_inharmonicity(self, z: torch.Tensor, f0_hz: torch.Tensor) -> torch.Tensor | None:
        """(B,) coefficient B from the head, or None for a harmonic model."""
        if not self.config.inharmonicity:
            return None
        return (10 ** self.inharmonicity_log10(z, f0_hz) - INHARM_EPS).clamp_min(0.0)

    # -- synthesis ----------------------------------------------------------------------------
    def get_controls(self, f0_hz: torch.Tensor, loudness_db: torch.Tensor,
                     z: torch.Tensor, controls: dict[str, float] | None = None,
                     inharmonicity: torch.Tensor | None = None,
                     offsets: SpectralOffsets | None = None
                     ) -> tuple[dsp.HarmonicControls, torch.Tensor]:
        """Network outputs -> bounded synthesis controls.

        Args:
            f0_hz, loudness_db: (B, F); z: (B, F, D); inharmonicity: optional (B,) B, for the
                Nyquist test of the partials (`dsp.harmonic_controls`); offsets: a per-note
                `SpectralOffsets` added to the distribution's and the noise bands' logits.
        Returns:
            (HarmonicControls with (B, F, 1)/(B, F, H) tensors, noise magnitudes (B, F, M)).
        """
        c = self.config
        f0_in = (hz_to_midi(f0_hz.clamp_min(1.0)) / 127.0)[..., None]
        ld_in = ((loudness_db - LOUDNESS_FLOOR_DB) / -LOUDNESS_FLOOR_DB)[..., None]
        x = torch.cat([self.f0_mlp(f0_in), self.ld_mlp(ld_in), self.z_mlp(z)], dim=-1)
        h, _ = self.dec_gru(x)
        out = self.dense(self.out_mlp(torch.cat([h, x], dim=-1)))
        amp, dist, noise = out.split([1, c.n_harmonics, c.n_noise_bands], dim=-1)
        if c.z_distribution:
            dist = dist + self.z_dist(torch.cat([z, f0_in], dim=-1))
        if c.z_level_distribution:
            dist = dist + self.z_level_dist(torch.cat([z, f0_in, ld_in], dim=-1))
        if c.z_noise:
            noise = noise + self.z_noise(torch.cat([z, f0_in], dim=-1))
        if offsets is not None:
            self.check_offsets(offsets, dist.shape[0])
            dist = dist + offsets.harmonic[:, None, :]
            noise = noise + offsets.noise_bands(c.n_noise_bands)[:, None, :]
        dist = dist + self._tilt(controls)
        harm = dsp.harmonic_controls(amp, dist, f0_hz[..., None], self.sample_rate,
                                     inharmonicity=inharmonicity)
        mags = dsp.noise_controls(noise)
        if c.partial_noise:
            level_db = torch.full_like(ld_in, c.partial_noise_db)
            if c.partial_noise_range_db > 0:
                level_db = level_db + c.partial_noise_range_db * torch.tanh(
                    self.partial_noise(torch.cat([z, f0_in, ld_in], dim=-1)))
            mags = self._with_partial_noise(mags, harm, level_db, inharmonicity)
        gh, gn = self._part_gains(controls)
        if gh != 1.0 or gn != 1.0:
            harm = harm._replace(amplitude=harm.amplitude * gh)
            mags = mags * gn
        return harm, mags

    def check_offsets(self, offsets: SpectralOffsets, batch: int) -> None:
        """ConfigError unless `offsets` fit `batch` notes of this model and are finite."""
        h, n = offsets.harmonic, offsets.noise
        if (h.ndim != 2 or n.ndim != 2 or h.shape != (batch, self.config.n_harmonics)
                or n.shape[0] != batch or n.shape[1] < 2):
            raise ConfigError(f"spectral offsets must be ({batch}, {self.config.n_harmonics}) "
                              f"harmonic and ({batch}, K >= 2) noise, got {tuple(h.shape)} and "
                              f"{tuple(n.shape)}")
        if not (torch.isfinite(h).all() and torch.isfinite(n).all()):
            raise ConfigError("spectral offsets must be finite (NaN or inf found)")

    def _with_partial_noise(self, mags: torch.Tensor, harm: dsp.HarmonicControls,
                            level_db: torch.Tensor, inharmonicity: torch.Tensor | None
                            ) -> torch.Tensor:
        """(B, F, M) noise magnitudes + the noise on the partials at (B, F, 1) `level_db` below
        their power (`DDSPConfig.partial_noise`; the partials detached) -> (B, F, M)."""
        amps = (harm.amplitude * harm.distribution).detach()
        freqs = dsp.harmonic_frequencies(harm.f0_hz, amps.shape[-1], inharmonicity).detach()
        level = 10 ** (level_db / 10) / self._partial_noise_gain
        extra = partial_noise_power(amps, freqs, mags.shape[-1], self.sample_rate, level)
        return (mags.pow(2) + extra).sqrt()

    @staticmethod
    def _part_gains(controls: dict[str, float] | None) -> tuple[float, float]:
        c = controls or {}
        return 10 ** (c.get("harmonic_db", 0.0) / 20), 10 ** (c.get("noise_db", 0.0) / 20)

    def _tilt(self, controls: dict[str, float] | None) -> torch.Tensor | float:
        """Brightness control: dB per octave added to the harmonic distribution (in log space)."""
        tilt = (controls or {}).get("brightness", 0.0)
        if not tilt:
            return 0.0
        k = torch.arange(1, self.config.n_harmonics + 1, device=self.dense.weight.device)
        # exp_sigmoid ~ exp(log(10) * x) for small x: adding y shifts the level by ~20 y dB.
        return tilt * torch.log2(k.float()) / 20.0

    def get_signal(self, harm: dsp.HarmonicControls, noise_mags: torch.Tensor, n_samples: int,
                   sample_rate: int | None = None, reverb_mix: float = 1.0,
                   generator: NoiseSource = None,
                   inharmonicity: torch.Tensor | None = None) -> torch.Tensor:
        """Controls -> (B, n_samples) audio at `sample_rate` (default: the model's rate).

        At a higher output rate the harmonics stay limited to the training band (the distribution
        was only ever trained below the model's Nyquist), and the noise filter covers that band.
        """
        harmonic, noise = self.get_parts(harm, noise_mags, n_samples, sample_rate, generator,
                                         inharmonicity)
        dry = harmonic + noise
        wet = self._reverb(dry, sample_rate or self.sample_rate) - dry
        return dry + reverb_mix * wet

    def get_parts(self, harm: dsp.HarmonicControls, noise_mags: torch.Tensor, n_samples: int,
                  sample_rate: int | None = None, generator: NoiseSource = None,
                  inharmonicity: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Controls -> (harmonic, filtered noise), each (B, n_samples), before the reverb.

        `generator`: a `torch.Generator` drawing the whole batch's noise (training), an int seed
        (item i's noise from `item_seeds(seed, B)[i]`, drawn on the CPU: the same whatever the
        batch size or device), or None (torch's global RNG). `inharmonicity`: optional (B,)
        stiff-string coefficients of the partials."""
        sr = sample_rate or self.sample_rate
        dist = harm.distribution
        if sr != self.sample_rate:
            freqs = dsp.harmonic_frequencies(harm.f0_hz, dist.shape[-1], inharmonicity)
            dist = dist * (freqs < self.sample_rate / 2).to(dist.dtype)
        harmonic = dsp.harmonic_synthesis(harm.f0_hz, harm.amplitude, dist, n_samples, sr,
                                          inharmonicity=inharmonicity)
        frames = noise_mags.shape[1]
        padded = math.ceil(n_samples / frames) * frames
        if sr != self.sample_rate:  # bands cover 0..model Nyquist; zero above it
            n_bands = max(2, round(noise_mags.shape[-1] * (sr / 2) / (self.sample_rate / 2)))
            extra = noise_mags.new_zeros(*noise_mags.shape[:2], n_bands - noise_mags.shape[-1])
            noise_mags = torch.cat([noise_mags, extra], dim=-1)
        window = self.noise_window(sr)
        if isinstance(generator, int):
            white = seeded_uniform_noise(generator, noise_mags.shape[0], padded)
            noise = filtered_noise(noise_mags, padded, noise=white.to(noise_mags),
                                   window_size=window)
        else:
            noise = filtered_noise(noise_mags, padded, generator=generator, window_size=window)
        noise = noise[:, :n_samples]
        return harmonic, noise

    def noise_window(self, sr: int) -> int:
        """Taps of the noise filter's window at output rate `sr` (`DDSPConfig.noise_window`,
        scaled with the rate; ddsp's 257 when unset)."""
        if self.config.noise_window is None:
            return 257
        return max(3, round(self.config.noise_window * sr / self.sample_rate))

    def _reverb(self, audio: torch.Tensor, sr: int) -> torch.Tensor:
        if self.reverb is None:
            return audio
        if sr == self.sample_rate:
            return self.reverb(audio)
        ir = F.interpolate(self.reverb.ir[None, None], scale_factor=sr / self.sample_rate,
                           mode="linear", align_corners=False)[0, 0] * (self.sample_rate / sr)
        from synth.dsp_filters import reverb

        return reverb(audio, ir)

    def synthesize(self, f0_hz: torch.Tensor, loudness_db: torch.Tensor, z: torch.Tensor,
                   n_samples: int | None = None, sample_rate: int | None = None,
                   controls: dict[str, float] | None = None,
                   generator: NoiseSource = None,
                   match_loudness: bool | None = None,
                   inharmonicity: torch.Tensor | None = None,
                   offsets: SpectralOffsets | None = None) -> torch.Tensor:
        """Frame-rate f0 (B, F), loudness (B, F) and z ((B, D) or (B, F, D)) -> (B, T) audio.

        `match_loudness` (default: `config.loudness_lock`) scales each item by one gain so that
        the note, rendered with the default gains and reverb, meets `loudness_db`
        (`loudness_gain_db`); `harmonic_db`, `noise_db` and `reverb_mix` then move the level
        relative to that. One gain per note keeps the model's own envelope and dynamics.
        `inharmonicity` (B,): the partials' stiff-string coefficient; default: the model's
        prediction from z and pitch (`predict_inharmonicity`; none for a harmonic model).
        `offsets`: a per-note `SpectralOffsets` (a refined resynthesis's correction).
        """
        if inharmonicity is None:
            inharmonicity = self.predict_inharmonicity(z, f0_hz)
        if z.ndim == 2:
            z = z[:, None, :].expand(-1, f0_hz.shape[1], -1)
        sr = sample_rate or self.sample_rate
        n = n_samples or int(round(f0_hz.shape[1] * sr / self.config.frame_rate))
        lock = self.config.loudness_lock if match_loudness is None else bool(match_loudness)
        mix = (controls or {}).get("reverb_mix", 1.0)
        if not lock:
            harm, mags = self.get_controls(f0_hz, loudness_db, z, controls, inharmonicity,
                                           offsets)
            return self.get_signal(harm, mags, n, sr, reverb_mix=mix, generator=generator,
                                   inharmonicity=inharmonicity)
        gain_controls = {k: v for k, v in (controls or {}).items()
                         if k not in ("harmonic_db", "noise_db")}
        harm, mags = self.get_controls(f0_hz, loudness_db, z, gain_controls, inharmonicity,
                                       offsets)
        harmonic, noise = self.get_parts(harm, mags, n, sr, generator, inharmonicity)
        gh, gn = self._part_gains(controls)
        plain = self._reverb(harmonic + noise, sr)                 # default gains, full reverb
        gain = 10 ** (self.loudness_gain_db(plain, loudness_db, sr) / 20)[:, None]
        if gh == 1.0 and gn == 1.0 and mix == 1.0:
            return plain * gain
        dry = gh * harmonic + gn * noise
        wet = self._reverb(dry, sr) - dry
        return (dry + mix * wet) * gain

    def loudness_gain_db(self, audio: torch.Tensor, target_db: torch.Tensor,
                         sample_rate: int | None = None) -> torch.Tensor:
        """(B, T) audio and its requested (B, F) loudness -> (B,) gain in dB: the median of
        (requested - measured) A-weighted loudness over the frames within
        `config.loudness_lock_range_db` of the requested peak (0 where none are), within +-40 dB.
        The measure is the model's own reading (`analyze_loudness`) at any `sample_rate`, so a
        note locks to the same level at every output rate.
        """
        sr = sample_rate or self.sample_rate
        hop = sr // self.config.frame_rate if sr % self.config.frame_rate == 0 else \
            max(1, round(sr / self.config.frame_rate))
        n_fft = max(hop, int(round(self.config.loudness_n_fft * sr / self.sample_rate)))
        # `loudness` averages power over the FFT bins, which reads 10 log10(n_fft ratio) dB
        # higher for the same sound with a window as long in time at a higher rate (Parseval);
        # the requested curve is in the model's own reading (its rate, `loudness_n_fft`).
        measured = loudness(audio.detach(), sr, hop_length=hop, n_fft=n_fft) \
            - 10.0 * math.log10(n_fft / self.config.loudness_n_fft)
        f = min(measured.shape[1], target_db.shape[1])
        measured, target = measured[:, :f], target_db[:, :f].to(measured)
        active = (target > target.amax(1, keepdim=True) - self.config.loudness_lock_range_db) \
            & (target > LOUDNESS_FLOOR_DB + 1) & (measured > LOUDNESS_FLOOR_DB + 1)
        out = torch.zeros(audio.shape[0], device=audio.device, dtype=audio.dtype)
        for i in range(audio.shape[0]):
            if active[i].any():
                out[i] = (target[i] - measured[i])[active[i]].median()
        return out.clamp(-40.0, 40.0)

    # -- the Generator contract ---------------------------------------------------------------
    def note_curves(self, cond: Conditions, n_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """f0 (B, F) and loudness (B, F) for note conditions: constant pitch, and the velocity's
        sustain loudness shaped by the ADSR envelope (attack, decay, sustain dB, release)."""
        if cond.f0_hz is not None and cond.loudness_db is not None:
            return cond.f0_hz[:, :n_frames], cond.loudness_db[:, :n_frames]
        if cond.pitch is None:
            raise ConfigError("ddsp needs a pitch (or f0 and loudness curves)")
        b = cond.pitch.shape[0]
        device = self.velocity_db.device
        f0 = cond.f0_hz if cond.f0_hz is not None else \
            midi_to_hz(cond.pitch.to(device))[:, None].expand(b, n_frames)
        vel = cond.velocity if cond.velocity is not None else torch.full((b,), 100.0)
        level = self.velocity_db[vel.to(device).round().long().clamp(0, 127)]
        env = adsr_db(n_frames, self.config.frame_rate, *self.config.adsr, device=device)
        ld = cond.loudness_db if cond.loudness_db is not None else \
            (level[:, None] + env[None]).clamp_min(LOUDNESS_FLOOR_DB)
        return f0.float(), ld.float()

    def decode(self, latent: torch.Tensor, cond: Conditions,
               controls: dict[str, float] | None = None, sample_rate: int | None = None,
               generator: NoiseSource = 0) -> torch.Tensor:
        """Latent (B, D) or (B, D, F) + conditions -> (B, T) audio.

        `generator`: the noise source (`get_parts`); the default, seed 0, gives every item its
        own noise so an item renders the same alone or in any batch."""
        b = latent.shape[0]
        cond = cond.expand(b).to(latent.device)
        if latent.ndim == 3:
            n_frames = latent.shape[-1]
            latent = latent.transpose(1, 2)
        elif cond.f0_hz is not None:
            n_frames = cond.f0_hz.shape[1]
        else:
            seconds = cond.duration if cond.duration is not None else self.config.note_seconds
            n_frames = max(1, int(round(seconds * self.config.frame_rate)))
        f0, ld = self.note_curves(cond, n_frames)
        return self.synthesize(f0, ld, latent, sample_rate=sample_rate, controls=controls,
                               generator=generator)

    @property
    def release_seconds(self) -> float:  # type: ignore[override]
        return float(self.config.adsr[3])

    @torch.no_grad()
    def render(self, latent: torch.Tensor, cond: Conditions, *, sample_rate: int | None = None,
               controls: dict[str, float] | None = None, seed: int = 0) -> torch.Tensor:
        """`Generator.render` natively at any rate: the synthesis runs at `sample_rate` from the
        frame-rate controls; item i's noise is seeded from `item_seeds(seed, B)[i]`."""
        controls = dict(controls or {})
        self.check_controls(controls)
        latent = self.apply_controls(latent, controls)
        synth_controls = {k: v for k, v in controls.items() if not k.startswith("pc")}
        return self.decode(latent, cond, controls=synth_controls or None,
                           sample_rate=sample_rate, generator=int(seed))

    @torch.no_grad()
    def render_recording(self, audio: torch.Tensor, latent: torch.Tensor | None = None, *,
                         velocity: float = 100.0, sample_rate: int | None = None,
                         controls: dict[str, float] | None = None, seed: int = 0,
                         octave_shift: int = 0, loudness_shift: float = 0.0) -> torch.Tensor:
        """Timbre transfer (`synth.ddsp_play.timbre_transfer`): the recording's f0 and loudness
        curves, frame by frame, played with `latent` as the timbre (default: the training mean);
        `velocity` is not used (the loudness comes from the recording)."""
        from synth.ddsp_play import TransferOptions, timbre_transfer

        opts = TransferOptions(octave_shift=octave_shift, loudness_shift=loudness_shift)
        return timbre_transfer(self, audio, latent, opts, sample_rate=sample_rate,
                               controls=controls, seed=seed)

    @property
    def controls(self) -> list[ControlSpec]:
        specs = super().controls + [
            ControlSpec("harmonic_db", -24.0, 12.0, 0.0, "gain of the harmonic part", "dB"),
            ControlSpec("noise_db", -24.0, 12.0, 0.0, "gain of the filtered-noise part", "dB"),
            ControlSpec("brightness", -12.0, 12.0, 0.0,
                        "tilt of the harmonic distribution", "dB/octave"),
        ]
        if self.reverb is not None:
            specs.append(ControlSpec("reverb_mix", 0.0, 2.0, 1.0, "level of the learned reverb", "x"))
        return specs

    # -- training -----------------------------------------------------------------------------
    def example_batch(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        n = int(self.config.note_seconds * self.sample_rate) // self.hop_length * self.hop_length
        pitch = torch.randint(48, 72, (batch_size,), generator=generator).float()
        t = torch.arange(n) / self.sample_rate
        audio = sum(0.2 / k * torch.sin(2 * math.pi * k * midi_to_hz(pitch)[:, None] * t)
                    for k in (1, 2, 3))
        audio = audio * torch.exp(-2 * t) + 0.003 * torch.randn(batch_size, n, generator=generator)
        return {"audio": audio.float(), "pitch": pitch,
                "velocity": torch.full((batch_size,), 100.0)}

    def training_step(self, batch: dict[str, torch.Tensor], phase: str = "main") -> dict[str, torch.Tensor]:
        """Resynthesis from manifest f0 (or batch["f0_hz"]) and measured loudness; multi-scale
        spectral loss (linear + log magnitude)."""
        audio = batch["audio"]
        n = self.frames(audio.shape[-1]) * self.hop_length
        audio = audio[:, :n]
        n_frames = n // self.hop_length
        f0 = batch.get("f0_hz")
        if f0 is None:
            f0 = midi_to_hz(batch["pitch"])[:, None].expand(-1, n_frames)
        ld = self.analyze_loudness(audio)
        z = self.encode_frames(audio, f0)
        if self.config.z_mode == "global":
            z = self._pool(z, ld)
        out = {}
        inharm = None
        if self.config.inharmonicity:
            inharm = batch.get("inharmonicity")  # the whole note's, from the dataset
            if inharm is None:  # else analysed on the crop (`synth.inharmonicity`)
                from synth.inharmonicity import estimate_inharmonicity

                pitch = batch.get("pitch")
                if pitch is None:
                    pitch = hz_to_midi(f0.clamp_min(1.0)).contiguous().median(1).values
                inharm = estimate_inharmonicity(audio, self.sample_rate, pitch.float(),
                                                max_partials=self.config.n_harmonics)[0]
            inharm = inharm.to(audio.device, torch.float32)
            target = torch.log10(inharm + INHARM_EPS)
            out["inharm/l1"] = (self.inharmonicity_log10(z, f0) - target).abs().mean()
        c = self.config
        if (c.harmonic_loss_weight > 0 or c.harmonic_frame_loss_weight > 0
                or c.noise_loss_weight > 0 or c.noise_pattern_loss_weight > 0
                or c.noise_static_loss_weight > 0):
            zf = z[:, None, :].expand(-1, n_frames, -1) if z.ndim == 2 else z
            harm, mags = self.get_controls(f0, ld, zf, None, inharm)
            harmonic, noise = self.get_parts(harm, mags, n, inharmonicity=inharm)
            recon = self._reverb(harmonic + noise, self.sample_rate)
            if (c.noise_loss_weight > 0 or c.noise_pattern_loss_weight > 0
                    or c.noise_static_loss_weight > 0):
                frames_l1, pattern_l1, static_l1 = self._noise_losses(audio, harmonic.detach(),
                                                                      mags)
                if c.noise_static_loss_weight > 0:
                    out["noise/static"] = static_l1
                if c.noise_loss_weight > 0:
                    out["noise/frames"] = frames_l1
                if c.noise_pattern_loss_weight > 0:
                    out["noise/pattern"] = pattern_l1
            if c.harmonic_loss_weight > 0 or c.harmonic_frame_loss_weight > 0:
                note, frames = self._harmonic_losses(audio, f0, harm.distribution, inharm)
                if c.harmonic_loss_weight > 0:
                    out["harm/l1"] = note
                if c.harmonic_frame_loss_weight > 0:
                    out["harm/frames"] = frames
        else:
            recon = self.synthesize(f0, ld, z, n_samples=n, match_loudness=False,
                                    inharmonicity=inharm)
        sizes = tuple(s for s in self.config.fft_sizes if s <= n)
        out["recon/mss"] = multiscale_spectral_loss(recon, audio, fft_sizes=sizes)
        if c.mel_loss_weight > 0:
            out["recon/mel"] = self.mel_distance(recon, audio)
        if c.perceptual_loss_weight > 0:
            out["percep/features"] = self.perceptual_distance(recon, audio)
        return out

    def perceptual_net(self, device: torch.device | str = "cpu"):
        """The frozen note classifier of `perceptual_model` on `device`, loaded on first use and
        kept outside the module's weights (not saved, not trained, not wrapped by DDP)."""
        net = self.__dict__.get("_perceptual")
        if net is None:
            net = load_perceptual_net(str(self.config.perceptual_model), self.sample_rate)
            object.__setattr__(self, "_perceptual", net)
        if next(net.parameters()).device != torch.device(device):
            net.to(device)
        return net

    def perceptual_distance(self, audio: torch.Tensor, target: torch.Tensor, net=None
                            ) -> torch.Tensor:
        """(B, T) audio and (B, T) target at the model's rate -> scalar: the mean over the
        perceptual classifier's last three conv blocks and its embedding of mean |a(audio) -
        a(target)| / mean |a(target)| (`perceptual_loss_weight`); differentiable in `audio`.
        `net`: a NoteClassifier at the model's rate (default: `perceptual_net`)."""
        net = self.perceptual_net(audio.device) if net is None else net
        with torch.no_grad():
            theirs = net.activations(target)[1:]
        ours = net.activations(audio)[1:]
        terms = [(a - b).abs().mean() / b.abs().mean().clamp_min(1e-6)
                 for a, b in zip(ours, theirs)]
        return torch.stack(terms).mean()

    def mel_distance(self, audio: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, T) audio and (B, T) target -> scalar: mean |log mel - log mel'| (natural log,
        `self.mel`), both floored 60 dB below the target's peak per item (`mel_loss_weight`)."""
        ours, theirs = self.mel(audio), self.mel(target)
        floor = theirs.amax(dim=(1, 2), keepdim=True) - 6.0 * math.log(10.0)
        return (ours.maximum(floor) - theirs.maximum(floor)).abs().mean()

    def _noise_losses(self, audio: torch.Tensor, harmonic: torch.Tensor, mags: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The noise part's expected band power against the original's power left over by the
        (detached) harmonic part. audio, harmonic: (B, T); mags: (B, F, M). Three scalars: the
        per-frame log-L1 (`DDSPConfig.noise_loss_weight`), the L1 of the crop-mean fine
        patterns (`noise_pattern_loss_weight`, `fine_pattern`) and the L1 of the crop-mean log
        powers per band (`noise_static_loss_weight`; the expectation's mean log is lowered by
        what one random draw's log falls short of its power's log, `_log_draw_bias`)."""
        bands = mags.shape[-1]
        with torch.no_grad():
            left = (self.frame_power(audio) - self.frame_power(harmonic)).clamp_min(0.0)
            target = left @ band_weights(left.shape[-1], bands, left.device, left.dtype)
            floor = target.amax(dim=(1, 2), keepdim=True).clamp_min(1e-10) * 1e-6
            target_pattern = fine_pattern(torch.log(target.mean(1) + floor[:, 0]))
        # what the filter plays (its window smooths the band curve), read as the target is;
        # uniform noise in [-1, 1) has variance 1/3, the 1024-point Hann window's energy is 3N/8
        response = filter_power_response(mags, self.noise_window(self.sample_rate), 1024)
        expected = (response * (1024 * 3 / 8 / 3.0)) @ band_weights(
            response.shape[-1], bands, mags.device, mags.dtype)
        frames = (torch.log(expected + floor) - torch.log(target + floor)).abs().mean()
        pattern = fine_pattern(torch.log(expected.mean(1) + floor[:, 0]))
        static = (torch.log(expected + floor).mean(1) + self._log_draw_bias(bands)
                  - torch.log(target + floor).mean(1)).abs().mean()
        return frames, (pattern - target_pattern).abs().mean(), static

    @torch.no_grad()
    def _log_draw_bias(self, bands: int) -> float:
        """Mean log of white noise's band power as `_noise_losses` reads it (`frame_power` at
        `bands` band points), minus the log of its mean: < 0, since the log of one random draw
        falls short of the log of its expectation (0.29 nats at 257 bands of 513 bins). Cached."""
        cache = self.__dict__.setdefault("_log_draw_bias_cache", {})
        if bands not in cache:
            noise = torch.rand(1, 8 * self.sample_rate, generator=torch.Generator().manual_seed(0))
            power = self.frame_power(noise.to(self.dct) * 2 - 1)
            weights = band_weights(power.shape[-1], bands, power.device, power.dtype)
            read = (power @ weights)[..., 2:-2]
            cache[bands] = float((torch.log(read).mean(1) - torch.log(read.mean(1))).mean())
        return cache[bands]

    def _harmonic_losses(self, audio: torch.Tensor, f0: torch.Tensor, dist: torch.Tensor,
                         inharm: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-distribution L1s, model (B, F, H) vs analysed from audio: (note-mean, per-frame).

        Note-mean: both means weight frames by the analysed harmonic energy. Per-frame: each
        frame's L1, weighted by the frame's share of the crop's summed partial amplitude (or
        alike within 60 dB of the peak, `harmonic_frame_weighting` "level"). Only
        partials below Nyquist (per frame, also below `harmonic_frame_max_hz`) and crops with
        any harmonic energy count. Two scalars.
        """
        from synth.partials import note_distribution, partial_amplitudes

        f0_note = self.note_f0(audio, f0)  # not f0.median(): see note_f0
        with torch.no_grad():
            amps = partial_amplitudes(audio, f0_note, self.sample_rate, self.hop_length,
                                      dist.shape[1], dist.shape[-1], inharm)
            w = amps.pow(2).sum(-1)  # (B, F) harmonic energy per frame
            target = note_distribution(amps, w)
            valid = (amps.amax(1) > 0) & (w.sum(1) > 1e-8)[:, None]  # (B, H)
        model = note_distribution(dist, w)
        floor = self.config.harmonic_loss_floor
        err = (torch.log(model + floor) - torch.log(target + floor)).abs()
        note = (err * valid).sum() / valid.sum().clamp_min(1)
        with torch.no_grad():
            level = amps.sum(-1)  # (B, F)
            frame_target = amps / level[..., None].clamp_min(1e-12)
            if self.config.harmonic_frame_weighting == "level":  # frames within 60 dB alike
                share = (level > 1e-3 * level.amax(1, keepdim=True)).to(level.dtype)
                share = share * (level > 0)
            else:  # by amplitude
                share = level
            share = share / share.sum(1, keepdim=True).clamp_min(1e-12)  # (B, F), sums to 1
            keep = valid.to(dist.dtype)[:, None, :]  # (B, 1, H)
            max_hz = self.config.harmonic_frame_max_hz
            if max_hz is not None:  # the balance among the partials below max_hz alone
                k = torch.arange(1, dist.shape[-1] + 1, device=dist.device, dtype=dist.dtype)
                below = (k * f0_note.reshape(-1, 1).to(dist.dtype)) < max_hz  # (B, H)
                keep = keep * below[:, None, :].to(dist.dtype)
                kept = amps * keep
                frame_target = kept / kept.sum(-1, keepdim=True).clamp_min(1e-12)
            weight = share[..., None] * keep / keep.sum(-1, keepdim=True).clamp_min(1)
        if max_hz is not None:
            dist = dist * keep
        model_frames = dist / dist.sum(-1, keepdim=True).clamp_min(1e-12)
        err_f = (torch.log(model_frames + floor) - torch.log(frame_target + floor)).abs()
        frames = (err_f * weight).sum() / valid.any(-1).sum().clamp_min(1)
        return note, frames

    def loss_weights(self) -> dict[str, float]:
        return {"inharm/l1": self.config.inharmonicity_weight,
                "harm/l1": self.config.harmonic_loss_weight,
                "harm/frames": self.config.harmonic_frame_loss_weight,
                "noise/frames": self.config.noise_loss_weight,
                "noise/pattern": self.config.noise_pattern_loss_weight,
                "noise/static": self.config.noise_static_loss_weight,
                "recon/mel": self.config.mel_loss_weight,
                "percep/features": self.config.perceptual_loss_weight}

    def make_optimizers(self, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                        weight_decay: float = 0.0) -> dict[str, torch.optim.Optimizer]:
        """AdamW over everything; the inharmonicity head's output offset (its last bias) in its
        own group at `inharmonicity_lr_scale` x lr (the head's weights would diverge there), the
        last layers of the `z_noise` path and of the encoder's `encoder_spectrum` reading at
        `z_noise_lr_scale` x lr, the last layer of the `z_level_distribution` path at
        `z_level_lr_scale` x lr, the last layer of the `partial_noise` path at
        `partial_noise_lr_scale` x lr."""
        c = self.config
        learned_pn = c.partial_noise and c.partial_noise_range_db > 0
        if not (c.inharmonicity or c.z_noise or c.z_level_distribution or learned_pn):
            return super().make_optimizers(lr, betas, weight_decay)
        groups, special = [], set()
        if c.inharmonicity:
            offset = self.inharm_head[-1].bias
            groups.append({"params": [offset], "lr": lr * c.inharmonicity_lr_scale})
            special.add(id(offset))
        if c.z_noise:  # the path and, if any, the encoder's spectrum reading that feeds it
            last = list(self.z_noise[-1].parameters())
            if c.encoder_spectrum:
                last += list(self.enc_spectrum[-1].parameters())
            groups.append({"params": last, "lr": lr * c.z_noise_lr_scale})
            special.update(id(p) for p in last)
        if c.z_level_distribution:
            last = list(self.z_level_dist[-1].parameters())
            groups.append({"params": last, "lr": lr * c.z_level_lr_scale})
            special.update(id(p) for p in last)
        if learned_pn:
            last = list(self.partial_noise[-1].parameters())
            groups.append({"params": last, "lr": lr * c.partial_noise_lr_scale})
            special.update(id(p) for p in last)
        groups.insert(0, {"params": [p for p in self.parameters() if id(p) not in special]})
        return {"main": torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay)}

    @torch.no_grad()
    def fit_corpus_stats(self, items: list[dict[str, Any]]) -> None:
        """Velocity -> sustain loudness table, loudness and pitch ranges, from training items."""
        by_vel: dict[int, list[float]] = {}
        lows, highs, pitches = [], [], []
        for item in items:
            ld = self.analyze_loudness(item["audio"][None])[0]
            peak = float(ld.max())
            by_vel.setdefault(int(item["velocity"]), []).append(
                float(ld[ld > peak - 20].median()) if (ld > peak - 20).any() else peak)
            lows.append(float(ld.min()))
            highs.append(peak)
            pitches.append(float(item["pitch"]))
        if not by_vel:
            return
        vels = sorted(by_vel)
        levels = [float(torch.tensor(by_vel[v]).median()) for v in vels]
        table = torch.tensor(levels)
        grid = torch.arange(128, dtype=torch.float32)
        self.velocity_db.copy_(_interp(grid, torch.tensor(vels, dtype=torch.float32), table))
        self.loudness_range.copy_(torch.tensor([float(torch.tensor(lows).quantile(0.01)),
                                                float(torch.tensor(highs).quantile(0.99))]))
        self.pitch_range.copy_(torch.tensor([min(pitches), max(pitches)]))


def load_perceptual_net(name: str, sample_rate: int):
    """A note classifier (bundled name or checkpoint path) for the perceptual distance, frozen;
    anything else, or one at another rate than `sample_rate`, is a ConfigError."""
    from latent.metrics.classifier import NoteClassifier
    from synth.catalog import load_named

    net = load_named(name)
    if not isinstance(net, NoteClassifier):
        raise ConfigError(f"perceptual model {name!r} is a {type(net).__name__}, not a note "
                          f"classifier")
    if net.sample_rate != sample_rate:
        raise ConfigError(f"perceptual model {name!r} runs at {net.sample_rate} Hz, the model at "
                          f"{sample_rate} Hz")
    return net.requires_grad_(False)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation with constant extrapolation (numpy.interp)."""
    if xp.numel() == 1:
        return fp.expand_as(x).clone()
    idx = torch.searchsorted(xp, x).clamp(1, xp.numel() - 1)
    x0, x1, y0, y1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    w = ((x - x0) / (x1 - x0)).clamp(0.0, 1.0)
    return y0 + w * (y1 - y0)


def adsr_db(n_frames: int, frame_rate: float, attack: float, decay: float, sustain_db: float,
            release: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """(F,) loudness offset in dB: linear-amplitude attack from silence, exponential decay to
    `sustain_db`, release over the last `release` seconds (the note's duration includes it)."""
    t = torch.arange(n_frames, device=device, dtype=torch.float32) / frame_rate
    total = (n_frames - 1) / frame_rate  # time of the last frame, where the release ends
    amp_attack = (t / max(attack, 1e-4)).clamp(1e-6, 1.0)
    env = 20 * torch.log10(amp_attack)
    env = env + sustain_db * (1 - torch.exp(-(t - attack).clamp_min(0.0) / max(decay / 3, 1e-4)))
    rel_start = max(total - release, 0.0)
    rel = ((t - rel_start) / max(release, 1e-4)).clamp(0.0, 1.0)
    return env + 20 * torch.log10((1 - rel).clamp_min(1e-6))
