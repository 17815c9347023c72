"""`synthstudio pack`: build a sample pack from a spec file or flags."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from synth.errors import ConfigError

console = Console()


def pack(
    spec: Optional[Path] = typer.Option(None, help="YAML/JSON pack spec (flags below are then "
                                        "ignored, except --out and --corpus, which override)."),
    model: list[str] = typer.Option([], help="Model name or checkpoint path (repeatable)."),
    name: str = typer.Option("pack", help="Pack name (the first part of every file name)."),
    low: int = typer.Option(48, help="Lowest root note (MIDI)."),
    high: int = typer.Option(72, help="Highest root note (MIDI)."),
    step: int = typer.Option(3, help="Semitones between root notes."),
    velocities: str = typer.Option("100", help="Velocity layers, e.g. 64,127."),
    round_robins: int = typer.Option(1, help="Seeded variations per note."),
    count: int = typer.Option(1, help="Instruments drawn at random in the latent space."),
    seed: int = typer.Option(0, help="Seed of the latent draws and renders."),
    duration: float = typer.Option(2.0, help="Note length in seconds."),
    sample_rate: int = typer.Option(48000, help="44100 or 48000."),
    normalize: str = typer.Option("peak", help="peak (-1 dBFS), lufs or none."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default packs/NAME)."),
    corpus: Optional[Path] = typer.Option(None, help="Training corpus for originality."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Render a multisampled instrument pack: WAVs with sampler chunks, SFZ, DecentSampler
    preset, metadata, report and zip."""
    from studio.pack import PackSpec, build_pack
    from studio.pack.spec import parse_int_list

    if spec is not None:
        if not spec.is_file():
            raise ConfigError(f"pack spec not found: {spec}")
        pack_spec = PackSpec.load(spec)
        if out is not None:
            pack_spec.out = str(out)
        if corpus is not None:
            pack_spec.corpus = str(corpus)
    else:
        if not model:
            raise ConfigError("give --spec FILE or at least one --model")
        pack_spec = PackSpec.from_dict({
            "name": name, "models": list(model), "out": str(out or Path("packs") / name),
            "region": {"kind": "random", "count": count, "seed": seed},
            "keys": {"low": low, "high": high, "step": step},
            "velocities": parse_int_list(velocities, "--velocities"),
            "round_robins": round_robins, "seed": seed, "duration": duration,
            "sample_rate": sample_rate, "normalize": normalize,
            "corpus": str(corpus) if corpus is not None else None,
        })
    if pack_spec.corpus is not None and not Path(pack_spec.corpus).is_dir():
        raise ConfigError(f"corpus directory not found: {pack_spec.corpus}")
    result = build_pack(pack_spec, progress=progress)
    div = "n/a" if result.diversity is None else f"{result.diversity:.2f}"
    orig = "not measured (no corpus)" if result.originality is None else f"{result.originality:.2f}"
    console.print(f"wrote {len(result.samples)} samples ({result.rendered} rendered, "
                  f"{result.reused} reused, {len(result.dropped)} near-duplicates dropped) to "
                  f"{result.out}; diversity {div}, originality {orig}; zip {result.zip}")
