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


def test_init_starts_from_a_checkpoint_and_refuses_other_shapes(corpus, tmp_path):
    from synth.checkpoint import save_model
    from synth.errors import ConfigError
    from synth.recipe import init_weights
    from synth.registry import build

    cfg = {"sample_rate": 16000, "latent_dim": 3, "n_harmonics": 8, "n_envelope": 8,
           "hidden": 16, "n_fft": 256, "note_seconds": 0.25}
    torch.manual_seed(0)
    source = build("additive", cfg)
    path = save_model(source, tmp_path / "src.safetensors")
    torch.manual_seed(1)
    fresh = build("additive", cfg)
    assert not all(torch.equal(a, b) for a, b in zip(fresh.parameters(), source.parameters()))
    init_weights(fresh, str(path))
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), source.parameters()))
    with pytest.raises(ConfigError, match="hidden|shape|needs"):
        init_weights(build("additive", {**cfg, "hidden": 8}), str(path))
    with pytest.raises(ConfigError, match="not ddsp"):
        init_weights(build("ddsp", debug=True), str(path))
    # Through the CLI: a fine-tuning run records where it started.
    out = tmp_path / "run"
    res = train("additive", "--corpus", str(corpus), "--out", str(out), "--config", json.dumps(cfg),
                "--steps", "2", "--batch-size", "4", "--crop-seconds", "0.25", "--warmup-steps", "1",
                "--all-instruments", "--init", str(path), "--on-key")
    assert res.returncode == 0, res.stderr
    meta = load_model(out / "model.safetensors").checkpoint_meta
    assert meta["recipe"]["init"] == str(path) and meta["recipe"]["on_key"] is True


def test_instrument_weights_oversample_the_named_instruments(corpus, tmp_path):
    from synth.data.corpus import Corpus
    from synth.errors import ConfigError
    from synth.recipe import note_weights

    c = Corpus.open(corpus)
    idx = list(range(len(c.notes)))
    ids = sorted({r["instrument_id"] for r in c.notes})
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"instrument_weights": {ids[0]: 4.0}}))
    w = note_weights(c, idx, str(path))
    assert w.tolist() == [4.0 if c.notes[i]["instrument_id"] == ids[0] else 1.0 for i in idx]
    for body, match in (("{", "not a JSON file"), ('{"weights": {}}', "instrument_weights"),
                        (json.dumps({"instrument_weights": {ids[0]: -1}}), ">= 0"),
                        (json.dumps({"instrument_weights": {"nope/0/0": 2}}), "none of its")):
        path.write_text(body)
        with pytest.raises(ConfigError, match=match):
            note_weights(c, idx, str(path))
    # Through the CLI: a weighted run trains and records its weights file; a bad one exits 2.
    path.write_text(json.dumps({"instrument_weights": {ids[0]: 4.0}}))
    cfg = json.dumps({"sample_rate": 16000, "latent_dim": 3, "n_harmonics": 8, "n_envelope": 8,
                      "hidden": 16, "n_fft": 256, "note_seconds": 0.25})
    common = ["--corpus", str(corpus), "--config", cfg, "--steps", "2", "--batch-size", "4",
              "--crop-seconds", "0.25", "--warmup-steps", "1", "--all-instruments"]
    res = train("additive", "--out", str(tmp_path / "run"), *common, "--instrument-weights", str(path))
    assert res.returncode == 0, res.stderr
    meta = load_model(tmp_path / "run" / "model.safetensors").checkpoint_meta
    assert meta["recipe"]["instrument_weights"] == str(path)
    res = train("additive", "--out", str(tmp_path / "run2"), *common,
                "--instrument-weights", str(tmp_path / "missing.json"))
    assert res.returncode == 2 and "instrument weights" in res.stderr
    assert not (tmp_path / "run2" / "model.safetensors").exists()
