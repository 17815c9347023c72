"""The per-note pitch survey and manifest updates (synth.data.verify / synth.data.corpus)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synth.data.corpus import Corpus, CorpusError, update_manifest
from synth.data.procedural import ProceduralOptions, build_procedural
from synth.data.verify import off_key_instruments, pitched_indices, survey_pitch, verify_pitch


@pytest.fixture
def corpus_dir(tmp_path):
    root = tmp_path / "corpus"
    opts = ProceduralOptions(types=("additive", "saw", "noise"), instruments_per_type=1,
                             pitch_low=48, pitch_high=72, pitch_step=6, velocities=(100,),
                             held_seconds=1.0, release_seconds=0.1)
    build_procedural(root, opts, workers=1)
    return root


def _relabel(root, index: int, semitones: int) -> None:
    """Tamper with one note's label (a note that now sounds off its key) and re-hash."""
    corpus = Corpus.open(root)
    rows = [dict(r) for r in corpus.notes]
    rows[index]["pitch"] = rows[index]["pitch"] + semitones
    (root / "manifest.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def test_survey_marks_notes_that_sound_off_their_label(corpus_dir):
    corpus = Corpus.open(corpus_dir)
    pitched = pitched_indices(corpus)
    assert pitched and len(pitched) < len(corpus)  # noise percussion is not pitch-checked
    moved = pitched[1]
    _relabel(corpus_dir, moved, 12)  # labelled an octave above what it plays
    corpus = Corpus.open(corpus_dir)
    res = survey_pitch(corpus, recheck_model=None)
    ok = res["ok"]
    assert ok[moved] is False and abs(res["cents"][moved] + 1200) < 25
    others = [i for i in pitched if i != moved]
    assert all(ok[i] is True for i in others), [(i, res["cents"][i]) for i in others if not ok[i]]
    assert all(ok[i] is None for i in set(range(len(corpus))) - set(pitched))
    assert res["off_key"] == 1 and res["within"] == len(pitched) - 1

    old_hash = corpus.hash
    cents = [None if not np.isfinite(c) else float(c) for c in res["cents"]]
    updated = update_manifest(corpus_dir, {"pitch_cents": cents, "pitch_ok": list(ok)})
    assert updated.hash != old_hash and updated.notes[moved]["pitch_ok"] is False
    assert Corpus.open(corpus_dir).notes[moved]["pitch_ok"] is False  # on disk
    assert moved not in updated.select(on_key=True) and moved in updated.select()
    assert set(updated.select(on_key=True)) == set(range(len(corpus))) - {moved}
    assert off_key_instruments(updated)[0]["off_key"] == 1
    # The sample check now reports the figure on the notes the survey keeps.
    check = verify_pitch(updated, n=len(pitched), recheck_model=None)
    assert check["flagged_off_key"] == 1
    assert check["on_key_within"] == check["on_key_voiced"] == len(pitched) - 1


def test_update_manifest_refuses_required_fields_and_wrong_lengths(corpus_dir):
    n = len(Corpus.open(corpus_dir))
    with pytest.raises(CorpusError, match="required"):
        update_manifest(corpus_dir, {"pitch": [60] * n})
    with pytest.raises(CorpusError, match="values"):
        update_manifest(corpus_dir, {"pitch_ok": [True] * (n - 1)})
    assert Corpus.open(corpus_dir).hash  # untouched and still a finished corpus


def test_update_manifest_hash_equals_a_fresh_write(corpus_dir, tmp_path):
    """The re-hash uses the same audio digest as the builder: adding nothing keeps the hash."""
    corpus = Corpus.open(corpus_dir)
    info = json.loads((corpus_dir / "corpus.json").read_text())
    info.pop("audio_digest", None)  # recomputed from the audio when absent
    (corpus_dir / "corpus.json").write_text(json.dumps(info))
    again = update_manifest(corpus_dir, {})
    assert again.hash == corpus.hash
