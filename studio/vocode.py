"""Mel files and vocoding: `synthstudio render --mel FILE.npy --vocoder NAME` and
`synthstudio mel AUDIO --out FILE.npy`.

A mel file is a `.npy` log-mel, (n_mels, frames) or (1, n_mels, frames), float32, with its
FeatureSpec as JSON in a sidecar `FILE.json` (`FILE.npy` -> `FILE.json`). Vocoders are a
checkpoint name/path, or "griffinlim" (no weights: built for the mel's own spec).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from synth.audio import load, save
from synth.checkpoint import load_model
from synth.errors import ConfigError, SpecMismatchError, SynthStudioError
from synth.features import FeatureSpec, LogMel
from synth.fileio import atomic_path, atomic_write_text
from synth.registry import build
from vocoders.base import Vocoder


def sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def write_mel(audio_path: str | Path, out: str | Path, spec: FeatureSpec | None = None) -> Path:
    """Analyse an audio file into a log-mel `.npy` plus its FeatureSpec sidecar."""
    spec = spec or FeatureSpec()
    audio = load(audio_path, spec.sample_rate)
    mel = LogMel(spec)(audio[None])[0].numpy().astype(np.float32)
    out = Path(out)
    with atomic_path(out) as tmp:
        np.save(tmp, mel, allow_pickle=False)
    atomic_write_text(sidecar(out), json.dumps(spec.to_dict(), indent=2))
    return out


def read_mel(path: str | Path) -> tuple[torch.Tensor, FeatureSpec]:
    """(1, n_mels, frames) float32 mel and its spec; clear errors for every bad case."""
    path = Path(path)
    if not path.is_file():
        raise SynthStudioError(f"mel file not found: {path}")
    meta = sidecar(path)
    if not meta.is_file():
        raise SpecMismatchError(f"{path} has no FeatureSpec sidecar {meta.name} (write one with "
                                "`synthstudio mel`)")
    try:
        spec = FeatureSpec.from_dict(json.loads(meta.read_text()))
    except json.JSONDecodeError as err:
        raise SpecMismatchError(f"unreadable FeatureSpec sidecar {meta}: {err}") from None
    try:
        mel = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise SynthStudioError(f"{path} is not a .npy array: {err}") from None
    if mel.dtype.kind != "f":
        raise SpecMismatchError(f"{path} holds {mel.dtype} values; a log-mel is floating point")
    if mel.ndim == 3 and mel.shape[0] == 1:
        mel = mel[0]
    if mel.ndim != 2 or mel.shape[0] != spec.n_mels or mel.shape[1] < 1:
        raise SpecMismatchError(f"{path} has shape {mel.shape}; its spec needs ({spec.n_mels}, frames)")
    if not np.isfinite(mel).all():
        raise SpecMismatchError(f"{path} contains NaN or Inf")
    return torch.from_numpy(mel.astype(np.float32))[None], spec


def load_vocoder(name: str, spec: FeatureSpec) -> Vocoder:
    if name == "griffinlim":
        return build("griffinlim", {"feature_spec": spec.to_dict()}).eval()
    from synth.catalog import resolve_model

    model = load_model(resolve_model(name))
    if not isinstance(model, Vocoder):
        raise ConfigError(f"{name} is a {model.kind} generator, not a vocoder")
    return model.eval()


@torch.no_grad()
def vocode_file(mel_path: str | Path, vocoder: str, out: str | Path, bit_depth: int = 24) -> tuple[Path, float]:
    """Mel file -> WAV through `vocoder`; returns (path, seconds)."""
    mel, spec = read_mel(mel_path)
    model = load_vocoder(vocoder, spec)
    audio = model(mel, spec)[0]
    subtype = {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}.get(bit_depth)
    if subtype is None:
        raise ConfigError(f"bit depth must be 16, 24 or 32, got {bit_depth}")
    save(out, audio.clamp(-1, 1), spec.sample_rate, subtype=subtype)
    return Path(out), audio.numel() / spec.sample_rate
