"""The mel VAE and the MelGenerator base: shapes, durations, vocoders, KL schedule, training."""

import json
from dataclasses import replace

import pytest
import torch
from torch.utils.data import TensorDataset

from synth.base import Conditions
from synth.checkpoint import load_model, save_model
from synth.errors import ConfigError, SpecMismatchError, SynthStudioError
from synth.features import FeatureSpec
from synth.registry import build
from synth.train import TrainConfig, Trainer, named_collate
from synth.losses import spectral_convergence
from synth.vae import VAEGenerator, free_bits_kl, kl_per_dim


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build("vae", debug=True).eval()


def test_shapes_and_decode_through_griffinlim(model, gen):
    batch = model.example_batch(3, gen)
    spec = model.feature_spec
    assert batch["audio"].shape == (3, model.n_samples)
    mel = model.mel(batch["audio"])
    assert mel.shape == (3, spec.n_mels, model.n_frames)
    z = model.encode(batch["audio"], Conditions.note([60, 61, 62]))
    assert z.shape == (3, model.latent_dim)
    cond = Conditions.note([60, 61, 62], [30, 80, 127])
    assert model.decode_mel(z, cond).shape == (3, spec.n_mels, model.n_frames)
    audio = model.decode(z, cond)
    assert audio.shape == (3, model.n_frames * spec.hop_length) and torch.isfinite(audio).all()
    assert model.vocoder.kind == "griffinlim" and model.vocoder.feature_spec == spec


def test_audio_of_any_length_is_fitted_to_the_note(model, gen):
    audio = model.example_batch(2, gen)["audio"]
    short, long = audio[:, : model.n_samples - 7], torch.cat([audio, audio], dim=1)
    assert model.encode(short).shape == model.encode(long).shape == (2, model.latent_dim)
    torch.testing.assert_close(model.encode(long), model.encode(audio))


@torch.no_grad()
def test_durations_truncate_with_a_fade_and_refuse_longer_notes(model):
    z = torch.randn(1, model.latent_dim)
    full = model.decode(z, Conditions.note(60, 100))
    short = model.decode(z, Conditions.note(60, 100, duration=0.2))
    n = int(round(0.2 * model.sample_rate))
    assert short.shape == (1, n)
    fade = int(round(0.010 * model.sample_rate))
    torch.testing.assert_close(short[:, : n - fade], full[:, : n - fade])
    assert abs(float(short[0, -1])) <= 1e-6 + 0.01 * float(full.abs().max())
    with pytest.raises(ConfigError, match="longer than the model's notes"):
        model.decode(z, Conditions.note(60, 100, duration=model.config.note_seconds + 0.1))


def test_decode_refuses_missing_pitch(model):
    with pytest.raises(ConfigError, match="pitch"):
        model.decode(torch.zeros(1, model.latent_dim), Conditions(velocity=torch.tensor([100.0])))


def test_vocoder_spec_mismatch_and_unknown_vocoder():
    m = build("vae", debug=True)
    other = FeatureSpec(sample_rate=8000, n_fft=128, hop_length=16, n_mels=16, f_max=4000.0)
    with pytest.raises(SpecMismatchError, match="n_fft=128"):
        m.attach_vocoder(build("griffinlim", {"feature_spec": other.to_dict()}))
    cfg = {**vars(VAEGenerator.debug_config()), "vocoder": "no-such-vocoder"}
    with pytest.raises(SynthStudioError, match=r"no-such-vocoder.*griffinlim"):
        build("vae", cfg).decode(torch.zeros(1, 4), Conditions.note(60))


def test_kl_warmup_schedule():
    m = build("vae", debug=True)
    beta, warm = m.config.beta, m.config.kl_warmup_steps
    assert m.kl_weight(0) == 0.0
    assert m.kl_weight(warm // 2) == pytest.approx(beta * (warm // 2) / warm)
    assert m.kl_weight(warm) == m.kl_weight(10 * warm) == pytest.approx(beta)
    m.on_train_step_end(warm // 2)  # the Trainer's hook sets the model's own counter
    assert m.loss_weights()["vae/kl"] == pytest.approx(beta * (warm // 2) / warm)
    assert "train_step" in m.state_dict()  # survives checkpoints and resumes


def test_free_bits():
    mu = torch.tensor([[0.1, 3.0], [-0.1, 2.0]], requires_grad=True)
    logvar = torch.zeros(2, 2)
    kl = kl_per_dim(mu, logvar)
    torch.testing.assert_close(kl, 0.5 * mu.detach() ** 2)
    loss = free_bits_kl(kl, free_bits=0.5)
    # dim 0: batch-mean KL 0.005 < 0.5 counts as 0.5 (no gradient); dim 1: 3.25 counts in full
    assert float(loss.detach()) == pytest.approx(0.5 + 0.5 * (9 + 4) / 2)
    loss.backward()
    assert torch.all(mu.grad[:, 0] == 0) and torch.all(mu.grad[:, 1] != 0)


def test_spectral_convergence_weighs_errors_by_energy():
    mel = torch.full((1, 8, 5), -6.0)
    mel[0, 5, 2] = 0.0  # one loud bin (a bell's partial) among quiet ones
    assert float(spectral_convergence(mel, mel)) == pytest.approx(0.0, abs=1e-7)
    # scale-invariant: the same notes 20 dB louder score the same
    miss = mel.clone()
    miss[0, 5, 2] = -6.0
    assert float(spectral_convergence(miss + 2.3, mel + 2.3)) == pytest.approx(
        float(spectral_convergence(miss, mel)), rel=1e-5)
    # losing the loud bin costs nearly everything; the same log error on a quiet bin almost nothing
    quiet = mel.clone()
    quiet[0, 1, 1] = 0.0 - 6.0 - 6.0
    assert float(spectral_convergence(miss, mel)) > 0.9
    assert float(spectral_convergence(quiet, mel)) < 0.01
    # the log-mel L1 cannot tell these two apart
    assert float((miss - mel).abs().mean()) == pytest.approx(float((quiet - mel).abs().mean()))


@pytest.mark.parametrize("kind", ["vae", "vqvae"])
def test_sc_weight_adds_a_weighted_term_with_gradient(kind):
    from synth.registry import get_class

    cls = get_class(kind)
    with pytest.raises(ConfigError):
        replace(cls.debug_config(), sc_weight=-1.0)
    torch.manual_seed(0)
    m = build(kind, replace(cls.debug_config(), sc_weight=0.5)).train()
    losses = m.training_step(m.example_batch(2, torch.Generator().manual_seed(1)))
    assert m.loss_weights()["recon/sc"] == 0.5 and 0.0 < float(losses["recon/sc"]) < float("inf")
    losses["recon/sc"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_training_reduces_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    m = build("vae", debug=True).train()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    batch = m.example_batch(8, torch.Generator().manual_seed(1))
    history = []
    for step in range(80):
        losses = m.training_step(batch)
        total = sum(m.loss_weights().get(k, 1.0) * v for k, v in losses.items()
                    if not k.startswith("log/"))
        opt.zero_grad()
        total.backward()
        opt.step()
        m.on_train_step_end(step + 1)
        history.append(float(losses["recon/l1"].detach()))
    first, last = sum(history[:5]) / 5, sum(history[-5:]) / 5
    assert last < 0.5 * first, (first, last)


def test_checkpoint_round_trip_without_the_vocoder(tmp_path, gen):
    torch.manual_seed(0)
    m = build("vae", debug=True).eval()
    m.train_step.fill_(7)
    cond = Conditions.note([60, 64], [90, 100])
    before = m.decode(torch.randn(2, m.latent_dim, generator=gen), cond)  # loads the vocoder
    path = save_model(m, tmp_path / "vae.safetensors")
    assert not any("vocoder" in k or "logmel" in k for k in m.state_dict())
    loaded = load_model(path)
    assert loaded._vocoder is None and int(loaded.train_step) == 7
    audio = m.example_batch(2, gen)["audio"]
    z = m.encode(audio)
    torch.testing.assert_close(loaded.encode(audio), z, rtol=0, atol=0)
    torch.testing.assert_close(loaded.decode(z, cond), m.decode(z, cond), rtol=0, atol=0)
    assert before.shape == (2, m.n_samples)


def test_trainer_runs_the_vae_and_counts_steps(tmp_path, gen):
    torch.manual_seed(0)
    m = build("vae", debug=True)
    b = m.example_batch(4, gen)
    data = TensorDataset(b["audio"], b["pitch"], b["velocity"], b["family"])
    cfg = TrainConfig(steps=3, batch_size=2, lr=1e-3, out_dir=str(tmp_path / "run"), log_every=1,
                      device="cpu", progress=False)
    Trainer(m, data, cfg, named_collate("audio", "pitch", "velocity", "family")).fit()
    assert int(m.train_step) == 3
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"recon/l1", "vae/kl", "log/vae/kl"} <= set(lines[-1])
    assert int(load_model(tmp_path / "run" / "model.safetensors").train_step) == 3
