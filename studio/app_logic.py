"""Session logic behind the Streamlit app (`studio/app.py`): plain Python, no Streamlit.

The app is a thin shell: every number it shows comes from these functions, which only call the
library (`synth.catalog`, `synth.base.Generator`, `latent.interpolate`, `latent.controls`,
`studio.pack`). They are tested directly and through `streamlit.testing.v1.AppTest`.

Coordinates. The pad, the corner anchors, snapshots and variations live in the model's
PCA-normalised coordinates (`Generator.to_pca`), where every component has unit variance over the
training corpus and the 1st/99th percentiles (`ControlSpec.low/high`) say where the model was
trained. A point is rendered as `from_pca(coords)`, moved along the semantic directions (sidecar),
then `Generator.render(latent, Conditions.note(...), controls=non-latent controls, seed=...)`.
"""

from __future__ import annotations

import copy
import io
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synth.base import Conditions, ControlSpec, Generator
from synth.ddsp import DDSPGenerator
from synth.errors import SynthStudioError

#: Latent sliders reach this far beyond the trained (1st-99th percentile) range, so a user can
#: leave it on purpose; the app warns whenever a coordinate lies outside the trained range.
SLIDER_MARGIN = 0.5
#: Uploaded anchor sounds: longest accepted, and the peak below which a file counts as silent.
MAX_UPLOAD_SECONDS = 30.0
SILENCE_PEAK = 1e-4
CORNER_NAMES = ("top-left", "top-right", "bottom-left", "bottom-right")
#: Renders of one model are serialised: `Generator.render` may seed torch's global RNG.
_RENDER_LOCKS: dict[int, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock(model: Generator) -> threading.Lock:
    with _LOCKS_GUARD:
        return _RENDER_LOCKS.setdefault(id(model), threading.Lock())


# -- models -------------------------------------------------------------------------------------
def generator_entries() -> list[Any]:
    """Catalog entries (bundled and user) whose kind is a generator with one latent per note,
    readable ones only. The pad, paths and latent map move through PCA coordinates of a note's
    latent; a kind whose note latent is always a sequence (the VQ-VAE's codes) has none, so it
    is left out (morph it with `latent.interpolate` or its code crossfades)."""
    from synth.catalog import list_models
    from synth.registry import family, get_class

    out = []
    for entry in list_models():
        if entry.error or entry.meta is None:
            continue
        try:
            if family(entry.kind) != "generator":
                continue
            if getattr(get_class(entry.kind), "temporal_latent", False) is True:
                continue
            out.append(entry)
        except SynthStudioError:  # a kind this version does not know
            continue
    return out


def vocoder_names(spec: Any = None) -> list[str]:
    """Catalog vocoders; with `spec` (a FeatureSpec) only those made for that spec (any other
    would refuse the generator's mels)."""
    from synth.catalog import list_models
    from synth.features import FeatureSpec
    from synth.registry import family

    names = []
    for entry in list_models():
        try:
            if entry.error or family(entry.kind) != "vocoder":
                continue
            if spec is not None:
                theirs = (entry.meta or {}).get("config", {}).get("feature_spec")
                if theirs is None or FeatureSpec.from_dict(theirs).hash != spec.hash:
                    continue
            names.append(entry.name)
        except (SynthStudioError, TypeError, ValueError):
            continue
    return names


def load_generator(name: str) -> Generator:
    """A generator by catalog name or path, in eval mode (the app caches this per name)."""
    from studio.render import load_generator as _load

    return _load(name)[0]


def load_directions_or_none(name: str) -> tuple[dict[str, Any], str | None]:
    """The semantic directions of model `name` ({} when there is no sidecar) and a message when a
    sidecar exists but cannot be used."""
    from latent.controls import DIRECTIONS_SUFFIX, SidecarError, load_directions
    from synth.catalog import resolve_model

    path = resolve_model(name)
    if not path.with_name(path.stem + DIRECTIONS_SUFFIX).exists():
        return {}, None
    try:
        return load_directions(name), None
    except SidecarError as err:
        return {}, str(err)


def load_atlas_or_none(name: str) -> tuple[Any, str | None]:
    """The instrument atlas of model `name` (None when it has no sidecar) and a message when a
    sidecar exists but cannot be used (other weights, corrupt)."""
    from latent.atlas import AtlasError, atlas_path, load_atlas

    if not atlas_path(name).exists():
        return None, None
    try:
        return load_atlas(name), None
    except AtlasError as err:
        return None, str(err)


def vocoder_choices(model: Generator) -> list[str]:
    """Vocoders a mel-domain generator can use: its configured one first, Griffin-Lim, then every
    catalog vocoder made for its FeatureSpec; [] for generators that make audio directly."""
    own = getattr(model.config, "vocoder", None)
    if not own:
        return []
    out = [own]
    for name in ["griffinlim", *vocoder_names(getattr(model.config, "feature_spec", None))]:
        if name not in out:
            out.append(name)
    return out


def with_vocoder(model: Generator, vocoder: str | None) -> Generator:
    """A mel-domain generator that decodes through `vocoder` (catalog name, path or
    "griffinlim"). The cached model is shared by every session, so this returns a shallow copy
    with its own vocoder (weights shared); the model itself when nothing changes."""
    own = getattr(model.config, "vocoder", None)
    if not own or not vocoder or vocoder == own:
        return model
    other = copy.copy(model)
    object.__setattr__(other, "_vocoder", None)
    other.attach_vocoder(model._load_vocoder(vocoder))
    return other


def model_info(model: Generator, entry_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the model manager shows: kind, rate, latent size, trained pitch range, corpus."""
    meta = entry_meta or {}
    info: dict[str, Any] = {"kind": model.kind, "sample rate": model.sample_rate,
                            "latent size": model.latent_dim,
                            "latent stats fitted": bool(model.latent_fitted)}
    ranges = trained_ranges(model)
    if "pitch" in ranges:
        info["pitch range (MIDI)"] = "%g-%g" % ranges["pitch"]
    if "loudness" in ranges:
        info["loudness range (dB)"] = "%.1f to %.1f" % ranges["loudness"]
    for key in ("steps", "corpus_hash"):
        if meta.get(key) is not None:
            info[key.replace("_", " ")] = meta[key]
    recipe = meta.get("recipe") or {}
    if isinstance(recipe, dict) and recipe.get("corpus"):
        info["training corpus"] = recipe["corpus"]
    vocoder = getattr(model.config, "vocoder", None)
    if vocoder:
        info["vocoder"] = vocoder
    return info


def trained_ranges(model: Generator) -> dict[str, tuple[float, float]]:
    """Pitch (MIDI) and loudness (dB) ranges measured on the training corpus, for the models
    that store them (`pitch_range` / `loudness_range` buffers); {} for the others."""
    out = {}
    for key in ("pitch", "loudness"):
        buf = getattr(model, f"{key}_range", None)
        if isinstance(buf, torch.Tensor) and buf.numel() == 2:
            out[key] = (float(buf[0]), float(buf[1]))
    return out


def split_controls(model: Generator) -> tuple[list[ControlSpec], list[ControlSpec]]:
    """(latent controls, other controls): the first `latent_dim` ControlSpecs set PCA
    coordinates ("pc1"...); the rest are the model's synthesis controls (harmonic_db ...)."""
    specs = list(model.controls)
    latent = {f"pc{k + 1}" for k in range(model.latent_dim)}
    return [c for c in specs if c.name in latent], [c for c in specs if c.name not in latent]


def slider_range(spec: ControlSpec) -> tuple[float, float]:
    """A latent slider's reach: the trained range widened by SLIDER_MARGIN of its width."""
    pad = SLIDER_MARGIN * (spec.high - spec.low)
    return round(spec.low - pad, 3), round(spec.high + pad, 3)


# -- anchors and the pad ------------------------------------------------------------------------
def random_anchors(model: Generator, n: int, seed: int) -> torch.Tensor:
    """(n, D) PCA coordinates of `n` seeded draws from the model's prior (item i depends only
    on (seed, i)), clamped to the slider reach."""
    cond = model.example_conditions(n)
    with torch.no_grad():
        coords = model.to_pca(model.prior_sample(n, cond, seed=seed)).float().cpu()
    return clamp_coords(model, coords)


def clamp_coords(model: Generator, coords: torch.Tensor) -> torch.Tensor:
    specs, _ = split_controls(model)
    lo = torch.tensor([slider_range(s)[0] for s in specs])
    hi = torch.tensor([slider_range(s)[1] for s in specs])
    return torch.maximum(torch.minimum(torch.as_tensor(coords, dtype=torch.float32), hi), lo)


def pad_coords(corners: torch.Tensor, x: float, y: float, fit: tuple[Generator, Point] | None = None
               ) -> torch.Tensor:
    """(4, D) corner coordinates [top-left, top-right, bottom-left, bottom-right] and a pad point
    (x: 0 left .. 1 right, y: 0 top .. 1 bottom) -> (D,) coordinates.

    Without `fit`: the bilinear mix of the corners. With `fit` = (model, point) for a model that
    `supports_melfit` (the VAE): the latent fitted so that the note it decodes at the point's
    pitch and velocity is as close as the decoder allows to the same bilinear mix of the four
    corners' decoded log-mels (`latent.interpolate.mel_mix_fit`; the morph whose brightness
    moves steadily between corners, docs/VAE.md), clamped to the slider reach. A corner gives
    the corner itself.
    """
    from latent.interpolate import bilinear, mel_mix_fit

    mix = torch.as_tensor(bilinear(corners, float(x), float(y))).float()
    if fit is None:
        return mix
    model, point = fit
    weights = torch.as_tensor(bilinear(torch.eye(4), float(x), float(y))).float()[None]   # (1, 4)
    cond = Conditions.note(float(point.pitch), float(point.velocity))
    device = model.latent_mean.device
    with _lock(model):
        anchors = model.from_pca(torch.as_tensor(corners, dtype=torch.float32).to(device))
        z = mel_mix_fit(model, anchors, weights.to(device), cond.to(device))
        coords = model.to_pca(z).float().cpu()
    return clamp_coords(model, coords)[0]


def refines_uploads(model: Generator) -> bool:
    """Whether `encode_upload` can refine the model's latent on the sound (DDSP, global z)."""
    return isinstance(model, DDSPGenerator) and model.config.z_mode != "frames"


def encode_upload(model: Generator, data: bytes, filename: str, refine: int = 0) -> torch.Tensor:
    """An uploaded sound -> (D,) PCA coordinates through `model.encode`; a DDSP model's latent
    is then refined on the sound by `refine` steps (`synth.ddsp_play.recording_latent`: closer
    to its timbre, about 2 s per second of sound per CPU thread at 30 steps).

    Raises SynthStudioError (shown inline by the app) for files that are not audio, too long,
    silent, or that the model cannot encode.
    """
    from synth.audio import load

    if not data:
        raise SynthStudioError(f"{filename}: the file is empty")
    suffix = Path(filename).suffix or ".wav"
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        audio = load(tmp.name, model.sample_rate)  # AudioError for anything unreadable
    seconds = audio.numel() / model.sample_rate
    if seconds > MAX_UPLOAD_SECONDS:
        raise SynthStudioError(f"{filename}: {seconds:.1f} s is too long (at most "
                               f"{MAX_UPLOAD_SECONDS:g} s; upload one note)")
    if float(audio.abs().max()) < SILENCE_PEAK:
        raise SynthStudioError(f"{filename}: the sound is silent")
    if model.temporal_latent:
        raise SynthStudioError(f"{model.kind}: uploads need a model with one latent per note")
    if refine > 0 and refines_uploads(model):
        from synth.ddsp_play import RefineOptions, recording_latent

        with _lock(model):
            z = recording_latent(model, audio, RefineOptions(steps=int(refine)))
    else:
        with torch.no_grad():
            z = model.encode(audio[None], Conditions(duration=seconds))
    if z.ndim != 2 or not torch.isfinite(z).all():
        raise SynthStudioError(f"{filename}: the model could not encode this sound")
    return clamp_coords(model, model.to_pca(z)[0].float())


def atlas_anchors(model: Generator, atlas: Any) -> dict[str, list[float]]:
    """{"corpus: NAME": PCA coordinates} for every instrument of the atlas, clamped to the
    slider reach."""
    if atlas is None:
        return {}
    coords = clamp_coords(model, atlas.coords(model))
    return {f"corpus: {n}": [float(v) for v in c] for n, c in zip(atlas.names, coords)}


# -- rendering ----------------------------------------------------------------------------------
@dataclass
class Point:
    """Everything that decides one sound: PCA coordinates, semantic amounts, synthesis controls
    and the note."""

    coords: list[float]
    amounts: dict[str, float] = field(default_factory=dict)
    controls: dict[str, float] = field(default_factory=dict)
    pitch: float = 60.0
    velocity: float = 100.0
    duration: float = 2.0
    seed: int = 0

    def key(self) -> tuple:
        return (tuple(round(v, 5) for v in self.coords), tuple(sorted(self.amounts.items())),
                tuple(sorted(self.controls.items())), self.pitch, self.velocity, self.duration,
                self.seed)


@dataclass
class RenderResult:
    audio: np.ndarray          # (T,) float32 at `sample_rate`
    sample_rate: int
    wav: bytes                 # 16-bit WAV, what the player gets (never peak-normalised)
    picture: bytes             # PNG: waveform + log-mel spectrogram
    latency_ms: float          # latent -> audio (the model's render alone)
    peak: float
    warnings: list[str]


def point_latent(model: Generator, point: Point, directions: dict[str, Any]) -> torch.Tensor:
    """(D,) latent of a point: from PCA coordinates, moved along the semantic directions."""
    from latent.controls import apply_directions

    coords = torch.tensor(point.coords, dtype=torch.float32, device=model.latent_mean.device)
    with torch.no_grad():
        z = model.from_pca(coords[None])[0]
    amounts = {k: v for k, v in point.amounts.items() if v}
    return apply_directions(z, amounts, directions) if amounts else z


def point_warnings(model: Generator, point: Point) -> list[str]:
    """Where the point leaves what the model was trained on (pitch, latent percentiles)."""
    out = []
    ranges = trained_ranges(model)
    if "pitch" in ranges:
        lo, hi = ranges["pitch"]
        if not lo <= point.pitch <= hi:
            out.append(f"pitch {point.pitch:g} lies outside the trained range {lo:g}-{hi:g}")
    specs, _ = split_controls(model)
    outside = [f"{s.name}={v:.2f} (trained {s.low:.2f}..{s.high:.2f})"
               for s, v in zip(specs, point.coords) if not s.low <= v <= s.high]
    if outside:
        out.append("latent outside the 1st-99th percentile of the training corpus: "
                   + ", ".join(outside))
    return out


def loudness_warning(model: Generator, audio: torch.Tensor, sample_rate: int) -> str | None:
    """A warning when the rendered note's peak A-weighted loudness leaves the trained range."""
    ranges = trained_ranges(model)
    if "loudness" not in ranges or audio.numel() < 2048:
        return None
    from synth.pitch import loudness

    peak_db = float(loudness(audio[None].float(), sample_rate, n_fft=1024).max())
    lo, hi = ranges["loudness"]
    if not lo <= peak_db <= hi:
        return f"loudness peak {peak_db:.1f} dB lies outside the trained range {lo:.1f} to {hi:.1f} dB"
    return None


def render_point(model: Generator, point: Point, directions: dict[str, Any] | None = None,
                 picture: bool = True) -> RenderResult:
    """Render one point: the WAV bytes for the player, a picture and the latency."""
    from synth.audio import to_wav_bytes

    directions = directions or {}
    z = point_latent(model, point, directions)
    cond = Conditions.note(float(point.pitch), float(point.velocity), duration=float(point.duration))
    sr = int(model.sample_rate)
    with _lock(model):
        start = time.perf_counter()
        audio = model.render(z[None], cond, sample_rate=sr, controls=dict(point.controls) or None,
                             seed=int(point.seed))[0].detach().float().cpu()
        latency = (time.perf_counter() - start) * 1000.0
    if audio.numel() == 0 or not torch.isfinite(audio).all():
        raise SynthStudioError(f"{model.kind} produced unusable audio (empty or non-finite)")
    warnings = point_warnings(model, point)
    peak = float(audio.abs().max())
    if peak > 1.0:
        warnings.append(f"the sound clips (peak {peak:.2f}); the player hears it hard-clipped")
    loud = loudness_warning(model, audio, sr)
    if loud:
        warnings.append(loud)
    wav = to_wav_bytes(audio.clamp(-1.0, 1.0), sr)
    pic = sound_picture(audio, sr) if picture else b""
    return RenderResult(audio.numpy(), sr, wav, pic, latency, peak, warnings)


def render_pad_path(model: Generator, corners: torch.Tensor, waypoints: list[tuple[float, float]],
                    point: Point, directions: dict[str, Any] | None = None,
                    seconds: float | None = None, segments_per_second: float = 6.0,
                    fit: bool = False) -> RenderResult:
    """Render a path drawn across the pad as one evolving sound.

    Each waypoint (x, y) becomes the bilinear mix of the corners (`fit`: the fitted mix,
    `pad_coords`), moved along the point's
    semantic amounts; `latent.interpolate.render_path` travels through them evenly by arc length
    (inside one note for temporal latents, otherwise as equal-power crossfaded renders, about
    `segments_per_second` per second). The note (pitch, velocity, seed) is the point's; the
    length is `seconds` (default: the point's duration). Non-latent synthesis controls are not
    applied along a path.
    """
    from latent.interpolate import render_path
    from synth.audio import to_wav_bytes

    if len(waypoints) < 2:
        raise SynthStudioError("a path needs at least two points: add points to the path first")
    directions = directions or {}
    seconds = float(seconds or point.duration)
    latents = []
    for x, y in waypoints:
        p = copy.deepcopy(point)
        p.coords = pad_coords(corners, x, y, (model, point) if fit else None).tolist()
        latents.append(point_latent(model, p, directions))
    z = torch.stack(latents)
    cond = Conditions.note(float(point.pitch), float(point.velocity), duration=seconds)
    segments = max(len(waypoints), int(round(seconds * segments_per_second)))
    with _lock(model), torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(point.seed))
        start = time.perf_counter()
        audio = render_path(model, z, cond, seconds, segments=segments).detach().float().cpu()
        latency = (time.perf_counter() - start) * 1000.0
    if audio.numel() == 0 or not torch.isfinite(audio).all():
        raise SynthStudioError(f"{model.kind} produced unusable audio along the path")
    sr = int(model.sample_rate)
    peak = float(audio.abs().max())
    warnings = [w for w in point_warnings(model, point) if w.startswith("pitch")]
    if peak > 1.0:
        warnings.append(f"the sound clips (peak {peak:.2f}); the player hears it hard-clipped")
    return RenderResult(audio.numpy(), sr, to_wav_bytes(audio.clamp(-1.0, 1.0), sr),
                        sound_picture(audio, sr), latency, peak, warnings)


def latent_map_picture(model: Generator, atlas: Any, anchors: dict[str, list[float]],
                       corner_names: list[str], current: list[float],
                       path: list[list[float]] | None = None) -> bytes:
    """PNG: the first two PCA coordinates of every atlas instrument (coloured by family), the
    four corner anchors, the current point and the path's waypoints."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.0), constrained_layout=True)
    dims = min(2, model.latent_dim)
    if atlas is not None and len(atlas):
        xy = atlas.coords(model)[:, :dims].numpy()
        if dims == 1:
            xy = np.column_stack([xy[:, 0], np.zeros(len(xy))])
        families = sorted(set(atlas.families))
        cmap = plt.get_cmap("tab20")
        for k, fam in enumerate(families):
            sel = [i for i, f in enumerate(atlas.families) if f == fam]
            ax.scatter(xy[sel, 0], xy[sel, 1], s=14, color=cmap(k % 20), label=fam, alpha=0.8)
        ax.legend(fontsize=6, ncol=2, loc="best", frameon=False, markerscale=0.8)

    def _xy(c: list[float]) -> tuple[float, float]:
        return float(c[0]), float(c[1]) if dims > 1 else 0.0

    for name in corner_names:
        if name in anchors:
            cx, cy = _xy(anchors[name])
            ax.scatter([cx], [cy], s=70, marker="s", color="#444", zorder=3)
            ax.annotate(name.split(": ")[-1][:16], (cx, cy), textcoords="offset points",
                        xytext=(4, 4), fontsize=6)
    if path:
        px, py = zip(*[_xy(c) for c in path])
        ax.plot(px, py, "-o", color="#2da44e", lw=1.2, ms=3, zorder=3, label="path")
    cx, cy = _xy(current)
    ax.scatter([cx], [cy], s=110, color="#e5534b", zorder=4)
    ax.set_xlabel("pc1 (training-corpus sd)")
    ax.set_ylabel("pc2 (training-corpus sd)" if dims > 1 else "")
    ax.set_title("latent map: corpus instruments, corners, point, path", fontsize=9)
    return _png(fig)


def sound_picture(audio: torch.Tensor, sample_rate: int) -> bytes:
    """PNG bytes: waveform above a log-mel spectrogram (synth.features.LogMel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synth.features import FeatureSpec, LogMel

    spec = FeatureSpec(sample_rate=sample_rate, n_fft=1024, hop_length=256, n_mels=80,
                       f_max=sample_rate / 2)
    mel = LogMel(spec)(audio[None].float())[0].numpy()
    t = np.arange(audio.numel()) / sample_rate
    fig, (ax_w, ax_m) = plt.subplots(2, 1, figsize=(6, 3.2), height_ratios=[1, 2.2],
                                     constrained_layout=True)
    ax_w.plot(t, audio.numpy(), lw=0.5, color="#1f6feb")
    ax_w.set_xlim(0, t[-1] if len(t) else 1)
    peak = float(audio.abs().max()) if audio.numel() else 0.0
    top = max(peak, 1e-3) * 1.1
    ax_w.set_ylim(-top, top)
    ax_w.set_ylabel("amp")
    ax_w.set_title(f"waveform (peak {20 * np.log10(max(peak, 1e-9)):.1f} dBFS)", fontsize=9)
    ax_w.set_xticks([])
    ax_m.imshow(mel, origin="lower", aspect="auto", cmap="magma",
                extent=(0, audio.numel() / sample_rate, 0, spec.n_mels))
    ax_m.set_xlabel("seconds")
    ax_m.set_ylabel("mel band")
    ax_m.set_title("log-mel spectrogram", fontsize=9)
    return _png(fig)


def pad_picture(corners: torch.Tensor, names: list[str], x: float, y: float,
                trail: list[tuple[float, float]] | None = None,
                path: list[tuple[float, float]] | None = None) -> bytes:
    """PNG of the pad: the four corner anchors, the trail of committed points, the drawn path
    (green, numbered waypoints) and the point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2.6, 2.6), constrained_layout=True)
    pos = [(0, 0), (1, 0), (0, 1), (1, 1)]
    for (cx, cy), name in zip(pos, names):
        ax.scatter([cx], [cy], s=90, marker="s", color="#444")
        ax.annotate(name[:18], (cx, cy), textcoords="offset points", fontsize=7,
                    xytext=(0, -12 if cy == 1 else 8), ha="center")
    if trail:
        tx, ty = zip(*trail[-20:])
        ax.plot(tx, ty, "-", color="#bbb", lw=1)
    if path:
        px, py = zip(*path)
        ax.plot(px, py, "-o", color="#2da44e", lw=1.5, ms=4, zorder=2)
        for k, (wx, wy) in enumerate(path):
            ax.annotate(str(k + 1), (wx, wy), textcoords="offset points", xytext=(4, 3),
                        fontsize=6, color="#2da44e")
    ax.scatter([x], [y], s=120, color="#e5534b", zorder=3)
    ax.set_xlim(-0.15, 1.15)
    ax.set_ylim(1.2, -0.2)  # screen coordinates: y grows downwards
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("morph pad", fontsize=9)
    return _png(fig)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


# -- snapshots with undo ------------------------------------------------------------------------
@dataclass
class History:
    """Named snapshots of points, and an undo stack of the points the user committed."""

    snapshots: dict[str, Point] = field(default_factory=dict)
    undo_stack: list[Point] = field(default_factory=list)
    limit: int = 50

    def push(self, point: Point) -> None:
        """Remember `point` (before a change) so `undo` can return to it."""
        if self.undo_stack and self.undo_stack[-1].key() == point.key():
            return
        self.undo_stack.append(copy.deepcopy(point))
        del self.undo_stack[:-self.limit]

    def undo(self) -> Point | None:
        return self.undo_stack.pop() if self.undo_stack else None

    def save(self, name: str, point: Point) -> str:
        name = name.strip() or f"snapshot {len(self.snapshots) + 1}"
        self.snapshots[name] = copy.deepcopy(point)
        return name


# -- variations ---------------------------------------------------------------------------------
def variations(model: Generator, point: Point, n: int, amount: float, seed: int) -> list[Point]:
    """`n` points around `point`: PCA coordinates + amount * N(0, 1), item i seeded by (seed, i)."""
    from synth.base import seeded_normal

    base = torch.tensor(point.coords, dtype=torch.float32)
    noise = seeded_normal(seed, n, (model.latent_dim,))
    coords = clamp_coords(model, base[None] + float(amount) * noise)
    out = []
    for c in coords:
        p = copy.deepcopy(point)
        p.coords = [float(v) for v in c]
        out.append(p)
    return out


# -- packs --------------------------------------------------------------------------------------
@dataclass
class PackItem:
    name: str
    model: str
    latent: list[float]     # the exact latent (directions applied), for a `space: latent` region


def pack_item(model_name: str, model: Generator, point: Point, directions: dict[str, Any],
              name: str) -> PackItem:
    z = point_latent(model, point, directions)
    return PackItem(name=name, model=model_name, latent=[float(v) for v in z.cpu()])


def build_pack_zip(items: list[PackItem], name: str, out_dir: str | Path, *, low: int = 48,
                   high: int = 72, step: int = 3, velocities: tuple[int, ...] = (100,),
                   duration: float = 2.0, sample_rate: int = 48000) -> tuple[bytes, Any]:
    """Build a sample pack of `items` (one instrument each) through `studio.pack.build_pack`;
    returns the zip's bytes and the PackResult. Items must come from one model."""
    from studio.pack import PackSpec, build_pack
    from studio.pack.spec import Keys, Region

    if not items:
        raise SynthStudioError("the pack list is empty: add a point first")
    models = sorted({i.model for i in items})
    if len(models) != 1:
        raise SynthStudioError(f"pack items come from several models ({', '.join(models)}); "
                               "build one pack per model")
    spec = PackSpec(name=name, models=models, out=str(out_dir),
                    region=Region(kind="anchors", space="latent",
                                  anchors=[list(i.latent) for i in items],
                                  names=[i.name for i in items]),
                    keys=Keys(low=int(low), high=int(high), step=int(step)),
                    velocities=list(velocities), duration=float(duration),
                    sample_rate=int(sample_rate))
    result = build_pack(spec, progress=False)
    if result.zip is None:
        raise SynthStudioError("the pack build wrote no zip")
    return Path(result.zip).read_bytes(), result
