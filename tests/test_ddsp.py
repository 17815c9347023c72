"""The DDSP generator: controls, multi-rate rendering, notes, timbre transfer and MIDI."""

import math

import mido
import numpy as np
import pytest
import torch

from synth.base import Conditions
from synth.ddsp import DDSPGenerator, adsr_db
from synth.ddsp_play import TransferOptions, timbre_transfer
from synth.play import read_midi, render_midi
from synth.errors import ConfigError
from synth.registry import build


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build("ddsp", debug=True).eval()


def centroid(x, sr):
    spec = np.abs(np.fft.rfft(x.detach().numpy()))
    freqs = np.fft.rfftfreq(x.numel(), 1 / sr)
    return float((spec * freqs).sum() / spec.sum())


def test_frames_and_latent_shapes(model, gen):
    audio = model.example_batch(2, gen)["audio"]
    assert model.encode(audio).shape == (2, model.latent_dim)
    frames = build("ddsp", {**vars(DDSPGenerator.debug_config()), "z_mode": "frames"})
    z = frames.encode(audio)
    assert z.shape == (2, model.latent_dim, audio.shape[-1] // frames.hop_length)
    assert frames.decode(z, Conditions.note([60, 62])).shape == (2, audio.shape[-1] // frames.hop_length * frames.hop_length)


def test_render_is_batch_size_invariant_and_seeded(model):
    """Item i renders the same alone or in a batch (its noise has its own seed); seeds matter."""
    z = torch.randn(3, model.latent_dim, generator=torch.Generator().manual_seed(1))
    cond = Conditions.note([57, 60, 64], 100, duration=0.5)
    loud_noise = {"noise_db": 12.0, "harmonic_db": -24.0}
    three = model.render(z, cond, controls=loud_noise, seed=5)
    two = model.render(z[:2], cond.select(slice(0, 2)), controls=loud_noise, seed=5)
    torch.testing.assert_close(two, three[:2], rtol=0, atol=1e-6)
    other = model.render(z, cond, controls=loud_noise, seed=6)
    moved = (three - other).abs().amax(1) / three.abs().amax(1)
    assert moved.min() > 1e-3, moved  # every item's noise follows the seed


def test_render_at_several_rates_keeps_the_band(model):
    z = torch.zeros(1, model.latent_dim)
    cond = Conditions.note(69, 100, duration=0.5)
    lengths = {}
    for sr in (8000, 22050, 48000):
        y = model.decode(z, cond, sample_rate=sr)[0]
        lengths[sr] = y.numel()
        assert abs(y.numel() - 0.5 * sr) <= sr / model.config.frame_rate
        if sr > model.sample_rate:
            spec = np.abs(np.fft.rfft(y.detach().numpy())) ** 2
            freqs = np.fft.rfftfreq(y.numel(), 1 / sr)
            above = spec[freqs > model.sample_rate / 2 * 1.05].sum() / spec.sum()
            assert above < 0.02, f"{above:.3f} of the energy above the model's band at {sr} Hz"
    assert lengths[48000] > lengths[22050] > lengths[8000]


def test_a_note_has_one_level_at_every_output_rate(model):
    """The loudness lock reads the model's own loudness at any output rate: the same note
    rendered at the model's rate, 22.05 and 48 kHz has the same RMS (within 0.5 dB; the
    content is the same band, only sampled finer). Before, the lock's reading grew by
    10 log10(rate ratio) and a 48 kHz render came out 4.8 dB quieter than at 16 kHz."""
    z = torch.zeros(1, model.latent_dim)
    cond = Conditions.note(57, 100, duration=0.5)
    rms = {sr: float(model.render(z, cond, sample_rate=sr, seed=0)[0].detach().pow(2).mean())
           for sr in (model.sample_rate, 22050, 48000)}
    for sr, value in rms.items():
        assert abs(10 * math.log10(value / rms[model.sample_rate])) < 0.5, (sr, rms)


def test_brightness_control_raises_centroid(model):
    z = torch.zeros(1, model.latent_dim)
    cond = Conditions.note(57, 100, duration=0.5)
    values = [centroid(model.decode(z, cond, controls={"brightness": b, "noise_db": -60})[0],
                       model.sample_rate) for b in (-12, 0, 12)]
    assert values[0] < values[1] < values[2]


def test_harmonic_and_noise_gains(model):
    z = torch.zeros(1, model.latent_dim)
    cond = Conditions.note(60, 100, duration=0.5)
    base = model.decode(z, cond, controls={"reverb_mix": 0.0})[0].detach().pow(2).mean()
    quiet = model.decode(z, cond, controls={"reverb_mix": 0.0, "harmonic_db": -24,
                                            "noise_db": -24})[0].detach().pow(2).mean()
    assert 10 * math.log10(float(base / quiet)) == pytest.approx(24.0, abs=0.5)


def test_dry_model_equals_reverb_mix_zero_and_loads_a_reverb_checkpoint(model, tmp_path):
    """`reverb=False` renders what a reverb model renders at reverb_mix 0 (same weights, no lock
    so the level is the network's), has no reverb_mix control, and `--init` from a checkpoint
    with a reverb leaves its IR behind."""
    from synth.checkpoint import save_model
    from synth.recipe import init_weights

    path = save_model(model, tmp_path / "wet.safetensors")
    dry = build("ddsp", {**model.config.__dict__, "reverb": False}).eval()
    assert init_weights(dry, str(path)) == [] and dry.reverb is None
    assert "reverb_mix" not in {c.name for c in dry.controls}
    assert "reverb_mix" in {c.name for c in model.controls}
    z = torch.randn(2, model.latent_dim, generator=torch.Generator().manual_seed(1))
    f0 = torch.tensor([[220.0], [330.0]]).expand(2, 40)
    ld = torch.full((2, 40), -20.0)
    render = lambda m, **kw: m.synthesize(f0, ld, z, generator=3, match_loudness=False, **kw)  # noqa: E731
    a = render(model, controls={"reverb_mix": 0.0})
    torch.testing.assert_close(a, render(dry))
    torch.testing.assert_close(render(dry, controls={"reverb_mix": 1.0}), a)  # nothing to mix
    assert (render(model) - a).abs().max() > 1e-4, "the debug model's reverb does change the render"


@pytest.mark.parametrize("rate", [8000, 48000])
def test_loudness_lock_meets_the_requested_loudness(model, rate):
    """With the lock, a render's A-weighted loudness meets the requested curve over the note's
    active frames (one gain per note, so the median gap is ~0 and the envelope is the model's);
    without it the untrained debug model is far off. Gain controls still move the level. The
    loudness is the model's own reading (`analyze_loudness` at its rate, what the requested curve
    means), so a render at another rate is brought back to the model's rate to be measured."""
    from synth.audio import resample

    z = torch.randn(3, model.latent_dim, generator=torch.Generator().manual_seed(3))
    frames = 60
    f0 = torch.full((3, frames), 220.0)
    target = torch.tensor([-18.0, -12.0, -6.0])[:, None] + adsr_db(frames, 125, 0.02, 0.1, -6, 0.1)

    def gap(audio):
        if rate != model.sample_rate:
            audio = torch.stack([resample(a, rate, model.sample_rate) for a in audio])
        ld = model.analyze_loudness(audio)[:, :frames]
        active = target > target.amax(1, keepdim=True) - 20
        return torch.stack([(ld[i] - target[i])[active[i]].median() for i in range(3)])

    with torch.no_grad():
        locked = model.synthesize(f0, target, z, sample_rate=rate, match_loudness=True)
        raw = model.synthesize(f0, target, z, sample_rate=rate, match_loudness=False)
        louder = model.synthesize(f0, target, z, sample_rate=rate, match_loudness=True,
                                  controls={"harmonic_db": 6.0, "noise_db": 6.0})
    assert gap(locked).abs().max() < 0.5
    assert gap(raw).abs().max() > 3.0
    torch.testing.assert_close(gap(louder) - gap(locked), torch.full((3,), 6.0), atol=0.3, rtol=0)
    # One gain per note: the locked render is the raw one scaled.
    ratio = (locked.pow(2).sum(1) / raw.pow(2).sum(1)).sqrt()
    torch.testing.assert_close(locked, raw * ratio[:, None], atol=1e-5, rtol=1e-4)


def test_adsr_envelope_shape():
    env = adsr_db(100, 100, attack=0.05, decay=0.2, sustain_db=-6, release=0.2)
    assert env[0] < -60 and env[5] == pytest.approx(0.0, abs=0.5)
    assert env[60] == pytest.approx(-6.0, abs=0.5)
    assert env[-1] < -60 and torch.all(env[80:].diff() <= 0)


def test_note_needs_pitch(model):
    with pytest.raises(ConfigError, match="pitch"):
        model.decode(torch.zeros(1, model.latent_dim), Conditions(velocity=torch.tensor([100.0])))


def test_velocity_table_from_corpus_items(model):
    m = build("ddsp", debug=True)
    n = m.sample_rate // 2
    t = torch.arange(n) / m.sample_rate
    items = [{"audio": g * torch.sin(2 * math.pi * 220 * t), "velocity": torch.tensor(v),
              "pitch": torch.tensor(57.0)} for g, v in ((0.05, 30.0), (0.2, 80.0), (0.8, 120.0))]
    m.fit_corpus_stats(items)
    table = m.velocity_db
    assert table[30] < table[80] < table[120]
    assert float(table[120] - table[30]) == pytest.approx(20 * math.log10(16), abs=1.0)


def trained_tiny(steps=120):
    """A debug DDSP model fitted to one harmonic tone (a few seconds on a CPU)."""
    torch.manual_seed(0)
    m = build("ddsp", debug=True)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    batch = m.example_batch(4, torch.Generator().manual_seed(1))
    first = None
    for _ in range(steps):
        loss = m.training_step(batch)["recon/mss"]
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval(), first, float(loss)


def test_training_reduces_the_spectral_loss():
    _, first, last = trained_tiny()
    assert last < 0.6 * first


def test_timbre_transfer_and_options(model):
    sr = model.sample_rate
    t = torch.arange(sr) / sr
    f = 220 * 2 ** (torch.floor(t * 4) / 12)  # four steps up a semitone
    phase = 2 * math.pi * torch.cumsum(f, 0) / sr
    audio = 0.3 * torch.sin(phase) + 0.1 * torch.sin(2 * phase)
    out = timbre_transfer(model, audio, options=TransferOptions(auto_adjust=False))
    assert out.shape[0] == audio.numel() // model.hop_length * model.hop_length
    assert torch.isfinite(out).all()
    hi = timbre_transfer(model, audio, options=TransferOptions(auto_adjust=False, octave_shift=1),
                         controls={"noise_db": -60, "reverb_mix": 0})
    lo = timbre_transfer(model, audio, options=TransferOptions(auto_adjust=False),
                         controls={"noise_db": -60, "reverb_mix": 0})
    assert centroid(hi, sr) > 1.5 * centroid(lo, sr)


def write_midi(path, notes, tempo=500000):
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=tempo))
    events = []
    for pitch, vel, start, end in notes:
        events.append((start, mido.Message("note_on", note=pitch, velocity=vel)))
        events.append((end, mido.Message("note_off", note=pitch, velocity=0)))
    now = 0
    for tick, msg in sorted(events, key=lambda e: e[0]):
        msg.time = tick - now
        now = tick
        track.append(msg)
    mid.save(path)


def test_midi_rendering_overlaps_and_no_clicks(model, tmp_path):
    path = tmp_path / "line.mid"
    # two overlapping notes then a third: ticks at 480 per beat, 0.5 s per beat
    write_midi(path, [(60, 100, 0, 480), (64, 90, 240, 720), (67, 80, 960, 1200)])
    notes = read_midi(path)
    assert [n.pitch for n in notes] == [60, 64, 67]
    assert notes[1].start == pytest.approx(0.25) and notes[0].end == pytest.approx(0.5)
    audio = render_midi(model, notes)
    sr = model.sample_rate
    assert audio.numel() >= int(1.25 * sr)
    # No click: the largest sample-to-sample step stays within what the rendered sound itself
    # does mid-note (a click at a voice boundary would be a step of the order of the peak).
    steps = audio.diff().abs()
    boundaries = [int(n.start * sr) for n in notes] + [int(n.end * sr) for n in notes]
    near = torch.cat([steps[max(0, b - 32):b + 32] for b in boundaries])
    assert float(near.max()) <= 1.5 * float(steps.quantile(0.999)) + 1e-4


def test_empty_midi_is_refused(tmp_path):
    path = tmp_path / "empty.mid"
    write_midi(path, [])
    with pytest.raises(ConfigError, match="no notes"):
        read_midi(path)
    bad = tmp_path / "bad.mid"
    bad.write_text("not midi")
    with pytest.raises(ConfigError, match="unreadable MIDI"):
        read_midi(bad)


def no_clicks(audio, boundaries, sr, factor=1.5):
    """A click is a sample-to-sample jump near a boundary larger than the sound's own steepest
    steps elsewhere: compare the largest jump within 2 ms of a boundary with the 99.9th
    percentile of all jumps (a smooth sound's steepest steps are set by its pitch and level)."""
    steps = audio.diff().abs()
    w = int(0.002 * sr)
    near = torch.cat([steps[max(0, b - w):b + w] for b in boundaries if b < steps.numel()])
    return float(near.max()) <= factor * float(steps.quantile(0.999)) + 1e-4


def test_timbre_transfer_of_espeak_speech(model, tmp_path):
    import shutil
    import subprocess

    from synth.audio import load

    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is installed by make setup")
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "synthesis studio speaks"], check=True)
    speech = load(wav, model.sample_rate)
    out = timbre_transfer(model, speech)
    assert out.numel() == speech.numel() // model.hop_length * model.hop_length
    assert torch.isfinite(out).all() and float(out.abs().max()) > 0
    frames = range(0, out.numel(), model.hop_length * 10)
    assert no_clicks(out.detach(), list(frames), model.sample_rate, factor=3.0)


def test_timbre_transfer_of_a_midi_melody_rendered_by_fluidsynth(model):
    from synth.data.soundfont import FloatSynth

    sr = model.sample_rate
    synth = FloatSynth("/usr/share/sounds/sf2/TimGM6mb.sf2", sr, 0.9)
    synth.select(0, 73)  # flute
    melody = [60, 62, 64, 65, 67]
    note = int(0.25 * sr)
    audio = np.concatenate([synth.note(p, 100, note, note) for p in melody])
    synth.close()
    out = timbre_transfer(model, torch.from_numpy(audio), options=TransferOptions(quiet_db=50))
    boundaries = [i * note for i in range(1, len(melody))]
    assert torch.isfinite(out).all()
    assert no_clicks(out.detach(), boundaries, sr)


def test_inharmonic_model_learns_the_analysed_coefficient_and_fine_tunes_from_a_harmonic_one(tmp_path):
    """`inharmonicity=True`: the training step analyses B on the batch (a stiff-string tone of
    known B), synthesises with it, and trains the head towards it; a harmonic checkpoint
    initialises everything but the head, which starts at B ~ 0 (the harmonic model's sound)."""
    from synth.checkpoint import save_model
    from synth.recipe import init_weights

    torch.manual_seed(0)
    harmonic = build("ddsp", debug=True)
    path = save_model(harmonic, tmp_path / "h.safetensors")
    cfg = {**vars(DDSPGenerator.debug_config()), "inharmonicity": True}
    model = build("ddsp", cfg)
    fresh = init_weights(model, str(path))
    assert fresh and all(name.startswith("inharm_head.") for name in fresh)
    sr, n = model.sample_rate, int(model.config.note_seconds * model.sample_rate)
    t = torch.arange(n) / sr
    f0, b = 220.0, 2e-3
    tone = sum(0.3 / k * torch.sin(2 * math.pi * k * f0 * math.sqrt(1 + b * k * k) * t)
               for k in range(1, 9) if k * f0 * math.sqrt(1 + b * k * k) < sr / 2)
    batch = {"audio": tone.repeat(4, 1).float(), "pitch": torch.full((4,), 57.0),
             "velocity": torch.full((4,), 100.0)}
    z = model.encode(batch["audio"])
    f0_curve = torch.full((4, model.frames(n)), f0)
    with torch.no_grad():
        assert float(model.predict_inharmonicity(z, f0_curve).max()) < 1e-6
    opt = model.make_optimizers(lr=3e-3)["main"]
    assert opt.param_groups[1]["lr"] == pytest.approx(3e-3 * model.config.inharmonicity_lr_scale)
    first = None
    for _ in range(150):
        losses = model.training_step(batch)
        assert set(losses) == {"recon/mss", "inharm/l1"}
        first = first if first is not None else float(losses["inharm/l1"])
        opt.zero_grad()
        losses["inharm/l1"].backward()  # the head only: the synthesis loss is not stepped here
        opt.step()
    with torch.no_grad():
        predicted = float(model.predict_inharmonicity(z, f0_curve).mean())
    assert float(losses["inharm/l1"]) < 0.1 * first
    assert abs(math.log10(predicted / b)) < 0.15  # within 40 % of the analysed B
    # renders use the prediction: the partials move, so the audio differs from B = 0
    cond = Conditions.note([57.0], duration=0.25)
    with torch.no_grad():
        stretched = model.decode(z[:1], cond)
        plain = model.synthesize(*model.note_curves(cond.expand(1), stretched.shape[-1] // model.hop_length),
                                 z[:1], inharmonicity=torch.zeros(1), generator=0)
    assert stretched.shape == plain.shape and not torch.allclose(stretched, plain, atol=1e-4)


def test_init_resamples_the_noise_bands_and_a_finer_filter_is_narrower(model, tmp_path):
    """`--init` into a model with more noise bands: harmonic controls unchanged, the checkpoint's
    band magnitudes kept at their own frequencies (9 -> 17 bands: every second new band) and
    interpolated between; and the finer filter (more bands, longer window) passes a narrower
    band of noise, which is what it is for."""
    from synth.checkpoint import save_model
    from synth.recipe import init_weights

    path = save_model(model, tmp_path / "coarse.safetensors")
    fine = build("ddsp", {**model.config.__dict__, "n_noise_bands": 17, "noise_window": 32}).eval()
    assert init_weights(fine, str(path)) == []
    z = torch.randn(2, 40, model.latent_dim, generator=torch.Generator().manual_seed(1))
    f0 = torch.tensor([[220.0], [330.0]]).expand(2, 40)
    ld = torch.full((2, 40), -20.0)
    with torch.no_grad():
        (h0, m0), (h1, m1) = model.get_controls(f0, ld, z), fine.get_controls(f0, ld, z)
    torch.testing.assert_close(h1.distribution, h0.distribution)
    torch.testing.assert_close(h1.amplitude, h0.amplitude)
    torch.testing.assert_close(m1[..., ::2], m0)
    lo, hi = torch.minimum(m0[..., :-1], m0[..., 1:]), torch.maximum(m0[..., :-1], m0[..., 1:])
    assert ((m1[..., 1::2] >= lo - 1e-6) & (m1[..., 1::2] <= hi + 1e-6)).all()

    def width(m, bands):  # spectral width (Hz above half power) of noise through one band
        mags = torch.zeros(1, 40, bands)
        mags[..., bands // 2] = 1.0
        parts = m.get_parts(h0._replace(amplitude=h0.amplitude[:1] * 0,
                                        distribution=h0.distribution[:1],
                                        f0_hz=h0.f0_hz[:1]), mags, 40 * m.hop_length, generator=0)
        power = torch.fft.rfft(parts[1][0]).abs().pow(2)
        power = torch.nn.functional.avg_pool1d(power[None, None], 33, 1, 16)[0, 0]
        bin_hz = m.sample_rate / parts[1].shape[-1]
        return float((power > power.max() / 2).sum()) * bin_hz

    assert width(fine, 17) < 0.6 * width(model, 9)


def test_noise_term_recovers_a_noise_filter_from_its_audio(model):
    """The noise term compares expected power with the audio's: fitted to noise drawn through a
    known filter (nothing harmonic), its band magnitudes come back within 1.5 dB (the term's
    calibration), from a flat start 12 dB off."""
    bands, frames = 9, 40
    # smooth across bands: the debug model's 16-tap filter cannot draw a sharper shape
    shape = torch.exp(-0.5 * ((torch.arange(bands) - 3.0) / 2.5) ** 2) + 0.2
    true = (0.01 * shape).expand(2, frames, bands).contiguous()
    n = frames * model.hop_length
    audio = model.get_parts(model.get_controls(torch.full((2, frames), 220.0),
                                               torch.full((2, frames), -30.0),
                                               torch.zeros(2, frames, model.latent_dim))[0],
                            true, n, generator=5)[1]
    silent = torch.zeros_like(audio)
    log_mags = torch.full((2, frames, bands), math.log(0.01 * 0.25), requires_grad=True)
    opt = torch.optim.Adam([log_mags], lr=0.05)
    first = None
    for _ in range(300):
        loss = model._noise_losses(audio, silent, log_mags.exp())[0]
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    err_db = 20 * (log_mags.detach().exp().mean(1) / true.mean(1)).log10().abs()
    assert float(loss.detach()) < 0.5 * first
    assert float(err_db[:, 1:-1].max()) < 1.5, err_db


def test_fine_pattern_keeps_a_comb_and_drops_a_tilt():
    """`fine_pattern`: a smooth tilt across the bands reads as (nearly) nothing, a comb across
    them keeps its teeth, and adding the tilt to the comb leaves the comb's pattern."""
    from synth.dsp_filters import fine_pattern

    m = torch.arange(65, dtype=torch.float64)
    tilt = -0.05 * m
    comb = torch.where(m % 4 == 0, 1.0, 0.0).double()
    assert float(fine_pattern(tilt)[9:-9].abs().max()) < 1e-9
    teeth, on = fine_pattern(comb)[9:-9], (m % 4 == 0)[9:-9]
    assert float(teeth[on].min()) > 0.5 and float(teeth[~on].max()) < -0.1
    torch.testing.assert_close(fine_pattern(comb + tilt)[9:-9], teeth)


@pytest.mark.parametrize("field,value", [("noise_pattern_loss_weight", -1.0),
                                         ("noise_loss_weight", float("nan")),
                                         ("z_noise_lr_scale", 0.0), ("n_noise_bands", 1),
                                         ("noise_window", 2)])
def test_bad_loss_and_noise_settings_are_refused_by_name(model, field, value):
    """A negative or NaN loss weight, a zero learning-rate scale or a noise filter too small to
    exist is a one-line ConfigError naming the setting, before anything is built."""
    with pytest.raises(ConfigError, match=field):
        build("ddsp", {**model.config.__dict__, field: value})


@pytest.mark.parametrize("bands,window", [(65, 128), (257, 512), (1025, 0)])
def test_filter_power_response_is_what_the_filter_plays(bands, window):
    """`filter_power_response`: a flat curve plays flat at every length (an IR longer than the
    grid included), a smooth ramp plays as itself squared, and a comb finer than the window's
    main lobe plays flattened: what the noise terms compare."""
    from synth.dsp_filters import filter_power_response

    flat = filter_power_response(torch.ones(bands, dtype=torch.float64), window, 1024)
    assert flat.shape == (513,)
    torch.testing.assert_close(flat, torch.ones_like(flat), atol=2e-3, rtol=0)
    ramp = torch.linspace(0.2, 1.0, bands, dtype=torch.float64)
    played = filter_power_response(ramp, window, 1024)
    want = torch.linspace(0.2, 1.0, 513, dtype=torch.float64).pow(2)
    assert float((played - want)[8:-8].abs().max()) < 0.01
    comb = torch.where(torch.arange(bands) % 2 == 0, 1.0, 0.1).double()
    wiggle = filter_power_response(comb, window, 1024)[8:-8]
    assert float(wiggle.max() / wiggle.min()) < 0.5 * 100.0


def test_noise_pattern_term_sees_the_pattern_not_the_envelope(model):
    """The pattern term of the noise loss is blind to a smooth gain on the noise filter and
    sees a fine comb the filter lacks; fitted to noise drawn through a comb filter, a flat
    start learns the comb (teeth above gaps) where the frame term, at the same step count,
    learns less of it."""
    bands, frames = 65, 60
    m = torch.arange(bands)
    comb = torch.where(m % 4 == 0, 1.0, 0.15)
    true = (0.02 * comb).expand(2, frames, bands).contiguous()
    cfg = {**model.config.__dict__, "n_noise_bands": bands, "noise_window": 256}
    wide = build("ddsp", cfg)
    n = frames * wide.hop_length
    ctl = wide.get_controls(torch.full((2, frames), 220.0), torch.full((2, frames), -30.0),
                            torch.zeros(2, frames, wide.latent_dim))[0]
    audio = wide.get_parts(ctl, true, n, generator=3)[1]
    silent = torch.zeros_like(audio)
    right = wide._noise_losses(audio, silent, true)[1]
    louder = wide._noise_losses(audio, silent, true * torch.linspace(0.5, 2.0, bands))[1]
    flat = wide._noise_losses(audio, silent, torch.full_like(true, 0.02 * 0.4))[1]
    assert float(louder) < float(right) + 0.05 < float(flat)

    def fit(which: int) -> float:
        log_mags = torch.full((2, frames, bands), math.log(0.02 * 0.4), requires_grad=True)
        opt = torch.optim.Adam([log_mags], lr=0.05)
        for _ in range(60):
            loss = wide._noise_losses(audio, silent, log_mags.exp())[which]
            opt.zero_grad()
            loss.backward()
            opt.step()
        got = log_mags.detach().mean((0, 1))[8:-8]
        return float(got[m[8:-8] % 4 == 0].mean() - got[m[8:-8] % 4 != 0].mean())

    contrast_true = math.log(1 / 0.15)
    pattern, frames_only = fit(1), fit(0)
    assert pattern > 0.5 * contrast_true
    assert pattern > frames_only


def test_z_noise_path_starts_silent_and_learns_faster(model, tmp_path):
    """`z_noise`: `--init` from a model without it starts from that model's exact noise (the
    path's last layer is zero), the path then gets gradient, and its last layer has its own
    optimiser group at `z_noise_lr_scale` x the learning rate."""
    from synth.checkpoint import save_model
    from synth.recipe import init_weights

    path = save_model(model, tmp_path / "plain.safetensors")
    cfg = {**model.config.__dict__, "z_noise": True, "noise_loss_weight": 1.0}
    znoise = build("ddsp", cfg)
    fresh = init_weights(znoise, str(path))
    assert fresh and all(name.startswith("z_noise.") for name in fresh)
    z = torch.randn(2, 40, model.latent_dim, generator=torch.Generator().manual_seed(1))
    f0, ld = torch.tensor([[220.0], [330.0]]).expand(2, 40), torch.full((2, 40), -20.0)
    with torch.no_grad():
        torch.testing.assert_close(znoise.eval().get_controls(f0, ld, z)[1],
                                   model.get_controls(f0, ld, z)[1])
    znoise.train()
    losses = znoise.training_step(znoise.example_batch(2, torch.Generator().manual_seed(0)))
    assert "noise/frames" in losses and torch.isfinite(losses["noise/frames"])
    sum(losses[k] * znoise.loss_weights().get(k, 1.0) for k in losses).backward()
    assert znoise.z_noise[-1].weight.grad.abs().sum() > 0
    opt = znoise.make_optimizers(1e-3)["main"]
    last = {id(p) for p in znoise.z_noise[-1].parameters()}
    scaled = [g for g in opt.param_groups if {id(p) for p in g["params"]} == last]
    assert len(scaled) == 1
    assert scaled[0]["lr"] == pytest.approx(1e-3 * znoise.config.z_noise_lr_scale)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(znoise.parameters()))


def test_encoder_spectrum_reads_the_fine_spectrum_and_starts_silent(model, tmp_path):
    """`encoder_spectrum`: the features are each frame's band power relative to the note's
    peak (a tone lights its own band, 0 dB at the peak, floor -60 dB), and `--init` from a model
    without the reading encodes exactly what that model encoded."""
    from synth.checkpoint import save_model
    from synth.recipe import init_weights

    path = save_model(model, tmp_path / "plain.safetensors")
    spec = build("ddsp", {**model.config.__dict__, "encoder_spectrum": 33}).eval()
    assert sorted(init_weights(spec, str(path))) == sorted(
        n for n in spec.state_dict() if n.startswith("enc_spectrum."))
    sr, n = spec.sample_rate, 4096
    tone = 0.3 * torch.sin(2 * math.pi * 1000.0 * torch.arange(n) / sr)[None]
    feats = spec.spectrum_features(tone)
    assert feats.shape == (1, n // spec.hop_length, 33)
    assert float(feats.max()) == pytest.approx(0.0, abs=1e-6) and float(feats.min()) >= -6.0
    assert int(feats[0, 10].argmax()) == round(1000.0 / (sr / 2) * 32)
    audio = torch.randn(2, n, generator=torch.Generator().manual_seed(2)) * 0.1
    f0 = torch.full((2,), 220.0)
    with torch.no_grad():
        torch.testing.assert_close(spec.encode_frames(audio, f0), model.encode_frames(audio, f0))


def test_mel_term_reads_the_low_bands_course_and_ignores_what_lies_60_db_down():
    """`mel_loss_weight`: the "recon/mel" term is zero for the original itself, grows with a
    spectral error in the partials' region, ignores content more than 60 dB below the crop's
    peak, is weighted by the config and carries gradient to the decoder; bad weights refused."""
    import dataclasses
    import math

    import pytest

    from synth.errors import ConfigError
    from synth.registry import build

    torch.manual_seed(0)
    base = build("ddsp", debug=True)
    m = build("ddsp", dataclasses.replace(base.config, mel_loss_weight=2.0))
    sr = m.sample_rate
    t = torch.arange(sr // 2) / sr
    tone = lambda f, a: a * torch.sin(2 * math.pi * f * t)[None]  # noqa: E731
    note = tone(200.0, 0.5) + tone(400.0, 0.25)
    assert float(m.mel_distance(note, note)) == 0.0
    darker = tone(200.0, 0.5) + tone(400.0, 0.05)
    darkest = tone(200.0, 0.5) + tone(400.0, 0.01)
    assert 0 < float(m.mel_distance(darker, note)) < float(m.mel_distance(darkest, note))
    whisper = note + tone(3000.0, 0.5 * 10 ** (-80 / 20))  # 80 dB down: below the floor
    assert float(m.mel_distance(whisper, note)) < 1e-3 * float(m.mel_distance(darker, note))
    assert m.loss_weights()["recon/mel"] == 2.0
    out = m.training_step(m.example_batch(2, torch.Generator().manual_seed(1)))
    assert "recon/mel" in out and "recon/mel" not in base.training_step(
        base.example_batch(2, torch.Generator().manual_seed(1)))
    out["recon/mel"].backward()
    assert m.dense.weight.grad.abs().sum() > 0
    for bad in (-1.0, float("nan")):
        with pytest.raises(ConfigError, match="mel_loss_weight"):
            dataclasses.replace(m.config, mel_loss_weight=bad)


def test_static_noise_term_recovers_a_noise_filter_without_the_draws_bias(model):
    """The static noise term compares crop-mean log powers per band: fitted to noise drawn
    through a known filter by one free gain on that filter, it finds the gain within 0.6 dB of
    power (the mean log of a random draw lies about 1.2 dB below the log of its power at 257
    bands; the term corrects for that, `_log_draw_bias`); a per-frame wobble of the model's noise
    that averages out over the crop costs it little, a static 6 dB error much more."""
    bands, frames = 257, 80
    model = build("ddsp", {**model.config.__dict__, "n_noise_bands": bands, "noise_window": 256})
    shape = torch.exp(-0.5 * ((torch.arange(bands) - 90.0) / 60.0) ** 2) + 0.2
    true = (0.01 * shape).expand(2, frames, bands).contiguous()
    n = frames * model.hop_length
    ctl = model.get_controls(torch.full((2, frames), 220.0), torch.full((2, frames), -30.0),
                             torch.zeros(2, frames, model.latent_dim))[0]
    audio = model.get_parts(ctl, true, n, generator=7)[1]
    silent = torch.zeros_like(audio)
    assert model._log_draw_bias(bands) < -0.2  # 2 bins a band: the draw's log is well below
    log_gain = torch.tensor(math.log(0.25), requires_grad=True)
    opt = torch.optim.Adam([log_gain], lr=0.05)
    for _ in range(150):
        loss = model._noise_losses(audio, silent, true * log_gain.exp())[2]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(20 * float(log_gain.detach()) / math.log(10)) < 0.6
    wobble = torch.where(torch.arange(frames) % 2 == 0, 1.3, 1 / 1.3)[None, :, None]
    static = float(model._noise_losses(audio, silent, true)[2])
    assert float(model._noise_losses(audio, silent, true * wobble)[2]) < static + 0.05
    assert float(model._noise_losses(audio, silent, true * 2.0)[2]) > static + 0.5


def test_perceptual_term_reads_a_frozen_classifier_outside_the_models_weights(tmp_path):
    """`perceptual_loss_weight`: the "percep/features" term is zero for the original itself,
    grows with a timbre error, carries gradient to the decoder and none to the classifier,
    whose weights stay out of the model's state (a saved model is the same size with it);
    a classifier at another rate, a path that is not a classifier or a missing path is refused
    with one clear error."""
    import dataclasses
    import math

    import pytest

    from latent.metrics.classifier import ClassifierConfig, NoteClassifier
    from synth.checkpoint import save_model
    from synth.errors import ConfigError, SynthStudioError
    from synth.features import FeatureSpec
    from synth.registry import build

    torch.manual_seed(0)
    base = build("ddsp", debug=True)
    sr = base.sample_rate
    clf = NoteClassifier(ClassifierConfig(
        sample_rate=sr, feature_spec=FeatureSpec(sample_rate=sr, n_fft=256, hop_length=64,
                                                 n_mels=16, f_max=sr / 2),
        channels=(4, 4, 8, 8), embed_dim=16))
    path = save_model(clf, tmp_path / "judge.safetensors")
    m = build("ddsp", dataclasses.replace(base.config, perceptual_loss_weight=0.5,
                                          perceptual_model=str(path)))
    t = torch.arange(sr // 2) / sr
    tone = lambda f, a: a * torch.sin(2 * math.pi * f * t)[None]  # noqa: E731
    note = tone(200.0, 0.5) + tone(400.0, 0.25) + tone(600.0, 0.1)
    assert float(m.perceptual_distance(note, note)) == 0.0
    near = tone(200.0, 0.5) + tone(400.0, 0.2) + tone(600.0, 0.1)
    far = tone(200.0, 0.5) + tone(1400.0, 0.25) + tone(2600.0, 0.1)
    assert 0 < float(m.perceptual_distance(near, note)) < float(m.perceptual_distance(far, note))
    assert m.loss_weights()["percep/features"] == 0.5
    out = m.training_step(m.example_batch(2, torch.Generator().manual_seed(1)))
    out["percep/features"].backward()
    assert m.dense.weight.grad.abs().sum() > 0
    judge = m.perceptual_net()
    assert all(p.grad is None and not p.requires_grad for p in judge.parameters())
    assert not any(k.startswith("_perceptual") for k in m.state_dict())
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in base.parameters())
    # the activations end in the embedding the metrics use
    assert torch.equal(clf.activations(note)[-1], clf.features(note))
    with pytest.raises(ConfigError, match="perceptual_model"):
        dataclasses.replace(base.config, perceptual_loss_weight=1.0)
    other = NoteClassifier(NoteClassifier.debug_config())  # 16 kHz
    wrong_rate = save_model(other, tmp_path / "judge16k.safetensors")
    ddsp_path = save_model(base, tmp_path / "notajudge.safetensors")
    for bad, match in ((wrong_rate, "Hz"), (ddsp_path, "not a note classifier"),
                       (tmp_path / "missing.safetensors", "not found")):
        mm = build("ddsp", dataclasses.replace(base.config, perceptual_loss_weight=1.0,
                                               perceptual_model=str(bad)))
        with pytest.raises(SynthStudioError, match=match):
            mm.training_step(mm.example_batch(2, torch.Generator().manual_seed(1)))


def _debug_judge(sr: int):
    from latent.metrics.classifier import ClassifierConfig, NoteClassifier
    from synth.features import FeatureSpec

    torch.manual_seed(3)
    return NoteClassifier(ClassifierConfig(
        sample_rate=sr, feature_spec=FeatureSpec(sample_rate=sr, n_fft=256, hop_length=64,
                                                 n_mels=16, f_max=sr / 2),
        channels=(4, 4, 8, 8), embed_dim=16))


def test_refine_latent_lowers_its_objective_and_leaves_the_model_alone(tmp_path):
    """`refine_latent`: zero steps give the starting z; on notes the model made from a known
    z, 40 steps from another z close most of the gap in the objective it minimises (spectral
    + perceptual, measured with one fixed noise draw), without touching the model's weights
    or their gradient flags; the
    spectral-only refinement loads no judge; bad audio and a judge that is not a classifier
    at the model's rate are refused with one clear error."""
    from synth.checkpoint import save_model
    from synth.ddsp_play import RefineOptions, refine_latent
    from synth.errors import AudioError
    from synth.losses import multiscale_spectral_loss
    from synth.pitch import midi_to_hz
    from synth.registry import build

    torch.manual_seed(0)
    model = build("ddsp", debug=True).eval()
    sr, hop = model.sample_rate, model.hop_length
    judge_path = save_model(_debug_judge(sr), tmp_path / "judge.safetensors")
    frames = 40
    f0 = midi_to_hz(torch.tensor([57.0, 64.0]))[:, None].expand(-1, frames)
    ld = torch.linspace(-20.0, -30.0, frames).expand(2, -1)
    z_true = torch.tensor([[1.5, -1.0, 0.5, 2.0], [-2.0, 1.0, 1.5, -0.5]])
    with torch.no_grad():
        audio = model.synthesize(f0, ld, z_true, n_samples=frames * hop, match_loudness=False,
                                 generator=torch.Generator().manual_seed(5))
    z0 = torch.zeros_like(z_true)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    opts = RefineOptions(steps=40, lr=0.3, perceptual_weight=2.0, judge=str(judge_path))
    assert torch.equal(refine_latent(model, audio, f0, ld, z0,
                                     RefineOptions(steps=0, judge=str(judge_path))), z0)
    z = refine_latent(model, audio, f0, ld, z0, opts)
    judge = _debug_judge(sr)

    def objective(zz):
        with torch.no_grad():
            rec = model.synthesize(f0, ld, zz, n_samples=audio.shape[-1], match_loudness=False,
                                   generator=torch.Generator().manual_seed(99))
            return float(multiscale_spectral_loss(rec, audio, fft_sizes=model.config.fft_sizes)
                         + 2.0 * model.perceptual_distance(rec, audio, judge))

    assert z.shape == z0.shape and not z.requires_grad
    gap = objective(z0) - objective(z_true)
    assert gap > 0 and objective(z) < objective(z_true) + 0.5 * gap
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags
    spectral = refine_latent(model, audio, f0, ld, z0, RefineOptions(
        steps=2, perceptual_weight=0.0, judge=str(tmp_path / "absent.safetensors")))
    assert not torch.equal(spectral, z0)
    with pytest.raises(AudioError, match="frames x hop"):
        refine_latent(model, audio[:, :-1], f0, ld, z0, opts)
    ddsp_path = save_model(model, tmp_path / "notajudge.safetensors")
    with pytest.raises(ConfigError, match="note classifier"):
        refine_latent(model, audio, f0, ld, z0, RefineOptions(steps=1, judge=str(ddsp_path)))
    with pytest.raises(ConfigError, match="global z"):
        refine_latent(model, audio, f0, ld, z0[..., None].expand(-1, -1, frames), opts)
    with pytest.raises(ConfigError, match="steps"):
        RefineOptions(steps=-1)


def test_spectral_offsets_play_what_one_z_cannot_and_refine_finds_them(tmp_path):
    """`SpectralOffsets`: zeros give the same bytes as none; a harmonic offset of y on one
    partial raises that partial by up to 20 y dB (exp_sigmoid, the docstring's rule) and leaves
    the others within 1 dB once the level is matched; wrong shapes and NaN are one error. On
    notes made from a known z plus a known correction, `refine_note` with offsets closes more
    of the gap in its objective than z alone (`refine_latent`) in the same steps, and reports
    the correction's shapes."""
    from synth.ddsp import SpectralOffsets
    from synth.ddsp_play import RefineOptions, refine_latent, refine_note
    from synth.losses import multiscale_spectral_loss
    from synth.partials import partial_amplitudes
    from synth.pitch import midi_to_hz
    from synth.registry import build

    torch.manual_seed(0)
    model = build("ddsp", debug=True).eval()
    sr, hop, h = model.sample_rate, model.hop_length, model.config.n_harmonics
    frames = 40
    f0 = midi_to_hz(torch.tensor([45.0, 52.0]))[:, None].expand(-1, frames)
    ld = torch.full((2, frames), -25.0)
    z = torch.tensor([[1.5, -1.0, 0.5, 2.0], [-2.0, 1.0, 1.5, -0.5]])

    def play(offsets, zz=z, seed=5):
        with torch.no_grad():
            return model.synthesize(f0, ld, zz, n_samples=frames * hop, match_loudness=False,
                                    generator=torch.Generator().manual_seed(seed),
                                    offsets=offsets, controls={"noise_db": -60.0})

    zero = SpectralOffsets.zeros(2, h)
    assert torch.equal(play(zero), play(None))
    bump = torch.zeros(2, h)
    bump[:, 2] = 0.5                                   # partial 3 up by up to 10 dB
    lifted = play(SpectralOffsets(bump, zero.noise))
    plain = play(None)
    def levels(x):  # (B, h) partial amplitudes over the middle of the note
        return partial_amplitudes(x, f0[:, 0], sr, 256, 10, h, n_fft=1024)[:, 3:7].mean(1)

    db = 20 * torch.log10(levels(lifted) / levels(plain))
    rest = torch.cat([db[:, :2], db[:, 3:]], dim=1)
    shift = (db[:, 2:3] - rest.median(dim=1, keepdim=True).values)
    assert ((shift > 3.0) & (shift < 10.5)).all()   # at most 20 y dB
    assert (rest - rest.median(dim=1, keepdim=True).values).abs().max() < 1.0
    with pytest.raises(ConfigError, match="spectral offsets"):
        play(SpectralOffsets(torch.zeros(2, h + 1), zero.noise))
    with pytest.raises(ConfigError, match="finite"):
        play(SpectralOffsets(torch.full((2, h), float("nan")), zero.noise))

    true = SpectralOffsets(torch.randn(2, h) * 0.4, torch.randn(2, 5) * 0.5)
    with torch.no_grad():
        audio = model.synthesize(f0, ld, z, n_samples=frames * hop, match_loudness=False,
                                 generator=torch.Generator().manual_seed(5), offsets=true)
    opts = RefineOptions(steps=40, lr=0.1, perceptual_weight=0.0)
    z0 = torch.zeros_like(z)
    z_alone = refine_latent(model, audio, f0, ld, z0, opts)
    z_both, found = refine_note(model, audio, f0, ld, z0, opts)
    assert found.harmonic.shape == (2, h) and found.noise.shape[0] == 2
    assert not found.harmonic.requires_grad

    def objective(zz, offsets):
        with torch.no_grad():
            rec = model.synthesize(f0, ld, zz, n_samples=audio.shape[-1], match_loudness=False,
                                   generator=torch.Generator().manual_seed(99), offsets=offsets)
            return float(multiscale_spectral_loss(rec, audio, fft_sizes=model.config.fft_sizes))

    start = objective(z0, None)
    assert objective(z_both, found) < objective(z_alone, None) < start


def test_long_recordings_refine_on_their_loudest_stretch(monkeypatch):
    """`RefineOptions.max_seconds`: a recording longer than it is refined on the stretch of that
    length with the most loudness (`loudest_window`: the earliest on ties, 0 when it all fits),
    with audio, f0 and loudness cut on the same frames; a shorter one is refined whole; a
    non-positive limit is one error, and so is a recording too short to play."""
    import synth.ddsp_play as play
    from synth.ddsp import LOUDNESS_FLOOR_DB
    from synth.ddsp_play import RefineOptions, loudest_window, recording_curves, recording_timbre
    from synth.errors import AudioError

    floor = LOUDNESS_FLOOR_DB
    ld = torch.full((20,), floor - 5.0)
    ld[12:16] = -20.0
    assert loudest_window(ld, 4) == 12 and loudest_window(ld, 30) == 0
    assert loudest_window(torch.full((10,), -30.0), 3) == 0      # ties: the earliest
    ld[3] = -10.0                                                # one loud frame loses to four
    assert loudest_window(ld, 4) == 12

    torch.manual_seed(0)
    model = build("ddsp", debug=True).eval()
    sr, hop = model.sample_rate, model.hop_length
    t = torch.arange(3 * sr) / sr
    audio = 1e-4 * torch.randn(3 * sr)                          # quiet, then a tone at 2-3 s
    audio[2 * sr:] += 0.5 * torch.sin(2 * torch.pi * 220.0 * t[2 * sr:])
    curves = recording_curves(model, audio)
    x, f0, ld = curves
    seen = []

    def spy(model_, a, f, loud, z, options, seed):
        seen.append((a, f, loud))
        return z, None

    monkeypatch.setattr(play, "refine_note", spy)
    recording_timbre(model, audio, RefineOptions(steps=1, max_seconds=0.5), curves=curves)
    a, f, loud = seen[-1]
    frames = int(0.5 * sr / hop)
    start = (x[0].abs() > 0.1).nonzero()[0, 0] // hop            # the tone's first frame
    assert f.shape == loud.shape == (1, frames) and a.shape == (1, frames * hop)
    first = loudest_window(ld[0], frames)
    assert first >= start - 1                                    # the stretch lies in the tone
    assert torch.equal(a, x[:, first * hop:(first + frames) * hop])
    assert torch.equal(f, f0[:, first:first + frames])
    assert torch.equal(loud, ld[:, first:first + frames])
    recording_timbre(model, audio, RefineOptions(steps=1), curves=curves)
    assert seen[-1][0].shape == x.shape                          # 3 s < 10 s: whole
    with pytest.raises(ConfigError, match="max_seconds"):
        RefineOptions(max_seconds=0)
    with pytest.raises(AudioError, match=f"at least {4 * hop} samples"):   # too short to play
        recording_curves(model, torch.zeros(4 * hop - 1))


def test_hold_unvoiced_carries_the_last_voiced_pitch():
    """Resynthesis plays unvoiced frames at the voiced pitch before them (the first voiced one
    at the start); a track with no voiced frame is left as it is."""
    from synth.ddsp_play import hold_unvoiced

    f0 = torch.tensor([[900.0, 220.0, 35.0, 1800.0, 330.0, 50.0], [80.0, 90.0, 100.0, 0, 0, 0]])
    voiced = torch.tensor([[0, 1, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0]]).bool()
    assert hold_unvoiced(f0, voiced).tolist() == [[220.0, 220.0, 220.0, 220.0, 330.0, 330.0],
                                                  [80.0, 90.0, 100.0, 0, 0, 0]]
