"""synth.data.procedural: determinism, schema, splits, resume, levels and pitch of the six types.

Corpora here are tiny (12 instruments x 3 pitches x 2 velocities, 1.25 s notes at 16 kHz); the
whole file runs in a few seconds on two cores.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from synth import pitch
from synth.data import procedural
from synth.data.corpus import SPLITS, Corpus, to_int16
from synth.data.descriptors import describe
from synth.data.gm import FAMILIES
from synth.data.procedural import (TYPES, ProceduralOptions, build_procedural, draw_preset,
                                   family_of, render_note, velocity_gain)
from synth.errors import ConfigError

SMALL = dict(instruments_per_type=2, pitch_low=48, pitch_high=72, pitch_step=12,
             velocities=(40, 120))
FILES = ("audio.npy", "manifest.jsonl", "corpus.json")


def small(**changes) -> ProceduralOptions:
    return ProceduralOptions(**{**SMALL, **changes})


def corpus_bytes(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in FILES}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("procedural") / "corpus"
    return root, build_procedural(root, small(), workers=1)


def test_same_seed_is_byte_identical_for_any_worker_count(built, tmp_path):
    root, report = built
    assert report["notes"] == len(TYPES) * 2 * 3 * 2
    again = build_procedural(tmp_path / "again", small(), workers=2)
    assert again["notes"] == report["notes"]
    assert corpus_bytes(tmp_path / "again") == corpus_bytes(root)


def test_another_seed_gives_other_presets_and_audio(built, tmp_path):
    root, _ = built
    build_procedural(tmp_path / "seed1", small(seed=1), workers=1)
    a, b = Corpus.open(root), Corpus.open(tmp_path / "seed1")
    assert a.audio.shape == b.audio.shape
    assert not np.array_equal(a.audio, b.audio)
    assert a.notes[0]["params"] != b.notes[0]["params"]
    assert {r["instrument_id"] for r in a.notes}.isdisjoint(r["instrument_id"] for r in b.notes)


def test_schema_params_and_levels(built):
    root, _ = built
    corpus = Corpus.open(root)
    assert corpus.sample_rate == 16000 and corpus.audio.shape[1] == 20000
    assert json.loads((root / "build_report.json").read_text())["notes"] == len(corpus)
    presets = defaultdict(list)
    for row in corpus.notes:
        kind, index = row["params"]["type"], int(row["instrument_id"].rsplit("/", 1)[1])
        assert row["source"] == "procedural" and row["program"] is None
        assert row["instrument"] == f"procedural {kind} {index}"
        assert row["instrument_id"] == f"procedural/0/{kind}/{index}"
        assert row["family"] in FAMILIES and row["caption"]
        preset = {k: v for k, v in row["params"].items() if k not in ("type", "note")}
        assert preset == draw_preset(kind, 0, index, 0.25)  # the stored ground truth
        assert row["family"] == family_of(kind, preset)
        presets[row["instrument_id"]].append(json.dumps(preset, sort_keys=True))
    assert len(presets) == len(TYPES) * 2
    assert all(len(set(p)) == 1 for p in presets.values())
    audio = corpus.waveform(range(len(corpus)))
    peaks = np.abs(audio).max(axis=1)
    assert peaks.max() < 1.0
    assert np.sqrt((audio.astype(np.float64) ** 2).mean(axis=1)).min() > 1e-4


def test_stored_params_rerender_the_stored_audio(built):
    root, _ = built
    corpus = Corpus.open(root)
    for i in (0, len(corpus) // 2, len(corpus) - 1):
        row = corpus.notes[i]
        kind = row["params"]["type"]
        index = int(row["instrument_id"].rsplit("/", 1)[1])
        rng = procedural._rng(0, TYPES.index(kind), index, row["pitch"], row["velocity"])
        audio, info = render_note(kind, row["params"], row["pitch"], row["velocity"], 16000,
                                  1.0, 0.25, rng)
        assert info == row["params"]["note"]
        np.testing.assert_array_equal(to_int16(audio)[0], corpus.audio[i])


def test_splits_are_disjoint_and_hold_out_whole_instruments(built):
    corpus = Corpus.open(built[0])
    ids = {s: {r["id"] for r in corpus.notes if r["split"] == s} for s in SPLITS}
    assert sum(map(len, ids.values())) == len(corpus) == len({r["id"] for r in corpus.notes})
    train, valid, test = ids.values()
    assert not (train & valid or train & test or valid & test)
    assert all(ids.values())
    by_instrument = defaultdict(set)
    for row in corpus.notes:
        by_instrument[row["instrument_id"]].add(row["instrument_split"])
    assert all(len(s) == 1 for s in by_instrument.values())
    held = {i for i, s in by_instrument.items() if s == {"test"}}
    train = {i for i, s in by_instrument.items() if s == {"train"}}
    assert held and train and not held & train


def test_resume_after_interruption_renders_only_missing_shards(built, tmp_path, monkeypatch):
    root, _ = built
    out = tmp_path / "resumed"
    real = procedural.render_job
    calls = []

    def crash_after_three(job):
        if len(calls) == 3:
            raise RuntimeError("killed")
        calls.append(job[1:])
        return real(job)

    monkeypatch.setattr(procedural, "render_job", crash_after_three)
    with pytest.raises(RuntimeError, match="killed"):
        build_procedural(out, small(), workers=1)
    assert not (out / "corpus.json").exists()
    assert len(list((out / "shards").glob("*.json"))) == 3

    def counting(job):
        calls.append(job[1:])
        return real(job)

    calls.clear()
    monkeypatch.setattr(procedural, "render_job", counting)
    report = build_procedural(out, small(), workers=1)
    assert len(calls) == len(TYPES) * 2 - 3 and report["rendered_now"] == len(calls) * 6
    assert corpus_bytes(out) == corpus_bytes(root)

    # A lost shard and a lost corpus.json: only that shard is rendered again.
    (out / "corpus.json").unlink()
    for part in ("json", "npy"):
        (out / "shards" / f"fm_01.{part}").unlink()
    report = build_procedural(out, small(), workers=1)
    assert report["rendered_shards"] == ["fm_01"]
    assert corpus_bytes(out) == corpus_bytes(root)

    # Other options invalidate every shard.
    assert build_procedural(out, small(velocities=(100,)), workers=1)["rendered_now"] == 36


@pytest.mark.parametrize("kind", TYPES)
def test_levels_at_extreme_velocities_and_pitches(kind):
    for index in range(4):
        preset = draw_preset(kind, 3, index, 0.25)
        for p in (36, 84):
            for v in (1, 127):
                audio, _ = render_note(kind, preset, p, v, 16000, 1.0, 0.25,
                                       np.random.default_rng(0))
                assert audio.dtype == np.float32 and audio.shape == (20000,)
                assert np.abs(audio).max() == pytest.approx(velocity_gain(v), rel=1e-6)
                assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 1e-4
                assert np.abs(audio[-8:]).max() < 1e-3  # released to silence: no click


@pytest.mark.parametrize("kind", TYPES)
def test_velocity_brightens(kind):
    for index in range(4):
        preset = draw_preset(kind, 0, index, 0.25)
        soft, loud = (describe(render_note(kind, preset, 60, v, 16000, 1.0, 0.25,
                                           np.random.default_rng(1))[0], 16000, 60, 1.0)
                      for v in (20, 127))
        assert loud["centroid_hz"] > soft["centroid_hz"]
        assert loud["peak_db"] > soft["peak_db"] + 20


def test_pitch_sanity_with_crepe():
    """Additive, saw and Karplus-Strong notes are where the label says (CREPE tiny, 25 cents)."""
    notes, labels = [], []
    for kind in ("additive", "saw", "karplus"):
        for index in range(3):
            preset = draw_preset(kind, 0, index, 0.25)
            for p in (43, 62, 81):
                notes.append(render_note(kind, preset, p, 100, 16000, 1.0, 0.25,
                                         np.random.default_rng(2))[0])
                labels.append(p)
    track = pitch.f0(torch.from_numpy(np.stack(notes)), 16000, hop_length=800, model="tiny")
    for b, label in enumerate(labels):
        voiced = track.voiced()[b]
        assert voiced.float().mean() > 0.5
        estimate = float(pitch.hz_to_midi(track.f0_hz[b][voiced].median()))
        assert abs(estimate - label) * 100 < 25, (b, label, estimate)


@pytest.mark.parametrize("change", [
    dict(types=("additive", "organ")), dict(types=()), dict(types=("fm", "fm")),
    dict(instruments_per_type=0), dict(pitch_low=80, pitch_high=70), dict(pitch_high=100),
    dict(velocities=(0, 64)), dict(seed=-1), dict(release_seconds=-0.1), dict(sample_rate=4000),
])
def test_bad_options_are_refused(change, tmp_path):
    with pytest.raises(ConfigError):
        build_procedural(tmp_path / "x", small(**change), workers=1)
    assert not (tmp_path / "x").exists()
