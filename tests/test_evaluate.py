"""latent.evaluate and `synthstudio eval` on a tiny procedural corpus with debug models:
calibration rows, copies flagged, feature cache, report files, CLI exit codes."""

import json
import re
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from latent.eval_report import markdown, table, write_report
from latent.evaluate import EvalOptions, GeneratedSet, RealSet, evaluate
from studio.cli_eval import resolve_models
from synth.checkpoint import save_model
from synth.data.corpus import Corpus
from synth.data.procedural import ProceduralOptions, build_procedural
from synth.errors import SynthStudioError
from synth.registry import build

OPTS = EvalOptions(ndb_bins=4, ct_cells=2, ct_min_gen=3, kid_subset=16, kid_subsets=3,
                   max_reference=200, batch_size=32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcorpus") / "corpus"
    build_procedural(root, ProceduralOptions(instruments_per_type=3, pitch_low=48, pitch_high=72,
                                             pitch_step=6, velocities=(40, 120)), workers=1)
    return Corpus.open(root)


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return build("classifier", debug=True).eval()


def test_calibration_rows_and_copies_of_training_notes(corpus, classifier):
    train, test = RealSet.from_corpus(corpus, "train"), RealSet.from_corpus(corpus, "test")
    pick = np.arange(0, len(train), 4)[:30]
    copies = GeneratedSet(train.load(pick), train.pitches[pick], train.families[pick])
    report = evaluate({"copies": copies}, train, test, classifier, corpus.sample_rate, OPTS)
    rows = {r["name"]: r for r in report["rows"]}
    assert [r["role"] for r in report["rows"]] == ["floor", "ceiling", "model"]
    c, floor, noise = rows["copies"]["metrics"], rows["real test"]["metrics"], rows["noise"]["metrics"]
    assert c["orig_emb"] < 1e-3 and c["authenticity"] < 0.05 and c["ct"] < -2
    if report["wavegan_features"]:  # latent.metrics.distance: WaveGAN |D|train of copies is 0
        assert c["orig_wavegan"] < 1e-3 < floor["orig_wavegan"]
    assert floor["orig_emb"] > 10 * c["orig_emb"] + 1e-3 and floor["authenticity"] > 0.2
    assert noise["fd"] > 5 * floor["fd"]
    assert report["separation"]["fd"] is True
    assert {"precision", "recall", "density", "coverage", "kid", "fd_inf", "vendi", "ndb_k",
            "pitch_acc", "pitch_entropy", "is_pitch", "is_family"} <= set(c)
    assert report["per_pitch"]["copies"] and sum(r["n"] for r in report["per_pitch"]["copies"]) == 30
    # features of the real sets were cached under the corpus and are reused
    cached = list((corpus.root / "eval_cache").glob("*.npy"))
    assert any("train" in p.name for p in cached) and any("test" in p.name for p in cached)
    again = evaluate({"copies": copies}, train, test, classifier, corpus.sample_rate, OPTS)
    assert again["rows"] == report["rows"]


def test_write_report_writes_json_markdown_and_plots(corpus, classifier, tmp_path):
    train, test = RealSet.from_corpus(corpus, "train"), RealSet.from_corpus(corpus, "test")
    audio = np.random.default_rng(0).uniform(-0.1, 0.1, (12, 20000)).astype(np.float32)
    report = evaluate({"m": (audio, np.full(12, 60.0))}, train, test, classifier,
                      corpus.sample_rate, OPTS)
    md = write_report(report, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [r["name"] for r in data["rows"]] == ["real test", "noise", "m"]
    text = md.read_text()
    assert "| real test | floor |" in text and "NDB/K" in text and "Per octave" in text
    for png in ("metrics.png", "per_pitch.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"
    assert markdown(report) == text
    # every row of the metric table has as many cells as its header (|D|self labels escaped)
    rows = [line for line in table(report) if line.startswith("| ")]
    cells = {len(re.split(r"(?<!\\)\|", line)) for line in rows}
    assert len(cells) == 1 and len(rows) == 1 + len(report["rows"])


def run_cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    return subprocess.run([sys.executable, "-m", "studio.cli", "eval", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_cli_generates_evaluates_and_fails_in_one_line(corpus, classifier, tmp_path):
    clf = save_model(classifier, tmp_path / "clf.safetensors")
    gen = save_model(build("additive", debug=True), tmp_path / "tiny-additive.safetensors")
    res = run_cli("--models", str(gen), "--n", "12", "--corpus", str(corpus.root), "--out",
                  str(tmp_path / "out"), "--classifier", str(clf), "--max-reference", "100")
    assert res.returncode == 0, res.stderr + res.stdout
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [(r["name"], r["role"]) for r in data["rows"]] == [
        ("real test", "floor"), ("noise", "ceiling"), ("tiny-additive", "model"),
        ("untrained additive", "ceiling")]
    assert data["rows"][2]["metrics"]["n"] == 12
    bad = run_cli("--models", str(gen), "--n", "12", "--corpus", str(corpus.root), "--out",
                  str(tmp_path / "o2"), "--classifier", str(gen))
    assert bad.returncode == 2 and "not a classifier" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    with pytest.raises(SynthStudioError, match="unknown model"):
        resolve_models("nope-model")
