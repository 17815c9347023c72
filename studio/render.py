"""Rendering library behind `synthstudio render`: notes, text, audio (timbre transfer or
encode/decode) and MIDI through any registered generator, with a manifest that re-renders the
same file, and batches of renders from a CSV or JSON list.

The manifest records the model file's hash, the seed, the conditions, the latent, the controls
and the output format; `render_from_manifest` re-creates the WAV bit for bit on the CPU. A text
render also records its mapping (the text, its parsed hints, the mapper file and hash, the mapped
latent): reproduction reuses that latent instead of embedding the text again, so a different
text-model build or thread count cannot change the file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from latent.text import (MAPPER_SUFFIX, REGISTER_PITCH, TextEncoder, TextMapper, load_mapper,
                         parse_hints, text_to_conditions)
from studio.progress import counting_bar
from synth import __version__
from synth.audio import load, save
from synth.base import Conditions, Generator
from synth.checkpoint import file_hash, load_model
from synth.ddsp import DDSPGenerator, SpectralOffsets
from synth.errors import ConfigError, SynthStudioError
from synth.fileio import atomic_write_text

SUBTYPES = {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}
DEFAULT_MODEL = "ddsp-gm"
DEFAULT_PITCH = 60.0
DEFAULT_VELOCITY = 100.0
#: spread of a --text latent around the mapped point, in units of the mapper's residual spread
#: (seeded by the request's seed; 0 gives the mapped point itself). latent.text's default.
TEXT_TEMPERATURE = 0.5

#: refinement steps of a DDSP `--resynth` when `--refine` is not given (`synth.ddsp_play.
#: refine_note`: z and the spectral offsets; 8.2 s for a 4 s note on 2 CPU cores against 0.9 s
#: unrefined, `bench.ddsp_resynth_speed`). On 96 held-out notes the note classifier names 81 of
#: them against 71 with the encoder's z (docs/DDSP.md, sessions 25-26); `--refine 0` plays the
#: encoder's latent, unrefined.
DEFAULT_REFINE_STEPS = 30


@dataclass
class RenderRequest:
    """One render. Exactly one source: `text`, `audio`, `midi`, or a note (`pitch`).

    With `text`, the latent comes from the model's text mapper and the note from the words
    ("C2" -> pitch 36, "soft" -> velocity 40; else pitch 60, velocity 100); `pitch` and
    `velocity`, when given, override the words. `velocity` None means 100 for the other sources.

    With `audio`, a DDSP model re-plays the recording with the given (or training-mean) timbre
    (timbre transfer, auto-adjusted into its range); `resynth` plays it back as itself instead
    (its own pitch, and its own latent and a static spectral correction refined by `refine`
    steps, `synth.ddsp_play.resynthesize`; None: `DEFAULT_REFINE_STEPS` for a DDSP model, 0 the
    encoder's latent as it reads the recording). The autoencoders always use the recording's
    own latent.
    """

    model: str
    out: str
    audio: str | None = None
    midi: str | None = None
    pitch: float | None = None
    text: str | None = None
    velocity: float | None = None
    duration: float = 2.0
    latent: list[float] | None = None
    controls: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    temperature: float | None = None
    sample_rate: int | None = None
    bit_depth: int = 24
    octave_shift: int = 0
    loudness_shift: float = 0.0
    resynth: bool = False
    refine: int | None = None

    def source(self) -> str:
        if self.text is not None:
            if self.audio is not None or self.midi is not None:
                raise ConfigError("give exactly one of --text, --audio, --midi or --pitch "
                                  "(--pitch and --velocity may go with --text)")
            return "text"
        given = [name for name, v in (("audio", self.audio), ("midi", self.midi),
                                      ("pitch", self.pitch)) if v is not None]
        if len(given) != 1:
            raise ConfigError("give exactly one of --text, --audio, --midi or --pitch")
        return given[0]

    def validate(self) -> str:
        """Check what can be checked without the model; returns the source."""
        kind = self.source()
        if kind == "text" and not self.text.strip():
            raise ConfigError("--text is empty")
        if self.temperature is not None:
            if kind != "text":
                raise ConfigError("--temperature only applies to --text renders")
            if self.temperature < 0:
                raise ConfigError(f"--temperature must be >= 0, got {self.temperature}")
        if self.resynth or self.refine:
            if kind != "audio":
                raise ConfigError("--resynth and --refine only apply to --audio renders")
            if self.latent is not None:
                raise ConfigError("--resynth plays the recording's own latent; drop --latent")
            if self.refine is not None and self.refine < 0:
                raise ConfigError(f"--refine must be >= 0 steps, got {self.refine}")
            if self.refine and not self.resynth:
                raise ConfigError("--refine refines the recording's own latent: add --resynth")
        if self.bit_depth not in SUBTYPES:
            raise ConfigError(f"bit depth must be 16, 24 or 32 (float), got {self.bit_depth}")
        for path in (self.audio, self.midi):
            if path is not None and not Path(path).is_file():
                raise SynthStudioError(f"input file not found: {path}")
        return kind

    def refine_steps(self, model: Generator) -> int:
        """Steps of refinement a DDSP `--resynth` of this request runs: `refine`, or when unset
        `DEFAULT_REFINE_STEPS` for a DDSP model and 0 for any other."""
        if self.refine is not None:
            return self.refine
        return DEFAULT_REFINE_STEPS if self.resynth and isinstance(model, DDSPGenerator) else 0


def load_generator(name: str) -> tuple[Generator, Path]:
    from synth.catalog import resolve_model

    path = resolve_model(name)
    return _load_generator_file(path, name), path


def _load_generator_file(path: Path, name: str) -> Generator:
    model = load_model(path)
    if not isinstance(model, Generator):
        raise SynthStudioError(f"{name} is a {model.kind} vocoder, not a generator")
    return model.eval()


class ModelCache:
    """Generators and their text mappers, loaded once per checkpoint file (for batches)."""

    def __init__(self) -> None:
        self._generators: dict[Path, Generator] = {}
        self._mappers: dict[Path, TextMapper] = {}

    def generator(self, name: str) -> tuple[Generator, Path]:
        from synth.catalog import resolve_model

        path = resolve_model(name)
        key = path.resolve()
        if key not in self._generators:
            self._generators[key] = _load_generator_file(path, name)
        return self._generators[key], path

    def mapper(self, model_path: Path) -> TextMapper:
        key = model_path.resolve()
        if key not in self._mappers:
            self._mappers[key] = load_mapper(model_path)
        return self._mappers[key]


def _latent(model: Generator, req: RenderRequest) -> torch.Tensor:
    """The request's latent, else the model's `default_latent` for the request's note (seeded)."""
    if req.latent is None:
        pitch = req.pitch if req.pitch is not None else DEFAULT_PITCH
        velocity = req.velocity if req.velocity is not None else DEFAULT_VELOCITY
        return model.default_latent(Conditions.note(pitch, velocity), seed=req.seed)
    return _check_latent(model, req.latent)


def _check_latent(model: Generator, values: list[float]) -> torch.Tensor:
    """A flat list of latent values -> (1, *model.latent_shape)."""
    z = torch.tensor(values, dtype=torch.float32).flatten()
    shape = tuple(model.latent_shape)
    if z.numel() != math.prod(shape):
        size = " x ".join(map(str, shape))
        raise ConfigError(f"latent has {z.numel()} values; {model.kind} needs {size}")
    return z.reshape(1, *shape)


def text_note(req: RenderRequest) -> tuple[float, float, dict[str, Any]]:
    """(pitch, velocity, hints) of a text request: explicit pitch/velocity, else what the words
    say (`parse_hints`; a register word without a note picks `REGISTER_PITCH`), else 60 / 100."""
    hints = parse_hints(req.text)
    pitch = req.pitch if req.pitch is not None else hints.get(
        "pitch", REGISTER_PITCH.get(hints.get("register", ""), DEFAULT_PITCH))
    velocity = req.velocity if req.velocity is not None else hints.get("velocity",
                                                                       DEFAULT_VELOCITY)
    return float(pitch), float(velocity), hints


def text_mapping(model: Generator, model_path: Path, req: RenderRequest,
                 cache: ModelCache | None = None,
                 recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest's "text" record: text, hints, pitch, velocity and where the latent came from
    ("latent": the (D,) values; "mapper", "mapper_hash", "encoder", "temperature").

    The latent is `recorded`'s when given (reproduction), else the request's explicit latent,
    else the mapper's seeded prediction (`text_to_conditions`, temperature `TEXT_TEMPERATURE`).
    """
    if recorded is not None:
        try:
            source = {k: recorded[k] for k in ("mapper", "mapper_hash", "encoder",
                                               "temperature", "latent")}
        except (KeyError, TypeError):
            raise SynthStudioError("the manifest's text record lacks its mapped latent") from None
    elif req.latent is not None:
        source = {"mapper": None, "mapper_hash": None, "encoder": None, "temperature": None,
                  "latent": list(req.latent)}
    else:
        side = model_path.with_name(model_path.stem + MAPPER_SUFFIX)
        if not side.exists():
            raise SynthStudioError(f"model {req.model} has no text mapper ({side.name}), which "
                                   "--text needs; fit one with `python -m bench.fit_latent_tools "
                                   f"--model {model_path}`")
        mapper = (cache or ModelCache()).mapper(model_path)
        temperature = TEXT_TEMPERATURE if req.temperature is None else req.temperature
        encoder = TextEncoder()
        z, _ = text_to_conditions(model, mapper, req.text, seed=req.seed,
                                  temperature=temperature, encoder=encoder)
        source = {"mapper": side.name, "mapper_hash": file_hash(side),
                  "encoder": encoder.version, "temperature": temperature,
                  "latent": z[0].cpu().tolist()}
    pitch, velocity, hints = text_note(req)
    return {"text": req.text, "hints": hints, "pitch": pitch, "velocity": velocity, **source}


@torch.no_grad()
def render_audio(model: Generator, req: RenderRequest, latent: torch.Tensor | None = None,
                 curves: tuple[torch.Tensor, ...] | None = None,
                 offsets: SpectralOffsets | None = None) -> tuple[torch.Tensor, int]:
    """(T,) audio and its sample rate for a request, through the Generator contract.

    `latent` (1, D) replaces the request's (needed for text: `text_mapping(...)["latent"]`; a
    DDSP resynthesis without it measures and refines the recording's own); `curves`: a DDSP
    resynthesis's `synth.ddsp_play.recording_curves`, when already measured; `offsets`: its
    refined `synth.ddsp.SpectralOffsets` (with `latent`)."""
    sr = req.sample_rate or model.sample_rate
    kind = req.source()
    own = req.resynth and isinstance(model, DDSPGenerator)  # the recording's own latent
    if latent is None and not own:
        if kind == "text":
            raise ConfigError("a text render needs its mapped latent (see text_mapping)")
        latent = _latent(model, req)
    z = latent
    velocity = DEFAULT_VELOCITY if req.velocity is None else req.velocity
    if kind in ("pitch", "text"):
        pitch, velocity = (req.pitch, velocity) if kind == "pitch" else text_note(req)[:2]
        # No registered generator reads cond.text_embedding; a text render is the mapped latent
        # plus the note, which is what the manifest can reproduce without the text model.
        cond = Conditions.note(pitch, velocity, duration=req.duration)
        return model.render(z, cond, sample_rate=sr, controls=req.controls, seed=req.seed)[0], sr
    if kind == "midi":
        from synth.play import read_midi, render_midi

        notes = read_midi(req.midi)
        return render_midi(model, notes, z, sample_rate=sr, controls=req.controls, seed=req.seed), sr
    audio = load(req.audio, model.sample_rate) if curves is None else None
    if own:
        from synth.ddsp_play import RefineOptions, resynthesize

        steps = req.refine_steps(model)
        refine = RefineOptions(steps=steps) if steps else None
        out = resynthesize(model, audio, z, refine, sample_rate=sr, controls=req.controls,
                           seed=req.seed, octave_shift=req.octave_shift,
                           loudness_shift=req.loudness_shift, curves=curves, offsets=offsets)
        return out, sr
    # DDSP: timbre transfer with z; autoencoders: the recording's own latent
    out = model.render_recording(audio, z if req.latent is not None else None,
                                 velocity=velocity, sample_rate=sr, controls=req.controls,
                                 seed=req.seed, octave_shift=req.octave_shift,
                                 loudness_shift=req.loudness_shift)
    return out, sr


def resynth_latent(model: Generator, req: RenderRequest,
                   recorded: dict[str, Any] | None = None
                   ) -> tuple[dict[str, Any] | None, tuple[torch.Tensor, ...] | None,
                              SpectralOffsets | None]:
    """(record, curves, offsets) of a DDSP `--resynth` request ((None, None, None) for other
    models).

    The manifest's "resynth" record: "latent", the recording's own (D,) latent, and "offsets",
    its static spectral correction (`SpectralOffsets.to_record`, or None) as
    `synth.ddsp_play.recording_timbre` refines them by `req.refine` steps, or `recorded`'s when
    given (reproduction: the refinement is not run again), and "refine", the options; curves:
    the recording's `recording_curves`, measured once for the latent and the render; offsets:
    the `synth.ddsp.SpectralOffsets` to play (or None)."""
    if not isinstance(model, DDSPGenerator):
        if req.refine:
            raise ConfigError(f"--refine needs a DDSP model; {req.model} is {model.kind}")
        return None, None, None
    from synth.ddsp_play import RefineOptions, recording_curves, recording_timbre

    audio = load(req.audio, model.sample_rate)
    curves = recording_curves(model, audio)
    if recorded is not None:
        try:
            latent = [float(v) for v in recorded["latent"]]
        except (KeyError, TypeError, ValueError):
            raise SynthStudioError("the manifest's resynth record lacks its latent") from None
        found = recorded.get("offsets")
        offsets = None if found is None else SpectralOffsets.from_record(found)
        refined = recorded.get("refine")        # what made them, whatever today's default
    else:
        steps = req.refine_steps(model)
        options = RefineOptions(steps=steps) if steps else None
        z, offsets = recording_timbre(model, audio, options, seed=req.seed, curves=curves)
        latent = z[0].tolist()
        refined = asdict(options) if options else None
    return {"latent": latent, "offsets": None if offsets is None else offsets.to_record(),
            "refine": refined}, curves, offsets


def render(req: RenderRequest, *, models: ModelCache | None = None,
           text_record: dict[str, Any] | None = None,
           resynth_record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Render `req` to `req.out` (WAV) and `req.out` + '.json' (manifest); returns the manifest.

    `models` shares loaded generators between renders; `text_record` is a manifest's "text"
    record whose mapped latent a text request reuses, `resynth_record` its "resynth" record
    whose (refined) latent a resynthesis reuses (reproduction)."""
    kind = req.validate()
    models = models or ModelCache()
    model, model_path = models.generator(req.model)
    text = resynth = curves = offsets = None
    if req.resynth:
        resynth, curves, offsets = resynth_latent(model, req, resynth_record)
    if kind == "text":
        text = text_mapping(model, model_path, req, models, text_record)
        z = _check_latent(model, text["latent"])
    elif resynth is not None:
        z = _check_latent(model, resynth["latent"])
    else:
        z = _latent(model, req)
    audio, sr = render_audio(model, req, z, curves, offsets)
    peak = float(audio.abs().max()) if audio.numel() else 0.0
    if not torch.isfinite(audio).all():
        raise SynthStudioError("the model produced non-finite audio")
    out = Path(req.out)
    save(out, audio.clamp(-1.0, 1.0), sr, subtype=SUBTYPES[req.bit_depth])
    manifest = {
        "synthstudio": __version__, "request": asdict(req), "model_kind": model.kind,
        "model_file": str(model_path), "model_hash": file_hash(model_path),
        "inputs": {k: file_hash(v) for k, v in (("audio", req.audio), ("midi", req.midi)) if v},
        "latent": z[0].flatten().tolist(), "sample_rate": sr,
        "seconds": audio.numel() / sr, "peak": peak, "clipped": peak > 1.0,
    }
    if text is not None:
        manifest["text"] = text
    if resynth is not None:
        manifest["resynth"] = resynth
    atomic_write_text(manifest_path(out), json.dumps(manifest, indent=2))
    return manifest


def manifest_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def render_from_manifest(manifest: str | Path, out: str | None = None) -> dict[str, Any]:
    """Re-render a manifest's request (to `out`, default: the original path); the model file
    must hash to the recorded value. A text request reuses the recorded mapped latent."""
    try:
        data = json.loads(Path(manifest).read_text())
        req = RenderRequest(**data["request"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise SynthStudioError(f"unreadable render manifest {manifest}: {err}") from None
    models = ModelCache()
    _, path = models.generator(req.model)
    if file_hash(path) != data.get("model_hash"):
        raise SynthStudioError(f"model {path} differs from the one the manifest was made with")
    record = None
    if req.text is not None:
        record = data.get("text")
        if not isinstance(record, dict):
            raise SynthStudioError(f"unreadable render manifest {manifest}: a text request "
                                   "without its text record")
    resynth = data.get("resynth") if req.resynth else None
    if resynth is not None and not isinstance(resynth, dict):
        raise SynthStudioError(f"unreadable render manifest {manifest}: a bad resynth record")
    if out is not None:
        req.out = out
    return render(req, models=models, text_record=record, resynth_record=resynth)


# -- batches ------------------------------------------------------------------------------------
def _as_float(value: Any) -> float:
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        return float(value)
    except ValueError:
        raise ValueError(f"expected a number, got {value!r}") from None


def _as_int(value: Any) -> int:
    number = _as_float(value)
    if not number.is_integer():
        raise ValueError(f"expected a whole number, got {value!r}")
    return int(number)


def _as_bool(value: Any) -> bool:
    """true/false, yes/no, 1/0 (a CSV cell or a JSON boolean or number)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "1.0"):
        return True
    if text in ("false", "no", "0", "0.0"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    return value


def _as_controls(value: Any) -> dict[str, float]:
    if isinstance(value, str):
        value = json.loads(value)  # a CSV cell: {"brightness": 3}
    if not isinstance(value, dict):
        raise ValueError(f"expected an object of NAME: NUMBER, got {value!r}")
    return {_as_str(k): _as_float(v) for k, v in value.items()}


def _as_latent(value: Any, base: Path) -> list[float]:
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith("["):  # a JSON file, as with --latent FILE
            path = _resolve(text, base)
            try:
                text = path.read_text()
            except OSError as err:
                raise ValueError(f"unreadable latent file {path}: {err.strerror or err}") from None
        value = json.loads(text)
    if not isinstance(value, list):
        raise ValueError(f"expected a list of numbers, got {value!r}")
    return [_as_float(v) for v in value]


def _resolve(path: str, base: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p


#: RenderRequest field -> parser of a batch value (a CSV cell or a JSON value); `latent` also
#: takes the batch folder, against which a latent file name is resolved.
BATCH_FIELDS: dict[str, Callable[..., Any]] = {
    "model": _as_str, "out": _as_str, "audio": _as_str, "midi": _as_str, "text": _as_str,
    "pitch": _as_float, "velocity": _as_float, "duration": _as_float, "latent": _as_latent,
    "controls": _as_controls, "seed": _as_int, "temperature": _as_float,
    "sample_rate": _as_int, "bit_depth": _as_int, "octave_shift": _as_int,
    "loudness_shift": _as_float, "resynth": _as_bool, "refine": _as_int,
}


def batch_request(row: dict[str, Any], base: Path) -> RenderRequest:
    """One batch row (CSV strings or JSON values; empty cells are left out) -> a checked request.
    `out` is required; relative `out`, `audio`, `midi`, `latent` files and model paths are
    resolved against `base` (the batch file's folder); `model` defaults to `DEFAULT_MODEL`."""
    kwargs: dict[str, Any] = {}
    for key, value in row.items():
        name = str(key).strip()
        if name not in BATCH_FIELDS:
            raise ConfigError(f"unknown field {name!r}; known: {', '.join(BATCH_FIELDS)}")
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        try:
            kwargs[name] = (_as_latent(value, base) if name == "latent"
                            else BATCH_FIELDS[name](value))
        except (ValueError, json.JSONDecodeError) as err:
            raise ConfigError(f"{name}: {err}") from None
    if "out" not in kwargs:
        raise ConfigError("no out path")
    for name in ("out", "audio", "midi"):
        if name in kwargs:
            kwargs[name] = str(_resolve(kwargs[name], base))
    model = kwargs.get("model", DEFAULT_MODEL)
    if Path(model).suffix == ".safetensors" or os.sep in model:
        model = str(_resolve(model, base))
    req = RenderRequest(**{**kwargs, "model": model})
    req.validate()
    return req


def read_batch(path: str | Path) -> list[RenderRequest]:
    """The requests of a batch file: CSV with a header row of RenderRequest fields, or a JSON
    list of objects. Every row is checked before anything renders; errors name the row (1-based,
    data rows only)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # csv's quoting; Excel's BOM
            text = fh.read()
    except (OSError, UnicodeDecodeError) as err:
        raise SynthStudioError(f"cannot read batch file {path}: "
                               f"{getattr(err, 'strerror', None) or err}") from None
    if path.suffix.lower() == ".csv":
        rows: list[Any] = list(csv.DictReader(io.StringIO(text, newline="")))
    elif path.suffix.lower() == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not JSON: {err}") from None
        if not isinstance(rows, list):
            raise ConfigError(f"{path}: expected a JSON list of render objects")
    else:
        raise ConfigError(f"batch file must be .csv or .json: {path}")
    if not rows:
        raise ConfigError(f"{path}: no rows")
    base = path.resolve().parent
    requests, outs = [], {}
    for i, row in enumerate(rows, 1):
        try:
            if not isinstance(row, dict) or None in row:  # DictReader puts extra cells under None
                raise ConfigError("not a set of named fields (more cells than header names?)")
            req = batch_request(row, base)
        except SynthStudioError as err:
            raise SynthStudioError(f"{path}: row {i}: {err}") from None
        if req.out in outs:
            raise ConfigError(f"{path}: row {i}: out {req.out} is also row {outs[req.out]}'s")
        outs[req.out] = i
        requests.append(req)
    return requests


def render_batch(path: str | Path, progress: bool = True) -> list[dict[str, Any]]:
    """Render every row of a batch file (`read_batch`) in order; returns their manifests.

    Each distinct model is loaded once. A row that fails stops the batch with an error naming
    it; the rows before it are complete (WAV and manifest are written atomically)."""
    requests = read_batch(path)
    models = ModelCache()
    manifests = []
    with counting_bar("render", progress, len(requests)) as tick:
        for i, req in enumerate(requests, 1):
            try:
                manifests.append(render(req, models=models))
            except SynthStudioError as err:
                raise SynthStudioError(f"{path}: row {i}: {err}") from None
            tick(Path(req.out).name)
    return manifests
