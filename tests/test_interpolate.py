import math

import pytest
import torch

from latent.interpolate import (barycentric, bilinear, centroid_sweep, equal_power_gains, lerp,
                                monotonic_within, path, path_mode, render_path, slerp)
from synth.base import Conditions
from synth.errors import ConfigError
from synth.registry import build


def test_lerp_scalar_and_stacked(gen):
    a, b = torch.randn(5, generator=gen), torch.randn(5, generator=gen)
    torch.testing.assert_close(lerp(a, b, 0.25), 0.75 * a + 0.25 * b)
    out = lerp(a, b, [0.0, 0.5, 1.0])
    assert out.shape == (3, 5)
    torch.testing.assert_close(out[0], a)
    torch.testing.assert_close(out[2], b)
    batch = lerp(torch.stack([a, b]), torch.stack([b, a]), torch.linspace(0, 1, 4))
    assert batch.shape == (4, 2, 5)


def test_slerp_endpoints_and_constant_norm(gen):
    a, b = torch.randn(8, generator=gen), torch.randn(8, generator=gen)
    b = b / b.norm() * a.norm()
    t = torch.linspace(0, 1, 11)
    out = slerp(a, b, t)
    assert out.shape == (11, 8)
    torch.testing.assert_close(out[0], a)
    torch.testing.assert_close(out[-1], b)
    torch.testing.assert_close(out.norm(dim=-1), a.norm().expand(11))
    # Equal angle steps along the great circle.
    cos = torch.nn.functional.cosine_similarity(out[:-1], out[1:], dim=-1)
    torch.testing.assert_close(cos, cos[0].expand(10))
    # Batched rows are interpolated independently.
    rows = slerp(torch.stack([a, b]), torch.stack([b, a]), 0.3)
    torch.testing.assert_close(rows[0], slerp(a, b, 0.3))
    torch.testing.assert_close(rows[1], slerp(b, a, 0.3))


def test_slerp_of_parallel_vectors_is_lerp(gen):
    a = torch.randn(6, generator=gen)
    for b in (2.5 * a, a.clone(), torch.zeros(6), -a):
        out = slerp(a, b, [0.0, 0.3, 1.0])
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, lerp(a, b, [0.0, 0.3, 1.0]))


def test_bilinear_corners_and_centre(gen):
    corners = torch.randn(4, 3, generator=gen)
    tl, tr, bl, br = corners
    torch.testing.assert_close(bilinear(corners, 0.0, 0.0), tl)
    torch.testing.assert_close(bilinear(corners, 1.0, 0.0), tr)
    torch.testing.assert_close(bilinear(corners, 0.0, 1.0), bl)
    torch.testing.assert_close(bilinear(corners, 1.0, 1.0), br)
    torch.testing.assert_close(bilinear(corners, 0.5, 0.5), corners.mean(0))
    torch.testing.assert_close(bilinear(corners, 0.5, 0.0), (tl + tr) / 2)
    grid = bilinear(corners, [0.0, 1.0], [1.0, 0.0])
    torch.testing.assert_close(grid, torch.stack([bl, tr]))


def test_barycentric(gen):
    anchors = torch.randn(3, 4, generator=gen)
    torch.testing.assert_close(barycentric(anchors, [0.0, 1.0, 0.0]), anchors[1])
    torch.testing.assert_close(barycentric(anchors, [2.0, 2.0, 2.0]), anchors.mean(0))
    torch.testing.assert_close(barycentric(anchors, [1.0, 3.0, 0.0]), 0.25 * anchors[0] + 0.75 * anchors[1])
    many = barycentric(anchors, torch.eye(3))
    torch.testing.assert_close(many, anchors)
    with pytest.raises(ConfigError):
        barycentric(anchors, [1.0, -1.0, 0.0])


def test_path_is_evenly_spaced_by_arc_length():
    points = torch.tensor([[0.0, 0.0], [3.0, 0.0], [3.0, 0.0], [3.0, 1.0]])  # lengths 3, 0, 1
    out = path(points, 9)
    assert out.shape == (9, 2)
    torch.testing.assert_close(out[0], points[0])
    torch.testing.assert_close(out[-1], points[-1])
    steps = (out[1:] - out[:-1]).norm(dim=-1)
    torch.testing.assert_close(steps, torch.full((8,), 0.5))
    torch.testing.assert_close(out[6], torch.tensor([3.0, 0.0]))
    assert path(points[:1], 4).shape == (4, 2)


def test_equal_power_gains_keep_power():
    g = equal_power_gains(4, 1000, 200)
    torch.testing.assert_close((g ** 2).sum(0), torch.ones(1000))
    assert g[0, 0] == 1 and g[-1, -1] == 1
    hard = equal_power_gains(3, 30, 0)
    assert ((hard < 1e-6) | (hard > 1 - 1e-6)).all()


@pytest.fixture(scope="module")
def ddsp():
    torch.manual_seed(0)
    model = build("ddsp", debug=True).eval()
    model.fit_latent_stats(torch.randn(64, model.latent_dim))
    return model


def test_render_path_crossfade_length_and_level(ddsp):
    assert path_mode(ddsp) == "crossfade"
    cond = Conditions.note(60, 100)
    points = ddsp.from_pca(torch.randn(3, ddsp.latent_dim, generator=torch.Generator().manual_seed(3)))
    seconds = 0.5
    audio = render_path(ddsp, points, cond, seconds)
    n = round(seconds * ddsp.sample_rate)
    assert audio.shape == (n,) and torch.isfinite(audio).all()
    # Each point rendered over the whole note (one batch, as render_path decodes them): the
    # crossfaded path stays within +3 dB (fully correlated neighbours) of the louder neighbour
    # and within -6 dB of the quieter one.
    singles = ddsp.decode(points, Conditions.note([60] * 3, 100, duration=seconds))
    singles = torch.nn.functional.pad(singles, (0, n - singles.shape[-1]))[:, :n]
    win = n // 10
    def rms(x):
        return x[..., : win * 10].reshape(*x.shape[:-1], 10, win).pow(2).mean(-1).sqrt()
    r_path, r_single = rms(audio), rms(singles)
    hi, lo = r_single.max(0).values, r_single.min(0).values
    assert (r_path <= hi * math.sqrt(2) * 1.05 + 1e-6).all()
    assert (r_path >= lo * 0.5).all()
    # Same points, one segment each: the first and last windows are the first and last point.
    torch.testing.assert_close(audio[:50], singles[0, :50])
    torch.testing.assert_close(audio[-50:], singles[-1, -50:])


def test_render_path_frames_mode():
    torch.manual_seed(0)
    cfg = build("ddsp", debug=True).config
    cfg.z_mode = "frames"
    model = build("ddsp", cfg).eval()
    assert path_mode(model) == "frames"
    points = torch.randn(2, model.latent_dim)
    audio = render_path(model, points, Conditions.note(57, 90), 0.4)
    assert audio.shape == (round(0.4 * model.sample_rate),) and torch.isfinite(audio).all()


def test_monotonic_within_counts_steps_back_against_the_endpoints_gap():
    assert monotonic_within([100, 150, 200], 0.0) and monotonic_within([300, 250, 100], 0.0)
    # one step back of 10 Hz on a 100 Hz gap: 10 %
    assert not monotonic_within([100, 150, 140, 200], 0.05)
    assert monotonic_within([100, 150, 140, 200], 0.10)
    assert not monotonic_within([200, 150, 160, 100], 0.05)


class _Mixer:
    """A stand-in generator: latent (B, 1) mixes a tone at f0 (z = 0) with one at 5 f0 (z = 1)."""

    sample_rate = 8000

    def decode(self, z, cond):
        t = torch.arange(4000) / self.sample_rate
        f0 = 440 * 2 ** ((cond.pitch.reshape(-1)[:1] - 69) / 12)
        w = z.reshape(-1, 1)
        return (1 - w) * torch.sin(2 * math.pi * f0 * t) + w * torch.sin(2 * math.pi * 5 * f0 * t)


def test_centroid_sweep_measures_the_decoded_morph():
    values = centroid_sweep(_Mixer(), torch.zeros(1, 1), torch.ones(1, 1), Conditions.note([60.0]), n=5)
    f0 = 440 * 2 ** (-9 / 12)
    assert values[0] == pytest.approx(f0, rel=0.02) and values[-1] == pytest.approx(5 * f0, rel=0.02)
    assert monotonic_within(values, 0.0)
    with pytest.raises(ConfigError, match="single latents"):
        centroid_sweep(_Mixer(), torch.zeros(2, 1), torch.zeros(2, 1), Conditions.note([60.0]))


# -- melfit: latents fitted to the endpoints' log-mel crossfade ---------------------------------
@pytest.fixture(scope="module")
def tiny_vae():
    torch.manual_seed(0)
    model = build("vae", debug=True).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _rel_error(model, z, target, cond):
    with torch.no_grad():
        mel = model.decode_mel(z, cond.expand(z.shape[0])).exp()
    goal = target.exp()
    return ((mel - goal).square().sum((1, 2)) / goal.square().sum((1, 2)))


def _melfit_against_lerp(model, a, b, cond, n=5):
    """melfit and lerp morphs of n points; their relative mel errors against the endpoints'
    log-mel crossfade. The melfit ends must be a and b exactly."""
    from latent.interpolate import morph_points

    z, line = morph_points(model, a, b, n, "melfit", cond), morph_points(model, a, b, n, "lerp")
    assert torch.equal(z[0], a[0]) and torch.equal(z[-1], b[0])
    with torch.no_grad():
        ends = model.decode_mel(torch.cat([a, b]), cond.expand(2))
    t = torch.linspace(0, 1, n).reshape(-1, 1, 1)
    target = (1 - t) * ends[:1] + t * ends[1:]
    return z, _rel_error(model, z, target, cond), _rel_error(model, line, target, cond)


def _start_and_target(model, seed, cond, n=3):
    """n random starting latents and the decoded mels of n other random latents (reachable)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        target = model.decode_mel(torch.randn(n, model.latent_dim, generator=g), cond.expand(n))
    return torch.randn(n, model.latent_dim, generator=g), target


def test_fit_mel_moves_towards_a_reachable_target_and_leaves_the_weights(tiny_vae):
    from latent.interpolate import fit_mel

    model = tiny_vae
    cond = Conditions.note([60.0], [100.0])
    init, target = _start_and_target(model, 1, cond)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fitted = fit_mel(model, init, target, cond, steps=80, lr=0.05)
    err0, err1 = _rel_error(model, init, target, cond), _rel_error(model, fitted, target, cond)
    assert (err1 < 0.5 * err0).all(), (err0, err1)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert not fitted.requires_grad


def test_fit_mel_points_are_independent(tiny_vae):
    from latent.interpolate import fit_mel

    model = tiny_vae
    cond = Conditions.note([57.0], [90.0])
    init, target = _start_and_target(model, 2, cond)
    joint = fit_mel(model, init, target, cond, steps=10)
    single = torch.cat([fit_mel(model, init[i:i + 1], target[i:i + 1], cond, steps=10) for i in range(3)])
    torch.testing.assert_close(joint, single, rtol=1e-4, atol=1e-5)


def test_melfit_morph_keeps_the_endpoints_and_beats_the_line_on_its_target(tiny_vae):
    from latent.interpolate import morph_points

    model = tiny_vae
    g = torch.Generator().manual_seed(3)
    cond = Conditions.note([64.0], [100.0])
    a, b = torch.randn(1, model.latent_dim, generator=g), torch.randn(1, model.latent_dim, generator=g)
    z, fit_err, line_err = _melfit_against_lerp(model, a, b, cond)
    assert z.shape == (5, model.latent_dim)
    assert (fit_err[1:-1] < 0.9 * line_err[1:-1]).all(), (fit_err, line_err)
    # deterministic: the same call gives the same latents
    torch.testing.assert_close(morph_points(model, a, b, 5, "melfit", cond), z, rtol=0, atol=0)


def test_melfit_refuses_what_it_cannot_fit(tiny_vae):
    from latent.interpolate import fit_mel, morph_points

    a = torch.zeros(1, tiny_vae.latent_dim)
    with pytest.raises(ConfigError, match="conditions"):
        morph_points(tiny_vae, a, a, 3, "melfit")
    with pytest.raises(ConfigError, match="lerp, slerp, melfit"):
        morph_points(tiny_vae, a, a, 3, "geodesic")
    with pytest.raises(ConfigError, match="init"):
        fit_mel(tiny_vae, a[0], torch.zeros(1, 4, 4), Conditions.note([60.0]))
    additive = build("additive", debug=True).eval()
    with pytest.raises(ConfigError, match="needs a mel generator"):
        fit_mel(additive, torch.zeros(1, additive.latent_dim), torch.zeros(1, 4, 4),
                Conditions.note([60.0]))


def test_melfit_moves_a_vqvae_through_its_straight_through_quantiser():
    """The VQ-VAE's pre-quantisation latents (1, D, F') are fitted through the quantiser's
    straight-through gradient: the fitted codes decode nearer the crossfade than the straight
    line's, the ends stay the anchors."""
    torch.manual_seed(0)
    vq = build("vqvae", debug=True).eval()
    cond = Conditions.note([60.0], [100.0])
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        a, b = (vq.encode(0.3 * torch.randn(1, vq.n_frames * vq.feature_spec.hop_length, generator=g))
                for _ in range(2))
    z, fit_err, line_err = _melfit_against_lerp(vq, a, b, cond)
    assert z.shape == (5, *a.shape[1:])
    assert fit_err[1:-1].sum() < line_err[1:-1].sum(), (fit_err, line_err)


def test_mel_mix_fit_returns_anchors_at_the_corners_and_fits_inside(tiny_vae):
    from latent.interpolate import bilinear, mel_mix_fit

    model = tiny_vae
    g = torch.Generator().manual_seed(4)
    cond = Conditions.note([62.0], [100.0])
    anchors = torch.randn(4, model.latent_dim, generator=g)
    # bilinear weights of pad points: a corner, the centre, an edge midpoint
    eye = torch.eye(4)
    weights = torch.stack([bilinear(eye, x, y) for x, y in ((1.0, 0.0), (0.5, 0.5), (0.0, 0.5))])
    z = mel_mix_fit(model, anchors, weights, cond)
    assert torch.equal(z[0], anchors[1])
    with torch.no_grad():
        mels = model.decode_mel(anchors, cond.expand(4))
    target = torch.einsum("pk,kmf->pmf", weights, mels)
    fit_err = _rel_error(model, z[1:], target[1:], cond)
    line_err = _rel_error(model, weights[1:] @ anchors, target[1:], cond)
    assert (fit_err < 0.9 * line_err).all(), (fit_err, line_err)
