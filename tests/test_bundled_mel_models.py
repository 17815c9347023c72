"""The bundled mel VAE and VQ-VAE (`studio/models/vae-gm`, `vqvae-gm`) as a user meets them.

Notes come from FluidSynth and the FluidR3 GM SoundFont (the corpus's instruments, rendered here
rather than read from a corpus the test machine does not have). Decoding goes through the
models' own vocoder (Griffin-Lim) and pitch through torchcrepe tiny.
"""

import numpy as np
import pytest
import torch

from latent.interpolate import centroid_sweep, monotonic_within
from synth.base import Conditions
from synth.catalog import load_named
from synth.pitch import f0 as crepe_f0
from synth.pitch import midi_to_hz

FLUID = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
#: Largest step back of a morph's spectral centroid, as a share of the endpoints' gap: Griffin-
#: Lim's phase retrieval changes the rendered centroid by a few tenths of a percent between
#: nearly equal mels, and latents interpolate timbre, not the centroid itself.
TOLERANCE = 0.05


def gm_note(program: int, pitch: int, seconds: float = 4.0, held: float = 3.0) -> torch.Tensor:
    from synth.data.soundfont import FloatSynth

    synth = FloatSynth(FLUID, 16000, 0.5)
    try:
        synth.select(0, program)
        audio = synth.note(pitch, 100, int(held * 16000), int(seconds * 16000))
    finally:
        synth.close()
    return torch.from_numpy(np.ascontiguousarray(audio))[None]


@pytest.fixture(scope="module")
def notes():
    # flute (73) is dull, the sawtooth lead (81) bright, at C4
    return gm_note(73, 60), gm_note(81, 60)


@pytest.mark.parametrize("name", ["vae-gm", "vqvae-gm"])
def test_morph_between_two_instruments_moves_the_centroid_monotonically(name, notes):
    model = load_named(name)
    cond = Conditions.note([60.0], [100.0])
    dull, bright = (model.encode(x, cond) for x in notes)
    values = centroid_sweep(model, dull, bright, cond, n=7)
    assert values[-1] > 1.3 * values[0], values  # the morph spans a real change of timbre
    assert monotonic_within(values, TOLERANCE), values


@pytest.mark.parametrize("name", ["vae-gm", "vqvae-gm"])
def test_a_timbre_decoded_at_other_pitches_sounds_at_them(name, notes):
    """The flute's latent decoded a fifth down and an octave up: torchcrepe within 30 cents
    (median over voiced frames), the #6 goal for pitch transfer."""
    model = load_named(name)
    z = model.encode(notes[0], Conditions.note([60.0], [100.0]))
    pitch = torch.tensor([53.0, 72.0])
    with torch.no_grad():
        audio = model.decode(z.expand(2, *z.shape[1:]), Conditions.note(pitch.tolist(), [100.0, 100.0]))
    track = crepe_f0(audio, model.sample_rate)
    for i in range(2):
        voiced = track.periodicity[i] > 0.5
        assert voiced.float().mean() > 0.3
        cents = 1200 * torch.log2(track.f0_hz[i][voiced] / midi_to_hz(pitch[i]))
        assert cents.abs().median() < 30


def test_vqvae_prior_samples_at_the_asked_pitch():
    model = load_named("vqvae-gm")
    pitch = torch.tensor([48.0, 67.0])
    audio = model.sample(2, Conditions(pitch=pitch, velocity=torch.full((2,), 100.0),
                                       family=torch.tensor([5, 7])), seed=3)  # strings, brass
    track = crepe_f0(audio, model.sample_rate)
    for i in range(2):
        voiced = track.periodicity[i] > 0.5
        assert voiced.any()
        cents = 1200 * torch.log2(track.f0_hz[i][voiced] / midi_to_hz(pitch[i]))
        assert cents.abs().median() < 50
