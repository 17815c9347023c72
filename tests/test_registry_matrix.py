"""Config-matrix smoke test: every registered kind, tiny debug config, seconds on a CPU.

A model added to `synth.registry.KINDS` joins every test here automatically.
"""

import pytest
import torch

from synth.base import Conditions, Generator
from synth.checkpoint import load_model, read_metadata, save_model
from synth.registry import build, family, get_class, kinds
from vocoders.base import Vocoder

KINDS = kinds()


@pytest.mark.parametrize("kind", KINDS)
def test_registry_entry_is_consistent(kind):
    cls = get_class(kind)
    assert cls.kind == kind
    fam = family(kind)
    assert fam in ("generator", "vocoder", "analyzer")
    if fam != "analyzer":
        assert issubclass(cls, Generator if fam == "generator" else Vocoder)
    else:
        assert callable(getattr(cls, "analyse", None))


@pytest.mark.parametrize("kind", KINDS)
def test_forward_shapes(kind, gen):
    model = build(kind, debug=True).eval()
    if isinstance(model, Generator):
        cond = model.example_conditions(2)
        audio = model.sample(2, cond, seed=0)
        assert audio.ndim == 2 and audio.shape[0] == 2 and audio.dtype == torch.float32
        assert torch.isfinite(audio).all()
        z = model.encode(audio, cond)
        assert z.shape[:2] == (2, model.latent_dim)
        assert z.ndim == (3 if model.temporal_latent else 2)
        again = model.decode(z, cond)
        assert again.shape == audio.shape
    elif family(kind) == "analyzer":
        audio = 0.1 * torch.randn(2, model.sample_rate // 2, generator=gen)
        emb, fam_logits, pitch_logits = model.analyse(audio, model.sample_rate)
        assert emb.shape[0] == fam_logits.shape[0] == pitch_logits.shape[0] == 2
        assert fam_logits.shape[1] == 16 and pitch_logits.shape[1] == 128
    else:
        spec = model.feature_spec
        mel = torch.randn(2, spec.n_mels, 12, generator=gen) - 4
        audio = model(mel)
        assert audio.shape == (2, 12 * spec.hop_length)


@pytest.mark.parametrize("kind", [k for k in KINDS if family(k) == "generator"])
def test_sampling_is_seeded_and_batch_invariant(kind):
    model = build(kind, debug=True).eval()
    cond = model.example_conditions(3)
    a = model.sample(3, cond, seed=7)
    b = model.sample(3, cond, seed=7)
    c = model.sample(3, cond, seed=8)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    first = model.sample(1, cond.select(slice(0, 1)), seed=7)
    torch.testing.assert_close(first, a[:1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_roundtrip(kind, tmp_path, gen):
    model = build(kind, debug=True).eval()
    path = save_model(model, tmp_path / f"{kind}.safetensors", steps=3, corpus_hash="abc")
    meta = read_metadata(path)
    assert meta["kind"] == kind and meta["steps"] == 3 and meta["corpus_hash"] == "abc"
    loaded = load_model(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    if isinstance(model, Generator):
        cond = model.example_conditions(2)
        torch.testing.assert_close(loaded.sample(2, cond, seed=3), model.sample(2, cond, seed=3))
    elif family(kind) == "analyzer":
        audio = 0.1 * torch.randn(2, model.sample_rate // 2, generator=gen)
        for a, b in zip(loaded.analyse(audio, model.sample_rate), model.analyse(audio, model.sample_rate)):
            torch.testing.assert_close(a, b)
    else:
        mel = torch.randn(1, model.feature_spec.n_mels, 8, generator=gen) - 4
        torch.testing.assert_close(loaded(mel), model(mel))


@pytest.mark.parametrize("kind", KINDS)
def test_one_optimizer_step_on_cpu(kind, gen):
    torch.manual_seed(0)
    model = build(kind, debug=True).train()
    if not any(p.requires_grad for p in model.parameters()):
        # Parameter-free models (Griffin-Lim) have no phases and nothing to step; the Trainer
        # refuses them. Their own tests check that.
        assert model.phases() == [] and model.make_optimizers(lr=1e-3) == {}
        pytest.skip(f"{kind} has no trainable parameters")
    batch = model.example_batch(2, gen)
    optimizers = model.make_optimizers(lr=1e-3)
    assert list(optimizers) == model.phases()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    weights = model.loss_weights()
    for phase in model.phases():
        optimizers[phase].zero_grad(set_to_none=True)
        losses = model.training_step(batch, phase)
        assert losses and all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
        total = sum(weights.get(k, 1.0) * v for k, v in losses.items() if not k.startswith("log/"))
        total.backward()
        optimizers[phase].step()
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert changed, "no parameter moved after one optimizer step"
