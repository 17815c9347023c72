"""Training recipe: any registered kind on a corpus, through the shared Trainer.

    synthstudio train istft --corpus data/gm --out runs/istft --steps 20000 --crop-seconds 0.512

After training, a generator's latent statistics (and any corpus statistics the model fits, such
as DDSP's velocity-to-loudness table) are measured on the training notes and the final
checkpoint is written with the corpus hash. The same code runs under ``torchrun``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from synth.base import Conditions, Generator
from synth.checkpoint import save_model
from synth.data.corpus import Corpus
from synth.data.dataset import Augment, NoteDataset
from synth.errors import ConfigError
from synth.registry import build
from synth.train import TrainConfig, Trainer, TrainResult, seed_everything


@dataclass
class Recipe:
    """What to train on: the model kind and config, the notes, crops and augmentation."""

    kind: str
    corpus: str
    model_config: dict[str, Any] = field(default_factory=dict)
    split: str = "train"
    instrument_split: str | None = "train"
    families: list[str] | None = None
    crop_seconds: float | None = 1.0
    gain_db: tuple[float, float] | None = None
    pitch_shift: float = 0.0
    #: Share of random crops that start at the note onset (`Augment.onset_prob`).
    onset_crops: float = 0.0
    stats_notes: int = 2000
    #: Keep only notes the corpus pitch survey found on their key (`pitch_ok` not false).
    on_key: bool = False
    #: Start from the weights of this checkpoint (same kind, same shapes): fine-tuning.
    init: str | None = None


def crop_length(model: Any, seconds: float | None, sample_rate: int) -> float | None:
    """Round a crop down to a whole number of the model's hop (vocoders need T % hop == 0)."""
    if seconds is None:
        return None
    spec = model.feature_spec
    hop = getattr(model, "hop_length", None) or (spec.hop_length if spec is not None else 1)
    samples = int(seconds * sample_rate) // hop * hop
    if samples <= 0:
        raise ConfigError(f"crop of {seconds} s is shorter than one hop ({hop} samples)")
    return samples / sample_rate


def train_recipe(recipe: Recipe, train: TrainConfig) -> TrainResult:
    """Train `recipe.kind` on `recipe.corpus` and write `train.out_dir/model.safetensors`."""
    corpus = Corpus.open(recipe.corpus)
    seed_everything(train.seed)
    model = build(recipe.kind, recipe.model_config or None)
    if recipe.init:
        fresh = init_weights(model, recipe.init)
        if fresh and int(os.environ.get("RANK", "0")) == 0:
            print(f"--init: {len(fresh)} tensors not in {recipe.init} start fresh: "
                  f"{', '.join(fresh[:6])}{' ...' if len(fresh) > 6 else ''}")
    if model.sample_rate != corpus.sample_rate:
        raise ConfigError(f"{recipe.kind} runs at {model.sample_rate} Hz but the corpus "
                          f"{recipe.corpus} is {corpus.sample_rate} Hz")
    if not 0.0 <= recipe.onset_crops <= 1.0:
        raise ConfigError(f"onset_crops is a share of crops in [0, 1], got {recipe.onset_crops}")
    augment = Augment(gain_db=recipe.gain_db, pitch_shift=recipe.pitch_shift,
                      onset_prob=recipe.onset_crops)
    dataset = NoteDataset(corpus, recipe.split, recipe.instrument_split,
                          crop_length(model, recipe.crop_seconds, corpus.sample_rate),
                          augment=augment, families=recipe.families, on_key=recipe.on_key,
                          analyses=tuple(getattr(model, "note_analyses", ())))
    result = Trainer(model, dataset, train).fit()
    if int(os.environ.get("RANK", "0")) == 0:
        model = model.cpu().eval()
        if isinstance(model, Generator):
            fit_generator_stats(model, corpus, recipe)
        save_model(model, result.model_path, corpus_hash=corpus.hash, steps=result.steps,
                   recipe={k: v for k, v in vars(recipe).items()},
                   train={"steps": train.steps, "batch_size": train.batch_size, "lr": train.lr,
                          "wall_time_s": result.total_wall_time})
    return result


def init_weights(model: torch.nn.Module, path: str) -> list[str]:
    """Copy the weights (and buffers) of checkpoint `path` into `model`: the same kind and every
    tensor they share the same shape, else a ConfigError naming the first mismatch. Tensors the
    checkpoint lacks (a part the config adds, e.g. DDSP's inharmonicity head) keep their fresh
    initialisation; their names are returned. A model sharing no tensor with it is refused."""
    from synth.checkpoint import load_model

    source = load_model(path)
    if source.kind != model.kind:
        raise ConfigError(f"--init {path} is a {source.kind} model, not {model.kind}")
    ours, theirs = model.state_dict(), source.state_dict()
    fresh = [name for name in ours if name not in theirs]
    for name, tensor in ours.items():
        if name in theirs and theirs[name].shape != tensor.shape:
            raise ConfigError(f"--init {path}: {name} is {tuple(theirs[name].shape)}, the model "
                              f"needs {tuple(tensor.shape)} (use the checkpoint's --config)")
    if len(fresh) == len(ours):
        raise ConfigError(f"--init {path}: the checkpoint shares no tensor with this model")
    model.load_state_dict({k: v for k, v in theirs.items() if k in ours}, strict=False)
    return fresh


@torch.no_grad()
def fit_generator_stats(model: Generator, corpus: Corpus, recipe: Recipe, batch: int = 32) -> None:
    """Encode up to `recipe.stats_notes` training notes; fit latent (and model) statistics."""
    ds = NoteDataset(corpus, recipe.split, recipe.instrument_split, families=recipe.families,
                     on_key=recipe.on_key)
    step = max(1, len(ds) // recipe.stats_notes)
    picks = list(range(0, len(ds), step))[:recipe.stats_notes]
    latents, items = [], []
    for start in range(0, len(picks), batch):
        chunk = [ds[i] for i in picks[start:start + batch]]
        audio = torch.stack([c["audio"] for c in chunk])
        cond = Conditions(pitch=torch.stack([c["pitch"] for c in chunk]),
                          velocity=torch.stack([c["velocity"] for c in chunk]),
                          duration=audio.shape[-1] / corpus.sample_rate)
        latents.append(model.encode(audio, cond))
        items.extend(chunk)
    model.fit_latent_stats(torch.cat(latents))
    fit_extra = getattr(model, "fit_corpus_stats", None)
    if callable(fit_extra):
        fit_extra(items)
