"""`NoteDataset`: a torch map-style dataset over a corpus memmap.

Items are dicts {"audio": (T,) float32, "pitch": () float32 MIDI, "velocity": () float32,
"family": () int64, "index": () int64}. With crops or augmentation, randomness comes only from
the `torch.Generator` the Trainer passes to `get_item(index, generator)`, so items are identical
across runs, ranks, worker counts and resumes. Plain `__getitem__` gives the un-augmented item
(the crop starting at `crop_offset`), so the dataset also works with torch's `DataLoader` and
`DistributedSampler` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from synth.data.corpus import Corpus, CorpusError


@dataclass
class Augment:
    """Optional augmentation. gain_db: uniform range of gain in dB; pitch_shift: maximum shift in
    semitones (uniform in [-s, s]), done by resampling, with the pitch label moved by the shift;
    onset_prob: with random crops, the share of crops that start at the note's first sample, so
    the attack is learned (a uniform start puts it in almost no crop: 1 s of a 4 s note begins
    within the first 50 ms one time in 60)."""

    gain_db: tuple[float, float] | None = None
    pitch_shift: float = 0.0
    onset_prob: float = 0.0


class NoteDataset(Dataset):
    """Notes of one split of a corpus.

    Args:
        corpus: an open `Corpus` (or its directory).
        split: note split ("train"/"valid"/"test") or None for all.
        instrument_split: "train"/"test" or None for all.
        crop_seconds: random crops of this length (None: whole notes).
        crop_offset: start of the deterministic crop used by plain `__getitem__`.
        augment: optional `Augment`.
        families: keep only these GM families (None: all).
        on_key: drop notes the corpus pitch survey marks `pitch_ok: false` (they sound away
            from their pitch label, which would teach a pitch-conditioned model the wrong f0).
        analyses: per-note analyses of the whole note (before cropping) added to each item:
            "inharmonicity" (`synth.inharmonicity`, (,) float32 coefficient B; cached per note
            in memory after the first time). A model asks for them in `note_analyses`.
    """

    ANALYSES = ("inharmonicity",)

    def __init__(self, corpus: Corpus | str, split: str | None = "train",
                 instrument_split: str | None = None, crop_seconds: float | None = None,
                 crop_offset: float = 0.0, augment: Augment | None = None,
                 families: list[str] | None = None, on_key: bool = False,
                 analyses: tuple[str, ...] = ()) -> None:
        unknown = sorted(set(analyses) - set(self.ANALYSES))
        if unknown:
            raise CorpusError(f"unknown note analyses {unknown}; known: {list(self.ANALYSES)}")
        self.analyses = tuple(analyses)
        self._analysed: dict[int, dict[str, torch.Tensor]] = {}
        self.corpus = corpus if isinstance(corpus, Corpus) else Corpus.open(corpus)
        self.indices = self.corpus.select(split=split, instrument_split=instrument_split,
                                          families=families, on_key=on_key)
        if not self.indices:
            raise CorpusError(f"{self.corpus.root}: no notes in split={split} "
                              f"instrument_split={instrument_split}")
        sr = self.corpus.sample_rate
        n = self.corpus.audio.shape[1]
        self.crop = None if crop_seconds is None else int(round(crop_seconds * sr))
        if self.crop is not None and not 0 < self.crop <= n:
            raise CorpusError(f"crop of {crop_seconds} s does not fit notes of {n / sr:.2f} s")
        self.crop_offset = int(round(crop_offset * sr))
        self.augment = augment or Augment()

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def sample_rate(self) -> int:
        return self.corpus.sample_rate

    def _item(self, i: int, audio: np.ndarray, pitch_shift: float = 0.0) -> dict[str, Any]:
        row = self.corpus.notes[self.indices[i]]
        return {
            "audio": torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
            "pitch": torch.tensor(float(row["pitch"]) + pitch_shift, dtype=torch.float32),
            "velocity": torch.tensor(float(row["velocity"]), dtype=torch.float32),
            "family": torch.tensor(int(row["family_id"]), dtype=torch.long),
            "index": torch.tensor(self.indices[i], dtype=torch.long),
        }

    def _analyse(self, i: int, audio: np.ndarray) -> dict[str, torch.Tensor]:
        """The whole note's `analyses` (cached by note)."""
        if not self.analyses:
            return {}
        if i not in self._analysed:
            from synth.inharmonicity import estimate_inharmonicity

            row = self.corpus.notes[self.indices[i]]
            b, _ = estimate_inharmonicity(torch.from_numpy(np.asarray(audio, np.float32))[None],
                                          self.sample_rate, torch.tensor([float(row["pitch"])]))
            self._analysed[i] = {"inharmonicity": b[0]}
        return self._analysed[i]

    def __getitem__(self, i: int) -> dict[str, Any]:
        audio = self.corpus.waveform(self.indices[i])
        extra = self._analyse(i, audio)
        if self.crop is not None:
            start = min(self.crop_offset, audio.shape[0] - self.crop)
            audio = audio[start:start + self.crop]
        return {**self._item(i, audio), **extra}

    def get_item(self, i: int, generator: torch.Generator) -> dict[str, Any]:
        """The item with random crop/augmentation drawn from `generator` only."""
        rng = np.random.default_rng(generator.initial_seed())
        audio = self.corpus.waveform(self.indices[i])
        extra = self._analyse(i, audio)  # a pitch shift by resampling keeps B
        shift = 0.0
        if self.augment.pitch_shift > 0:
            shift = float(rng.uniform(-self.augment.pitch_shift, self.augment.pitch_shift))
            audio = pitch_shift_resample(audio, self.sample_rate, shift)
        if self.crop is not None:
            if audio.shape[0] < self.crop:
                audio = np.pad(audio, (0, self.crop - audio.shape[0]))
            start = int(rng.integers(0, audio.shape[0] - self.crop + 1))
            if self.augment.onset_prob > 0 and rng.random() < self.augment.onset_prob:
                start = 0
            audio = audio[start:start + self.crop]
        if self.augment.gain_db is not None:
            audio = audio * np.float32(10 ** (rng.uniform(*self.augment.gain_db) / 20))
            audio = np.clip(audio, -1.0, 1.0)
        return {**self._item(i, audio, shift), **extra}


def pitch_shift_resample(audio: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    """Raise (or lower) pitch by `semitones` by resampling (duration changes by the same ratio).

    Reading the audio faster by r = 2**(s/12) multiplies every frequency by r: resample from
    `sample_rate` to `sample_rate / r` and play it back at `sample_rate`.
    """
    import soxr

    if semitones == 0:
        return audio
    ratio = 2.0 ** (semitones / 12.0)
    return soxr.resample(audio, sample_rate * ratio, sample_rate, quality="HQ").astype(np.float32)
