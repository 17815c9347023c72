"""The mel VQ-VAE: EMA codebook, code statistics, prior sampling, interpolation, training."""

import json
import math

import pytest
import torch
from torch.utils.data import TensorDataset

from synth.base import Conditions
from synth.checkpoint import load_model, save_model
from synth.errors import ConfigError
from synth.registry import build
from synth.train import TrainConfig, Trainer, named_collate
from synth.vqvae import EMACodebook, codebook_stats

CENTRES = torch.tensor([[10.0, 10.0], [-10.0, 10.0], [10.0, -10.0], [-10.0, -10.0]])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build("vqvae", debug=True).eval()


def clusters(n_per, centres, gen):
    """(1, 2, n_per * len(centres)) points around `centres` (std 0.1), as a (B, D, F') latent."""
    pts = torch.cat([c + 0.1 * torch.randn(n_per, 2, generator=gen) for c in centres])
    return pts.T[None]


def test_shapes_and_decode(model, gen):
    audio = model.example_batch(2, gen)["audio"]
    z = model.encode(audio)
    assert z.shape == (2, model.latent_dim, model.code_frames) and model.temporal_latent
    assert model.code_frames == math.ceil(model.n_frames / 4)
    q = model.quantize(z)
    assert q.codes.shape == (2, model.code_frames) and q.codes.dtype == torch.long
    assert q.quantized.shape == z.shape
    cond = Conditions.note([60, 62], 100)
    assert model.decode_mel(z, cond).shape == (2, model.feature_spec.n_mels, model.n_frames)
    with torch.no_grad():
        out = model.decode(z, cond)
        torch.testing.assert_close(model.decode_codes(q.codes, cond), out)
    assert out.shape == (2, model.n_samples)


def test_codebook_stats_on_a_constructed_case():
    perplexity, usage = codebook_stats(torch.tensor([0, 0, 1, 1]), 8)
    assert float(perplexity) == pytest.approx(2.0) and float(usage) == pytest.approx(2 / 8)
    perplexity, usage = codebook_stats(torch.arange(8).repeat(3), 8)
    assert float(perplexity) == pytest.approx(8.0) and float(usage) == 1.0
    perplexity, usage = codebook_stats(torch.tensor([[3, 3], [3, 3]]), 8)
    assert float(perplexity) == pytest.approx(1.0) and float(usage) == pytest.approx(1 / 8)
    # p = (1/2, 1/4, 1/4): exp(1.5 ln 2) = 2 sqrt(2)
    perplexity, _ = codebook_stats(torch.tensor([0, 0, 1, 2]), 4)
    assert float(perplexity) == pytest.approx(2 * math.sqrt(2))


def test_kmeans_init_uses_the_data(gen):
    torch.manual_seed(0)
    book = EMACodebook(8, 2, decay=0.99, kmeans_iters=10)
    assert not bool(book.initialized)
    z = clusters(50, CENTRES, gen)
    out = book(z, update=True)
    assert bool(book.initialized)
    nearest = torch.cdist(book.embedding, CENTRES).min(1).values
    assert float(nearest.max()) < 1.0, "every code sits in a data cluster"
    covered = torch.cdist(CENTRES, book.embedding).min(1).values
    assert float(covered.max()) < 1.0, "every cluster has a code"
    assert float(out.usage) >= 4 / 8 and float(out.commit) < 0.05


def test_dead_codes_are_restarted_from_encoder_outputs(gen):
    torch.manual_seed(0)
    book = EMACodebook(8, 2, decay=0.5, restart_threshold=1.0, kmeans_iters=10)
    book(clusters(50, CENTRES, gen), update=True)
    only_first = CENTRES[:1]
    for _ in range(8):  # data now only from one cluster: the other codes fall idle
        book(clusters(50, only_first, gen), update=True)
    dist = torch.cdist(book.embedding, only_first).squeeze(1)
    assert float(dist.max()) < 1.0, f"idle codes were not moved to the data: {dist.tolist()}"
    assert torch.all(book.cluster_size >= 0)


def test_ema_moves_codes_to_the_mean_of_their_vectors(gen):
    torch.manual_seed(0)
    book = EMACodebook(4, 2, decay=0.9, restart_threshold=0.0, kmeans_iters=10)
    book(clusters(50, CENTRES, gen), update=True)
    shifted = CENTRES + 1.0
    for _ in range(60):
        book(clusters(50, shifted, gen), update=True)
    err = torch.cdist(shifted, book.embedding).min(1).values
    assert float(err.max()) < 0.1


def test_quantize_and_eval_leave_the_codebook_alone(model, gen):
    before = model.codebook.embedding.clone()
    model.quantize(torch.randn(2, model.latent_dim, model.code_frames, generator=gen))
    model.training_step(model.example_batch(2, gen), "main")  # eval mode: no EMA update
    torch.testing.assert_close(model.codebook.embedding, before, rtol=0, atol=0)


def test_prior_sampling_is_seeded_and_batch_invariant(model):
    cond = Conditions.note([60, 64, 67], [100, 80, 60])
    cond.family = torch.tensor([0, 5, 10])
    a = model.sample_codes(3, cond, seed=5)
    torch.testing.assert_close(a, model.sample_codes(3, cond, seed=5), rtol=0, atol=0)
    assert not torch.equal(a, model.sample_codes(3, cond, seed=6))
    assert a.shape == (3, model.code_frames)
    torch.testing.assert_close(model.sample_codes(1, cond.select(slice(0, 1)), seed=5), a[:1],
                               rtol=0, atol=0)
    # item i depends on (seed, i): the first two items of a batch of 2 equal those of 3
    torch.testing.assert_close(model.sample_codes(2, cond.select(slice(0, 2)), seed=5), a[:2],
                               rtol=0, atol=0)
    latent = model.prior_sample(3, cond, seed=5)
    torch.testing.assert_close(latent, model.codebook.lookup(a))


def test_top_k_restricts_the_codes(model):
    cond = Conditions.note([60, 72], 100)
    codes = model.sample_codes(2, cond, seed=1, temperature=3.0, top_k=3)
    logits = model.prior_logits(codes, cond)  # the distributions each code was drawn from
    top = logits.topk(3, dim=-1).indices
    assert (top == codes[..., None]).any(-1).all()
    unrestricted = model.sample_codes(2, cond, seed=1, temperature=3.0)
    logits_u = model.prior_logits(unrestricted, cond)
    assert not (logits_u.topk(3, dim=-1).indices == unrestricted[..., None]).any(-1).all()
    greedy = model.sample_codes(2, cond, seed=1, temperature=0.0)
    torch.testing.assert_close(model.sample_codes(2, cond, seed=9, top_k=1), greedy, rtol=0, atol=0)
    torch.testing.assert_close(greedy, model.prior_logits(greedy, cond).argmax(-1), rtol=0, atol=0)


def test_interpolation_endpoints_and_crossfades(model, gen):
    audio = model.example_batch(2, gen)["audio"]
    z = model.encode(audio)
    za, zb = z[:1], z[1:]
    torch.testing.assert_close(model.interpolate_pre_quant(za, zb, 0.0), model.quantize(za).quantized)
    torch.testing.assert_close(model.interpolate_pre_quant(za, zb, 1.0), model.quantize(zb).quantized)
    ca, cb = model.quantize(za).codes, model.quantize(zb).codes
    cb = torch.where(ca == cb, (cb + 1) % model.config.codebook_size, cb)  # differ everywhere
    for mode in ("dither", "boundary"):
        assert torch.equal(model.crossfade_codes(ca, cb, 0.0, mode), ca)
        assert torch.equal(model.crossfade_codes(ca, cb, 1.0, mode), cb)
        from_b = [(model.crossfade_codes(ca, cb, t, mode) == cb) for t in (0.25, 0.5, 0.75)]
        assert all(torch.all(prev <= nxt) for prev, nxt in zip(from_b, from_b[1:])), "set grows with t"
        assert abs(float(from_b[1].float().mean()) - 0.5) < 0.05
    with pytest.raises(ConfigError, match="mode"):
        model.crossfade_codes(ca, cb, 0.5, "nope")


def test_decode_refuses_missing_pitch(model):
    z = torch.zeros(1, model.latent_dim, model.code_frames)
    with pytest.raises(ConfigError, match="pitch"):
        model.decode(z, Conditions(velocity=torch.tensor([100.0])))
    with pytest.raises(ConfigError, match="pitch"):
        model.sample_codes(1, Conditions(velocity=torch.tensor([100.0])))


def train_tiny(steps=60):
    torch.manual_seed(0)
    m = build("vqvae", debug=True).train()
    opts = m.make_optimizers(lr=3e-3)
    batch = m.example_batch(8, torch.Generator().manual_seed(1))
    history: dict[str, list[float]] = {}
    for _ in range(steps):
        for phase in m.phases():
            losses = m.training_step(batch, phase)
            total = sum(m.loss_weights().get(k, 1.0) * v for k, v in losses.items()
                        if not k.startswith("log/"))
            opts[phase].zero_grad()
            total.backward()
            opts[phase].step()
            for k, v in losses.items():
                history.setdefault(k, []).append(float(v.detach()))
    return m.eval(), history


def test_training_reduces_reconstruction_and_prior_losses():
    _, h = train_tiny()
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean(h["recon/l1"][-5:]) < 0.5 * mean(h["recon/l1"][:5])
    assert mean(h["prior/ce"][-5:]) < 0.7 * mean(h["prior/ce"][:5])
    assert all(0 < u <= 1 for u in h["log/vq/usage"])


def test_optimizers_split_the_prior_from_the_autoencoder():
    m = build("vqvae", debug=True)
    opts = m.make_optimizers(lr=1e-3)
    assert list(opts) == m.phases() == ["main", "prior"]
    main = {id(p) for g in opts["main"].param_groups for p in g["params"]}
    prior = {id(p) for g in opts["prior"].param_groups for p in g["params"]}
    assert prior == {id(p) for p in m.prior.parameters()} and not main & prior
    assert main | prior == {id(p) for p in m.parameters()}


def test_checkpoint_round_trip_without_the_vocoder(tmp_path, gen):
    m, _ = train_tiny(steps=3)
    cond = Conditions.note([60, 64], [90, 100])
    audio = m.example_batch(2, gen)["audio"]
    with torch.no_grad():
        before = m.decode(m.encode(audio), cond)  # loads the vocoder
    path = save_model(m, tmp_path / "vqvae.safetensors")
    keys = set(m.state_dict())
    assert {"codebook.embedding", "codebook.cluster_size", "codebook.initialized"} <= keys
    assert not any("vocoder" in k for k in keys)
    loaded = load_model(path)
    assert loaded._vocoder is None and bool(loaded.codebook.initialized)
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(loaded.encode(audio), cond), before, rtol=0, atol=0)
        torch.testing.assert_close(loaded.sample(2, cond, seed=3), m.sample(2, cond, seed=3),
                                   rtol=0, atol=0)


def test_trainer_runs_both_phases_and_logs_codebook_stats(tmp_path, gen):
    torch.manual_seed(0)
    m = build("vqvae", debug=True)
    b = m.example_batch(4, gen)
    data = TensorDataset(b["audio"], b["pitch"], b["velocity"], b["family"])
    cfg = TrainConfig(steps=2, batch_size=2, lr=1e-3, out_dir=str(tmp_path / "run"), log_every=1,
                      device="cpu", progress=False)
    Trainer(m, data, cfg, named_collate("audio", "pitch", "velocity", "family")).fit()
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss/main", "loss/prior", "recon/l1", "vq/commit", "prior/ce", "log/vq/perplexity",
            "log/vq/usage"} <= set(last)
    # logged-only entries do not enter the optimised total
    assert last["loss/main"] == pytest.approx(last["recon/l1"] + m.config.commitment * last["vq/commit"],
                                              rel=1e-5)
    assert last["loss/prior"] == pytest.approx(last["prior/ce"], rel=1e-5)


def test_codebook_under_ddp_sees_the_global_batch(tmp_path):
    """Two gloo ranks, each given half of every batch, end with the same codebook, equal to one
    process's codebook on the whole batches (k-means init, EMA, restarts all global)."""
    import importlib.util
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent / "train_scripts" / "ddp_codebook.py"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
                          "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={port}",
                          str(script), str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=90)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for key in r0:
        assert torch.equal(r0[key], r1[key]), f"ranks differ in {key}"

    spec = importlib.util.spec_from_file_location("ddp_codebook", script)
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)
    single = helper.run(helper.new_codebook(), rank=0, world=1).state_dict()
    assert single["cluster_size"].sum() > 0 and (single["cluster_size"] > 0).any()
    for key in ("embedding", "cluster_size", "embed_sum"):
        torch.testing.assert_close(r0[key], single[key], rtol=1e-5, atol=1e-5)
