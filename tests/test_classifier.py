"""latent.metrics.classifier: shapes, resampling, length handling, pitch masking, size and a
few optimizer steps learning a separable toy task; registry and checkpoint round trip."""

import torch

from latent.metrics.classifier import NoteClassifier
from synth.checkpoint import load_model, save_model
from synth.registry import build, get_class
from synth.train import weighted_loss


def test_registered_and_default_size_under_10_mb():
    assert get_class("classifier") is NoteClassifier
    model = build("classifier")
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert n_bytes < 10e6
    assert model.feature_spec.n_mels == 80 and model.sample_rate == 16000


def test_heads_and_embedding_shapes_any_length_and_rate(gen):
    model = build("classifier", debug=True).eval()
    audio = torch.randn(3, 8000, generator=gen) * 0.1
    emb, fam, pitch = model.analyse(audio, 16000)
    assert emb.shape == (3, model.embed_dim) and fam.shape == (3, 16) and pitch.shape == (3, 128)
    torch.testing.assert_close(model.embed(audio, 16000), emb)
    torch.testing.assert_close(model.family_logits(audio), fam)
    torch.testing.assert_close(model.pitch_logits(audio), pitch)
    # whole notes of other lengths, other rates, and tiny inputs all work
    assert model.embed(torch.randn(2, 40000, generator=gen) * 0.1).shape == (2, model.embed_dim)
    assert model.embed(audio[:, :4000].repeat(1, 2), 32000).shape == (3, model.embed_dim)
    assert model.embed(torch.zeros(1, 50)).isfinite().all()
    # batching does not change results
    torch.testing.assert_close(model.analyse(audio, batch_size=1)[0], emb, rtol=1e-5, atol=1e-6)


def test_pitch_loss_is_masked_for_unpitched_families_and_accuracies_are_log_only(gen):
    model = build("classifier", debug=True).train()
    batch = model.example_batch(4, gen)
    batch["family"] = torch.tensor([14, 15, 12, 14])  # all unpitched
    losses = model.training_step(batch)
    assert losses["ce/pitch"].item() == 0.0
    assert all(k.startswith("log/") for k in losses if "acc" in k)
    assert not any(v.requires_grad for k, v in losses.items() if k.startswith("log/"))
    total = weighted_loss(losses, model.loss_weights())
    torch.testing.assert_close(total, losses["ce/family"])


def test_learns_a_toy_task_and_survives_save_load(tmp_path):
    torch.manual_seed(0)
    model = build("classifier", debug=True).train()
    t = torch.arange(4000) / 16000
    pitches = torch.tensor([48.0, 60.0, 72.0, 84.0] * 4)
    family = torch.tensor([0, 0, 0, 0, 5, 5, 5, 5] * 2)
    f0 = 440 * 2 ** ((pitches - 69) / 12)
    sine = torch.sin(2 * torch.pi * f0[:, None] * t)
    square = torch.sign(sine)
    audio = torch.where((family == 0)[:, None], sine, square) * 0.3
    batch = {"audio": audio, "pitch": pitches, "family": family, "velocity": torch.ones(16)}
    opt = model.make_optimizers(lr=1e-2)["main"]
    for _ in range(120):
        opt.zero_grad()
        weighted_loss(model.training_step(batch), model.loss_weights()).backward()
        opt.step()
    logs = model.eval().training_step(batch)
    assert logs["log/family_acc"] == 1.0 and logs["log/pitch_acc_1st"] == 1.0
    loaded = load_model(save_model(model, tmp_path / "clf.safetensors"))
    torch.testing.assert_close(loaded.embed(audio), model.embed(audio))
    assert loaded.weights_hash() == model.weights_hash()
