"""Training recipe: any registered kind on a corpus, through the shared Trainer.

    synthstudio train istft --corpus data/gm --out runs/istft --steps 20000 --crop-seconds 0.512

After training, a generator's latent statistics (and any corpus statistics the model fits, such
as DDSP's velocity-to-loudness table) are measured on the training notes and the final
checkpoint is written with the corpus hash. The same code runs under ``torchrun``.
"""

from __future__ import annotations

import json
import math
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
    #: With `init`, let parameters grow (`init_weights(widen=True)`: e.g. a wider latent).
    init_widen: bool = False
    #: JSON file with {"instrument_weights": {instrument_id: weight}}: each note is drawn with
    #: probability proportional to its instrument's weight (missing instruments: 1), e.g. the
    #: instruments a model reconstructs worst (`bench.instrument_weights`). None: plain epochs.
    instrument_weights: str | None = None


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
        fresh = init_weights(model, recipe.init, widen=recipe.init_widen)
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
    if recipe.instrument_weights:
        dataset.sample_weights = note_weights(corpus, dataset.indices, recipe.instrument_weights)
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


def note_weights(corpus: Corpus, indices: list[int], path: str) -> torch.Tensor:
    """(len(indices),) draw weights from a JSON file of per-instrument weights (see `Recipe`)."""
    try:
        table = json.loads(Path(path).read_text())["instrument_weights"]
        table = {str(k): float(v) for k, v in table.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"instrument weights {path}: not a JSON file with an "
                          f"'instrument_weights' object ({err})") from None
    bad = {k: v for k, v in table.items() if not (math.isfinite(v) and v >= 0)}
    if bad:
        raise ConfigError(f"instrument weights {path}: weights must be finite and >= 0, got {bad}")
    known = {corpus.notes[i]["instrument_id"] for i in indices}
    if not known & set(table):
        raise ConfigError(f"instrument weights {path}: none of its instruments is in the "
                          f"training notes (ids look like {sorted(known)[0]!r})")
    weights = torch.tensor([table.get(corpus.notes[i]["instrument_id"], 1.0) for i in indices],
                           dtype=torch.float64)
    if weights.sum() <= 0:
        raise ConfigError(f"instrument weights {path}: every training note has weight 0")
    return weights


def init_weights(model: torch.nn.Module, path: str, widen: bool = False) -> list[str]:
    """Copy the weights (and buffers) of checkpoint `path` into `model`: the same kind and every
    tensor they share the same shape, else a ConfigError naming the first mismatch. Tensors the
    checkpoint lacks (a part the config adds, e.g. DDSP's inharmonicity head) keep their fresh
    initialisation; their names are returned. A model sharing no tensor with it is refused.

    With `widen`, a parameter may also be larger than the checkpoint's in any dimension (a wider
    latent, e.g. DDSP ``latent_dim`` 16 -> 64): the checkpoint's values fill the overlap, a 2-D
    weight's new input columns are zeroed (so new inputs start unread) and new output rows keep
    their fresh initialisation (so the new latent components vary and get gradient); buffers of
    another shape (latent statistics, refitted after training) start fresh. The widened model
    must compute what the checkpoint did: its training losses on an example batch are compared
    with the checkpoint's and a difference is refused (widening inside a GRU or a LayerNorm
    would not preserve the function).

    A model may define `adapt_init_state(state, source) -> state` to map the checkpoint's tensors
    onto its own config first (DDSP: noise bands resampled along frequency)."""
    from synth.checkpoint import load_model

    source = load_model(path)
    if source.kind != model.kind:
        raise ConfigError(f"--init {path} is a {source.kind} model, not {model.kind}")
    ours, theirs = model.state_dict(), source.state_dict()
    if hasattr(model, "adapt_init_state"):  # e.g. DDSP's noise bands resampled along frequency
        theirs = model.adapt_init_state(theirs, source)
    params = {name for name, _ in model.named_parameters()}
    fresh = [name for name in ours if name not in theirs]
    grown: dict[str, torch.Tensor] = {}
    for name, tensor in ours.items():
        if name not in theirs or theirs[name].shape == tensor.shape:
            continue
        old = theirs[name]
        fits = old.ndim == tensor.ndim and all(a <= b for a, b in zip(old.shape, tensor.shape))
        if not (widen and fits):
            raise ConfigError(f"--init {path}: {name} is {tuple(old.shape)}, the model "
                              f"needs {tuple(tensor.shape)} (use the checkpoint's --config"
                              f"{'' if widen or not fits else ', or --init-widen to grow it'})")
        if name not in params:
            fresh.append(name)
            continue
        new = tensor.detach().clone()
        if new.ndim == 2:
            new[:, old.shape[1]:] = 0.0
        new[tuple(slice(0, n) for n in old.shape)] = old
        grown[name] = new
    if len(fresh) == len(ours):
        raise ConfigError(f"--init {path}: the checkpoint shares no tensor with this model")
    if grown and "latent_fitted" in ours and any(n.startswith("latent_") for n in fresh):
        fresh.append("latent_fitted")  # the statistics start fresh, so "fitted" must too
    model.load_state_dict({k: v for k, v in theirs.items() if k in ours and k not in fresh
                           and theirs[k].shape == ours[k].shape} | grown, strict=False)
    if grown:
        _check_same_function(model, source, path)
    return fresh


def _check_same_function(model: torch.nn.Module, source: torch.nn.Module, path: str) -> None:
    """Refuse a widened model whose training losses on an example batch differ from `source`'s."""
    def losses(m: torch.nn.Module) -> dict[str, float]:
        was = m.training
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(0)
            # eval mode: no state moves during the check (e.g. the VQ-VAE's EMA codebook)
            out = m.eval().training_step(m.example_batch(2, torch.Generator().manual_seed(0)))
        m.train(was)
        return {k: float(v) for k, v in out.items() if not k.startswith("log/")}

    ours, theirs = losses(model), losses(source)
    for key, value in theirs.items():
        if key in ours and not math.isclose(ours[key], value, rel_tol=1e-4, abs_tol=1e-6):
            raise ConfigError(f"--init {path} --init-widen: the widened model's {key} is "
                              f"{ours[key]:.6g} where the checkpoint's is {value:.6g}; only widths "
                              f"whose new inputs can start unread can grow (e.g. latent_dim)")


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
