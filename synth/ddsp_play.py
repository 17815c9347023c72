"""Playing a DDSP model: resynthesis and timbre transfer from a recording (MIDI: `synth.play`).

Timbre transfer follows the controls of the DDSP colab: f0 and loudness are measured from any
monophonic recording (torchcrepe + A-weighted loudness), optionally shifted by octaves/semitones
and in loudness, "auto-adjusted" to the model's trained pitch and loudness ranges, and frames
quieter than a threshold (or unvoiced) have their harmonic part muted.
"""

from __future__ import annotations

from dataclasses import dataclass
import torch

from synth.base import Conditions
from synth.ddsp import LOUDNESS_FLOOR_DB, DDSPGenerator
from synth.errors import AudioError
from synth.pitch import f0 as crepe_f0
from synth.pitch import hz_to_midi, midi_to_hz


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
    voicing_threshold: float = 0.3
    crepe_model: str = "tiny"


def analyze(model: DDSPGenerator, audio: torch.Tensor, crepe_model: str = "tiny"
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(T,) audio at the model's rate -> f0 (1, F), periodicity (1, F), loudness (1, F)."""
    if audio.ndim != 1 or audio.numel() < model.hop_length * 4:
        raise AudioError("timbre transfer needs a mono recording of at least a few frames")
    n = audio.numel() // model.hop_length * model.hop_length
    x = audio[:n][None].float()
    frames = n // model.hop_length
    track = crepe_f0(x, model.sample_rate, hop_length=model.hop_length, model=crepe_model)
    return (track.f0_hz[:, :frames], track.periodicity[:, :frames],
            model.analyze_loudness(x))


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
