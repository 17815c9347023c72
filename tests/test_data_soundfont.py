"""SoundFont corpus builds on a tiny TimGM6mb corpus: determinism, resume, schema, splits."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import synth.data.soundfont as sfmod
from synth.data.corpus import Corpus, CorpusError
from synth.data.dataset import Augment, NoteDataset
from synth.data.soundfont import SoundfontOptions, build_soundfont
from synth.data.verify import verify_levels, verify_pitch

TIM = "/usr/share/sounds/sf2/TimGM6mb.sf2"


def tiny(**kw):
    base = dict(soundfont=TIM, programs=(0, 4, 24, 25, 40, 41), pitch_low=48, pitch_high=72,
                pitch_step=4, velocities=(60, 120), held_seconds=0.6, release_seconds=0.2)
    base.update(kw)
    return SoundfontOptions(**base)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sf") / "c"
    report = build_soundfont(out, tiny(), workers=2)
    assert report["notes"] > 0
    return out


def test_schema_levels_and_shapes(corpus_dir):
    c = Corpus.open(corpus_dir)
    opts = tiny()
    assert c.sample_rate == 16000 and c.audio.shape == (len(c), opts.n_samples)
    assert len(c) == 6 * len(opts.pitches) * 2  # TimGM6mb sounds every one of these notes
    assert verify_levels(c)["silent"] == 0
    ids = [r["id"] for r in c.notes]
    assert len(set(ids)) == len(ids)
    assert {r["family"] for r in c.notes} == {"piano", "guitar", "strings"}
    assert all(r["caption"] and r["instrument"] in r["caption"] for r in c.notes)


def test_float_render_is_not_dithered(corpus_dir):
    c = Corpus.open(corpus_dir)
    # A dithered int16 render has no exact zeros in a note's release tail; ours is exact silence
    # before the first sample of the attack at most, and never saturates.
    assert np.abs(c.audio).max() < 32767


def test_splits_disjoint_and_within_instruments(corpus_dir):
    c = Corpus.open(corpus_dir)
    by_split = {s: {r["id"] for r in c.notes if r["split"] == s} for s in ("train", "valid", "test")}
    assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["valid"])
    for inst in {r["instrument_id"] for r in c.notes}:
        splits = {r["split"] for r in c.notes if r["instrument_id"] == inst}
        assert splits == {"train", "valid", "test"}
    held = {r["instrument_id"] for r in c.notes if r["instrument_split"] == "test"}
    trained = {r["instrument_id"] for r in c.notes if r["instrument_split"] == "train"}
    assert held and trained and not (held & trained)
    # one instrument per family with two instruments is held out
    assert len(held) == 3


def test_deterministic(corpus_dir, tmp_path):
    other = tmp_path / "again"
    build_soundfont(other, tiny(), workers=1)
    assert (other / "audio.npy").read_bytes() == (corpus_dir / "audio.npy").read_bytes()
    assert (other / "manifest.jsonl").read_text() == (corpus_dir / "manifest.jsonl").read_text()
    assert Corpus.open(other).hash == Corpus.open(corpus_dir).hash
    reseeded = tmp_path / "seed1"
    build_soundfont(reseeded, tiny(seed=1), workers=1)
    a = [r["split"] for r in Corpus.open(reseeded).notes]
    b = [r["split"] for r in Corpus.open(corpus_dir).notes]
    assert a != b


def test_resume_after_interruption(corpus_dir, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    real = sfmod.write_shard
    calls = []

    def interrupted(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(sfmod, "write_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_soundfont(out, tiny(), workers=1)
    assert not (out / "corpus.json").exists()
    monkeypatch.setattr(sfmod, "write_shard", real)
    report = build_soundfont(out, tiny(), workers=2)
    per_program = len(tiny().pitches) * 2
    assert report["rendered_now"] == 4 * per_program
    assert (out / "audio.npy").read_bytes() == (corpus_dir / "audio.npy").read_bytes()
    again = build_soundfont(out, tiny(), workers=2)
    assert again["up_to_date"] and again["rendered_now"] == 0


def test_pitch_labels_match_torchcrepe(corpus_dir):
    result = verify_pitch(Corpus.open(corpus_dir), n=24, model="tiny")
    assert result["voiced"] >= 20
    assert result["fraction_within"] >= 0.9, result["worst"]


def test_bad_options_and_unfinished_corpus(tmp_path):
    from synth.errors import ConfigError

    with pytest.raises(ConfigError, match="SoundFont not found"):
        build_soundfont(tmp_path / "x", tiny(soundfont=str(tmp_path / "missing.sf2")))
    with pytest.raises(ConfigError, match="velocities"):
        build_soundfont(tmp_path / "x", tiny(velocities=(0,)))
    (tmp_path / "half").mkdir()
    with pytest.raises(CorpusError, match="not a finished corpus"):
        Corpus.open(tmp_path / "half")


def test_dataset_items_are_seeded_and_augmented(corpus_dir):
    ds = NoteDataset(corpus_dir, split="train", crop_seconds=0.4,
                     augment=Augment(gain_db=(-6.0, 0.0), pitch_shift=2.0))
    a = ds.get_item(3, torch.Generator().manual_seed(11))
    b = ds.get_item(3, torch.Generator().manual_seed(11))
    c = ds.get_item(3, torch.Generator().manual_seed(12))
    torch.testing.assert_close(a["audio"], b["audio"], rtol=0, atol=0)
    assert a["audio"].shape == (int(0.4 * 16000),)
    assert not torch.equal(a["audio"], c["audio"])
    base = ds[3]
    assert abs(float(a["pitch"] - base["pitch"])) <= 2.0 and float(a["pitch"]) != float(base["pitch"])


def test_onset_crops_start_at_the_note_onset(corpus_dir):
    """With onset_prob, that share of random crops is the note's first samples; without it,
    none is."""
    def onset_share(prob):
        ds = NoteDataset(corpus_dir, split="train", crop_seconds=0.4, augment=Augment(onset_prob=prob))
        full = ds.corpus.waveform(ds.indices[0])[: ds.crop]
        hits = [np.array_equal(ds.get_item(0, torch.Generator().manual_seed(s))["audio"].numpy(), full)
                for s in range(200)]
        return float(np.mean(hits))

    assert onset_share(0.0) < 0.02
    assert 0.35 < onset_share(0.5) < 0.65
    assert onset_share(1.0) == 1.0


def test_pitch_shift_moves_the_measured_pitch(corpus_dir):
    from synth.data.dataset import pitch_shift_resample
    from synth.pitch import f0, hz_to_midi

    c = Corpus.open(corpus_dir)
    i = next(k for k, r in enumerate(c.notes) if r["family"] == "strings" and r["pitch"] == 60)
    x = c.waveform(i)[1600:9600]
    shifted = pitch_shift_resample(x, 16000, 1.5)
    tracks = [f0(torch.from_numpy(y[:6000]), 16000) for y in (x, shifted)]
    est = [float(hz_to_midi(t.f0_hz[0][t.periodicity[0] > 0.5].median())) for t in tracks]
    assert abs((est[1] - est[0]) - 1.5) < 0.3


def test_data_cli_build_and_info(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "studio.cli", "data", "build", "soundfont", "--out", str(out),
           "--soundfont", TIM, "--programs", "0,40", "--pitch-low", "60", "--pitch-high", "64",
           "--pitch-step", "4", "--velocities", "100", "--held", "0.5", "--release", "0.1",
           "--verify", "4"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "build_report.json").read_text())
    assert report["build"]["notes"] == 4 and report["checks"]["levels"]["silent"] == 0
    assert (out / "CARD.md").exists() and (out / "distributions.png").stat().st_size > 1000
    res = subprocess.run([sys.executable, "-m", "studio.cli", "data", "info", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "instruments" in res.stdout
    bad = subprocess.run([sys.executable, "-m", "studio.cli", "data", "build", "soundfont",
                          "--out", str(tmp_path / "x"), "--programs", "0-200"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "0-127" in bad.stderr


def test_whole_note_analyses_ride_along_with_crops(corpus_dir):
    """`analyses=("inharmonicity",)`: every item carries the whole note's coefficient (the same
    for any crop or pitch shift of that note, analysed once); unknown analyses are refused."""
    from synth.inharmonicity import estimate_inharmonicity

    ds = NoteDataset(corpus_dir, split="train", crop_seconds=0.4, analyses=("inharmonicity",),
                     augment=Augment(pitch_shift=1.0))
    a = ds.get_item(2, torch.Generator().manual_seed(1))
    b = ds.get_item(2, torch.Generator().manual_seed(2))
    assert not torch.equal(a["audio"], b["audio"])
    whole = torch.from_numpy(ds.corpus.waveform(ds.indices[2]))[None]
    expected, _ = estimate_inharmonicity(whole, ds.sample_rate, torch.tensor([float(ds[2]["pitch"])]))
    assert float(a["inharmonicity"]) == float(b["inharmonicity"]) == float(ds[2]["inharmonicity"]) \
        == float(expected[0]) >= 0.0
    assert "inharmonicity" not in NoteDataset(corpus_dir, split="train")[2]
    with pytest.raises(CorpusError, match="unknown note analyses"):
        NoteDataset(corpus_dir, split="train", analyses=("loudness",))
