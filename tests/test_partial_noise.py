"""Noise laid on the partials (`DDSPConfig.partial_noise`, `dsp_filters.partial_noise_power`)."""

import math

import pytest
import torch

from synth.dsp_filters import filtered_noise, partial_noise_gain, partial_noise_power
from synth.errors import ConfigError
from synth.registry import build


@pytest.mark.parametrize("bands,window", [(257, 512), (65, 128)])
@pytest.mark.parametrize("hz", [440.0, 1234.5, 3015.6])
def test_partial_noise_plays_its_level_around_the_partial(bands, window, hz):
    """Filtered noise with `partial_noise_power`'s magnitudes, divided by `partial_noise_gain`,
    carries the asked power ratio to the partial within 1 dB (ripple with the position between two
    band points, about 0.5 dB, plus the draw) wherever the partial falls between
    two band points, centred on the partial (centroid within a tenth of a band spacing) and
    within two band spacings of it."""
    sr, frames, n = 16000, 50, 32000
    spacing = sr / 2 / (bands - 1)
    amp = torch.full((1, frames, 1), 0.3, dtype=torch.float64)
    freqs = torch.full((1, frames, 1), hz, dtype=torch.float64)
    gain = partial_noise_gain(bands, window, sr)
    for level in (0.1, 0.01):
        power = partial_noise_power(amp, freqs, bands, sr, level / gain)
        noise = filtered_noise(power.sqrt(), n, generator=torch.Generator().manual_seed(0),
                               window_size=window)[0, 4000:]
        ratio_db = 10 * math.log10(float(noise.pow(2).mean()) / (level * 0.3 ** 2 / 2))
        assert abs(ratio_db) < 1.0
        spectrum = torch.fft.rfft(noise).abs().pow(2)
        f = torch.fft.rfftfreq(noise.numel(), 1 / sr, dtype=torch.float64)
        assert abs(float((spectrum * f).sum() / spectrum.sum()) - hz) < 0.1 * spacing
        near = (f - hz).abs() < 2 * spacing
        assert float(spectrum[near].sum() / spectrum.sum()) > 0.95


def test_partials_at_or_above_nyquist_add_nothing():
    """Partials at or above Nyquist add no noise; those below light only the three band points
    around them (1 kHz: points 7-9 of 65, 125 Hz apart)."""
    amp = torch.ones(2, 3, 4)
    freqs = torch.tensor([1000.0, 7999.0, 8000.0, 9000.0]).expand(2, 3, 4)
    power = partial_noise_power(amp, freqs, 65, 16000, 0.1)
    alone = partial_noise_power(amp[..., :2], freqs[..., :2], 65, 16000, 0.1)
    torch.testing.assert_close(power, alone)
    lit = (power > 0).any(0).any(0).nonzero()[:, 0].tolist()
    assert lit == [7, 8, 9, 63, 64]


def _pn_model(base, **extra):
    return build("ddsp", {**base.config.__dict__, "partial_noise": True, **extra})


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return build("ddsp", debug=True).eval()


def test_partial_noise_starts_at_its_level_and_leaves_the_partials_untouched(base, tmp_path):
    """--init from a model without it keeps every other output exactly; the noise gains the
    partials' power at `partial_noise_db` (the path starts at zero) and nothing else; the
    partials' own controls get no gradient through it, the path does, at its own rate."""
    from synth import dsp
    from synth.checkpoint import save_model
    from synth.recipe import init_weights

    path = save_model(base, tmp_path / "plain.safetensors")
    pn = _pn_model(base, partial_noise_db=-12.0, partial_noise_lr_scale=3.0)
    fresh = init_weights(pn, str(path))
    assert fresh and all(name.startswith("partial_noise.") for name in fresh)
    z = torch.randn(2, 30, base.latent_dim, generator=torch.Generator().manual_seed(1))
    f0, ld = torch.tensor([[220.0], [330.0]]).expand(2, 30), torch.full((2, 30), -20.0)
    with torch.no_grad():
        harm0, mags0 = base.get_controls(f0, ld, z)
    harm, mags = pn.eval().get_controls(f0, ld, z)
    torch.testing.assert_close(harm.distribution, harm0.distribution)
    torch.testing.assert_close(harm.amplitude, harm0.amplitude)
    amps = harm0.amplitude * harm0.distribution
    freqs = dsp.harmonic_frequencies(harm0.f0_hz, amps.shape[-1])
    want = partial_noise_power(amps, freqs, mags.shape[-1], base.sample_rate,
                               10 ** -1.2 / pn._partial_noise_gain)
    torch.testing.assert_close(mags.detach().pow(2) - mags0.pow(2), want, atol=1e-7, rtol=1e-4)
    mags.sum().backward()
    h = pn.config.n_harmonics
    assert float(pn.dense.weight.grad[: 1 + h].abs().sum()) == 0.0
    assert float(pn.partial_noise[-1].weight.grad.abs().sum()) > 0.0
    opt = pn.make_optimizers(1e-3)["main"]
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lrs[id(pn.partial_noise[-1].weight)] == pytest.approx(3e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(pn.parameters()))


def test_the_noise_term_teaches_the_partial_noise_its_level(base):
    """Audio whose partials carry noise at -8 dB: a model starting at -20 dB, trained on the
    noise frame term with its path alone free, ends within 2.5 dB of -8 dB; the level stays
    within partial_noise_db +- partial_noise_range_db however far the path is pushed."""
    teacher = _pn_model(base, partial_noise_db=-8.0).eval()
    student = _pn_model(base, partial_noise_db=-20.0)
    student.load_state_dict(teacher.state_dict())
    frames = 40
    z = torch.randn(2, frames, base.latent_dim, generator=torch.Generator().manual_seed(3))
    f0, ld = torch.tensor([[300.0], [450.0]]).expand(2, frames), torch.full((2, frames), -15.0)
    n = frames * base.hop_length
    with torch.no_grad():
        harm, mags = teacher.get_controls(f0, ld, z)
        harmonic, noise = teacher.get_parts(harm, mags, n, generator=5)
        base_mags = base.get_controls(f0, ld, z)[1]
    audio = harmonic + noise
    opt = torch.optim.Adam(student.partial_noise.parameters(), lr=0.02)

    def level_db() -> float:
        with torch.no_grad():
            x = torch.cat([z, (torch.log2(f0 / 440.0) * 12 + 69)[..., None] / 127.0,
                           ((ld + 120.0) / 120.0)[..., None]], -1)
            return float(-20.0 + 20.0 * torch.tanh(student.partial_noise(x)).mean())

    start = level_db()
    for _ in range(150):
        _, got = student.get_controls(f0, ld, z)
        loss = student._noise_losses(audio, harmonic, got)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert start == pytest.approx(-20.0, abs=1e-6)
    assert abs(level_db() - -8.0) < 2.5
    with torch.no_grad():
        student.partial_noise[-1].bias.fill_(1e3)
        _, loud = student.get_controls(f0, ld, z)
    extra = loud.pow(2) - base_mags.pow(2)  # at the cap: partial_noise_db + range = 0 dB
    assert torch.isfinite(extra).all() and float(extra.max()) > 0
    assert float(extra.max()) < 1.01 * float((mags.pow(2) - base_mags.pow(2)).max()) * 10 ** 0.8


@pytest.mark.parametrize("field,value", [("partial_noise_range_db", -1.0),
                                         ("partial_noise_db", float("nan")),
                                         ("partial_noise_lr_scale", -1.0)])
def test_bad_partial_noise_settings_are_refused_by_name(base, field, value):
    with pytest.raises(ConfigError, match=field):
        _pn_model(base, **{field: value})


def test_a_zero_range_fixes_the_level_without_a_path(base, tmp_path):
    """`partial_noise_range_db` 0: no path, nothing new in the checkpoint (a model without the
    option loads strictly), and the noise gains the partials' power at `partial_noise_db`."""
    fixed = _pn_model(base, partial_noise_range_db=0.0, partial_noise_db=-20.0).eval()
    fixed.load_state_dict(base.state_dict(), strict=True)
    learned = _pn_model(base, partial_noise_db=-20.0).eval()
    learned.load_state_dict(base.state_dict(), strict=False)
    z = torch.randn(2, 30, base.latent_dim, generator=torch.Generator().manual_seed(4))
    f0, ld = torch.tensor([[260.0], [390.0]]).expand(2, 30), torch.full((2, 30), -25.0)
    with torch.no_grad():
        torch.testing.assert_close(fixed.get_controls(f0, ld, z)[1],
                                   learned.get_controls(f0, ld, z)[1])
        assert float((fixed.get_controls(f0, ld, z)[1] - base.get_controls(f0, ld, z)[1]).max()) > 0
    opt = fixed.make_optimizers(1e-3)["main"]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(fixed.parameters()))
