"""The registry: one literal dict from kind name to the class that builds it.

Classes are named by import path so this bottom layer never imports `vocoders` at import time;
`get_class` imports on demand. A kind added here joins the config-matrix and checkpoint tests
automatically.
"""

from __future__ import annotations

import importlib
from typing import Any

from synth.config import config_from_dict
from synth.errors import UnknownKindError
from synth.module import SynthModule

#: kind -> "module:Class". Generators first, then vocoders.
KINDS: dict[str, str] = {
    "additive": "synth.additive:AdditiveGenerator",
    "ddsp": "synth.ddsp:DDSPGenerator",
    "vae": "synth.vae:VAEGenerator",
    "vqvae": "synth.vqvae:VQVAEGenerator",
    "griffinlim": "vocoders.griffinlim:GriffinLim",
    "hifigan": "vocoders.hifigan:HiFiGAN",
    "istft": "vocoders.istft:ISTFTVocoder",
    "classifier": "latent.metrics.classifier:NoteClassifier",
}


def kinds() -> list[str]:
    """All registered kind names, in registry order."""
    return list(KINDS)


def get_class(kind: str) -> type[SynthModule]:
    """The class registered under `kind`; an unknown kind raises `UnknownKindError`."""
    try:
        target = KINDS[kind]
    except (KeyError, TypeError):
        raise UnknownKindError(
            f"unknown model kind {kind!r}; registered kinds: {', '.join(KINDS)}"
        ) from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if getattr(cls, "kind", None) != kind:
        raise UnknownKindError(f"registry entry {kind!r} points at {target} whose kind is {cls.kind!r}")
    return cls


def build(kind: str, config: dict[str, Any] | Any | None = None, debug: bool = False) -> SynthModule:
    """Build a model of `kind` from a config dataclass, a dict, or the default/debug config."""
    cls = get_class(kind)
    if config is None:
        cfg = cls.debug_config() if debug else cls.Config()
    elif isinstance(config, dict):
        cfg = config_from_dict(cls.Config, config)
    else:
        cfg = config
    return cls(cfg)


def family(kind: str) -> str:
    """'generator', 'vocoder' or 'analyzer' (models that measure audio, e.g. the classifier)."""
    from synth.base import Generator
    from vocoders.base import Vocoder

    cls = get_class(kind)
    if issubclass(cls, Generator):
        return "generator"
    return "vocoder" if issubclass(cls, Vocoder) else "analyzer"
