"""The corpus format: a directory with `corpus.json`, `manifest.jsonl` and `audio.npy`.

- `audio.npy`: int16 array (notes, samples), read as a memory map; sample i of note n is
  ``audio[n, i] / 32767``.
- `manifest.jsonl`: one JSON object per note, row order = audio row order (see `REQUIRED`).
- `corpus.json`: format, version, sample rate, note length, counts, builder options and a content
  hash. It is written last: a directory without it is an unfinished build.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from synth.data.gm import FAMILIES
from synth.errors import SynthStudioError
from synth.fileio import atomic_path, atomic_write_text

FORMAT = "synthstudio-corpus"
VERSION = 1
INT16_SCALE = 32767.0
SPLITS = ("train", "valid", "test")

#: field -> accepted Python types. Every manifest row must have these.
REQUIRED: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "source": (str,),
    "instrument": (str,),
    "instrument_id": (str,),
    "family": (str,),
    "family_id": (int,),
    "program": (int, type(None)),
    "pitch": (int, float),
    "velocity": (int,),
    "split": (str,),
    "instrument_split": (str,),
    "caption": (str,),
    "descriptors": (dict,),
}


class CorpusError(SynthStudioError):
    """A corpus directory that is missing, unfinished or fails the schema check."""


def validate_row(row: dict[str, Any], where: str = "manifest row") -> None:
    """Raise CorpusError unless `row` carries every required field with the right type."""
    for name, types in REQUIRED.items():
        if name not in row:
            raise CorpusError(f"{where}: missing field {name!r}")
        value = row[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise CorpusError(f"{where}: field {name!r} has type {type(value).__name__}")
    if row["split"] not in SPLITS or row["instrument_split"] not in SPLITS:
        raise CorpusError(f"{where}: split must be one of {SPLITS}")
    if not 0 <= row["family_id"] < len(FAMILIES) or row["family"] != FAMILIES[row["family_id"]]:
        raise CorpusError(f"{where}: family {row['family']!r}/{row['family_id']} is not a GM family")
    if not 0 <= row["velocity"] <= 127:
        raise CorpusError(f"{where}: velocity {row['velocity']} outside 0-127")


@dataclass
class Corpus:
    """A finished corpus on disk (read-only view).

    Attributes:
        root: the directory.
        info: the parsed corpus.json.
        notes: manifest rows, index = audio row.
        audio: int16 memmap (notes, samples).
    """

    root: Path
    info: dict[str, Any]
    notes: list[dict[str, Any]]
    audio: np.ndarray = field(repr=False)

    @classmethod
    def open(cls, root: str | os.PathLike) -> "Corpus":
        root = Path(root)
        if not root.is_dir():
            raise CorpusError(f"corpus directory not found: {root}")
        info_path = root / "corpus.json"
        if not info_path.exists():
            raise CorpusError(f"{root} is not a finished corpus (no corpus.json; re-run the build)")
        try:
            info = json.loads(info_path.read_text())
        except json.JSONDecodeError as err:
            raise CorpusError(f"corrupt {info_path}: {err}") from None
        if info.get("format") != FORMAT or info.get("version") != VERSION:
            raise CorpusError(f"{info_path}: not a {FORMAT} v{VERSION} corpus")
        notes = []
        with open(root / "manifest.jsonl") as fh:
            for n, line in enumerate(fh):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise CorpusError(f"{root}/manifest.jsonl line {n + 1} is not JSON") from None
                validate_row(row, f"{root}/manifest.jsonl line {n + 1}")
                notes.append(row)
        try:
            audio = np.load(root / "audio.npy", mmap_mode="r")
        except (OSError, ValueError) as err:
            raise CorpusError(f"unreadable {root}/audio.npy: {err}") from None
        if audio.dtype != np.int16 or audio.ndim != 2 or audio.shape[0] != len(notes):
            raise CorpusError(f"{root}/audio.npy has shape {audio.shape} {audio.dtype}; expected "
                              f"({len(notes)}, samples) int16")
        if info.get("n_notes") != len(notes) or info.get("n_samples") != audio.shape[1]:
            raise CorpusError(f"{root}: corpus.json counts disagree with the manifest/audio")
        return cls(root, info, notes, audio)

    @property
    def sample_rate(self) -> int:
        return int(self.info["sample_rate"])

    @property
    def hash(self) -> str:
        return str(self.info["hash"])

    def __len__(self) -> int:
        return len(self.notes)

    def waveform(self, index: int | Sequence[int]) -> np.ndarray:
        """float32 audio in [-1, 1]: (samples,) for an int, (n, samples) for a sequence."""
        if isinstance(index, (int, np.integer)):
            return self.audio[int(index)].astype(np.float32) / INT16_SCALE
        idx = np.asarray(index, dtype=np.int64)
        return self.audio[idx].astype(np.float32) / INT16_SCALE

    def select(self, split: str | None = None, instrument_split: str | None = None,
               families: Iterable[str] | None = None, on_key: bool = False) -> list[int]:
        """Row indices matching the given note split / instrument split / families.

        `on_key=True` drops notes the pitch survey found sounding away from their label
        (`pitch_ok: false`); notes of a corpus that was never surveyed are kept.
        """
        fams = set(families) if families is not None else None
        return [i for i, r in enumerate(self.notes)
                if (split is None or r["split"] == split)
                and (instrument_split is None or r["instrument_split"] == instrument_split)
                and (fams is None or r["family"] in fams)
                and not (on_key and r.get("pitch_ok") is False)]


def content_hash(rows: Sequence[dict[str, Any]], audio_digest: str) -> str:
    h = hashlib.sha256(audio_digest.encode())
    for row in rows:
        h.update(json.dumps(row, sort_keys=True).encode())
    return h.hexdigest()[:16]


def write_corpus(root: str | os.PathLike, rows: Sequence[dict[str, Any]],
                 chunks: Iterable[np.ndarray], sample_rate: int, n_samples: int,
                 builder: dict[str, Any]) -> Path:
    """Write a finished corpus atomically: audio, then manifest, then corpus.json.

    Args:
        rows: manifest rows (validated here), in audio order.
        chunks: int16 arrays (k, n_samples) whose rows, concatenated, match `rows`.
    """
    root = Path(root)
    if not rows:
        raise CorpusError(f"refusing to write an empty corpus to {root}")
    root.mkdir(parents=True, exist_ok=True)
    for n, row in enumerate(rows):
        validate_row(row, f"row {n} ({row.get('id')})")
    (root / "corpus.json").unlink(missing_ok=True)  # the directory is unfinished from here on
    digest = hashlib.sha256()
    with atomic_path(root / "audio.npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16,
                                        shape=(len(rows), n_samples))
        pos = 0
        for chunk in chunks:
            if chunk.dtype != np.int16 or chunk.ndim != 2 or chunk.shape[1] != n_samples:
                raise CorpusError(f"audio chunk {chunk.shape} {chunk.dtype} does not fit "
                                  f"(k, {n_samples}) int16")
            out[pos:pos + len(chunk)] = chunk
            digest.update(np.ascontiguousarray(chunk).tobytes())
            pos += len(chunk)
        if pos != len(rows):
            raise CorpusError(f"{pos} audio rows for {len(rows)} manifest rows")
        out.flush()
        del out
    atomic_write_text(root / "manifest.jsonl",
                      "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    info = {
        "format": FORMAT, "version": VERSION, "sample_rate": int(sample_rate),
        "n_samples": int(n_samples), "n_notes": len(rows), "audio": "audio.npy",
        "dtype": "int16", "scale": INT16_SCALE, "builder": builder,
        "hash": content_hash(rows, digest.hexdigest()), "audio_digest": digest.hexdigest(),
    }
    atomic_write_text(root / "corpus.json", json.dumps(info, indent=2, sort_keys=True))
    return root


def audio_digest(corpus: "Corpus", chunk: int = 1024) -> str:
    """sha256 of the audio rows in order (the digest `write_corpus` computes while writing)."""
    stored = corpus.info.get("audio_digest")
    if stored:
        return str(stored)
    digest = hashlib.sha256()
    for start in range(0, len(corpus), chunk):
        digest.update(np.ascontiguousarray(corpus.audio[start:start + chunk]).tobytes())
    return digest.hexdigest()


def update_manifest(root: str | os.PathLike, fields: dict[str, Sequence[Any]]) -> "Corpus":
    """Add or replace per-note manifest fields of a finished corpus (e.g. the pitch survey's
    `pitch_cents` / `pitch_ok`) and re-hash it. The audio is not touched; the manifest and
    corpus.json are each replaced atomically (corpus.json last, so a crash in between leaves
    an unfinished corpus, never a hash that lies)."""
    corpus = Corpus.open(root)
    rows = [dict(r) for r in corpus.notes]
    for name, values in fields.items():
        if name in REQUIRED:
            raise CorpusError(f"update_manifest does not change required field {name!r}")
        if len(values) != len(rows):
            raise CorpusError(f"field {name!r} has {len(values)} values for {len(rows)} notes")
        for row, value in zip(rows, values):
            row[name] = value
    digest = audio_digest(corpus)
    info = dict(corpus.info)
    info["hash"] = content_hash(rows, digest)
    info["audio_digest"] = digest
    root = Path(root)
    (root / "corpus.json").unlink()
    atomic_write_text(root / "manifest.jsonl",
                      "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    atomic_write_text(root / "corpus.json", json.dumps(info, indent=2, sort_keys=True))
    return Corpus.open(root)


def to_int16(audio: np.ndarray) -> tuple[np.ndarray, int]:
    """float audio -> int16 with clipping; returns (array, number of clipped samples)."""
    clipped = int(np.count_nonzero(np.abs(audio) > 1.0))
    return np.round(np.clip(audio, -1.0, 1.0) * INT16_SCALE).astype(np.int16), clipped
