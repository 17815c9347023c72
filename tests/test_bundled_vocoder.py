"""The bundled vocoder `istft-gm` (studio/models/istft-gm.safetensors) as a user meets it: on
notes of the corpus's instruments (rendered here through FluidSynth, as in
tests/test_bundled_mel_models.py) it beats Griffin-Lim on the multi-resolution STFT distance and
keeps the pitch. The 48-note table is bench/vocoder_eval's (docs/VOCODERS.md)."""

import torch

from latent.metrics.reconstruction import mrstft_distance
from synth.catalog import load_named
from synth.features import LogMel
from synth.pitch import f0 as crepe_f0
from synth.pitch import midi_to_hz
from test_bundled_mel_models import gm_note
from vocoders.griffinlim import GriffinLim, GriffinLimConfig


NOTES = [(73, 60), (0, 55), (40, 67)]  # flute, piano, violin


def test_istft_gm_beats_griffin_lim_and_keeps_the_pitch():
    vocoder = load_named("istft-gm").eval()
    spec = vocoder.feature_spec
    gl = GriffinLim(GriffinLimConfig(feature_spec=spec))
    ours_d, gl_d = [], []
    for program, pitch in NOTES:
        audio = gm_note(program, pitch, seconds=2.0, held=1.5)
        n = audio.shape[-1] // spec.hop_length * spec.hop_length
        audio = audio[:, :n]
        mel = LogMel(spec)(audio)[..., : n // spec.hop_length]
        with torch.no_grad():
            ours = vocoder(mel, spec)
            ours_d.append(float(mrstft_distance(ours, audio)))
            gl_d.append(float(mrstft_distance(gl(mel, spec), audio)))
        track = crepe_f0(ours, spec.sample_rate)
        voiced = track.periodicity[0] > 0.5
        assert voiced.float().mean() > 0.3
        cents = 1200 * torch.log2(track.f0_hz[0][voiced] / midi_to_hz(torch.tensor(float(pitch))))
        assert cents.abs().median() < 25, (program, pitch)  # issue #5's pitch goal
    # Every note closer to the original than Griffin-Lim's, and by more than 12 % in sum (here,
    # with istft-gm's phase-gradient start: 0.70 / 0.86 / 0.99 against 0.82 / 1.16 / 1.20, -21 %;
    # 48 held-out notes: 0.679 against 0.891, -24 %).
    assert all(o < g for o, g in zip(ours_d, gl_d)), (ours_d, gl_d)
    assert sum(ours_d) < 0.88 * sum(gl_d), (ours_d, gl_d)
