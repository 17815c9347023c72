"""Playing a DDSP model: resynthesis and timbre transfer from a recording (MIDI: `synth.play`).

Timbre transfer follows the controls of the DDSP colab: f0 and loudness are measured from any
monophonic recording (torchcrepe + A-weighted loudness), optionally shifted by octaves/semitones
and in loudness, "auto-adjusted" to the model's trained pitch and loudness ranges, and frames
quieter than a threshold (or unvoiced) have their harmonic part muted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from synth.base import Conditions
from synth.ddsp import (LOUDNESS_FLOOR_DB, DDSPGenerator, SpectralOffsets,
                        load_perceptual_net)
from synth.errors import AudioError, ConfigError
from synth.pitch import f0 as crepe_f0
from synth.pitch import hz_to_midi, midi_to_hz, octave_up_errors

#: CREPE periodicity above which a frame counts as voiced (timbre transfer and resynthesis)
VOICING_THRESHOLD = 0.3


@dataclass
class TransferOptions:
    """DDSP-colab controls. `quiet_db`: frames this far below the recording's loudest are muted;
    `auto_adjust`: move the mean pitch by whole octaves into the model's range and match the
    loudness peak to the model's; `octave_shift`/`pitch_shift` (semitones) and `loudness_shift`
    (dB) are applied after that."""

    auto_adjust: bool = True
    octave_shift: int = 0
    pitch_shift: float = 0.0
    loudness_shift: float = 0.0
    quiet_db: float = 40.0
    voicing_threshold: float = VOICING_THRESHOLD
    crepe_model: str = "tiny"


def analyze(model: DDSPGenerator, audio: torch.Tensor, crepe_model: str = "tiny",
            octave_check: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(T,) audio at the model's rate -> f0 (1, F), periodicity (1, F), loudness (1, F).

    `octave_check`: voiced frames CREPE reads an octave (or two) too high are moved down
    (`synth.pitch.octave_up_errors`)."""
    if audio.ndim != 1 or audio.numel() < model.hop_length * 4:
        least = model.hop_length * 4
        raise AudioError(f"playing a recording needs mono audio of at least {least} samples "
                         f"({least / model.sample_rate * 1000:.0f} ms) at {model.sample_rate} Hz, "
                         f"got shape {tuple(audio.shape)}")
    n = audio.numel() // model.hop_length * model.hop_length
    x = audio[:n][None].float()
    frames = n // model.hop_length
    track = crepe_f0(x, model.sample_rate, hop_length=model.hop_length, model=crepe_model)
    f0, periodicity = track.f0_hz[:, :frames], track.periodicity[:, :frames]
    if octave_check:
        f0 = octave_up_errors(x, model.sample_rate, f0, periodicity > VOICING_THRESHOLD,
                              model.hop_length)
    return f0, periodicity, model.analyze_loudness(x)


@torch.no_grad()
def timbre_transfer(model: DDSPGenerator, audio: torch.Tensor, z: torch.Tensor | None = None,
                    options: TransferOptions | None = None, sample_rate: int | None = None,
                    controls: dict[str, float] | None = None, seed: int = 0) -> torch.Tensor:
    """Re-play a monophonic recording with the model's timbre.

    Args:
        audio: (T,) at `model.sample_rate`.
        z: (D,) or (1, D) timbre latent (default: the training mean, `latent_mean`).
        seed: the filtered noise's seed (the same seed gives the same bytes).
    Returns:
        (T',) audio at `sample_rate` (default: the model's).
    """
    o = options or TransferOptions()
    f0, periodicity, ld = analyze(model, audio, o.crepe_model)
    voiced = periodicity > o.voicing_threshold
    loud = ld > ld.max() - o.quiet_db
    midi = hz_to_midi(f0.clamp_min(1.0))
    if o.auto_adjust:
        active = voiced & loud
        if active.any():
            lo, hi = (float(v) for v in model.pitch_range)
            mean = float(midi[active].mean())
            target = (lo + hi) / 2
            midi = midi + 12.0 * round((target - mean) / 12.0)
            ld = ld + (float(model.loudness_range[1]) - float(ld.max()))
    midi = midi + 12.0 * o.octave_shift + o.pitch_shift
    ld = ld + o.loudness_shift
    mute = ~(voiced & loud)
    ld = torch.where(mute, torch.full_like(ld, LOUDNESS_FLOOR_DB), ld)
    f0_hz = midi_to_hz(midi)
    z = model.latent_mean if z is None else z
    z = z.reshape(1, -1).to(f0_hz)
    return model.synthesize(f0_hz, ld, z, sample_rate=sample_rate, controls=controls,
                            generator=int(seed))[0]


@dataclass
class RefineOptions:
    """Analysis by synthesis of a note's timbre (`refine_note`). `steps` Adam steps at `lr` on the
    global z (and, with `offsets`, a static `SpectralOffsets` correction beside it), minimising
    the multi-scale spectral loss plus `perceptual_weight` x the perceptual distance under
    `judge` (a note classifier checkpoint or bundled name, at the model's rate;
    `perceptual_weight` 0: the spectral loss alone, no judge loaded). `max_seconds`: a
    recording longer than this is refined on its loudest stretch of that length
    (`recording_timbre`, `loudest_window`): one global z and static offsets describe the whole
    recording, and time and memory grow with the length refined (`bench.ddsp_resynth_speed`, 2
    CPU cores: a 30 s recording refined whole 52 s and 1.8 GB, on its loudest 10 s 21 s and
    1.3 GB)."""

    steps: int = 30
    lr: float = 0.05
    perceptual_weight: float = 20.0
    judge: str = "classifier-judge"
    offsets: bool = True
    max_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.steps < 0 or not (self.lr > 0 and self.perceptual_weight >= 0):
            raise ConfigError(f"refine needs steps >= 0, lr > 0 and perceptual_weight >= 0, got "
                              f"{self.steps}, {self.lr}, {self.perceptual_weight}")
        if not self.max_seconds > 0:
            raise ConfigError(f"refine needs max_seconds > 0, got {self.max_seconds}")


def refine_note(model: DDSPGenerator, audio: torch.Tensor, f0_hz: torch.Tensor,
                loudness_db: torch.Tensor, z: torch.Tensor | None = None,
                options: RefineOptions | None = None, seed: int = 0
                ) -> tuple[torch.Tensor, SpectralOffsets | None]:
    """Move each note's global timbre latent, and with `options.offsets` a static correction of
    its partials and noise, until the model's resynthesis sounds like it.

    The encoder reads a note in one pass; this refines its z by gradient steps on the note
    itself (the decoder and synthesiser frozen), as GAN inversion refines an encoder's guess.
    On the spectral loss alone the resyntheses come no closer to being named right; with the
    perceptual term of a separately trained classifier they do (docs/DDSP.md, session 23). The
    offsets (session 25) add what one z cannot ask the decoder for: a per-partial level pattern
    and a smooth noise shape, the same at every frame.

    Args:
        audio: (B, T) the notes at the model's rate, T a multiple of the hop.
        f0_hz, loudness_db: (B, F) frame-rate curves, F = T / hop.
        z: (B, D) the starting latents (default: `model.encode` of the notes).
    Returns:
        (B, D) refined latents and their `SpectralOffsets` ((B, H), (B, K)), or None without
        `options.offsets` (no gradient).
    """
    from synth.losses import multiscale_spectral_loss

    o = options or RefineOptions()
    if audio.ndim != 2 or audio.shape[-1] != f0_hz.shape[-1] * model.hop_length:
        raise AudioError(f"refining a note needs (B, T) audio with T = frames x hop, got "
                         f"{tuple(audio.shape)} for {tuple(f0_hz.shape)} frames")
    if z is None:
        with torch.no_grad():
            z = model.encode(audio, Conditions(f0_hz=f0_hz))
    if z.ndim != 2:
        raise ConfigError(f"refinement moves one global z per note (B, D), got "
                          f"{tuple(z.shape)} (a z_mode='frames' model?)")
    judge = None
    if o.perceptual_weight > 0 and o.steps > 0:
        judge = load_perceptual_net(o.judge, model.sample_rate)
    was = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    z = z.detach().clone().requires_grad_(True)
    offsets = None
    params = [z]
    if o.offsets:
        offsets = SpectralOffsets.zeros(z.shape[0], model.config.n_harmonics).to(z)
        for t in offsets:
            t.requires_grad_(True)
        params += list(offsets)
    try:
        opt = torch.optim.Adam(params, lr=o.lr)
        sizes = tuple(s for s in model.config.fft_sizes if s <= audio.shape[-1])
        for k in range(o.steps):
            with torch.enable_grad():
                rec = model.synthesize(f0_hz, loudness_db, z, n_samples=audio.shape[-1],
                                       match_loudness=False, offsets=offsets,
                                       generator=torch.Generator().manual_seed(seed + k))
                loss = multiscale_spectral_loss(rec, audio, fft_sizes=sizes)
                if judge is not None:
                    loss = loss + o.perceptual_weight * model.perceptual_distance(rec, audio, judge)
                opt.zero_grad()
                loss.backward()
            opt.step()
    finally:
        for p, r in zip(model.parameters(), was):
            p.requires_grad_(r)
    if offsets is not None:
        offsets = SpectralOffsets(*(t.detach() for t in offsets))
    return z.detach(), offsets


def refine_latent(model: DDSPGenerator, audio: torch.Tensor, f0_hz: torch.Tensor,
                  loudness_db: torch.Tensor, z: torch.Tensor | None = None,
                  options: RefineOptions | None = None, seed: int = 0) -> torch.Tensor:
    """`refine_note` of the global z alone (no offsets, whatever `options.offsets`): (B, D), a
    latent that carries the whole refinement (the app's anchors, morphing)."""
    o = replace(options or RefineOptions(), offsets=False)
    return refine_note(model, audio, f0_hz, loudness_db, z, o, seed)[0]


def hold_unvoiced(f0_hz: torch.Tensor, voiced: torch.Tensor) -> torch.Tensor:
    """(B, F) f0 and (B, F) bool voicing -> (B, F) f0 where every unvoiced frame takes the f0 of
    the voiced frame before it (frames before the first voiced one: the first voiced f0); an
    item with no voiced frame keeps its track. Pitch trackers wander in silence and breath;
    holding the pitch lets the noise and the quiet tails play without pitch blips."""
    frames = torch.arange(f0_hz.shape[-1], device=f0_hz.device).expand_as(f0_hz)
    last = torch.where(voiced, frames, torch.full_like(frames, -1)).cummax(dim=-1).values
    first = torch.where(voiced, frames, torch.full_like(frames, f0_hz.shape[-1])).min(
        dim=-1, keepdim=True).values
    source = torch.where(last >= 0, last, first).clamp_max(f0_hz.shape[-1] - 1)
    held = f0_hz.gather(-1, source)
    return torch.where(voiced.any(dim=-1, keepdim=True), held, f0_hz)


def recording_curves(model: DDSPGenerator, audio: torch.Tensor, crepe_model: str = "tiny"
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(T,) -> the recording cut to whole frames (1, T'), its f0 held through unvoiced frames
    (1, F) and its loudness (1, F)."""
    f0, periodicity, ld = analyze(model, audio, crepe_model)
    x = audio[: f0.shape[-1] * model.hop_length][None].float()
    return x, hold_unvoiced(f0, periodicity > VOICING_THRESHOLD), ld


def loudest_window(loudness_db: torch.Tensor, frames: int) -> int:
    """(F,) loudness -> the first frame of the `frames`-long stretch with the most loudness above
    `LOUDNESS_FLOOR_DB` (the earliest such stretch on ties; 0 when `frames` >= F)."""
    n = loudness_db.shape[-1]
    if frames >= n:
        return 0
    level = (loudness_db - LOUDNESS_FLOOR_DB).clamp_min(0).double()
    sums = torch.cat([level.new_zeros(1), level.cumsum(0)])
    totals = sums[frames:] - sums[:-frames]          # (F - frames + 1,) stretch sums
    return int(torch.argmax(totals))


def recording_timbre(model: DDSPGenerator, audio: torch.Tensor,
                     refine: RefineOptions | None = None, crepe_model: str = "tiny",
                     seed: int = 0, curves: tuple[torch.Tensor, ...] | None = None
                     ) -> tuple[torch.Tensor, SpectralOffsets | None]:
    """A recording's own timbre: (T,) at the model's rate -> (1, D) the encoder's global z and
    None, or with `refine` both refined on the recording (`refine_note`: offsets (1, H), (1, K)
    when `refine.offsets`; a recording longer than `refine.max_seconds` on its loudest stretch of
    that length, `loudest_window`). `curves`: `recording_curves` of the recording, when
    measured."""
    if model.config.z_mode == "frames":
        raise ConfigError("resynthesis with the recording's latent needs a global-z model, "
                          "not z_mode='frames'")
    x, f0, ld = curves or recording_curves(model, audio, crepe_model)
    with torch.no_grad():
        z = model.encode(x, Conditions(f0_hz=f0))
    if refine is not None and refine.steps > 0:
        frames = max(1, int(refine.max_seconds * model.sample_rate / model.hop_length))
        start = loudest_window(ld[0], frames)
        stop = min(start + frames, ld.shape[-1])
        hop = model.hop_length
        return refine_note(model, x[:, start * hop:stop * hop], f0[:, start:stop],
                           ld[:, start:stop], z, refine, seed)
    return z, None


def recording_latent(model: DDSPGenerator, audio: torch.Tensor,
                     refine: RefineOptions | None = None, crepe_model: str = "tiny",
                     seed: int = 0, curves: tuple[torch.Tensor, ...] | None = None
                     ) -> torch.Tensor:
    """A recording's own timbre latent: (T,) at the model's rate -> (1, D), the encoder's global
    z, refined on the recording by `refine` (z alone: `refine_latent`; None: the encoder's z).
    `curves`: `recording_curves` of the recording, when already measured."""
    if refine is not None:
        refine = replace(refine, offsets=False)
    return recording_timbre(model, audio, refine, crepe_model, seed, curves)[0]


@torch.no_grad()
def resynthesize(model: DDSPGenerator, audio: torch.Tensor, z: torch.Tensor | None = None,
                 refine: RefineOptions | None = None, sample_rate: int | None = None,
                 controls: dict[str, float] | None = None, seed: int = 0,
                 octave_shift: int = 0, loudness_shift: float = 0.0,
                 crepe_model: str = "tiny", curves: tuple[torch.Tensor, ...] | None = None,
                 offsets: SpectralOffsets | None = None) -> torch.Tensor:
    """Play a recording back through the model as itself: its own f0 (CREPE with the octave
    check of `analyze`, held through unvoiced frames) and loudness curves, at its own pitch
    (no auto-adjust), with its own timbre (`recording_timbre`, refined by `refine`) unless `z`
    (1, D) is given (with its `offsets`, if any).

    Args:
        audio: (T,) at `model.sample_rate` (not read when `curves` and `z` are given).
        octave_shift, loudness_shift: moves of the pitch (octaves) and level (dB).
        curves: `recording_curves` of the recording, when already measured.
    Returns:
        (T',) audio at `sample_rate` (default: the model's).
    """
    curves = curves or recording_curves(model, audio, crepe_model)
    if z is None:
        z, offsets = recording_timbre(model, audio, refine, crepe_model, seed, curves)
    _, f0, ld = curves
    z = z.reshape(1, -1).to(f0)
    return model.synthesize(f0 * 2.0 ** octave_shift, ld + loudness_shift, z,
                            sample_rate=sample_rate, controls=controls, generator=int(seed),
                            offsets=None if offsets is None else offsets.to(f0))[0]
