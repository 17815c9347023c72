"""`synthstudio render`: notes, text, audio or MIDI through a generator, to WAV + manifest;
batches from a CSV/JSON list; mel files through a vocoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from synth.errors import ConfigError

console = Console()


def render(
    ctx: typer.Context,
    model: str = typer.Option("ddsp-gm", help="Model name or checkpoint path."),
    out: Optional[Path] = typer.Option(None, help="Output WAV (default out/render.wav; with "
                                       "--from-manifest: the manifest's own path)."),
    text: Optional[str] = typer.Option(None, help="Describe the sound, e.g. \"bright plucked "
                                       "bass C2 soft\" (needs the model's text mapper; the "
                                       "words' note and dynamic set pitch and velocity)."),
    audio: Optional[Path] = typer.Option(None, help="Recording to re-play (timbre transfer)."),
    midi: Optional[Path] = typer.Option(None, help="MIDI file to render."),
    pitch: Optional[float] = typer.Option(None, help="MIDI pitch of a single note (with --text: "
                                          "replaces the text's note)."),
    velocity: Optional[float] = typer.Option(None, help="MIDI velocity (default: 100; with "
                                             "--text: the text's dynamic, else 100)."),
    duration: float = typer.Option(2.0),
    latent: Optional[Path] = typer.Option(None, help="JSON list of latent values."),
    control: list[str] = typer.Option([], help="NAME=VALUE, e.g. brightness=6 (repeatable)."),
    seed: int = typer.Option(0),
    temperature: Optional[float] = typer.Option(None, help="--text only: seeded spread around "
                                                "the mapped latent (default: 0.5; 0: none)."),
    sample_rate: Optional[int] = typer.Option(None),
    bit_depth: int = typer.Option(24, help="16, 24 or 32 (float)."),
    octave_shift: int = typer.Option(0), loudness_shift: float = typer.Option(0.0),
    resynth: bool = typer.Option(False, "--resynth", help="--audio: play the recording back "
                                 "as itself (its own pitch and timbre latent) instead of "
                                 "timbre transfer."),
    refine: Optional[int] = typer.Option(None, help="--resynth with DDSP: refine the "
                                         "recording's latent and spectral offsets by this many "
                                         "steps, 30 by default (about 2 s per second of audio "
                                         "on 2 CPU cores, on its loudest 10 s at most; 0: the "
                                         "encoder's latent, fast)."),
    from_manifest: Optional[Path] = typer.Option(None, help="Re-render a manifest."),
    batch: Optional[Path] = typer.Option(None, help="CSV or JSON list of renders (fields as "
                                         "the options; out required; paths relative to the "
                                         "file)."),
    progress: bool = typer.Option(True, "--progress/--no-progress",
                                  help="Progress bar for --batch."),
    mel: Optional[Path] = typer.Option(None, help="Log-mel .npy (with its .json FeatureSpec) "
                                       "to vocode."),
    vocoder: str = typer.Option("griffinlim", help="Vocoder for --mel: checkpoint or griffinlim."),
) -> None:
    """Render a note, a text description, a recording (timbre transfer), a MIDI file, a batch
    list, or vocode a mel; writes OUT (and OUT.json for generator renders)."""
    from studio.render import (RenderRequest, render as do_render, render_batch,
                               render_from_manifest)

    if mel is not None:
        from studio.vocode import vocode_file

        out = out or Path("out/render.wav")
        path, seconds = vocode_file(mel, vocoder, out, bit_depth)
        console.print(f"wrote {path} ({seconds:.2f} s) with {vocoder}")
        return
    if batch is not None:
        # typer vendors click, so the ParameterSource enum is compared by name
        given = [name for name in ctx.params if name not in ("batch", "progress") and getattr(
            ctx.get_parameter_source(name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")]
        if given:
            raise ConfigError(f"--batch takes every setting from the file; drop "
                              f"--{given[0].replace('_', '-')}")
        manifests = render_batch(batch, progress=progress)
        seconds = sum(m["seconds"] for m in manifests)
        console.print(f"wrote {len(manifests)} renders ({seconds:.2f} s of audio) and their "
                      f"manifests from {batch}")
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
                            midi=str(midi) if midi else None, pitch=pitch, text=text,
                            velocity=velocity, duration=duration, latent=z, controls=controls,
                            seed=seed, temperature=temperature, sample_rate=sample_rate,
                            bit_depth=bit_depth, octave_shift=octave_shift,
                            loudness_shift=loudness_shift, resynth=resynth, refine=refine)
        req.validate()
        manifest = do_render(req)
    req_out = manifest["request"]["out"]
    if "text" in manifest:
        t = manifest["text"]
        console.print(f"text: pitch {t['pitch']:g}, velocity {t['velocity']:g}, latent from "
                      f"{t['mapper'] or 'the given latent'}")
    if manifest.get("resynth", {}).get("refine"):
        what = "latent and spectral offsets" if manifest["resynth"].get("offsets") else "latent"
        steps = manifest["resynth"]["refine"]["steps"]
        console.print(f"{what} from the manifest (refined by {steps} steps)" if from_manifest
                      else f"{what} refined by {steps} steps")
    console.print(f"wrote {req_out} ({manifest['seconds']:.2f} s at {manifest['sample_rate']} Hz, "
                  f"peak {manifest['peak']:.2f}) and {req_out}.json")
