"""synth.data.folder: a folder of good and bad recordings becomes a corpus and a build report.

The good recording is three procedural notes (additive, saw, Karplus-Strong) separated by silence,
written as a 16 kHz WAV and as a 22.05 kHz stereo FLAC in a subfolder; beside it lie a text file
named bad.wav, a silent WAV, a clipped WAV and white noise. CREPE tiny labels the pitches.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from synth.data import procedural
from synth.data.corpus import Corpus
from synth.data.folder import (FolderOptions, build_folder, detect_onsets, find_audio,
                               velocity_from_peak)
from synth.errors import ConfigError, SynthStudioError

SR = 16000
GAP = 0.3
NOTES = (("additive", 0, 57, 100), ("saw", 1, 64, 80), ("karplus", 2, 69, 110))
ONSETS = tuple(GAP + i * (1.25 + GAP) for i in range(len(NOTES)))
OPTIONS = FolderOptions(note_seconds=1.25)
FILES = ("audio.npy", "manifest.jsonl", "corpus.json")


def recording() -> np.ndarray:
    """(T,) float32: the three NOTES, each 1.25 s, after and between GAP s of silence."""
    gap = np.zeros(int(GAP * SR), np.float32)
    parts = [gap]
    for kind, index, pitch, velocity in NOTES:
        preset = procedural.draw_preset(kind, 0, index, 0.25)
        note, _ = procedural.render_note(kind, preset, pitch, velocity, SR, 1.0, 0.25,
                                         np.random.default_rng(pitch))
        parts += [note, gap]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recordings")
    x = recording()
    sf.write(root / "good.wav", x, SR, subtype="PCM_16")
    (root / "takes").mkdir()
    stereo = soxr.resample(np.stack([x, 0.9 * x], axis=1), SR, 22050)
    sf.write(root / "takes" / "good.FLAC", stereo, 22050, subtype="PCM_16")
    (root / "bad.wav").write_text("this is not audio\n")
    (root / "notes.txt").write_text("ignored: not an audio suffix\n")
    sf.write(root / "silent.wav", np.zeros(SR, np.float32), SR)
    t = np.arange(SR) / SR
    sf.write(root / "clipped.wav", np.clip(3 * np.sin(2 * np.pi * 220 * t), -1, 1), SR)
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, 2 * SR)
    sf.write(root / "noise.wav", noise, SR)
    return root


@pytest.fixture(scope="module")
def built(src, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("folder") / "corpus"
    return out, build_folder(src, out, OPTIONS)


def test_bad_files_are_skipped_and_listed(built):
    out, report = built
    assert json.loads((out / "build_report.json").read_text()) == report
    reasons = {s["file"]: s["reason"] for s in report["skipped_files"]}
    assert reasons == {"bad.wav": "unreadable", "silent.wav": "silent",
                       "clipped.wav": "clipped", "noise.wav": "unpitched"}
    assert report["skipped_counts"] == {"clipped": 1, "silent": 1, "unpitched": 1, "unreadable": 1}
    assert all(s["detail"] for s in report["skipped_files"])
    assert report["files"] == 6 and report["files_used"] == 2 and report["notes"] == 6
    assert {d["file"] for d in report["dropped_notes"]} == {"noise.wav"}


def test_good_notes_have_the_right_pitch_velocity_and_onset(built, src):
    out, _ = built
    corpus = Corpus.open(out)
    assert corpus.audio.shape == (6, OPTIONS.n_samples)
    for file, instrument in (("good.wav", src.name), ("takes/good.FLAC", "takes")):
        rows = [r for r in corpus.notes if r["file"] == file]
        assert len(rows) == len(NOTES)
        for row, (_, _, pitch, velocity), onset in zip(rows, NOTES, ONSETS):
            assert row["pitch"] == pitch
            measured = row["pitch"] + row["descriptors"]["pitch_cents"] / 100
            assert abs(measured - pitch) * 100 < 50
            assert row["descriptors"]["f0_hz"] == pytest.approx(procedural.midi_hz(measured))
            assert abs(row["velocity"] - velocity) <= 3
            assert abs(row["onset_s"] - onset) < 0.02
            assert row["source"] == "folder" and row["family"] == OPTIONS.family
            assert row["instrument_id"].startswith("folder/") and row["caption"]
        assert {r["instrument"] for r in rows} == {instrument}
        assert {r["instrument_id"] for r in rows} == {f"folder/{instrument}"}


def test_rerun_processes_only_changed_files(built, src, tmp_path):
    src_copy, out = tmp_path / "src", tmp_path / "out"
    shutil.copytree(src, src_copy)  # copies keep modification times: the shards stay valid
    shutil.copytree(built[0], out)
    assert build_folder(src_copy, out, OPTIONS)["processed_now"] == 0
    for name in FILES[:2]:
        assert (out / name).read_bytes() == (built[0] / name).read_bytes()
    sf.write(src_copy / "silent.wav", np.zeros(SR // 2, np.float32), SR)
    os.utime(src_copy / "silent.wav", ns=(1, 1))
    report = build_folder(src_copy, out, OPTIONS)
    assert report["processed_now"] == 1 and report["notes"] == 6


@pytest.mark.slow
def test_worker_processes_build_the_same_notes(built, src, tmp_path):
    small = tmp_path / "src"
    small.mkdir()
    for name in ("good.wav", "bad.wav"):
        shutil.copy2(src / name, small / name)
    report = build_folder(small, tmp_path / "pool", OPTIONS, workers=2)
    assert report["workers"] == 2 and report["notes"] == 3
    assert report["skipped_files"][0]["file"] == "bad.wav"
    pool = Corpus.open(tmp_path / "pool")
    one = Corpus.open(built[0])
    same = [i for i, r in enumerate(one.notes) if r["file"] == "good.wav"]
    np.testing.assert_array_equal(pool.audio, one.audio[same])
    assert [r["pitch"] for r in pool.notes] == [one.notes[i]["pitch"] for i in same]


def test_onsets_of_separated_and_legato_notes():
    t = np.arange(int(0.5 * SR)) / SR
    a = 0.5 * np.sin(2 * np.pi * 220 * t) * np.exp(-3 * t)
    b = 0.5 * np.sin(2 * np.pi * 330 * t) * np.exp(-3 * t)
    silence = np.zeros(int(0.25 * SR))
    x = np.concatenate([silence, a, b, silence, a]).astype(np.float32)  # b follows a directly
    onsets = detect_onsets(x, SR, OPTIONS.onset_delta, OPTIONS.min_note_seconds) / SR
    np.testing.assert_allclose(onsets, [0.25, 0.75, 1.5], atol=0.015)


def test_velocity_inverts_the_procedural_level():
    assert [velocity_from_peak(procedural.velocity_gain(v)) for v in range(1, 128)] \
        == list(range(1, 128))
    assert velocity_from_peak(1.0) == 127 and velocity_from_peak(1e-4) == 1


def test_only_bad_files_raise_after_writing_the_report(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "bad.wav").write_text("not audio")
    with pytest.raises(SynthStudioError, match="no usable notes"):
        build_folder(src, tmp_path / "out", OPTIONS)
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert report["skipped_counts"] == {"unreadable": 1}
    assert not (tmp_path / "out" / "corpus.json").exists()


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_folder(tmp_path / "missing", tmp_path / "out", OPTIONS)
    with pytest.raises(ConfigError, match="no audio files"):
        build_folder(tmp_path, tmp_path / "out", OPTIONS)
    for bad in (dict(family="kazoo"), dict(crepe_model="huge"), dict(instrument_from="x"),
                dict(min_note_seconds=0)):
        with pytest.raises(ConfigError):
            build_folder(tmp_path, tmp_path / "out", FolderOptions(**{**OPTIONS.__dict__, **bad}))


def test_find_audio_is_recursive_sorted_and_case_insensitive(src):
    names = [p.relative_to(src).as_posix() for p in find_audio(src)]
    assert names == ["bad.wav", "clipped.wav", "good.wav", "noise.wav", "silent.wav",
                     "takes/good.FLAC"]


def test_cli_folder_build_reports_skipped_files(src, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "cli"
    res = subprocess.run([sys.executable, "-m", "studio.cli", "data", "build", "folder", str(src),
                          "--out", str(out), "--note-seconds", "1.25", "--workers", "1",
                          "--family", "synth lead"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "skipped bad.wav" in res.stdout and "skipped silent.wav" in res.stdout
    corpus = Corpus.open(out)
    assert len(corpus) == 6 and {r["family"] for r in corpus.notes} == {"synth lead"}
    report = json.loads((out / "build_report.json").read_text())
    assert {s["file"] for s in report["build"]["skipped_files"]} >= {"bad.wav", "silent.wav",
                                                                      "clipped.wav", "noise.wav"}
    missing = subprocess.run([sys.executable, "-m", "studio.cli", "data", "build", "folder",
                              str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "not found" in missing.stderr
