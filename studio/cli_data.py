"""`synthstudio data ...`: build, inspect and verify corpora (a thin shell over synth.data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from synth.errors import ConfigError

data_app = typer.Typer(no_args_is_help=True, help="Build and inspect training corpora.")
build_app = typer.Typer(no_args_is_help=True, help="Build a corpus.")
data_app.add_typer(build_app, name="build")
console = Console()


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """'0-7,24,40-41' -> (0, ..., 7, 24, 40, 41)."""
    out: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise ConfigError(f"cannot parse {what} {text!r}; use a list like 0-7,24,40") from None
    return tuple(out)


def progress_bar(label: str) -> tuple[Progress, callable]:
    bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("notes"), TimeRemainingColumn(), console=console)
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


def finish(out: Path, report: dict, verify: int, model: str) -> None:
    from synth.data.corpus import Corpus
    from synth.data.info import write_card
    from synth.data.verify import verify_levels, verify_pitch
    from synth.fileio import atomic_write_text

    corpus = Corpus.open(out)
    checks = {"levels": verify_levels(corpus)}
    if verify > 0:
        with console.status(f"checking the pitch of {verify} notes with torchcrepe ({model})"):
            checks["pitch"] = verify_pitch(corpus, n=verify, model=model)
    atomic_write_text(out / "build_report.json", json.dumps({"build": report, "checks": checks},
                                                            indent=2))
    card, png = write_card(corpus, {k: {kk: vv for kk, vv in v.items() if kk != "worst"}
                                    for k, v in checks.items()})
    console.print(f"[green]corpus ready[/green] {out}: {len(corpus)} notes, hash {corpus.hash}")
    lv = checks["levels"]
    console.print(f"silent notes (RMS < 1e-4): {lv['silent']}; quietest RMS {lv['min_rms']:.2e}")
    if "pitch" in checks:
        p = checks["pitch"]
        console.print(f"pitch check: {p['within']}/{p['voiced']} voiced notes within "
                      f"{p['tolerance_cents']:g} cents (median |error| {p['median_abs_cents']:.1f} "
                      "cents)")
    console.print(f"card: {card}  plot: {png}")


@build_app.command("soundfont")
def build_soundfont_cmd(
    out: Path = typer.Option(Path("data/gm"), help="Corpus directory."),
    soundfont: Path = typer.Option(Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), help=".sf2/.sf3 file."),
    programs: str = typer.Option("0-127", help="GM programs, e.g. 0-7,24,40."),
    drums: str = typer.Option("", help="Drum kits (bank 128), e.g. 0,8,16."),
    pitch_low: int = typer.Option(24), pitch_high: int = typer.Option(96),
    pitch_step: int = typer.Option(1),
    velocities: str = typer.Option("25,50,75,100,127"),
    sample_rate: int = typer.Option(16000),
    held: float = typer.Option(3.0, help="Seconds the key is held."),
    release: float = typer.Option(1.0, help="Seconds rendered after release."),
    gain: float = typer.Option(0.9, help="FluidSynth master gain."),
    workers: Optional[int] = typer.Option(None, help="Processes (default: all cores)."),
    seed: int = typer.Option(0, help="Split seed."),
    verify: int = typer.Option(200, help="Notes to pitch-check with torchcrepe (0: skip)."),
    keep_shards: bool = typer.Option(False, help="Keep per-program shards after the build."),
) -> None:
    """Render NSynth-style notes from a General MIDI SoundFont through FluidSynth."""
    from synth.data.soundfont import SoundfontOptions, build_soundfont

    opts = SoundfontOptions(
        soundfont=str(soundfont), programs=parse_ints(programs, "programs"),
        drum_kits=parse_ints(drums, "drum kits"), pitch_low=pitch_low, pitch_high=pitch_high,
        pitch_step=pitch_step, velocities=parse_ints(velocities, "velocities"),
        sample_rate=sample_rate, held_seconds=held, release_seconds=release, gain=gain, seed=seed)
    bar, update = progress_bar("rendering")
    with bar:
        report = build_soundfont(out, opts, workers=workers, progress=update, keep_shards=keep_shards)
    if report.get("up_to_date"):
        console.print(f"{out} is already built with these options")
    else:
        console.print(f"rendered {report['rendered_now']} notes in {report['render_seconds']:.1f} s "
                      f"with {report['workers']} workers; dropped {report['silent']} silent notes")
    finish(out, report, verify, "tiny")


@data_app.command("info")
def info_cmd(corpus_dir: Path = typer.Argument(..., help="Corpus directory.")) -> None:
    """Counts per family, pitch, velocity and split; writes CARD.md and distributions.png."""
    from synth.data.corpus import Corpus
    from synth.data.info import summarize, write_card

    corpus = Corpus.open(corpus_dir)
    s = summarize(corpus)
    table = Table(title=f"{corpus_dir} ({s['hash']})", show_header=False)
    table.add_row("notes", str(s["notes"]))
    table.add_row("instruments", str(s["instruments"]))
    table.add_row("duration", f"{s['hours']:.2f} h at {s['sample_rate']} Hz")
    table.add_row("size on disk", f"{s['size_bytes'] / 1e9:.2f} GB")
    table.add_row("families", ", ".join(f"{k} {v}" for k, v in s["family"].items()))
    table.add_row("velocities", ", ".join(f"{k}: {v}" for k, v in s["velocity"].items()))
    table.add_row("note split", ", ".join(f"{k} {v}" for k, v in s["split"].items()))
    table.add_row("instrument split", ", ".join(f"{k} {v}" for k, v in s["instrument_split"].items()))
    console.print(table)
    report_path = Path(corpus_dir) / "build_report.json"
    extra = json.loads(report_path.read_text()).get("checks") if report_path.exists() else None
    card, png = write_card(corpus, extra)
    console.print(f"card: {card}  plot: {png}")
