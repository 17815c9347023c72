"""`PackSpec`: what a sample pack contains, from YAML/JSON or CLI flags, validated up front.

A pack is a set of *instruments*; each instrument is one (model, latent) pair played over key
zones, velocity layers and round robins. The latent region says which latents:

- `anchors`: each anchor is one instrument;
- `xy`: one instrument at a point (x, y) in [0, 1]^2 of an XY pad whose four corners are anchors,
  ordered [top-left, top-right, bottom-left, bottom-right] (bilinear interpolation; `morph:
  melfit` fits it, below);
- `path`: `steps` instruments spaced evenly along a polyline of anchors, each segment by `morph`:
  "slerp" (the default) or "lerp" (straight; overshoots nothing both anchors share, the better
  straight path for `vae-gm` as measured by `bench.morph_modes`, docs/LATENT.md), or "melfit"
  (mel generators: each instrument is the latent whose note at C4, velocity 100, is closest to the
  same mix of the anchors' decoded log-mels, `latent.interpolate.mel_mix_fit`; brightness then
  moves steadily between anchors, docs/VAE.md);
- `random`: `count` instruments drawn uniformly inside the model's 1st-99th percentile box in PCA
  space, seeded.

Anchors are PCA-normalised coordinates (`space: pca`, the default; fewer values than the latent
size are padded with 0, the training mean) or raw latents (`space: latent`, exact size).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from synth.errors import ConfigError

REGION_KINDS = ("anchors", "xy", "path", "random")
MORPHS = ("slerp", "lerp", "melfit")
SAMPLE_RATES = (44100, 48000)
NORMALIZATIONS = ("peak", "lufs", "none")


@dataclass
class Region:
    """Where in latent space the instruments come from (see the module docstring)."""

    kind: str = "random"
    space: str = "pca"
    anchors: list[list[float]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    x: float = 0.5
    y: float = 0.5
    steps: int = 3
    morph: str = "slerp"
    count: int = 1
    seed: int = 0

    def validate(self) -> None:
        if self.kind not in REGION_KINDS:
            raise ConfigError(f"region kind must be one of {', '.join(REGION_KINDS)}, got "
                              f"{self.kind!r}")
        if self.space not in ("pca", "latent"):
            raise ConfigError(f"region space must be 'pca' or 'latent', got {self.space!r}")
        if not isinstance(self.anchors, list) or any(
                not isinstance(a, list) or not a or not all(_is_number(v) for v in a)
                for a in self.anchors):
            raise ConfigError("region anchors must be a list of non-empty lists of numbers")
        if any(not math.isfinite(float(v)) for a in self.anchors for v in a):
            raise ConfigError("region anchors must be finite numbers")
        need = {"anchors": 1, "xy": 4, "path": 2, "random": 0}[self.kind]
        if self.kind == "xy" and len(self.anchors) != 4:
            raise ConfigError("an xy region needs exactly 4 corner anchors [top-left, top-right, "
                              f"bottom-left, bottom-right], got {len(self.anchors)}")
        if len(self.anchors) < need:
            raise ConfigError(f"a {self.kind} region needs at least {need} anchors, got "
                              f"{len(self.anchors)}")
        if self.kind == "xy" and not (0 <= self.x <= 1 and 0 <= self.y <= 1):
            raise ConfigError(f"xy point must lie in [0, 1]^2, got ({self.x}, {self.y})")
        if self.morph not in MORPHS:
            raise ConfigError(f"region morph must be one of {', '.join(MORPHS)}, got {self.morph!r}")
        if self.kind == "path" and not (_is_int(self.steps) and self.steps >= 2):
            raise ConfigError(f"path steps must be an integer >= 2, got {self.steps!r}")
        if self.kind == "random" and not (_is_int(self.count) and 1 <= self.count <= 128):
            raise ConfigError(f"random count must be an integer 1-128, got {self.count!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"region seed must be a non-negative integer, got {self.seed!r}")
        if self.names and len(self.names) != self.n_instruments:
            raise ConfigError(f"region names: {len(self.names)} given for "
                              f"{self.n_instruments} instruments")

    @property
    def n_instruments(self) -> int:
        return {"anchors": len(self.anchors), "xy": 1, "path": self.steps,
                "random": self.count}[self.kind]


@dataclass
class Keys:
    low: int = 48
    high: int = 72
    step: int = 3

    def roots(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))


@dataclass
class PackSpec:
    """Everything that decides a pack's files. See docs/PACKS.md for the YAML form."""

    name: str
    models: list[str]
    out: str
    region: Region = field(default_factory=Region)
    keys: Keys = field(default_factory=Keys)
    velocities: list[int] = field(default_factory=lambda: [100])
    round_robins: int = 1
    round_robin_spread: float = 0.1  # std of the PCA-space variation of round robins 2..n
    duration: float = 2.0  # seconds the note is asked to last
    sample_rate: int = 48000
    bit_depth: int = 24
    normalize: str = "peak"
    peak_db: float = -1.0
    lufs: float = -18.0
    fade_in_ms: float = 1.0
    fade_out_ms: float = 20.0
    trim_db: float = -60.0  # leading audio below this (dB re the peak) is trimmed
    dedup_threshold: float = 0.02  # RMS feature distance under which round robins are duplicates
    loop: list[float] | None = None  # [start_s, end_s] of a forward loop, in the output file
    seed: int = 0
    corpus: str | None = None
    corpus_notes: int = 2000

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PackSpec":
        if not isinstance(data, dict):
            raise ConfigError("a pack spec must be a mapping of settings")
        data = dict(data)
        if "model" in data and "models" not in data:
            data["models"] = data.pop("model")
        if isinstance(data.get("models"), str):
            data["models"] = [data["models"]]
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown pack spec field(s): {', '.join(unknown)} (known: "
                              f"{', '.join(sorted(known))})")
        missing = [k for k in ("name", "models", "out") if data.get(k) in (None, "", [])]
        if missing:
            raise ConfigError(f"pack spec needs {', '.join(missing)}")
        data["region"] = _sub(Region, data.get("region", {}), "region")
        data["keys"] = _sub(Keys, data.get("keys", {}), "keys")
        spec = cls(**data)
        spec.validate()
        return spec

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PackSpec":
        """Read a .yaml/.yml/.json spec; relative `out`/`corpus` are relative to the file."""
        import yaml

        p = Path(path)
        try:
            text = p.read_text()
        except OSError as err:
            raise ConfigError(f"cannot read pack spec {p}: {err.strerror or err}") from None
        try:
            data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as err:
            raise ConfigError(f"pack spec {p} is not valid {p.suffix.lstrip('.') or 'YAML'}: "
                              f"{' '.join(str(err).split())}") from None
        if isinstance(data, dict):
            for key in ("out", "corpus"):
                if isinstance(data.get(key), str) and not Path(data[key]).expanduser().is_absolute():
                    data[key] = str(p.parent / data[key])
        return cls.from_dict(data)

    # -- checking -------------------------------------------------------------------------------
    def validate(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("pack name must be a non-empty string")
        if not isinstance(self.models, list) or not self.models or \
                not all(isinstance(m, str) and m for m in self.models):
            raise ConfigError("models must be a non-empty list of model names or paths")
        self.region.validate()
        k = self.keys
        if not all(_is_int(v) for v in (k.low, k.high, k.step)) or not 0 <= k.low <= k.high <= 127 \
                or k.step < 1:
            raise ConfigError(f"keys need integers 0 <= low <= high <= 127 and step >= 1, got "
                              f"low={k.low} high={k.high} step={k.step}")
        v = self.velocities
        if not isinstance(v, list) or not v or not all(_is_int(x) and 1 <= x <= 127 for x in v) \
                or len(set(v)) != len(v):
            raise ConfigError(f"velocities must be distinct integers 1-127, got {v!r}")
        self.velocities = sorted(v)
        if not _is_int(self.round_robins) or not 1 <= self.round_robins <= 16:
            raise ConfigError(f"round_robins must be an integer 1-16, got {self.round_robins!r}")
        if not _is_number(self.round_robin_spread) or not 0 <= self.round_robin_spread <= 2:
            raise ConfigError(f"round_robin_spread must be 0-2, got {self.round_robin_spread!r}")
        if not _is_number(self.duration) or not 0.05 <= self.duration <= 30:
            raise ConfigError(f"duration must be 0.05-30 seconds, got {self.duration!r}")
        if self.sample_rate not in SAMPLE_RATES:
            raise ConfigError(f"sample_rate must be 44100 or 48000, got {self.sample_rate!r}")
        if self.bit_depth != 24:
            raise ConfigError(f"bit_depth must be 24 (sampler packs are 24-bit PCM), got "
                              f"{self.bit_depth!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got "
                              f"{self.normalize!r}")
        if not _is_number(self.peak_db) or not -40 <= self.peak_db <= 0:
            raise ConfigError(f"peak_db must be -40..0 dBFS, got {self.peak_db!r}")
        if not _is_number(self.lufs) or not -60 <= self.lufs <= 0:
            raise ConfigError(f"lufs must be -60..0 LUFS, got {self.lufs!r}")
        for name in ("fade_in_ms", "fade_out_ms"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value <= 1000:
                raise ConfigError(f"{name} must be 0-1000 ms, got {value!r}")
        if not _is_number(self.trim_db) or not -120 <= self.trim_db <= 0:
            raise ConfigError(f"trim_db must be -120..0 dB, got {self.trim_db!r}")
        if not _is_number(self.dedup_threshold) or self.dedup_threshold < 0:
            raise ConfigError(f"dedup_threshold must be >= 0, got {self.dedup_threshold!r}")
        if self.loop is not None:
            if not isinstance(self.loop, list) or len(self.loop) != 2 or \
                    not all(_is_number(t) for t in self.loop) or not 0 <= self.loop[0] < self.loop[1]:
                raise ConfigError(f"loop must be [start_s, end_s] with 0 <= start < end, got "
                                  f"{self.loop!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.out, str) or not self.out:
            raise ConfigError("out must be a directory path")
        if not _is_int(self.corpus_notes) or self.corpus_notes < 2:
            raise ConfigError(f"corpus_notes must be an integer >= 2, got {self.corpus_notes!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render_hash(self) -> str:
        """Hash of every field that changes a sample's audio (not out, corpus or dedup)."""
        keep = {k: v for k, v in self.to_dict().items()
                if k not in ("out", "corpus", "corpus_notes", "dedup_threshold", "name")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sub(cls: type, data: Any, what: str) -> Any:
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must be a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} field(s): {', '.join(unknown)} (known: "
                          f"{', '.join(sorted(known))})")
    return cls(**data)


def parse_int_list(text: str, what: str) -> list[int]:
    """'64,127' -> [64, 127] (for CLI flags)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None
