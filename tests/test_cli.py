"""The CLI as a user runs it: real subprocesses, exit codes and one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from synth.checkpoint import save_model
from synth.registry import build, kinds


def run(*args, env=None, cwd=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "studio.cli", *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=120)


@pytest.fixture
def user_models(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    save_model(build("additive", debug=True), folder / "tiny-additive.safetensors", steps=5)
    (folder / "broken.safetensors").write_bytes(b"\x00" * 64)
    return folder


def test_help_lists_commands():
    res = run("--help")
    assert res.returncode == 0
    for word in ("info", "models", "demo", "--device", "--seed"):
        assert word in res.stdout


def test_info_names_kinds_and_device():
    res = run("--device", "cpu", "info")
    assert res.returncode == 0, res.stderr
    for kind in kinds():
        assert kind in res.stdout
    assert "cpu" in res.stdout and "torch" in res.stdout


def test_models_list_finds_user_models_and_flags_broken(user_models):
    res = run("models", "list", "--json", env={"SYNTHSTUDIO_MODELS": str(user_models)})
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["tiny-additive"]["kind"] == "additive"
    assert rows["broken"]["error"] and "not a safetensors" in rows["broken"]["error"]


def test_models_show_metadata(user_models):
    res = run("models", "show", str(user_models / "tiny-additive.safetensors"))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["steps"] == 5


@pytest.mark.parametrize("target,needle", [
    ("/nonexistent/x.safetensors", "not found"),
    ("BROKEN", "not a safetensors"),
    ("no-such-model", "unknown model"),
])
def test_bad_checkpoint_is_one_line_exit_2(user_models, target, needle):
    if target == "BROKEN":
        target = str(user_models / "broken.safetensors")
    res = run("models", "show", target, env={"SYNTHSTUDIO_MODELS": str(user_models)})
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_debug_flag_shows_traceback(user_models):
    res = run("--debug", "models", "show", "/nonexistent/x.safetensors")
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_bad_device_is_one_line_exit_2():
    res = run("--device", "tpu", "info")
    assert res.returncode == 2 and "unknown device" in res.stderr


def test_demo_writes_a_wav(tmp_path):
    import soundfile as sf

    out = tmp_path / "demo.wav"
    res = run("demo", "--out", str(out))
    assert res.returncode == 0, res.stderr
    audio, sr = sf.read(out)
    assert sr > 0 and len(audio) > sr and abs(audio).max() > 0.1
