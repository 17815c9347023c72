"""Model checkpoints: one `.safetensors` file, weights plus JSON metadata.

The metadata (under the header key ``"synthstudio"``) holds kind, config, feature spec, latent
statistics, version, corpus hash, training steps and an evaluation summary. `load_model` rebuilds
the model through the registry; nothing is unpickled, ever. The unwrapped module is saved, never a
DDP or compiled wrapper.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from synth import __version__
from synth.config import config_to_dict
from synth.errors import CheckpointError, SynthStudioError
from synth.fileio import atomic_write_bytes
from synth.module import SynthModule
from synth.registry import build, get_class

FORMAT = "synthstudio-model"
META_KEY = "synthstudio"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """Strip DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def state_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors that own their memory (safetensors refuses
    tensors sharing storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def model_metadata(model: SynthModule, **extra: Any) -> dict[str, Any]:
    spec = model.feature_spec
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": __version__,
        "kind": model.kind,
        "config": config_to_dict(model.config),
        "feature_spec": spec.to_dict() if spec is not None else None,
        "sample_rate": model.sample_rate,
    }
    stats = getattr(model, "latent_stats_dict", None)
    meta["latent_stats"] = stats() if callable(stats) else None
    meta.update({"corpus_hash": None, "steps": 0, "evaluation": None})
    meta.update(extra)
    return meta


def save_model(model: torch.nn.Module, path: str | os.PathLike, *, corpus_hash: str | None = None,
               steps: int = 0, evaluation: dict[str, Any] | None = None,
               **extra: Any) -> Path:
    """Write `model` (unwrapped) to `path` atomically as one safetensors file."""
    module = unwrap(model)
    if not isinstance(module, SynthModule):
        raise CheckpointError(f"only registered models can be saved, got {type(module).__name__}")
    meta = model_metadata(module, corpus_hash=corpus_hash, steps=int(steps),
                          evaluation=evaluation, **extra)
    data = st_save(state_tensors(module), metadata={META_KEY: json.dumps(meta)})
    atomic_write_bytes(path, data)
    return Path(path)


def check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path is a directory: {path}")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"not a safetensors checkpoint (file too short): {path}")
        (header_len,) = struct.unpack("<Q", head)
        if header_len <= 0 or header_len > min(size - 8, 100 * 2**20):
            raise CheckpointError(f"not a safetensors checkpoint (bad header): {path}")
        header_bytes = fh.read(header_len)
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"not a safetensors checkpoint (header is not JSON): {path}") from None
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError):
            raise CheckpointError(f"corrupt checkpoint header (tensor {name}): {path}") from None
    if 8 + header_len + end > size:
        raise CheckpointError(
            f"truncated checkpoint ({size} bytes, header promises {8 + header_len + end}): {path}"
        )


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The synthstudio metadata of a checkpoint, validated, without loading weights."""
    path = Path(path)
    check_file(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get(META_KEY)
    except Exception as err:  # safetensors raises its own error types for malformed files
        raise CheckpointError(f"unreadable checkpoint {path}: {err}") from None
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file but not a synthstudio checkpoint")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"corrupt synthstudio metadata in {path}") from None
    if meta.get("format") != FORMAT or "kind" not in meta or "config" not in meta:
        raise CheckpointError(f"{path} lacks the synthstudio metadata (format, kind, config)")
    return meta


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> SynthModule:
    """Rebuild a model from a checkpoint through the registry (strict weight loading)."""
    path = Path(path)
    meta = read_metadata(path)
    try:
        get_class(meta["kind"])
        model = build(meta["kind"], meta["config"])
    except SynthStudioError as err:
        raise CheckpointError(f"{path}: {err}") from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:
        raise CheckpointError(f"unreadable weights in {path}: {err}") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"weights in {path} do not fit kind {meta['kind']!r}: {first}") from None
    model.checkpoint_meta = meta  # type: ignore[attr-defined]
    return model.to(device).eval()


def file_hash(path: str | os.PathLike, length: int = 16) -> str:
    """SHA-256 of a file's bytes (first `length` hex digits), for render manifests."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]
