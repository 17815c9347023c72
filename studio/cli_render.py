"""`synthstudio render`: notes, audio or MIDI through a generator, to WAV + manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from synth.errors import ConfigError

console = Console()


def render(
    model: str = typer.Option("ddsp-gm", help="Model name or checkpoint path."),
    out: Optional[Path] = typer.Option(None, help="Output WAV (default out/render.wav; with "
                                       "--from-manifest: the manifest's own path)."),
    audio: Optional[Path] = typer.Option(None, help="Recording to re-play (timbre transfer)."),
    midi: Optional[Path] = typer.Option(None, help="MIDI file to render."),
    pitch: Optional[float] = typer.Option(None, help="MIDI pitch of a single note."),
    velocity: float = typer.Option(100.0), duration: float = typer.Option(2.0),
    latent: Optional[Path] = typer.Option(None, help="JSON list of latent values."),
    control: list[str] = typer.Option([], help="NAME=VALUE, e.g. brightness=6 (repeatable)."),
    seed: int = typer.Option(0), sample_rate: Optional[int] = typer.Option(None),
    bit_depth: int = typer.Option(24, help="16, 24 or 32 (float)."),
    octave_shift: int = typer.Option(0), loudness_shift: float = typer.Option(0.0),
    from_manifest: Optional[Path] = typer.Option(None, help="Re-render a manifest."),
    mel: Optional[Path] = typer.Option(None, help="Log-mel .npy (with its .json FeatureSpec) "
                                       "to vocode."),
    vocoder: str = typer.Option("griffinlim", help="Vocoder for --mel: checkpoint or griffinlim."),
) -> None:
    """Render a note, a recording (timbre transfer), a MIDI file, or vocode a mel; writes OUT
    (and OUT.json for generator renders)."""
    from studio.render import RenderRequest, render as do_render, render_from_manifest

    if mel is not None:
        from studio.vocode import vocode_file

        out = out or Path("out/render.wav")
        path, seconds = vocode_file(mel, vocoder, out, bit_depth)
        console.print(f"wrote {path} ({seconds:.2f} s) with {vocoder}")
        return
    if from_manifest is not None:
        manifest = render_from_manifest(from_manifest, str(out) if out is not None else None)
    else:
        controls = {}
        for item in control:
            name, sep, value = item.partition("=")
            try:
                controls[name] = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise ConfigError(f"--control takes NAME=NUMBER, got {item!r}")
        z = None
        if latent is not None:
            try:
                z = json.loads(latent.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise ConfigError(f"unreadable latent file {latent}: {err}") from None
        req = RenderRequest(model=model, out=str(out or Path("out/render.wav")),
                            audio=str(audio) if audio else None,
                            midi=str(midi) if midi else None, pitch=pitch, velocity=velocity,
                            duration=duration, latent=z, controls=controls, seed=seed,
                            sample_rate=sample_rate, bit_depth=bit_depth,
                            octave_shift=octave_shift, loudness_shift=loudness_shift)
        req.source()
        manifest = do_render(req)
    req_out = manifest["request"]["out"]
    console.print(f"wrote {req_out} ({manifest['seconds']:.2f} s at {manifest['sample_rate']} Hz, "
                  f"peak {manifest['peak']:.2f}) and {req_out}.json")
