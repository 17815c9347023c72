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


def progress_bar(label: str, unit: str = "notes") -> tuple[Progress, callable]:
    bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn(unit), TimeRemainingColumn(), console=console)
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


def run_survey(out: Path) -> dict:
    """The per-note pitch survey (synth.data.verify.survey_pitch) written into the manifest;
    skipped when every pitched note already carries `pitch_ok`."""
    import numpy as np

    from synth.data.corpus import Corpus, update_manifest
    from synth.data.verify import off_key_instruments, pitched_indices, survey_pitch

    corpus = Corpus.open(out)
    pitched = pitched_indices(corpus)
    if pitched and all("pitch_ok" in corpus.notes[i] for i in pitched):
        done = [corpus.notes[i]["pitch_ok"] for i in pitched]
        return {"pitched": len(pitched), "within": sum(d is True for d in done),
                "off_key": sum(d is False for d in done),
                "unvoiced": sum(d is None for d in done), "reused": True,
                "off_key_instruments": off_key_instruments(corpus, 10)}
    bar, update = progress_bar("pitch survey (torchcrepe tiny, misses re-measured by full)")
    with bar:
        res = survey_pitch(corpus, progress=update)
    cents = [None if not np.isfinite(c) else round(float(c), 1) for c in res.pop("cents")]
    corpus = update_manifest(out, {"pitch_cents": cents, "pitch_ok": list(res.pop("ok"))})
    res["off_key_instruments"] = off_key_instruments(corpus, 10)
    return res


def finish(out: Path, report: dict, verify: int, model: str, survey: bool = False) -> None:
    from synth.data.corpus import Corpus
    from synth.data.info import write_card
    from synth.data.verify import verify_levels, verify_pitch
    from synth.fileio import atomic_write_text

    survey_res = run_survey(out) if survey else None
    corpus = Corpus.open(out)
    previous = out / "build_report.json"
    if report.get("up_to_date") and previous.exists():  # keep the build's own figures
        try:
            report = {**json.loads(previous.read_text()).get("build", {}), "reverified": True}
        except (OSError, json.JSONDecodeError):
            pass
    checks = {"levels": verify_levels(corpus)}
    if survey_res is not None:
        checks["survey"] = survey_res
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
        if p.get("on_key_voiced") is not None:
            console.print(f"  of them marked on key by the survey: {p['on_key_within']}/"
                          f"{p['on_key_voiced']} within {p['tolerance_cents']:g} cents; "
                          f"{p['flagged_off_key']} sampled notes are marked off key")
    if survey_res is not None:
        sv = survey_res
        console.print(f"pitch survey: {sv['within']}/{sv['pitched']} pitched notes sound within "
                      f"25 cents of their key; {sv['off_key']} marked pitch_ok=false (off key), "
                      f"{sv['unvoiced']} not measurable (no confidently voiced frame)"
                      + (" (from the manifest)" if sv.get("reused") else ""))
        worst = ", ".join(f"{r['instrument']} {r['off_key']}/{r['of']}"
                          for r in sv["off_key_instruments"][:5])
        if worst:
            console.print(f"  most off-key instruments: {worst}")
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
    survey: bool = typer.Option(True, help="Measure every pitched note's sounding pitch and "
                                "mark off-key notes pitch_ok=false in the manifest."),
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
    finish(out, report, verify, "tiny", survey=survey)


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


@build_app.command("procedural")
def build_procedural_cmd(
    out: Path = typer.Option(Path("data/procedural"), help="Corpus directory."),
    types: str = typer.Option("additive,fm,karplus,saw,noise,bell", help="Instrument types."),
    instruments_per_type: int = typer.Option(4, help="Seeded presets per type."),
    pitch_low: int = typer.Option(36), pitch_high: int = typer.Option(84),
    pitch_step: int = typer.Option(1),
    velocities: str = typer.Option("40,80,120"),
    sample_rate: int = typer.Option(16000),
    held: float = typer.Option(1.0, help="Seconds the key is held."),
    release: float = typer.Option(0.25, help="Release seconds."),
    workers: Optional[int] = typer.Option(None, help="Processes (default: all cores)."),
    seed: int = typer.Option(0, help="Preset and split seed."),
    verify: int = typer.Option(50, help="Notes to pitch-check with torchcrepe (0: skip)."),
) -> None:
    """Synthetic instruments (additive, FM, Karplus-Strong, saw, noise, bell) with ground-truth
    parameters in the manifest; pure numpy."""
    from synth.data.procedural import ProceduralOptions, build_procedural

    opts = ProceduralOptions(
        types=tuple(t.strip() for t in types.split(",") if t.strip()),
        instruments_per_type=instruments_per_type, pitch_low=pitch_low, pitch_high=pitch_high,
        pitch_step=pitch_step, velocities=parse_ints(velocities, "velocities"),
        sample_rate=sample_rate, held_seconds=held, release_seconds=release, seed=seed)
    bar, update = progress_bar("rendering")
    with bar:
        report = build_procedural(out, opts, workers=workers, progress=update)
    console.print(f"rendered {report.get('rendered_now', 0)} notes with {report.get('workers')} workers")
    finish(out, report, verify, "tiny")


@build_app.command("folder")
def build_folder_cmd(
    src: Path = typer.Argument(..., help="Folder of recordings (WAV/FLAC/OGG/AIFF, recursive)."),
    out: Path = typer.Option(Path("data/folder"), help="Corpus directory."),
    family: str = typer.Option("sound effects", help="GM family to label the notes with."),
    instrument_from: str = typer.Option("folder", help="folder: one instrument per directory; "
                                        "file: one per file."),
    sample_rate: int = typer.Option(16000),
    note_seconds: float = typer.Option(4.0),
    crepe_model: str = typer.Option("tiny", help="tiny or full."),
    workers: Optional[int] = typer.Option(None, help="Processes (default: all cores)."),
    seed: int = typer.Option(0, help="Split seed."),
) -> None:
    """Slice a user's own recordings into notes at onsets, pitch-labelled by torchcrepe; bad files
    are skipped and listed in the report, never a crash."""
    from synth.data.folder import FolderOptions, build_folder

    opts = FolderOptions(sample_rate=sample_rate, note_seconds=note_seconds, family=family,
                         instrument_from=instrument_from, crepe_model=crepe_model, seed=seed)
    bar, update = progress_bar("slicing", "files")
    with bar:
        report = build_folder(src, out, opts, workers=workers, progress=update)
    skipped = report["skipped_files"]
    console.print(f"{report['notes']} notes from {report['files_used']} of {report['files']} files; "
                  f"skipped {len(skipped)} files, dropped {len(report['dropped_notes'])} notes")
    for item in skipped[:20]:
        console.print(f"  skipped {item['file']}: {item['reason']} ({item.get('detail', '')})")
    finish(out, report, 0, crepe_model)
