"""`synthstudio train`: the recipe trains a kind on a corpus and writes a fitted checkpoint."""

import json
import subprocess
import sys

import pytest
import torch

from synth.checkpoint import load_model
from synth.data.procedural import ProceduralOptions, build_procedural


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("proc") / "c"
    build_procedural(out, ProceduralOptions(types=("additive", "saw"), instruments_per_type=2,
                                            pitch_low=48, pitch_high=60, pitch_step=4,
                                            velocities=(60, 120), held_seconds=0.5,
                                            release_seconds=0.1), workers=1)
    return out


def train(*args):
    return subprocess.run([sys.executable, "-m", "studio.cli", "train", *args],
                          capture_output=True, text=True, timeout=300)


def test_train_cli_writes_a_fitted_generator(corpus, tmp_path):
    out = tmp_path / "run"
    cfg = json.dumps({"sample_rate": 16000, "latent_dim": 3, "n_harmonics": 8, "n_envelope": 8,
                      "hidden": 16, "n_fft": 256, "note_seconds": 0.25})
    res = train("additive", "--corpus", str(corpus), "--out", str(out), "--config", cfg,
                "--steps", "6", "--batch-size", "4", "--crop-seconds", "0.25",
                "--warmup-steps", "1", "--log-every", "2", "--all-instruments")
    assert res.returncode == 0, res.stderr
    model = load_model(out / "model.safetensors")
    meta = model.checkpoint_meta
    assert meta["steps"] == 6 and meta["corpus_hash"] and meta["recipe"]["kind"] == "additive"
    assert bool(model.latent_fitted) and meta["latent_stats"]["fitted"]
    assert all(c.low < c.high for c in model.controls)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [2, 4, 6]


def test_train_cli_refuses_a_rate_mismatch_and_unknown_kind(corpus, tmp_path):
    res = train("ddsp", "--corpus", str(corpus), "--out", str(tmp_path / "r"),
                "--config", json.dumps({"sample_rate": 8000, "frame_rate": 125}), "--steps", "1")
    assert res.returncode == 2 and "8000 Hz" in res.stderr
    res = train("theremin", "--corpus", str(corpus), "--out", str(tmp_path / "r2"))
    assert res.returncode == 2 and "unknown model kind" in res.stderr
