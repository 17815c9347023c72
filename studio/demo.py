"""The demo job behind `make demo` until the app exists: render an arpeggio from a generator."""

from __future__ import annotations

from pathlib import Path

import torch

from synth.audio import save
from synth.base import Conditions, Generator
from synth.checkpoint import load_model
from synth.device import resolve_device
from synth.errors import SynthStudioError
from synth.registry import build

ARPEGGIO = (48, 52, 55, 60, 64, 67, 72)
DEFAULT_MODEL = "ddsp-gm"


def render_demo(out: str | Path, model: str | None = None, seed: int = 0,
                device: str = "auto", note_seconds: float = 0.6) -> tuple[Path, float]:
    """Render `ARPEGGIO` note by note from `model` (a checkpoint name/path; default: the bundled
    DDSP model, or the untrained reference additive generator when none is bundled) and write a
    16-bit WAV. Returns (path, seconds)."""
    from synth.catalog import BUNDLED_DIR, resolve_model

    dev = resolve_device(device)
    if model is None and (BUNDLED_DIR / f"{DEFAULT_MODEL}.safetensors").exists():
        model = DEFAULT_MODEL
    gen = build("additive") if model is None else load_model(resolve_model(model))
    if not isinstance(gen, Generator):
        raise SynthStudioError(f"{model} is a {gen.kind} vocoder, not a generator")
    gen = gen.to(dev).eval()
    torch.manual_seed(seed)
    cond = Conditions.note(list(ARPEGGIO), 100, duration=note_seconds)
    with torch.no_grad():
        notes = gen.sample(len(ARPEGGIO), cond, seed=seed, temperature=0.0).cpu()
    fade = torch.linspace(1.0, 0.0, int(0.02 * gen.sample_rate))
    notes[:, -fade.numel():] *= fade
    audio = notes.reshape(-1)
    audio = 0.9 * audio / audio.abs().max().clamp_min(1e-6)
    save(out, audio, gen.sample_rate, subtype="PCM_16")
    return Path(out), audio.numel() / gen.sample_rate
