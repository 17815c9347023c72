"""The instrument atlas: where each corpus instrument lies in a generator's latent space.

An atlas holds, for every training-corpus instrument a model saw, the mean latent of a seeded
sample of its training notes (whole notes encoded through `Generator.encode`; temporal latents
averaged over frames), with the instrument's name, GM family and program. Interfaces use it two
ways: corpus instruments become morphing anchors ("start from the nylon guitar"), and the latent
map draws every instrument in the model's PCA-normalised coordinates beside the current point.

Sidecar. `save_atlas` writes `<model-stem>.atlas.json` beside the checkpoint with the
checkpoint's file hash, the corpus hash and how it was fitted; `load_atlas` refuses a sidecar
made for other weights (the same rule as the directions sidecar).

    python -m bench.fit_atlas --model studio/models/ddsp-gm.safetensors --corpus data/gm
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from synth.base import Conditions, Generator
from synth.checkpoint import file_hash, read_metadata
from latent.controls import SidecarError, model_file, require_model_hash, sidecar_path
from synth.errors import ConfigError
from synth.fileio import atomic_write_text

ATLAS_FORMAT = "synthstudio-atlas"
ATLAS_VERSION = 1
ATLAS_SUFFIX = ".atlas.json"


class AtlasError(SidecarError):
    """A missing, corrupt or mismatched atlas sidecar."""


@dataclass
class Atlas:
    """Instruments and their mean latents.

    Attributes:
        names, families: one per instrument (N,).
        programs: GM program per instrument (None for non-GM sources).
        latents: (N, D) float32 mean latent of each instrument's sampled notes.
        notes: (N,) how many notes each mean is over.
        info: how it was fitted (corpus hash, split, notes per instrument, seed).
    """

    names: list[str]
    families: list[str]
    programs: list[int | None]
    latents: torch.Tensor
    notes: list[int]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.latents.ndim != 2 or self.latents.shape[0] != n or not (
                len(self.families) == len(self.programs) == len(self.notes) == n):
            raise ConfigError(f"atlas fields disagree: {n} names, latents {tuple(self.latents.shape)}")

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise AtlasError(f"no instrument {name!r} in the atlas") from None

    def coords(self, model: Generator) -> torch.Tensor:
        """(N, D) PCA-normalised coordinates of the instruments under `model`."""
        with torch.no_grad():
            return model.to_pca(self.latents.to(model.latent_mean.device)).float().cpu()


@torch.no_grad()
def encode_notes(model: Generator, corpus: Any, idx: Sequence[int], batch: int = 32,
                 progress: Any = None) -> torch.Tensor:
    """(N, D) float32 CPU latents of whole corpus notes `idx` through `model.encode`, with their
    pitch, velocity and duration as conditions (temporal latents are averaged over frames)."""
    out = []
    idx = list(idx)
    for start in range(0, len(idx), batch):
        rows = idx[start:start + batch]
        audio = torch.from_numpy(corpus.waveform(rows)).to(model.latent_mean.device)
        cond = Conditions(pitch=torch.tensor([float(corpus.notes[i]["pitch"]) for i in rows]),
                          velocity=torch.tensor([float(corpus.notes[i]["velocity"]) for i in rows]),
                          duration=audio.shape[-1] / corpus.sample_rate).to(audio.device)
        z = model.encode(audio, cond)
        out.append((z.mean(-1) if z.ndim == 3 else z).float().cpu())
        if progress is not None:
            progress(min(start + batch, len(idx)), len(idx))
    return torch.cat(out)


@torch.no_grad()
def fit_atlas(model: Generator, corpus: Any, *, per_instrument: int = 8,
              split: str = "train", instrument_split: str | None = "train",
              families: Sequence[str] | None = None, seed: int = 0, batch: int = 32,
              progress: Any = None) -> Atlas:
    """Encode `per_instrument` seeded notes of each instrument (note split `split`) and average.

    Args:
        model: a generator with a per-note latent (temporal latents are averaged over frames).
        corpus: a `synth.data.corpus.Corpus`.
        instrument_split / families: which instruments (default: those of the training split).
        progress: optional callable(done, total).
    """
    idx = corpus.select(split=split, instrument_split=instrument_split, families=families)
    if not idx:
        raise ConfigError(f"no notes in split {split!r} for the atlas")
    by_inst: dict[str, list[int]] = {}
    for i in idx:
        by_inst.setdefault(corpus.notes[i]["instrument_id"], []).append(i)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    owner: list[str] = []
    for inst in sorted(by_inst):
        rows = by_inst[inst]
        pick = sorted(rng.choice(rows, size=min(per_instrument, len(rows)), replace=False).tolist())
        chosen += pick
        owner += [inst] * len(pick)
    z = encode_notes(model, corpus, chosen, batch=batch, progress=progress)
    names, fams, progs, means, counts = [], [], [], [], []
    owner_arr = np.array(owner)
    for inst in sorted(by_inst):
        sel = torch.from_numpy(np.flatnonzero(owner_arr == inst))
        row = corpus.notes[by_inst[inst][0]]
        names.append(str(row["instrument"]))
        fams.append(str(row["family"]))
        progs.append(row.get("program"))
        means.append(z[sel].mean(0))
        counts.append(int(sel.numel()))
    info = {"corpus_hash": corpus.hash, "split": split, "instrument_split": instrument_split,
            "per_instrument": per_instrument, "seed": seed, "families": list(families or [])}
    return Atlas(names, fams, progs, torch.stack(means), counts, info)


def save_atlas(atlas: Atlas, model: str | os.PathLike) -> Path:
    """Write `<model-stem>.atlas.json` atomically beside checkpoint `model` (path or catalog
    name), recording the checkpoint's file hash."""
    path = model_file(model)
    meta = read_metadata(path)
    latent_dim = int(meta["config"].get("latent_dim", -1))
    if atlas.latents.shape[1] != latent_dim:
        raise ConfigError(f"atlas has D={atlas.latents.shape[1]} but {path.name} has latent_dim "
                          f"{latent_dim}")
    body = {"format": ATLAS_FORMAT, "version": ATLAS_VERSION, "model": path.name,
            "model_hash": file_hash(path), "kind": meta["kind"], "latent_dim": latent_dim,
            "info": atlas.info,
            "instruments": [{"name": n, "family": f, "program": p, "notes": c,
                             "latent": [round(float(v), 6) for v in z]}
                            for n, f, p, c, z in zip(atlas.names, atlas.families, atlas.programs,
                                                     atlas.notes, atlas.latents)]}
    out = path.with_name(path.stem + ATLAS_SUFFIX)
    atomic_write_text(out, json.dumps(body) + "\n")
    return out


def atlas_path(model: str | os.PathLike) -> Path:
    return sidecar_path(model, ATLAS_SUFFIX)


def load_atlas(model: str | os.PathLike) -> Atlas:
    """The atlas beside checkpoint `model`; refuses one fitted for other weights."""
    path = model_file(model)
    side = sidecar_path(path, ATLAS_SUFFIX)
    if not side.exists():
        raise AtlasError(f"no atlas sidecar {side} (fit one with python -m bench.fit_atlas)")
    try:
        body = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AtlasError(f"corrupt atlas sidecar {side}: {err}") from None
    if not isinstance(body, dict) or body.get("format") != ATLAS_FORMAT or \
            body.get("version") != ATLAS_VERSION:
        raise AtlasError(f"{side} is not a {ATLAS_FORMAT} v{ATLAS_VERSION} file")
    require_model_hash(body, side, path, "python -m bench.fit_atlas", AtlasError)
    try:
        rows = body["instruments"]
        return Atlas([r["name"] for r in rows], [r["family"] for r in rows],
                     [r.get("program") for r in rows],
                     torch.tensor([r["latent"] for r in rows], dtype=torch.float32).reshape(
                         len(rows), int(body["latent_dim"])),
                     [int(r["notes"]) for r in rows], dict(body.get("info") or {}))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise AtlasError(f"corrupt atlas sidecar {side}: {err}") from None
