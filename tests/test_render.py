"""`synthstudio render` through the library and the CLI with a tiny DDSP checkpoint."""

import json
import os
import subprocess
import sys

import mido
import numpy as np
import pytest
import soundfile as sf
import torch

from synth.checkpoint import save_model
from synth.registry import build
from studio.render import DEFAULT_REFINE_STEPS, RenderRequest, render, render_from_manifest


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "tiny-ddsp.safetensors"
    save_model(build("ddsp", debug=True), path)
    return path


def midi_file(path, notes):
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    for pitch in notes:
        track.append(mido.Message("note_on", note=pitch, velocity=100, time=0))
        track.append(mido.Message("note_off", note=pitch, velocity=0, time=240))
    mid.save(path)
    return path


def test_note_render_and_manifest_reproduce_bit_for_bit(model_path, tmp_path):
    out = tmp_path / "note.wav"
    manifest = render(RenderRequest(model=str(model_path), out=str(out), pitch=64, duration=0.5,
                                    controls={"brightness": 3.0}, seed=4, bit_depth=24))
    audio, sr = sf.read(out)
    assert sr == 8000 and len(audio) == pytest.approx(4000, abs=64)
    info = sf.info(out)
    assert info.subtype == "PCM_24"
    assert json.loads((tmp_path / "note.wav.json").read_text())["model_hash"] == manifest["model_hash"]
    again = tmp_path / "again.wav"
    render_from_manifest(tmp_path / "note.wav.json", str(again))
    assert again.read_bytes() == out.read_bytes()


def test_render_audio_and_midi_at_another_rate(model_path, tmp_path):
    t = np.arange(8000) / 8000
    sf.write(tmp_path / "in.wav", 0.3 * np.sin(2 * np.pi * 330 * t), 8000)
    m = render(RenderRequest(model=str(model_path), out=str(tmp_path / "a.wav"),
                             audio=str(tmp_path / "in.wav"), sample_rate=16000))
    assert m["sample_rate"] == 16000 and m["seconds"] == pytest.approx(1.0, abs=0.05)
    torch.manual_seed(99)  # the transfer's noise comes from the request's seed, not the global RNG
    render_from_manifest(tmp_path / "a.wav.json", str(tmp_path / "again.wav"))
    assert (tmp_path / "again.wav").read_bytes() == (tmp_path / "a.wav").read_bytes()
    mid = midi_file(tmp_path / "m.mid", [60, 64, 67])
    m = render(RenderRequest(model=str(model_path), out=str(tmp_path / "m.wav"), midi=str(mid)))
    assert m["seconds"] >= 0.75


def cli(*args):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "studio.cli", "render", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_cli_errors_are_one_line_and_leave_nothing(model_path, tmp_path):
    empty = tmp_path / "empty.mid"
    mido.MidiFile().save(empty)
    cases = [
        (["--model", str(model_path), "--audio", str(tmp_path / "missing.wav")], "not found"),
        (["--model", "no-such-model", "--pitch", "60"], "unknown model"),
        (["--model", str(model_path), "--midi", str(empty)], "no notes"),
        (["--model", str(model_path), "--pitch", "60", "--midi", str(empty)], "exactly one"),
        (["--model", str(model_path), "--pitch", "60", "--bit-depth", "12"], "bit depth"),
        (["--model", str(model_path), "--pitch", "60", "--control", "brightness"], "NAME=NUMBER"),
    ]
    for args, needle in cases:
        out = tmp_path / "x.wav"
        res = cli(*args, "--out", str(out))
        lines = [x for x in res.stderr.splitlines() if x.strip()]
        assert res.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, res.stderr)
        assert not out.exists() and not (tmp_path / "x.wav.json").exists()
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    res = cli("--model", str(model_path), "--pitch", "60", "--out", str(blocker / "y.wav"))
    assert res.returncode == 2 and "cannot write audio" in res.stderr
    assert blocker.read_text().startswith("a file")

def test_cli_renders_a_note(model_path, tmp_path):
    res = cli("--model", str(model_path), "--pitch", "62", "--duration", "0.3",
              "--out", str(tmp_path / "n.wav"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "n.wav").exists() and (tmp_path / "n.wav.json").exists()


def test_mel_roundtrip_through_griffinlim_and_bad_mels(tmp_path):
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "tone.wav", 0.4 * np.sin(2 * np.pi * 440 * t), 16000)
    mel_cmd = [sys.executable, "-m", "studio.cli", "mel", str(tmp_path / "tone.wav"),
               "--out", str(tmp_path / "tone.npy")]
    assert subprocess.run(mel_cmd, capture_output=True, timeout=120).returncode == 0
    res = cli("--mel", str(tmp_path / "tone.npy"), "--vocoder", "griffinlim",
              "--out", str(tmp_path / "gl.wav"))
    assert res.returncode == 0, res.stderr
    audio, sr = sf.read(tmp_path / "gl.wav")
    peak = np.abs(np.fft.rfft(audio)).argmax() * sr / len(audio)
    assert sr == 16000 and abs(peak - 440) < 5
    mel = np.load(tmp_path / "tone.npy")
    np.save(tmp_path / "short.npy", mel[:40])
    (tmp_path / "short.json").write_text((tmp_path / "tone.json").read_text())
    np.save(tmp_path / "nospec.npy", mel)
    bad = mel.copy()
    bad[0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    (tmp_path / "nan.json").write_text((tmp_path / "tone.json").read_text())
    for name, needle in (("short", "shape"), ("nospec", "sidecar"), ("nan", "NaN"),
                         ("missing", "not found")):
        res = cli("--mel", str(tmp_path / f"{name}.npy"), "--out", str(tmp_path / "o.wav"))
        assert res.returncode == 2 and needle in res.stderr, (name, res.stderr)
        assert not (tmp_path / "o.wav").exists()


def test_generic_render_contract_for_a_non_ddsp_generator(tmp_path):
    """The additive reference generator goes through Generator.render: seeded, resampled,
    pcK controls move the latent, unknown controls are refused; MIDI sums voices."""
    from synth.base import Conditions
    from synth.errors import ConfigError
    from synth.play import MidiNote, render_midi

    model = build("additive", debug=True).eval()
    z = model.latent_mean[None].clone()
    cond = Conditions.note(60, 100, duration=0.5)
    a = model.render(z, cond, seed=3)
    assert torch.equal(a, model.render(z, cond, seed=3))
    up = model.render(z, cond, sample_rate=model.sample_rate * 2, seed=3)
    assert abs(up.shape[-1] - 2 * a.shape[-1]) <= 2
    moved = model.render(z, cond, controls={"pc1": 2.0}, seed=3)
    assert not torch.allclose(moved, a)
    assert torch.allclose(model.to_pca(model.apply_controls(z, {"pc1": 2.0}))[0, 0], torch.tensor(2.0))
    with pytest.raises(ConfigError, match="no control"):
        model.render(z, cond, controls={"wobble": 1.0})
    notes = [MidiNote(60, 100, 0.0, 0.25), MidiNote(64, 100, 0.0, 0.25), MidiNote(67, 90, 0.25, 0.5)]
    mix = render_midi(model, notes, release=0.0)
    first = model.render(z, Conditions.note(60, 100, duration=0.25), seed=0)[0]
    second = model.render(z, Conditions.note(64, 100, duration=0.25), seed=1)[0]
    n = min(first.numel(), second.numel())
    assert torch.allclose(mix[:n], first[:n] + second[:n], atol=1e-5)


# -- --text -------------------------------------------------------------------------------------
def test_text_render_on_the_bundled_model_parses_the_note_and_reproduces(tmp_path, monkeypatch):
    import dataclasses

    import studio.render as sr

    text = "bright plucked bass C2 soft"
    out = tmp_path / "bass.wav"
    req = RenderRequest(model="ddsp-gm", out=str(out), text=text, duration=0.25, seed=2)
    manifest = render(req)
    t = manifest["text"]
    assert (t["text"], t["pitch"], t["velocity"]) == (text, 36.0, 40.0)
    assert t["hints"] == {"pitch": 36.0, "velocity": 40}
    assert t["mapper"] == "ddsp-gm.text.safetensors" and t["temperature"] == 0.5
    assert t["latent"] == manifest["latent"] and len(manifest["latent"]) \
        == sr.load_generator("ddsp-gm")[0].latent_dim
    assert manifest["latent"] != sr.load_generator("ddsp-gm")[0].latent_mean.tolist()
    audio, rate = sf.read(out)
    assert rate == 16000 and len(audio) == pytest.approx(4000, abs=400) and np.abs(audio).max() > 0
    # The mapping is deterministic: a fresh render (embedding the text again) gives the same bytes.
    fresh = render(dataclasses.replace(req, out=str(tmp_path / "fresh.wav")))
    assert fresh["latent"] == manifest["latent"]
    assert (tmp_path / "fresh.wav").read_bytes() == out.read_bytes()
    # Reproduction reuses the recorded latent: the text model is not consulted at all.
    def no_text_model(*args, **kwargs):
        raise AssertionError("reproduction embedded the text again")

    monkeypatch.setattr(sr, "text_to_conditions", no_text_model)
    again = render_from_manifest(tmp_path / "bass.wav.json", str(tmp_path / "again.wav"))
    assert (tmp_path / "again.wav").read_bytes() == out.read_bytes()
    assert again["text"] == manifest["text"] and again["latent"] == manifest["latent"]


def test_text_note_defaults_hints_and_explicit_overrides():
    from studio.render import text_note

    def note(text, **kw):
        return text_note(RenderRequest(model="m", out="o.wav", text=text, **kw))[:2]

    assert note("bright plucked bass C2 soft") == (36.0, 40.0)
    assert note("warm pad") == (60.0, 100.0)
    assert note("a low pad, loud") == (40.0, 110.0)
    assert note("bright plucked bass C2 soft", pitch=50, velocity=90) == (50.0, 90.0)
    with pytest.raises(Exception, match="exactly one"):
        RenderRequest(model="m", out="o.wav", text="pad", midi="x.mid").source()
    with pytest.raises(Exception, match="only applies to --text"):
        RenderRequest(model="m", out="o.wav", pitch=60, temperature=0.0).validate()


def test_cli_text_errors_are_one_line(model_path, tmp_path):
    out = tmp_path / "t.wav"
    for args, needle in (
        (["--model", str(model_path), "--text", "soft bass"], "no text mapper"),
        (["--text", "soft bass", "--audio", str(out)], "exactly one"),
        (["--batch", str(tmp_path / "b.csv"), "--pitch", "60"], "drop --pitch"),
    ):
        res = cli(*args, "--out", str(out)) if "--batch" not in args else cli(*args)
        lines = [x for x in res.stderr.splitlines() if x.strip()]
        assert res.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, res.stderr)
        assert not out.exists() and not (tmp_path / "t.wav.json").exists()


# -- --batch ------------------------------------------------------------------------------------
def test_batch_csv_renders_every_row_loading_the_model_once(model_path, tmp_path, monkeypatch):
    import dataclasses

    import studio.render as sr
    from studio.render import BATCH_FIELDS, render_batch

    assert set(BATCH_FIELDS) == {f.name for f in dataclasses.fields(RenderRequest)}
    folder = tmp_path / "job"
    folder.mkdir()
    midi_file(folder / "line.mid", [60, 62])
    (folder / "z.json").write_text(json.dumps([0.0] * 4))
    (folder / "list.csv").write_text(
        "model,out,pitch,midi,duration,seed,bit_depth,controls,latent\n"
        f"{model_path},wav/one.wav,60,,0.25,1,16,,\n"
        f'{model_path},wav/two.wav,64.5,,0.25,2,24,"{{""brightness"": 3}}",z.json\n'
        f"{model_path},wav/three.wav,,line.mid,,,,,\n")
    loads = []
    real_load = sr.load_model
    monkeypatch.setattr(sr, "load_model", lambda path: loads.append(path) or real_load(path))
    manifests = render_batch(folder / "list.csv", progress=False)
    assert len(loads) == 1 and len(manifests) == 3
    for name in ("one", "two", "three"):
        wav = folder / "wav" / f"{name}.wav"
        assert sf.info(wav).samplerate == 8000
        assert json.loads((folder / "wav" / f"{name}.wav.json").read_text())["request"]["out"] \
            == str(wav)
    assert sf.info(folder / "wav" / "one.wav").subtype == "PCM_16"
    assert manifests[1]["request"]["controls"] == {"brightness": 3.0}
    assert manifests[1]["request"]["pitch"] == 64.5 and manifests[1]["latent"] == [0.0] * 4
    assert manifests[2]["request"]["midi"] == str(folder / "line.mid")


def test_batch_bad_rows_name_the_row_and_keep_finished_rows(model_path, tmp_path):
    from studio.render import render_batch
    from synth.errors import SynthStudioError

    # A row that cannot be parsed fails before anything renders.
    (tmp_path / "bad.csv").write_text(f"model,out,pitch\n{model_path},a.wav,60\n"
                                      f"{model_path},b.wav,sixty\n")
    with pytest.raises(SynthStudioError, match=r"row 2: pitch: expected a number"):
        render_batch(tmp_path / "bad.csv", progress=False)
    (tmp_path / "dup.csv").write_text("out,pitch\na.wav,60\na.wav,62\n")
    with pytest.raises(SynthStudioError, match=r"row 2: out .* also row 1"):
        render_batch(tmp_path / "dup.csv", progress=False)
    assert not (tmp_path / "a.wav").exists()
    # A row that fails while rendering stops the batch; the rows before it are complete.
    rows = [{"model": str(model_path), "out": "ok.wav", "pitch": 60, "duration": 0.25},
            {"model": "no-such-model", "out": "bad.wav", "pitch": 60},
            {"model": str(model_path), "out": "never.wav", "pitch": 62}]
    (tmp_path / "list.json").write_text(json.dumps(rows))
    res = cli("--batch", str(tmp_path / "list.json"))
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "row 2" in lines[0] and "unknown model" in lines[0]
    assert sf.info(tmp_path / "ok.wav").frames > 0
    assert json.loads((tmp_path / "ok.wav.json").read_text())["request"]["pitch"] == 60
    assert not list(tmp_path.glob("bad.wav*")) and not list(tmp_path.glob("never.wav*"))
    assert not list(tmp_path.glob(".*tmp*"))


def test_vae_renders_audio_by_encode_decode_and_midi(tmp_path):
    """A mel-domain autoencoder through the same commands: a recording is pitch-tracked, encoded
    and decoded (cut to the model's note length); MIDI notes become summed voices."""
    torch.manual_seed(0)
    model = build("vae", debug=True)
    path = save_model(model, tmp_path / "tiny-vae.safetensors")
    sr = model.sample_rate
    t = np.arange(int(1.5 * sr)) / sr  # longer than the debug model's note
    sf.write(tmp_path / "in.wav", 0.3 * np.sin(2 * np.pi * 440 * t), sr)
    m = render(RenderRequest(model=str(path), out=str(tmp_path / "a.wav"), audio=str(tmp_path / "in.wav")))
    assert m["seconds"] == pytest.approx(model.max_duration, abs=0.01)
    audio, _ = sf.read(tmp_path / "a.wav")
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    mid = midi_file(tmp_path / "m.mid", [60, 64])
    m = render(RenderRequest(model=str(path), out=str(tmp_path / "m.wav"), midi=str(mid)))
    assert m["seconds"] > 0.5


def test_vqvae_notes_default_to_a_prior_sample_and_take_a_flat_code_latent(tmp_path):
    """A sequence-latent model (VQ-VAE, latent (D, F')) renders a note with no latent given
    (its prior draws the codes, seeded, so the manifest re-renders the same bytes), takes an
    explicit latent as a flat list of D x F' values (what the manifest records), and names the
    shape it needs when the count is wrong."""
    from synth.errors import ConfigError

    torch.manual_seed(0)
    model = build("vqvae", debug=True)
    path = save_model(model, tmp_path / "tiny-vq.safetensors")
    out = tmp_path / "q.wav"
    m = render(RenderRequest(model=str(path), out=str(out), pitch=62, duration=0.4, seed=4))
    d, f = model.latent_dim, model.code_frames
    assert len(m["latent"]) == d * f
    again = render_from_manifest(str(out) + ".json", out=str(tmp_path / "q2.wav"))
    assert (tmp_path / "q2.wav").read_bytes() == out.read_bytes() and again["latent"] == m["latent"]
    other = render(RenderRequest(model=str(path), out=str(tmp_path / "q3.wav"), pitch=62, duration=0.4, seed=5))
    assert other["latent"] != m["latent"]  # another seed, other codes
    given = render(RenderRequest(model=str(path), out=str(tmp_path / "q4.wav"), pitch=62,
                                 duration=0.4, latent=m["latent"]))
    assert given["latent"] == m["latent"]
    with pytest.raises(ConfigError, match=f"needs {d} x {f}"):
        render(RenderRequest(model=str(path), out=str(tmp_path / "q5.wav"), pitch=62, duration=0.4,
                                    latent=[0.0] * d))


# -- --audio --resynth ----------------------------------------------------------------------------
def _median_f0(path):
    from synth.pitch import f0

    audio, sr = sf.read(path)
    track = f0(torch.from_numpy(audio).float()[None], sr, hop_length=160, model="tiny")
    voiced = track.periodicity[0] > 0.5
    return float(track.f0_hz[0][voiced].median())


def test_resynthesis_keeps_the_recordings_pitch_refines_and_reproduces(tmp_path, monkeypatch):
    """`render --audio --resynth [--refine N]` on the bundled model: the output stays at the
    recording's pitch where timbre transfer (auto-adjust) moves a low tone up an octave; the
    refined latent differs from the encoder's and is recorded with its spectral offsets, and
    reproduction reuses both (the refinement is not run again) bit for bit; the offsets are
    played (dropping them from the manifest changes the render); a mangled record is one error."""
    import dataclasses

    import synth.ddsp_play as play
    from synth.errors import SynthStudioError

    sr, f = 16000, 110.0
    t = np.arange(sr) / sr
    tone = sum(0.3 / k * np.sin(2 * np.pi * k * f * t) for k in range(1, 9))
    tone *= np.minimum(1.0, t / 0.02) * np.exp(-1.5 * t)
    sf.write(tmp_path / "low.wav", tone, sr)
    base = RenderRequest(model="ddsp-gm", out=str(tmp_path / "transfer.wav"),
                         audio=str(tmp_path / "low.wav"))
    render(base)
    own = render(dataclasses.replace(base, out=str(tmp_path / "own.wav"), resynth=True,
                                     refine=0))
    refined = render(dataclasses.replace(base, out=str(tmp_path / "refined.wav"), resynth=True,
                                         refine=3))
    assert abs(1200 * np.log2(_median_f0(tmp_path / "transfer.wav") / (2 * f))) < 30
    for name in ("own", "refined"):
        assert abs(1200 * np.log2(_median_f0(tmp_path / f"{name}.wav") / f)) < 30, name
    assert own["resynth"]["refine"] is None and refined["resynth"]["refine"]["steps"] == 3
    assert refined["latent"] == refined["resynth"]["latent"] != own["latent"]
    offsets = refined["resynth"]["offsets"]
    assert own["resynth"]["offsets"] is None and len(offsets["harmonic"]) == 60
    assert len(offsets["noise"]) >= 2 and any(abs(v) > 1e-3 for v in offsets["harmonic"])

    def no_refine(*args, **kwargs):
        raise AssertionError("reproduction refined the latent again")

    monkeypatch.setattr(play, "refine_note", no_refine)
    monkeypatch.setattr(play, "refine_latent", no_refine)
    again = render_from_manifest(tmp_path / "refined.wav.json", str(tmp_path / "again.wav"))
    assert (tmp_path / "again.wav").read_bytes() == (tmp_path / "refined.wav").read_bytes()
    assert again["resynth"] == refined["resynth"]
    data = json.loads((tmp_path / "refined.wav.json").read_text())
    # without --refine, the CLI refines by DEFAULT_REFINE_STEPS, and says so
    res = cli("--model", "ddsp-gm", "--audio", str(tmp_path / "low.wav"), "--resynth",
              "--out", str(tmp_path / "default.wav"))
    assert res.returncode == 0, res.stderr
    assert f"refined by {DEFAULT_REFINE_STEPS} steps" in " ".join(res.stdout.split())
    record = json.loads((tmp_path / "default.wav.json").read_text())["resynth"]
    assert record["refine"]["steps"] == DEFAULT_REFINE_STEPS and record["offsets"] is not None
    # its manifest (request refine null) reproduces the bytes through the CLI (same threads)
    # and keeps the record of what refined
    res = cli("--from-manifest", str(tmp_path / "default.wav.json"),
              "--out", str(tmp_path / "default2.wav"))
    assert res.returncode == 0 and "from the manifest (refined by" in res.stdout, res.stderr
    assert (tmp_path / "default2.wav").read_bytes() == (tmp_path / "default.wav").read_bytes()
    assert json.loads((tmp_path / "default2.wav.json").read_text())["resynth"] == record
    data["resynth"]["offsets"] = None
    (tmp_path / "plain.json").write_text(json.dumps(data))
    render_from_manifest(tmp_path / "plain.json", str(tmp_path / "plain.wav"))
    assert (tmp_path / "plain.wav").read_bytes() != (tmp_path / "refined.wav").read_bytes()
    data["resynth"]["offsets"] = {"harmonic": [0.0] * 7, "noise": [0.0] * 24}
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(SynthStudioError, match="offsets"):
        render_from_manifest(tmp_path / "bad.json", str(tmp_path / "bad.wav"))
    assert not (tmp_path / "bad.wav").exists()
    data["resynth"]["offsets"] = {"harmonic": "loud", "noise": [0.0, 0.0]}
    (tmp_path / "unreadable.json").write_text(json.dumps(data))
    with pytest.raises(SynthStudioError, match="unreadable spectral offsets"):
        render_from_manifest(tmp_path / "unreadable.json", str(tmp_path / "unreadable.wav"))
    assert not (tmp_path / "unreadable.wav").exists()


def test_render_help_names_the_defaults_the_code_uses():
    """`render --help` states the defaults of options whose default is None (resolved later):
    velocity, the text temperature, the refinement steps and the longest stretch refined; each
    must be the code's, and printed (rich reads "[...]" as markup and drops it)."""
    from studio.render import DEFAULT_VELOCITY, TEXT_TEMPERATURE
    from synth.ddsp_play import RefineOptions

    res = cli("--help")
    text = " ".join(res.stdout.replace("│", " ").split())
    assert res.returncode == 0, res.stderr
    assert f"steps, {DEFAULT_REFINE_STEPS} by default" in text
    assert f"on its loudest {RefineOptions().max_seconds:g} s at most" in text
    assert f"MIDI velocity (default: {DEFAULT_VELOCITY:g};" in text
    assert f"the mapped latent (default: {TEXT_TEMPERATURE:g};" in text


def test_resynth_and_refine_requests_are_checked(model_path, tmp_path):
    """--resynth/--refine: only with --audio, not with --latent, refine needs resynth and a
    DDSP model; a batch row spells them as CSV cells."""
    from studio.render import read_batch
    from synth.errors import ConfigError, SynthStudioError

    wav = tmp_path / "in.wav"
    sf.write(wav, 0.3 * np.sin(2 * np.pi * 330 * np.arange(4000) / 8000), 8000)
    cases = [(dict(pitch=60, resynth=True), "only apply to --audio"),
             (dict(audio=str(wav), resynth=True, latent=[0.0] * 4), "drop --latent"),
             (dict(audio=str(wav), refine=5), "add --resynth"),
             (dict(audio=str(wav), resynth=True, refine=-1), ">= 0")]
    for kwargs, needle in cases:
        with pytest.raises(ConfigError, match=needle):
            RenderRequest(model=str(model_path), out=str(tmp_path / "x.wav"), **kwargs).validate()
    vae = save_model(build("vae", debug=True), tmp_path / "vae.safetensors")
    with pytest.raises(ConfigError, match="needs a DDSP model"):
        render(RenderRequest(model=str(vae), out=str(tmp_path / "v.wav"), audio=str(wav),
                             resynth=True, refine=2))
    assert not (tmp_path / "v.wav").exists()
    (tmp_path / "b.csv").write_text("out,audio,resynth,refine\na.wav,in.wav,yes,2\n"
                                    "b.wav,in.wav,false,\n")
    first, second = read_batch(tmp_path / "b.csv")
    # an empty cell is the default: None, DEFAULT_REFINE_STEPS for a DDSP --resynth, else 0
    assert (first.resynth, first.refine, second.resynth, second.refine) == (True, 2, False, None)
    (tmp_path / "c.csv").write_text("out,audio,resynth,refine\nc.wav,in.wav,yes,\n")
    (third,) = read_batch(tmp_path / "c.csv")
    ddsp, vae_model = build("ddsp", debug=True), build("vae", debug=True)
    assert (third.refine, third.refine_steps(ddsp), third.refine_steps(vae_model)) == (
        None, DEFAULT_REFINE_STEPS, 0)
    assert (first.refine_steps(ddsp), second.refine_steps(ddsp)) == (2, 0)
    (tmp_path / "bad.csv").write_text("out,audio,resynth\na.wav,in.wav,maybe\n")
    with pytest.raises(SynthStudioError, match="row 1: resynth: expected true or false"):
        read_batch(tmp_path / "bad.csv")
    res = cli("--model", str(model_path), "--audio", str(wav), "--refine", "3",
              "--out", str(tmp_path / "c.wav"))
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "add --resynth" in lines[0], res.stderr
