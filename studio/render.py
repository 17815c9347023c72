"""Rendering library behind `synthstudio render`: notes, audio (timbre transfer or
encode/decode) and MIDI through any registered generator, with a manifest that re-renders the
same file.

The manifest records the model file's hash, the seed, the conditions, the latent, the controls
and the output format; `render_from_manifest` re-creates the WAV bit for bit on the CPU.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from synth import __version__
from synth.audio import load, save
from synth.base import Conditions, Generator
from synth.checkpoint import file_hash, load_model
from synth.errors import ConfigError, SynthStudioError
from synth.fileio import atomic_write_text

SUBTYPES = {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}


@dataclass
class RenderRequest:
    """One render. Exactly one source: `audio`, `midi`, or a note (`pitch`)."""

    model: str
    out: str
    audio: str | None = None
    midi: str | None = None
    pitch: float | None = None
    velocity: float = 100.0
    duration: float = 2.0
    latent: list[float] | None = None
    controls: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    sample_rate: int | None = None
    bit_depth: int = 24
    octave_shift: int = 0
    loudness_shift: float = 0.0

    def source(self) -> str:
        given = [name for name, v in (("audio", self.audio), ("midi", self.midi),
                                      ("pitch", self.pitch)) if v is not None]
        if len(given) != 1:
            raise ConfigError("give exactly one of --audio, --midi or --pitch")
        return given[0]


def load_generator(name: str) -> tuple[Generator, Path]:
    from synth.catalog import resolve_model

    path = resolve_model(name)
    model = load_model(path)
    if not isinstance(model, Generator):
        raise SynthStudioError(f"{name} is a {model.kind} vocoder, not a generator")
    return model.eval(), path


def _latent(model: Generator, req: RenderRequest) -> torch.Tensor:
    if req.latent is None:
        return model.latent_mean[None].clone()
    z = torch.tensor(req.latent, dtype=torch.float32)
    if z.shape != (model.latent_dim,):
        raise ConfigError(f"latent has {z.numel()} values; {model.kind} needs {model.latent_dim}")
    return z[None]


@torch.no_grad()
def render_audio(model: Generator, req: RenderRequest) -> tuple[torch.Tensor, int]:
    """(T,) audio and its sample rate for a request, through the Generator contract."""
    sr = req.sample_rate or model.sample_rate
    z = _latent(model, req)
    kind = req.source()
    if kind == "pitch":
        cond = Conditions.note(req.pitch, req.velocity, duration=req.duration)
        return model.render(z, cond, sample_rate=sr, controls=req.controls, seed=req.seed)[0], sr
    if kind == "midi":
        from synth.play import read_midi, render_midi

        notes = read_midi(req.midi)
        return render_midi(model, notes, z, sample_rate=sr, controls=req.controls, seed=req.seed), sr
    audio = load(req.audio, model.sample_rate)
    from synth.ddsp import DDSPGenerator

    if isinstance(model, DDSPGenerator):  # timbre transfer: f0 and loudness from the recording
        from synth.ddsp_play import TransferOptions, timbre_transfer

        opts = TransferOptions(octave_shift=req.octave_shift, loudness_shift=req.loudness_shift)
        return timbre_transfer(model, audio, z if req.latent is not None else None, opts,
                               sample_rate=sr, controls=req.controls), sr
    # autoencoders: encode, then decode the recording's own latent
    cond = Conditions(duration=audio.numel() / model.sample_rate)
    if getattr(model, "needs_pitch", False):
        from synth.pitch import f0, hz_to_midi

        track = f0(audio[None], model.sample_rate)
        voiced = track.f0_hz[0][track.periodicity[0] > 0.5]
        if voiced.numel() == 0:
            raise SynthStudioError(f"{req.audio}: no pitch found to condition {model.kind} on")
        cond = Conditions.note(float(hz_to_midi(voiced.median()).round()), req.velocity,
                               duration=cond.duration)
    return model.render(model.encode(audio[None], cond), cond, sample_rate=sr,
                        controls=req.controls, seed=req.seed)[0], sr


def render(req: RenderRequest) -> dict[str, Any]:
    """Render `req` to `req.out` (WAV) and `req.out` + '.json' (manifest); returns the manifest."""
    if req.bit_depth not in SUBTYPES:
        raise ConfigError(f"bit depth must be 16, 24 or 32 (float), got {req.bit_depth}")
    for path in (req.audio, req.midi):
        if path is not None and not Path(path).is_file():
            raise SynthStudioError(f"input file not found: {path}")
    model, model_path = load_generator(req.model)
    audio, sr = render_audio(model, req)
    peak = float(audio.abs().max()) if audio.numel() else 0.0
    if not torch.isfinite(audio).all():
        raise SynthStudioError("the model produced non-finite audio")
    out = Path(req.out)
    save(out, audio.clamp(-1.0, 1.0), sr, subtype=SUBTYPES[req.bit_depth])
    manifest = {
        "synthstudio": __version__, "request": asdict(req), "model_kind": model.kind,
        "model_file": str(model_path), "model_hash": file_hash(model_path),
        "inputs": {k: file_hash(v) for k, v in (("audio", req.audio), ("midi", req.midi)) if v},
        "latent": _latent(model, req)[0].tolist(), "sample_rate": sr,
        "seconds": audio.numel() / sr, "peak": peak, "clipped": peak > 1.0,
    }
    atomic_write_text(manifest_path(out), json.dumps(manifest, indent=2))
    return manifest


def manifest_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def render_from_manifest(manifest: str | Path, out: str | None = None) -> dict[str, Any]:
    """Re-render a manifest's request (to `out`, default: the original path); the model file
    must hash to the recorded value."""
    try:
        data = json.loads(Path(manifest).read_text())
        req = RenderRequest(**data["request"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise SynthStudioError(f"unreadable render manifest {manifest}: {err}") from None
    _, path = load_generator(req.model)
    if file_hash(path) != data.get("model_hash"):
        raise SynthStudioError(f"model {path} differs from the one the manifest was made with")
    if out is not None:
        req.out = out
    return render(req)
