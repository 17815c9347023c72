"""Seeded splits recorded in the manifest.

- `split` (note split): inside each instrument, notes are shuffled with a seed derived from
  (seed, instrument_id) and cut 80/10/10 into train/valid/test, so held-out real notes of the
  same instruments exist for originality checks.
- `instrument_split`: whole instruments are held out for unseen-timbre evaluation: one instrument
  per family (for families with at least two instruments) goes to "test", the rest to "train".
Both depend only on the seed and the set of ids, never on row order.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any, Sequence

import numpy as np


def _rng(seed: int, key: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def note_split(rows: Sequence[dict[str, Any]], seed: int = 0,
               fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> list[str]:
    """train/valid/test per row, cut inside each instrument."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[row["instrument_id"]].append(i)
    out = [""] * len(rows)
    for inst, idx in groups.items():
        idx = sorted(idx, key=lambda i: rows[i]["id"])
        order = _rng(seed, inst).permutation(len(idx))
        n = len(idx)
        n_test = int(round(n * fractions[2]))
        n_valid = int(round(n * fractions[1]))
        if n >= 3:
            n_test, n_valid = max(1, n_test), max(1, n_valid)
        for rank, j in enumerate(order):
            out[idx[j]] = "test" if rank < n_test else ("valid" if rank < n_test + n_valid else "train")
    return out


def instrument_split(rows: Sequence[dict[str, Any]], seed: int = 0,
                     per_family: int = 1) -> list[str]:
    """'test' for rows of held-out instruments, 'train' otherwise."""
    by_family: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        by_family[row["family"]].add(row["instrument_id"])
    held: set[str] = set()
    for fam, insts in sorted(by_family.items()):
        insts_sorted = sorted(insts)
        if len(insts_sorted) >= 2:
            order = _rng(seed, "family:" + fam).permutation(len(insts_sorted))
            held.update(insts_sorted[j] for j in order[:min(per_family, len(insts_sorted) - 1)])
    if not held:
        all_insts = sorted({r["instrument_id"] for r in rows})
        if len(all_insts) >= 2:
            held.add(all_insts[int(_rng(seed, "any").integers(len(all_insts)))])
    return ["test" if r["instrument_id"] in held else "train" for r in rows]


def assign_splits(rows: list[dict[str, Any]], seed: int = 0) -> None:
    """Write `split` and `instrument_split` into every row (in place)."""
    for row, s, t in zip(rows, note_split(rows, seed), instrument_split(rows, seed)):
        row["split"], row["instrument_split"] = s, t
