import shutil

import pytest
import torch

from latent.controls import SidecarError
from latent.text import (TextEncoder, TextMapper, TextMapperConfig, load_mapper,
                         nearest_family_accuracy, parse_hints, save_mapper, text_adherence,
                         text_to_conditions)
from synth.checkpoint import save_model
from synth.registry import build


@pytest.mark.parametrize("text, expected", [
    ("bright plucked nylon guitar, C2, soft", {"pitch": 36.0, "velocity": 40}),
    ("F#4 flute", {"pitch": 66.0}),
    ("a3 cello, low register", {"pitch": 57.0, "register": "low"}),
    ("Eb5 trumpet ff", {"pitch": 75.0, "velocity": 112}),
    ("organ at midi 60, loud", {"pitch": 60.0, "velocity": 110}),
    ("MIDI note 72 bell", {"pitch": 72.0}),
    ("a sine at 440 Hz", {"pitch": 69.0}),
    ("pp strings, high", {"velocity": 33, "register": "high"}),
    ("very soft pad", {"velocity": 20}),
    ("warm acoustic grand piano, mid register, medium", {"register": "mid", "velocity": 75}),
    ("hard hitting bass", {"velocity": 110}),
    ("mp3 of a quiet piano", {"velocity": 40}),
    ("a warm pad", {}),
])
def test_parse_hints(text, expected):
    assert parse_hints(text) == expected


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder()


def test_text_encoder_paraphrases_are_closer(encoder):
    emb = encoder.embed(["bright plucked nylon guitar, low register, loud",
                         "a loud, bright, plucked classical guitar in the low register",
                         "dark sustained church organ, high register, soft"])
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.1
    assert encoder.embed([]).shape == (0, 384)


def test_text_mapper_fits_a_synthetic_mapping():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(512, 32, generator=g), dim=-1)
    w = torch.randn(32, 4, generator=g)
    y = torch.tanh(x @ w) * 2
    torch.manual_seed(0)
    mapper = TextMapper(TextMapperConfig(in_dim=32, out_dim=4, hidden=64, dropout=0.0))
    fit = mapper.fit(x[:400], y[:400], epochs=60, lr=5e-3, noise=0.0, batch_size=100)
    assert fit["explained"] > 0.9
    held = mapper.predict(x[400:])
    mse = float(((held - y[400:]) ** 2).mean())
    assert mse < 0.25 * float(y[400:].var())
    assert bool(mapper.fitted) and mapper.residual_std.shape == (4,)
    a = mapper.predict(x[:3], seed=5, temperature=1.0)
    torch.testing.assert_close(a, mapper.predict(x[:3], seed=5, temperature=1.0))
    assert not torch.allclose(a, mapper.predict(x[:3]))


def test_nearest_family_accuracy():
    ref = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    res = nearest_family_accuracy(torch.tensor([[0.2, 0.1], [4.9, 5.2]]), ["piano", "organ"],
                                  ref, ["piano", "piano", "organ", "organ"], k=2)
    assert res == {"centroid": 1.0, "knn": 1.0, "n": 2}


class _FamilyByLevel:
    """A stand-in classifier: says 'piano' (0) for every sound."""

    def family_logits(self, audio, sample_rate):
        out = torch.zeros(audio.shape[0], 16)
        out[:, 0] = 1.0
        return out


def test_text_to_conditions_sidecar_and_adherence(tmp_path, encoder):
    torch.manual_seed(0)
    model = build("ddsp", debug=True).eval()
    model.fit_latent_stats(torch.randn(64, model.latent_dim))
    path = save_model(model, tmp_path / "g.safetensors")
    mapper = TextMapper(TextMapperConfig(out_dim=model.latent_dim, hidden=32))
    side = save_mapper(mapper, path, note="test")
    assert side == tmp_path / "g.text.safetensors"
    back = load_mapper(path)
    e = encoder.embed(["soft piano"])
    torch.testing.assert_close(back.predict(e), mapper.predict(e))
    latent, cond = text_to_conditions(model, back, ["loud organ at C5", "a low pad"], seed=3,
                                      encoder=encoder, duration=0.25)
    assert latent.shape == (2, model.latent_dim)
    assert cond.pitch.tolist() == [72.0, 40.0] and cond.velocity.tolist() == [110.0, 100.0]
    assert cond.text_embedding.shape == (2, 384)
    audio = model.decode(latent, cond)
    assert audio.shape[0] == 2 and torch.isfinite(audio).all()
    res = text_adherence(model, back, ["soft piano", "loud organ"], _FamilyByLevel(),
                         ["piano", "organ"], duration=0.25, encoder=encoder)
    assert res["accuracy"] == 0.5 and res["per_family"] == {"piano": 1.0, "organ": 0.0}
    # A mapper beside other weights is refused.
    torch.manual_seed(1)
    other = save_model(build("ddsp", debug=True), tmp_path / "h.safetensors")
    shutil.copy(side, tmp_path / "h.text.safetensors")
    with pytest.raises(SidecarError, match="hash"):
        load_mapper(other)
