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
from studio.render import RenderRequest, render, render_from_manifest


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
