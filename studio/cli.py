"""`synthstudio` command line: a thin typer shell over library functions.

Errors a user can fix print one line and exit with code 2 (no traceback unless --debug).
"""

from __future__ import annotations

import os

# Before torch loads (see tests/conftest.py): passive OpenMP waiting keeps a shared CPU usable.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
import platform
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from synth.errors import SynthStudioError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="synthstudio: neural synthesis of musical sounds.")
models_app = typer.Typer(no_args_is_help=True, help="List and inspect model checkpoints.")
app.add_typer(models_app, name="models")
from studio.cli_data import data_app  # noqa: E402

app.add_typer(data_app, name="data")
from studio.cli_train import train as _train  # noqa: E402

app.command("train")(_train)
from studio.cli_render import render as _render  # noqa: E402

app.command("render")(_render)
from studio.cli_eval import eval_command as _eval  # noqa: E402

app.command("eval")(_eval)
from studio.cli_pack import pack as _pack  # noqa: E402

app.command("pack")(_pack)

console = Console()
err_console = Console(stderr=True)


class State:
    device: str = "auto"
    seed: int = 0
    debug: bool = False


state = State()


@app.callback()
def _global(
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    seed: int = typer.Option(0, help="Global random seed."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    state.device, state.seed, state.debug = device, seed, debug
    if debug:
        os.environ["SYNTHSTUDIO_DEBUG"] = "1"


@app.command()
def info() -> None:
    """Versions, device, threads, registered kinds and bundled models."""
    import torch

    from synth import __version__
    from synth.device import resolve_device
    from synth.registry import family, kinds
    from synth.catalog import list_models

    dev = resolve_device(state.device)
    table = Table(show_header=False, box=None)
    rows = [
        ("synthstudio", __version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("device", f"{dev}" + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")),
        ("threads", str(torch.get_num_threads())),
        ("generators", ", ".join(k for k in kinds() if family(k) == "generator") or "-"),
        ("vocoders", ", ".join(k for k in kinds() if family(k) == "vocoder") or "-"),
        ("analyzers", ", ".join(k for k in kinds() if family(k) == "analyzer") or "-"),
        ("bundled models", ", ".join(e.name for e in list_models() if e.source == "bundled") or "-"),
    ]
    for key, value in rows:
        table.add_row(f"[bold]{key}[/bold]", value)
    console.print(table)


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Bundled and user checkpoints with kind, sample rate and training steps."""
    from synth.catalog import list_models, user_dir

    entries = list_models()
    if as_json:
        print(json.dumps([{"name": e.name, "path": str(e.path), "source": e.source,
                           "kind": e.kind, "error": e.error} for e in entries], indent=2))
        return
    table = Table(title=f"models (user dir: {user_dir()})")
    for col in ("name", "source", "kind", "sample rate", "steps", "size"):
        table.add_column(col)
    for e in entries:
        meta = e.meta or {}
        table.add_row(e.name, e.source, e.kind if not e.error else f"[red]{e.error}[/red]",
                      str(meta.get("sample_rate", "?")), str(meta.get("steps", "?")),
                      f"{e.path.stat().st_size / 1e6:.1f} MB")
    console.print(table)
    if not entries:
        console.print("no checkpoints found")


@models_app.command("show")
def models_show(model: str = typer.Argument(..., help="Model name or checkpoint path.")) -> None:
    """Print a checkpoint's metadata as JSON (weights are not loaded)."""
    from synth.checkpoint import read_metadata
    from synth.catalog import resolve_model

    print(json.dumps(read_metadata(resolve_model(model)), indent=2))


@app.command()
def mel(audio: Path = typer.Argument(..., help="Audio file to analyse."),
        out: Path = typer.Option(..., help="Output .npy (a .json FeatureSpec sidecar is written "
                                 "beside it)."),
        sample_rate: int = typer.Option(16000), n_fft: int = typer.Option(1024),
        hop_length: int = typer.Option(256), n_mels: int = typer.Option(80)) -> None:
    """Analyse audio into a log-mel file for `render --mel`."""
    from synth.features import FeatureSpec
    from studio.vocode import write_mel

    spec = FeatureSpec(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                       f_max=sample_rate / 2)
    console.print(f"wrote {write_mel(audio, out, spec)} under {spec}")


@app.command()
def demo(out: Path = typer.Option(Path("out/demo.wav"), help="Where to write the demo WAV."),
         model: Optional[str] = typer.Option(None, help="Checkpoint name or path (default: the "
                                             "reference additive generator).")) -> None:
    """Render a short arpeggio from a generator and write it as a WAV file."""
    from studio.demo import render_demo

    path, seconds = render_demo(out, model=model, seed=state.seed, device=state.device)
    console.print(f"wrote {path} ({seconds:.2f} s of audio)")


@app.command("app")
def app_command(port: int = typer.Option(8501, help="Port to serve on."),
                headless: bool = typer.Option(True, help="Do not open a browser.")) -> None:
    """Start the Streamlit timbre-morphing app (studio/app.py) on http://localhost:PORT."""
    import subprocess

    script = Path(__file__).resolve().parent / "app.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(script),
           "--server.headless", "true" if headless else "false", "--server.port", str(port)]
    raise typer.Exit(subprocess.call(cmd))


def main() -> None:
    """Console-script entry point: one-line errors with exit code 2."""
    debug = "--debug" in sys.argv
    try:
        app(standalone_mode=False)
    except SynthStudioError as err:
        if debug:
            raise
        err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code)
    except Exception as err:  # click usage errors and unexpected failures
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(2)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(130)
        if debug:
            raise
        err_console.print(f"[red]error:[/red] {type(err).__name__}: {err} (rerun with --debug "
                          "for the traceback)", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
