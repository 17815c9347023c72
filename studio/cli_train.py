"""`synthstudio train KIND ...`: the training recipe from the command line (torchrun-ready)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from synth.errors import ConfigError

console = Console()


def _model_config(text: Optional[str]) -> dict:
    if not text:
        return {}
    path = Path(text)
    raw = path.read_text() if path.suffix == ".json" and path.exists() else text
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--config is neither a JSON file nor JSON text: {err}") from None
    if not isinstance(value, dict):
        raise ConfigError("--config must be a JSON object")
    return value


def train(
    kind: str = typer.Argument(..., help="Registered kind, e.g. ddsp, istft, hifigan."),
    corpus: Path = typer.Option(Path("data/gm"), help="Corpus directory."),
    out: Path = typer.Option(..., help="Run directory (resumes if it holds a state)."),
    config: Optional[str] = typer.Option(None, help="Model config overrides: JSON text or file."),
    steps: int = typer.Option(10000), batch_size: int = typer.Option(16),
    lr: float = typer.Option(1e-3), grad_clip: float = typer.Option(1.0),
    schedule: str = typer.Option("cosine"), warmup_steps: int = typer.Option(500),
    crop_seconds: float = typer.Option(1.0, help="Random crop per note (0: whole notes)."),
    onset_crops: float = typer.Option(0.0, help="Share of crops that start at the note onset "
                                      "(0-1), so attacks are learned."),
    families: Optional[str] = typer.Option(None, help="Comma-separated GM families to keep."),
    all_instruments: bool = typer.Option(False, help="Also train on held-out instruments."),
    gain_db: Optional[str] = typer.Option(None, help="Random gain range, e.g. -6,0."),
    pitch_shift: float = typer.Option(0.0, help="Random pitch shift, +- semitones."),
    on_key: bool = typer.Option(False, help="Skip notes the corpus pitch survey marks off key."),
    init: Optional[Path] = typer.Option(None, help="Start from this checkpoint's weights "
                                        "(fine-tuning; same kind and config)."),
    init_widen: bool = typer.Option(False, help="With --init, let the config grow a width "
                                    "whose new inputs start unread (e.g. a larger latent_dim); "
                                    "refused unless the model still computes the checkpoint's losses."),
    instrument_weights: Optional[Path] = typer.Option(
        None, help="Oversample: JSON {\"instrument_weights\": {id: w}} (bench.instrument_weights "
        "writes one); notes drawn in proportion to their instrument's weight."),
    checkpoint_every: int = typer.Option(500), log_every: int = typer.Option(50),
    num_workers: int = typer.Option(0), seed: int = typer.Option(0),
    device: str = typer.Option("auto"), amp: bool = typer.Option(False),
) -> None:
    """Train a model on a corpus with the shared Trainer; Ctrl-C or a kill resumes exactly."""
    from synth.recipe import Recipe, train_recipe
    from synth.train import TrainConfig

    gains = None
    if gain_db:
        parts = [float(x) for x in gain_db.split(",")]
        if len(parts) != 2:
            raise ConfigError("--gain-db takes two numbers: low,high")
        gains = (parts[0], parts[1])
    recipe = Recipe(kind=kind, corpus=str(corpus), model_config=_model_config(config),
                    instrument_split=None if all_instruments else "train",
                    families=[f.strip() for f in families.split(",")] if families else None,
                    crop_seconds=crop_seconds or None, gain_db=gains, pitch_shift=pitch_shift,
                    on_key=on_key, init=str(init) if init else None, init_widen=init_widen,
                    onset_crops=onset_crops,
                    instrument_weights=str(instrument_weights) if instrument_weights else None)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, grad_clip=grad_clip or None,
                      schedule=schedule, warmup_steps=warmup_steps, seed=seed,
                      checkpoint_every=checkpoint_every, log_every=log_every,
                      num_workers=num_workers, out_dir=str(out), device=device, amp=amp)
    result = train_recipe(recipe, cfg)
    console.print(f"trained {kind} to step {result.steps} in {result.total_wall_time:.0f} s; "
                  f"model: {result.model_path}")
