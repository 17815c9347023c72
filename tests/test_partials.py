"""Partial analysis (`synth.partials`) and the DDSP harmonic-distribution loss built on it."""

import dataclasses
import math

import pytest
import torch

from synth import dsp
from synth.errors import ConfigError
from synth.partials import note_distribution, partial_amplitudes
from synth.registry import build

SR = 16000
HOP = 160


def sines(freqs, amps, n=SR, sr=SR):
    t = torch.arange(n, dtype=torch.float64) / sr
    x = sum(a * torch.sin(2 * math.pi * f * t + 0.3 * i)
            for i, (f, a) in enumerate(zip(freqs, amps)))
    return x.float()[None]


def test_reads_the_amplitude_of_each_partial():
    # 250 Hz is exactly bin 32 of a 2048-point STFT at 16 kHz: the Hann peak reads A (2 %).
    amps = [0.5, 0.25, 0.1, 0.05]
    x = sines([250 * k for k in range(1, 5)], amps)
    got = partial_amplitudes(x, torch.tensor([250.0]), SR, HOP, 100, 4)
    steady = got[0, 20:80]  # away from the zero-padded edges
    assert torch.allclose(steady.mean(0), torch.tensor(amps), rtol=0.02)
    # Off-bin partials lose at most Hann's scalloping (1.42 dB = 15 %) and never read high.
    x = sines([261.6 * k for k in range(1, 5)], amps)
    got = partial_amplitudes(x, torch.tensor([261.6]), SR, HOP, 100, 4)[0, 20:80].mean(0)
    ratio = got / torch.tensor(amps)
    assert (ratio > 0.84).all() and (ratio < 1.01).all()


def test_a_per_frame_f0_reads_each_frame_at_its_own_pitch():
    """f0 (B, frames): a constant track equals the per-note reading; a track that jumps reads
    the new pitch's partials after the jump."""
    amps = [0.5, 0.25, 0.1]
    x = sines([250 * k for k in range(1, 4)], amps)
    frames = 100
    note = partial_amplitudes(x, torch.tensor([250.0]), SR, HOP, frames, 3)
    track = partial_amplitudes(x, torch.full((1, frames), 250.0), SR, HOP, frames, 3)
    assert torch.equal(note, track)
    jump = torch.full((1, frames), 250.0)
    jump[:, 50:] = 500.0  # read as 500 Hz: partials 500, 1000 (present), 1500 (absent)
    got = partial_amplitudes(x, jump, SR, HOP, frames, 3)
    assert torch.allclose(got[0, 20:45], note[0, 20:45])
    assert got[0, 60:80, 0].mean() > 0.2 and got[0, 60:80, 2].mean() < 0.01


def test_partials_at_or_above_nyquist_are_zero_and_silence_reads_zero():
    x = sines([3000, 6000], [0.3, 0.3])
    got = partial_amplitudes(x, torch.tensor([3000.0]), SR, HOP, 50, 4)
    assert (got[0, :, 2:] == 0).all() and got[0, 25, 1] > 0.25  # 9 and 12 kHz >= 8 kHz
    assert partial_amplitudes(torch.zeros(1, SR), torch.tensor([3000.0]), SR, HOP, 50,
                              4).abs().max() == 0


def test_inharmonic_partials_are_found_only_with_their_coefficient():
    f0, b = 110.0, 4e-4  # a stiff string: partial 20 sits 3.9 % (66 cents) sharp
    ks = range(1, 21)
    freqs = [k * f0 * math.sqrt(1 + b * k * k) for k in ks]
    x = sines(freqs, [0.05] * 20)
    with_b = partial_amplitudes(x, torch.tensor([f0]), SR, HOP, 100, 20,
                                inharmonicity=torch.tensor([b]))[0, 20:80].mean(0)
    without = partial_amplitudes(x, torch.tensor([f0]), SR, HOP, 100, 20)[0, 20:80].mean(0)
    assert (with_b > 0.042).all()
    # On the harmonic grid, partials 11-16 sit 3-7 bins sharp of k f0 and are missed (from
    # partial 17 the grid starts catching the next partial down instead).
    assert (without[10:16] < 0.01).all()


def test_bad_shapes_are_refused():
    with pytest.raises(ConfigError, match="partial_amplitudes"):
        partial_amplitudes(torch.zeros(SR), torch.tensor([100.0]), SR, HOP, 10, 4)
    with pytest.raises(ConfigError, match="partial_amplitudes"):
        partial_amplitudes(torch.zeros(2, SR), torch.tensor([100.0]), SR, HOP, 10, 4)


def test_note_distribution_weights_loud_frames_and_sums_to_one():
    a = torch.zeros(1, 3, 2)
    a[0, 0] = torch.tensor([0.9, 0.1])    # loud frame
    a[0, 1] = torch.tensor([0.01, 0.09])  # quiet frame, opposite balance
    dist = note_distribution(a)           # frame 2 is silent: it must not count
    assert torch.allclose(dist.sum(-1), torch.ones(1))
    energy = torch.tensor([0.82, 0.0082])
    expect = (torch.tensor([[0.9, 0.1], [0.1, 0.9]]) * energy[:, None]).sum(0) / energy.sum()
    assert torch.allclose(dist[0], expect, atol=1e-6)


@pytest.fixture(scope="module")
def harm_model():
    torch.manual_seed(0)
    m = build("ddsp", debug=True)
    cfg = dataclasses.replace(m.config, harmonic_loss_weight=1.0)
    return build("ddsp", cfg)


def test_harmonic_loss_is_small_for_the_true_distribution_and_large_for_another(harm_model):
    m = harm_model
    sr, hop, n_h = m.sample_rate, m.hop_length, m.config.n_harmonics
    frames = 32
    n = frames * hop
    # 64 bins of a 2048-point STFT at 8 kHz; expanded like training's manifest f0 (torch 2.11's
    # median over a stride-0 dim returns garbage, which once made every target flat).
    f0 = torch.tensor([[250.0], [250.0]]).expand(2, frames)
    true = torch.tensor([1.0 / k ** 1.5 for k in range(1, n_h + 1)])
    true = true / true.sum()
    dist = true.expand(2, frames, n_h)
    audio = dsp.harmonic_synthesis(f0[..., None], torch.full((2, frames, 1), 0.3), dist, n, sr)
    right = m._harmonic_losses(audio, f0, dist, None)[0]
    wrong = m._harmonic_losses(audio, f0, dist.flip(-1), None)[0]
    assert right < 0.05 and wrong > 1.0


def test_per_frame_harmonic_loss_sees_the_course_the_note_mean_misses(harm_model):
    """A note bright in its first half and dark in its second: its own per-frame distribution
    and its note-mean distribution held static both score near zero on the note-mean term; only
    the per-frame term tells the static one apart."""
    m = harm_model
    sr, hop, n_h = m.sample_rate, m.hop_length, m.config.n_harmonics
    frames = 320  # 2.56 s: the analysis window (2048 samples, 32 frames) blurs only the change
    n = frames * hop
    f0 = torch.full((1, frames), 250.0)
    k = torch.arange(1, n_h + 1, dtype=torch.float32)
    bright, dark = 1.0 / k, 1.0 / k ** 3
    bright, dark = bright / bright.sum(), dark / dark.sum()
    course = torch.where(torch.arange(frames)[:, None] < frames // 2, bright, dark)[None]
    audio = dsp.harmonic_synthesis(f0[..., None], torch.full((1, frames, 1), 0.3), course, n, sr)
    amps = partial_amplitudes(audio, f0[:, 0], sr, hop, frames, n_h)
    static = note_distribution(amps)[:, None, :].expand(1, frames, n_h)  # the note's own mean
    note_true, frames_true = m._harmonic_losses(audio, f0, course, None)
    note_static, frames_static = m._harmonic_losses(audio, f0, static, None)
    assert float(note_true) < 0.05 and float(note_static) < 0.05
    assert float(frames_true) < 0.1 and float(frames_static) > 10 * float(frames_true)


def test_per_frame_harmonic_loss_is_a_trained_term(harm_model):
    cfg = dataclasses.replace(harm_model.config, harmonic_loss_weight=0.0,
                              harmonic_frame_loss_weight=0.5)
    m = build("ddsp", cfg)
    out = m.training_step(m.example_batch(2, torch.Generator().manual_seed(1)))
    assert set(out) == {"harm/frames", "recon/mss"} and m.loss_weights()["harm/frames"] == 0.5
    out["harm/frames"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_harmonic_loss_trains_the_distribution(harm_model):
    m = harm_model
    batch = m.example_batch(4, torch.Generator().manual_seed(1))
    out = m.training_step(batch)
    assert set(out) >= {"harm/l1", "recon/mss"} and m.loss_weights()["harm/l1"] == 1.0
    out["harm/l1"].backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    m.zero_grad()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = float(out["harm/l1"].detach())
    for _ in range(40):
        loss = m.training_step(batch)["harm/l1"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.7 * first


def test_encoder_partials_start_from_the_model_they_extend_and_read_the_note(tmp_path):
    from synth.base import Conditions
    from synth.checkpoint import save_model
    from synth.recipe import init_weights

    torch.manual_seed(0)
    plain = build("ddsp", debug=True).eval()
    save_model(plain, tmp_path / "plain.safetensors")
    cfg = dataclasses.replace(plain.config, encoder_partials=6, harmonic_loss_weight=1.0)
    wide = build("ddsp", cfg).eval()
    fresh = init_weights(wide, str(tmp_path / "plain.safetensors"))
    assert fresh and all(name.startswith("enc_partials.") for name in fresh)
    batch = plain.example_batch(3, torch.Generator().manual_seed(2))
    audio, pitch = batch["audio"], batch["pitch"].float()
    cond = Conditions(pitch=pitch)
    # The new path's last layer starts at zero: the same z as the model it was initialised from.
    assert torch.allclose(wide.encode(audio, cond), plain.encode(audio, cond), atol=1e-6)
    feats = wide.partial_features(audio, torch.tensor(440.0) * 2 ** ((pitch - 69) / 12))
    assert feats.shape == (3, wide.frames(audio.shape[-1]), 6)
    assert feats.max() <= 0 and feats.min() >= -3.0001  # log10 of a distribution, -60 dB floor
    # Without a pitch the note's f0 is estimated (CREPE) to within a semitone of the manifest.
    est = wide.note_f0(audio)
    assert (12 * torch.log2(est / (440 * 2 ** ((pitch - 69) / 12)))).abs().max() < 1.0
    # It trains: the partial path gets a gradient through the harmonic loss.
    wide.train()
    out = wide.training_step(batch)
    (out["harm/l1"] + out["recon/mss"]).backward()
    assert wide.enc_partials[-1].weight.grad.abs().sum() > 0


def test_init_widen_grows_the_latent_and_keeps_the_function(tmp_path):
    from synth.base import Conditions
    from synth.checkpoint import save_model
    from synth.errors import ConfigError
    from synth.recipe import init_weights

    torch.manual_seed(0)
    cfg = dataclasses.replace(build("ddsp", debug=True).config, encoder_partials=6)
    narrow = build("ddsp", cfg).eval()
    with torch.no_grad():  # a trained-looking partial path, so its new rows matter too
        narrow.enc_partials[-1].weight.normal_(0, 0.1)
    path = save_model(narrow, tmp_path / "narrow.safetensors")
    wide_cfg = dataclasses.replace(cfg, latent_dim=cfg.latent_dim + 3)
    with pytest.raises(ConfigError, match="init-widen"):
        init_weights(build("ddsp", wide_cfg), str(path))
    wide = build("ddsp", wide_cfg).eval()
    fresh = init_weights(wide, str(path), widen=True)
    assert "latent_fitted" in fresh and not bool(wide.latent_fitted)
    batch = narrow.example_batch(3, torch.Generator().manual_seed(2))
    cond = Conditions(pitch=batch["pitch"].float())
    z_narrow, z_wide = narrow.encode(batch["audio"], cond), wide.encode(batch["audio"], cond)
    d = cfg.latent_dim
    assert z_wide.shape[-1] == d + 3 and torch.allclose(z_wide[..., :d], z_narrow, atol=1e-6)
    assert z_wide[..., d:].abs().max() > 1e-3  # the new components vary (and so get gradient)
    # ...and the decoder starts by ignoring them: the same audio from either model.
    n = batch["audio"].shape[-1]
    f0 = torch.full((3, z_narrow.shape[1]), 220.0)
    ld = narrow.analyze_loudness(batch["audio"])[:, : f0.shape[1]]
    outs = [m.synthesize(f0, ld, z, n_samples=n, generator=torch.Generator().manual_seed(0))
            for m, z in ((narrow, z_narrow), (wide, z_wide))]
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    # A width inside the GRUs cannot start unread: refused, not silently changed.
    with pytest.raises(ConfigError, match="widened model"):
        init_weights(build("ddsp", dataclasses.replace(cfg, hidden=cfg.hidden + 4)), str(path), widen=True)


def test_z_distribution_path_starts_unread_gets_gradient_and_follows_z(tmp_path):
    from synth.checkpoint import save_model
    from synth.recipe import init_weights

    torch.manual_seed(0)
    plain = build("ddsp", debug=True).eval()
    path = save_model(plain, tmp_path / "plain.safetensors")
    cfg = dataclasses.replace(plain.config, z_distribution=True, harmonic_loss_weight=1.0)
    direct = build("ddsp", cfg).eval()
    fresh = init_weights(direct, str(path))
    assert fresh and all(name.startswith("z_dist.") for name in fresh)
    # Zero last layer: the same controls as the model it was initialised from.
    frames = 10
    f0 = torch.full((2, frames), 220.0)
    ld = torch.full((2, frames), -30.0)
    z = torch.randn(2, frames, cfg.latent_dim)
    (h0, n0), (h1, n1) = plain.get_controls(f0, ld, z), direct.get_controls(f0, ld, z)
    assert torch.allclose(h0.distribution, h1.distribution, atol=1e-6) and torch.equal(n0, n1)
    # The path gets gradient from the distribution loss and moves the distribution with z.
    direct.train()
    batch = plain.example_batch(3, torch.Generator().manual_seed(2))
    out = direct.training_step(batch)
    out["harm/l1"].backward()
    assert direct.z_dist[-1].weight.grad.abs().sum() > 0
    with torch.no_grad():
        direct.z_dist[-1].weight.normal_(0, 0.5)
    d_a = direct.get_controls(f0, ld, z)[0].distribution
    d_b = direct.get_controls(f0, ld, -z)[0].distribution
    assert (d_a - d_b).abs().max() > 1e-3


def test_z_level_path_starts_unread_learns_faster_and_follows_loudness(tmp_path):
    """`z_level_distribution`: --init from a model without it keeps its controls exactly; the
    path's last layer gets gradient from the per-frame distribution loss, sits in its own
    optimizer group at `z_level_lr_scale` x lr, and once trained, moves the distribution with the
    frame's loudness at a fixed z (what the z -> distribution path cannot)."""
    from synth.checkpoint import save_model
    from synth.recipe import init_weights

    torch.manual_seed(0)
    base_cfg = dataclasses.replace(build("ddsp", debug=True).config, z_distribution=True)
    plain = build("ddsp", base_cfg).eval()
    path = save_model(plain, tmp_path / "plain.safetensors")
    cfg = dataclasses.replace(base_cfg, z_level_distribution=True, harmonic_frame_loss_weight=1.0,
                              z_level_lr_scale=3.0)
    level = build("ddsp", cfg).eval()
    fresh = init_weights(level, str(path))
    assert fresh and all(name.startswith("z_level_dist.") for name in fresh)
    frames = 10
    f0 = torch.full((2, frames), 220.0)
    ld = torch.linspace(-20.0, -70.0, frames).expand(2, frames)
    z = torch.randn(2, 1, cfg.latent_dim).expand(-1, frames, -1)
    (h0, n0), (h1, n1) = plain.get_controls(f0, ld, z), level.get_controls(f0, ld, z)
    assert torch.allclose(h0.distribution, h1.distribution, atol=1e-6) and torch.equal(n0, n1)
    level.train()
    out = level.training_step(plain.example_batch(3, torch.Generator().manual_seed(2)))
    out["harm/frames"].backward()
    assert level.z_level_dist[-1].weight.grad.abs().sum() > 0
    opt = level.make_optimizers(1e-3)["main"]
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lrs[id(level.z_level_dist[-1].weight)] == pytest.approx(3e-3)
    assert lrs[id(level.z_dist[-1].weight)] == pytest.approx(1e-3)
    with torch.no_grad():
        level.z_level_dist[-1].weight.normal_(0, 0.5)
        # Take every other route to the distribution out (the decoder's distribution rows give
        # a constant, z and pitch are constant over the frames): what moves is the path's
        # reading of the loudness.
        n_h = cfg.n_harmonics
        level.dense.weight[1:1 + n_h] = 0.0
        d = level.get_controls(f0, ld, z)[0].distribution[0]
        still = level.get_controls(f0, torch.full_like(ld, -40.0), z)[0].distribution[0]
    assert (still - still[:1]).abs().max() < 1e-6
    assert (d[0] - d[-1]).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="z_level_lr_scale"):
        dataclasses.replace(cfg, z_level_lr_scale=0.0)


def test_frame_term_reads_only_the_partials_below_its_max_hz(harm_model):
    """`harmonic_frame_max_hz`: a distribution right in its low partials and wrong above 1 kHz
    scores (near) zero on "harm/frames" with the limit at 1 kHz and clearly not without it; one
    wrong below the limit scores with it too; a bad limit is refused."""
    sr, hop, n_h = harm_model.sample_rate, harm_model.hop_length, harm_model.config.n_harmonics
    frames = 100
    f0 = torch.full((1, frames), 200.0)
    k = torch.arange(1, n_h + 1, dtype=torch.float32)
    true = 1.0 / k
    true = true / true.sum()
    audio = dsp.harmonic_synthesis(f0[..., None], torch.full((1, frames, 1), 0.3),
                                   true.expand(1, frames, n_h), frames * hop, sr)
    high_wrong = torch.where(k * 200.0 < 1000.0, true, true * 20.0)
    low_wrong = torch.where(k == 1, true * 20.0, true)  # the fundamental against the rest
    score = {}
    for limit in (None, 1000.0):
        m = build("ddsp", dataclasses.replace(harm_model.config, harmonic_frame_max_hz=limit))
        score[limit] = [float(m._harmonic_losses(audio, f0, d.expand(1, frames, n_h), None)[1])
                        for d in (true, high_wrong, low_wrong)]
    assert score[1000.0][0] < 0.1 and score[None][0] < 0.1
    assert score[1000.0][1] < 0.1 < score[None][1]
    assert score[1000.0][2] > 0.5
    for bad in (0.0, -5.0, float("nan")):
        with pytest.raises(ConfigError, match="harmonic_frame_max_hz"):
            dataclasses.replace(harm_model.config, harmonic_frame_max_hz=bad)


def test_level_weighting_counts_the_decay_as_much_as_the_start(harm_model):
    """`harmonic_frame_weighting` "level": a note loud and bright, then 30 dB down and dark.
    A model right in the loud half and wrong (still bright) in the quiet half scores several
    times worse frame-by-frame with level weighting than with amplitude weighting, and the
    right course scores near zero under both."""
    sr, hop, n_h = harm_model.sample_rate, harm_model.hop_length, harm_model.config.n_harmonics
    frames = 320
    n = frames * hop
    f0 = torch.full((1, frames), 250.0)
    k = torch.arange(1, n_h + 1, dtype=torch.float32)
    bright, dark = 1.0 / k, 1.0 / k ** 3
    bright, dark = bright / bright.sum(), dark / dark.sum()
    first = torch.arange(frames)[:, None] < frames // 2
    course = torch.where(first, bright, dark)[None]
    amp = torch.where(first, 0.3, 0.3 * 10 ** (-30 / 20))[None].float()
    audio = dsp.harmonic_synthesis(f0[..., None], amp, course, n, sr)
    wrong = bright.expand(1, frames, n_h)
    out = {}
    for how in ("amplitude", "level"):
        m = build("ddsp", dataclasses.replace(harm_model.config, harmonic_frame_weighting=how))
        out[how] = [float(m._harmonic_losses(audio, f0, d, None)[1]) for d in (course, wrong)]
    assert out["level"][0] < 0.1 and out["amplitude"][0] < 0.1
    assert out["level"][1] > 3 * out["amplitude"][1]
    with pytest.raises(ConfigError, match="harmonic_frame_weighting"):
        build("ddsp", dataclasses.replace(harm_model.config, harmonic_frame_weighting="mean"))
