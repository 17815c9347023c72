"""Where models live: checkpoints bundled with the package and the user's own.

Bundled checkpoints are package data under `studio/models/`; user checkpoints live in
`$SYNTHSTUDIO_MODELS` (default `~/.local/share/synthstudio/models`). A model is named by its file
stem ("ddsp-gm") or by a path. Companion files of a model share its stem plus a dotted suffix
(`ddsp-gm.text.safetensors`: the text mapper, `ddsp-gm.directions.json`: semantic directions) and
are not listed as models. The lookup lives in `synth` (not `studio`) because mel-domain
generators resolve the vocoder named in their config through it; it only reads files there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth.checkpoint import read_metadata
from synth.errors import CheckpointError, SynthStudioError

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "studio" / "models"


def user_dir() -> Path:
    return Path(os.environ.get("SYNTHSTUDIO_MODELS", "~/.local/share/synthstudio/models")).expanduser()


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    source: str  # "bundled" or "user"
    meta: dict[str, Any] | None
    error: str | None = None

    @property
    def kind(self) -> str:
        return self.meta["kind"] if self.meta else "?"


def list_models() -> list[ModelEntry]:
    """Every checkpoint found, bundled first; unreadable files are listed with their error."""
    out = []
    for source, folder in (("bundled", BUNDLED_DIR), ("user", user_dir())):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.safetensors")):
            if "." in path.stem:  # a companion of a model ("ddsp-gm.text"), not a model
                continue
            try:
                out.append(ModelEntry(path.stem, path, source, read_metadata(path)))
            except CheckpointError as err:
                out.append(ModelEntry(path.stem, path, source, None, str(err)))
    return out


def resolve_model(name_or_path: str) -> Path:
    """A model name (bundled or user) or a checkpoint path -> path; unknown names are an error."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix == ".safetensors" or os.sep in name_or_path:
        if not candidate.exists():
            raise CheckpointError(f"checkpoint not found: {candidate}")
        return candidate
    for entry in list_models():
        if entry.name == name_or_path:
            return entry.path
    names = ", ".join(e.name for e in list_models()) or "none installed"
    raise SynthStudioError(f"unknown model {name_or_path!r} (available: {names})")


def load_named(name_or_path: str):
    """Load a model by catalog name or path (`synth.checkpoint.load_model`), in eval mode."""
    from synth.checkpoint import load_model

    return load_model(resolve_model(name_or_path)).eval()
