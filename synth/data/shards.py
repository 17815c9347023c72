"""Resumable builds: work is cut into jobs, each job writes one shard, finished shards are skipped.

A shard is `shards/<name>.npy` (int16 (k, samples)) plus `shards/<name>.json` (rows and the build
options' hash), the JSON written last so its presence marks the shard complete. `finalize` joins
the shards, assigns splits and captions, and writes the corpus atomically.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from synth.data.corpus import write_corpus
from synth.data.descriptors import caption, caption_thresholds
from synth.data.splits import assign_splits
from synth.errors import ConfigError
from synth.fileio import atomic_path, atomic_write_text


class NoteGrid:
    """The note grid a corpus build renders, shared by the build options dataclasses (which
    declare `pitch_low`, `pitch_high`, `pitch_step`, `velocities`, `sample_rate`,
    `held_seconds` and `release_seconds`; the mixin adds no fields, so options hashes are
    unchanged)."""

    def check_grid(self) -> None:
        """One-line ConfigErrors for a bad pitch range, velocity or note length."""
        if not 0 <= self.pitch_low <= self.pitch_high <= 127 or self.pitch_step < 1:
            raise ConfigError(f"bad pitch range {self.pitch_low}-{self.pitch_high} "
                              f"step {self.pitch_step}")
        if not self.velocities or any(not 1 <= v <= 127 for v in self.velocities):
            raise ConfigError("velocities must be in 1-127")
        if self.sample_rate < 8000 or self.held_seconds <= 0 or self.release_seconds < 0:
            raise ConfigError("sample rate must be >= 8000 Hz, held > 0 s and release >= 0 s")

    @property
    def pitches(self) -> list[int]:
        return list(range(self.pitch_low, self.pitch_high + 1, self.pitch_step))

    @property
    def n_samples(self) -> int:
        return int(round((self.held_seconds + self.release_seconds) * self.sample_rate))


def options_hash(options: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]


def shard_done(shard_dir: Path, name: str, opts_hash: str) -> bool:
    meta = shard_dir / f"{name}.json"
    if not meta.exists() or not (shard_dir / f"{name}.npy").exists():
        return False
    try:
        return json.loads(meta.read_text()).get("options_hash") == opts_hash
    except json.JSONDecodeError:
        return False


def write_shard(shard_dir: Path, name: str, audio: np.ndarray, rows: list[dict[str, Any]],
                opts_hash: str, report: dict[str, Any] | None = None) -> None:
    shard_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(shard_dir / f"{name}.npy") as tmp:
        np.save(tmp, audio, allow_pickle=False)
    atomic_write_text(shard_dir / f"{name}.json", json.dumps(
        {"options_hash": opts_hash, "rows": rows, "report": report or {}}))


def read_shards(shard_dir: Path, names: Sequence[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows, reports) of the named shards, in the given order."""
    rows, reports = [], []
    for name in names:
        meta = json.loads((shard_dir / f"{name}.json").read_text())
        rows.extend(meta["rows"])
        reports.append(meta.get("report", {}))
    return rows, reports


def shard_audio(shard_dir: Path, names: Sequence[str]) -> Iterator[np.ndarray]:
    for name in names:
        yield np.load(shard_dir / f"{name}.npy", mmap_mode="r", allow_pickle=False)


def finalize(root: Path, shard_dir: Path, names: Sequence[str], sample_rate: int, n_samples: int,
             builder: dict[str, Any], seed: int) -> Path:
    """Join shards into a finished corpus with splits and captions."""
    rows, _ = read_shards(shard_dir, names)
    assign_splits(rows, seed)
    thresholds = caption_thresholds([r["descriptors"] for r in rows])
    for row in rows:
        row["caption"] = caption(row, thresholds)
    builder = dict(builder, caption_thresholds=thresholds, split_seed=seed)
    return write_corpus(root, rows, shard_audio(shard_dir, names), sample_rate, n_samples, builder)


def existing_build(out: Path, opts_hash: str) -> dict[str, Any] | None:
    """The stored build report if `out` holds a finished corpus built with these options."""
    info = out / "corpus.json"
    if not info.exists():
        return None
    try:
        builder = json.loads(info.read_text()).get("builder", {})
    except json.JSONDecodeError:
        return None
    if builder.get("options_hash") != opts_hash:
        return None
    return dict(builder.get("report", {}), rendered_now=0, up_to_date=True)


def remove_shards(shard_dir: Path, names: Sequence[str]) -> None:
    """Delete shards once the corpus that joins them is written."""
    for name in names:
        for suffix in (".json", ".npy"):
            (shard_dir / f"{name}{suffix}").unlink(missing_ok=True)
    if shard_dir.exists() and not any(shard_dir.iterdir()):
        shard_dir.rmdir()
