"""Checkpoint refusal cases: every bad file gets a clear CheckpointError, nothing is unpickled."""

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from synth.checkpoint import load_model, read_metadata, save_model, unwrap
from synth.errors import CheckpointError
from synth.registry import build


@pytest.fixture
def ckpt(tmp_path):
    return save_model(build("additive", debug=True), tmp_path / "m.safetensors")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.safetensors")


def test_directory(tmp_path):
    with pytest.raises(CheckpointError, match="directory"):
        load_model(tmp_path)


def test_not_safetensors(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_text("this is not a checkpoint at all, just some text that is long enough")
    with pytest.raises(CheckpointError, match="not a safetensors"):
        load_model(bad)


def test_pickle_file_refused(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"a": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError):
        load_model(bad)


def test_truncated(ckpt, tmp_path):
    data = ckpt.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(cut)


def test_plain_safetensors_without_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a synthstudio checkpoint"):
        load_model(path)


def _rewrite_meta(src, dst, edit):
    data = src.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = json.loads(header["__metadata__"]["synthstudio"])
    edit(meta)
    header["__metadata__"]["synthstudio"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    dst.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


def test_unknown_kind(ckpt, tmp_path):
    dst = tmp_path / "k.safetensors"
    _rewrite_meta(ckpt, dst, lambda m: m.update(kind="theremin9000"))
    assert read_metadata(dst)["kind"] == "theremin9000"
    with pytest.raises(CheckpointError, match="unknown model kind 'theremin9000'"):
        load_model(dst)


def test_config_that_does_not_fit_weights(ckpt, tmp_path):
    dst = tmp_path / "c.safetensors"
    _rewrite_meta(ckpt, dst, lambda m: m["config"].update(hidden=32))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(dst)


def test_unknown_config_field(ckpt, tmp_path):
    dst = tmp_path / "u.safetensors"
    _rewrite_meta(ckpt, dst, lambda m: m["config"].update(flux_capacitor=1))
    with pytest.raises(CheckpointError, match="flux_capacitor"):
        load_model(dst)


def test_save_is_atomic_and_keeps_old_file(ckpt, monkeypatch):
    before = ckpt.read_bytes()
    import pathlib

    real = pathlib.Path.write_bytes

    def half_then_fail(self, data):
        real(self, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(pathlib.Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_model(build("additive", debug=True), ckpt)
    assert ckpt.read_bytes() == before
    assert [p.name for p in ckpt.parent.iterdir()] == [ckpt.name]


def test_unwrap_compiled_like_wrapper():
    model = build("additive", debug=True)

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self._orig_mod = m

    assert unwrap(Wrapper(model)) is model
