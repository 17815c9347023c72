"""`build_pack(spec) -> PackResult`: render a sample pack from one or more generators.

For each model, instrument (a latent from the spec's region), key zone root, velocity layer and
round robin: `torch.manual_seed(item seed)`, `model.decode(z[None], Conditions.note(...))`,
soxr to the pack rate, leading silence trimmed, short fades, peak or LUFS normalisation, a 24-bit
WAV with `smpl`/`inst` chunks and a JSON sidecar. Round robins of one slot (instrument, zone,
velocity) closer than `dedup_threshold` (RMS difference of WaveGAN log-mels, in nepers) to an
earlier kept one are dropped. Then the pack-level metadata (JSON, CSV), one SFZ and one
DecentSampler preset per instrument, the report with its contact sheet, and the zip, last.

Re-running a spec is idempotent: a sample whose WAV and sidecar exist with the same item hash (spec
render settings, model file hash, latent, note) is read back instead of rendered; every file is
written atomically, so an interrupted run leaves complete files only.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf
import torch

from latent.interpolate import bilinear, lerp, mel_mix_fit, slerp, supports_melfit
from latent.metrics import distance
from studio.progress import counting_bar
from synth import __version__
from synth.audio import lufs_normalize, peak_normalize, resample
from synth.base import Conditions, Generator
from synth.checkpoint import file_hash
from synth.data.descriptors import describe
from synth.errors import SynthStudioError
from synth.fileio import atomic_path, atomic_write_text
from studio.pack.dspreset import dspreset_text
from studio.pack.riff import InstrumentChunk, SamplerChunk, write_sampler_wav
from studio.pack.sfz import sfz_text
from studio.pack.spec import PackSpec, Region

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
SAMPLES_DIR = "samples"
_UNSAFE = re.compile(r"[^A-Za-z0-9#-]+")


# -- names --------------------------------------------------------------------------------------
def sanitize(text: str, limit: int = 48) -> str:
    """One name component: runs of characters outside A-Z a-z 0-9 - # become '-' (so '_' stays
    free as the field separator); never empty, never a path."""
    out = _UNSAFE.sub("-", str(text)).strip("-")[:limit].strip("-")
    return out or "x"


def note_name(midi: int) -> str:
    """MIDI note -> name with C3 = 48 (the sample-store convention): 61 -> 'C#4'."""
    return f"{NOTE_NAMES[int(midi) % 12]}{int(midi) // 12 - 1}"


def sample_name(pack: str, instrument: str, midi: int, velocity: int, rr: int) -> str:
    """`pack_instrument_C3_m48_v100_rr1.wav` (characters A-Z a-z 0-9 _ - # only)."""
    return (f"{sanitize(pack)}_{sanitize(instrument)}_{note_name(midi)}_m{int(midi)}"
            f"_v{int(velocity)}_rr{int(rr)}.wav")


def inside(root: Path, name: str) -> Path:
    """`root / name`, refusing anything that would land outside `root`."""
    target = (root / name).resolve()
    if target.parent != root.resolve() and root.resolve() not in target.parents:
        raise SynthStudioError(f"refusing to write {name!r} outside {root}")
    return target


# -- zones --------------------------------------------------------------------------------------
def key_zones(roots: list[int], step: int) -> list[tuple[int, int, int]]:
    """(root, lokey, hikey) per root: each zone reaches halfway to its neighbours (the lower one
    gets the middle key on an even gap); the outer zones extend by the same half step."""
    zones = []
    for i, r in enumerate(roots):
        lo = roots[i - 1] + (r - roots[i - 1] - 1) // 2 + 1 if i else max(0, r - step // 2)
        hi = r + (roots[i + 1] - r - 1) // 2 if i + 1 < len(roots) else min(127, r + (step - 1) // 2)
        zones.append((r, lo, hi))
    return zones


def velocity_layers(velocities: list[int]) -> list[tuple[int, int, int]]:
    """(velocity, lovel, hivel): layer i plays from the previous layer's velocity + 1 up to its
    own; the top layer reaches 127."""
    out, low = [], 1
    for i, v in enumerate(velocities):
        out.append((v, low, 127 if i == len(velocities) - 1 else v))
        low = v + 1
    return out


# -- latents ------------------------------------------------------------------------------------
def _seed(*keys: Any) -> int:
    digest = hashlib.sha256(":".join(str(k) for k in keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _anchor(model: Generator, values: list[float], space: str) -> torch.Tensor:
    d = model.latent_dim
    v = torch.tensor(values, dtype=torch.float32)
    if space == "latent":
        if v.numel() != d:
            raise SynthStudioError(f"latent anchor has {v.numel()} values; {model.kind} needs {d}")
        return model.to_pca(v[None])[0]
    if v.numel() > d:
        raise SynthStudioError(f"PCA anchor has {v.numel()} values; {model.kind} has {d} components")
    return torch.cat([v, torch.zeros(d - v.numel())])


def _path_stops(steps: int, n: int) -> list[tuple[int, float]]:
    """`steps` instruments evenly along a polyline of n anchors: (segment, t within it) each."""
    out = []
    for k in range(steps):
        pos = k / (steps - 1) * (n - 1)
        seg = min(int(pos), n - 2)
        out.append((seg, pos - seg))
    return out


def region_latents(model: Generator, region: Region, model_index: int) -> list[torch.Tensor]:
    """The instruments' latents (D,) for one model, interpolated in PCA-normalised space
    (`morph: melfit`: fitted to the anchors' decoded mels, `latent.interpolate.mel_mix_fit`)."""
    pca = [_anchor(model, a, region.space) for a in region.anchors]
    fitted = region.morph == "melfit" and region.kind in ("xy", "path")
    if fitted and not supports_melfit(model):
        raise SynthStudioError(f"morph: melfit needs a mel generator (the VAE or VQ-VAE), not "
                               f"{model.kind}")
    if region.kind == "anchors":
        coords = pca
    elif fitted:
        if region.kind == "xy":
            weights = torch.as_tensor(bilinear(torch.eye(4), region.x, region.y))[None].float()
        else:
            weights = torch.zeros(region.steps, len(pca))
            for k, (seg, t) in enumerate(_path_stops(region.steps, len(pca))):
                weights[k, seg], weights[k, seg + 1] = 1 - t, t
        device = model.latent_mean.device
        with torch.no_grad():
            anchors = model.from_pca(torch.stack(pca).float().to(device))
        z = mel_mix_fit(model, anchors, weights.to(device), Conditions.note(60.0, 100.0).to(device))
        return list(z.cpu())
    elif region.kind == "xy":
        coords = [torch.as_tensor(bilinear(torch.stack(pca), region.x, region.y))]
    elif region.kind == "path":
        mix = slerp if region.morph == "slerp" else lerp
        coords = [torch.as_tensor(mix(pca[seg], pca[seg + 1], t))
                  for seg, t in _path_stops(region.steps, len(pca))]
    else:
        low, high = model.latent_low.float(), model.latent_high.float()
        coords = []
        for k in range(region.count):
            g = torch.Generator().manual_seed(_seed(region.seed, model_index, k))
            coords.append(low + (high - low) * torch.rand(model.latent_dim, generator=g))
    with torch.no_grad():
        return [model.from_pca(c.float()[None])[0] for c in coords]


# -- rendering ----------------------------------------------------------------------------------
@torch.no_grad()
def render_note(model: Generator, z: torch.Tensor, pitch: int, velocity: int, duration: float,
                seed: int) -> torch.Tensor:
    """(T,) audio at the model's rate; reproducible for a seed on the CPU."""
    torch.manual_seed(seed)
    cond = Conditions.note(float(pitch), float(velocity), duration=duration)
    kwargs = {}
    if "generator" in inspect.signature(model.decode).parameters:
        kwargs["generator"] = torch.Generator(device=z.device).manual_seed(seed)
    audio = model.decode(z[None], cond, **kwargs)[0].detach().cpu().float()
    if audio.ndim != 1 or audio.numel() == 0 or not torch.isfinite(audio).all():
        raise SynthStudioError(f"{model.kind} produced unusable audio for pitch {pitch} "
                               f"velocity {velocity} (shape {tuple(audio.shape)}, or non-finite)")
    return audio


def finish(audio: torch.Tensor, model_rate: int, spec: PackSpec) -> tuple[torch.Tensor, str]:
    """Resample, trim leading silence, fade, normalise, quantise to 24 bits: ((T,) at
    spec.sample_rate, how it was normalised). The result equals what the WAV file reads back."""
    x, how = _finish(audio, model_rate, spec)
    codes = torch.round(x.double().clamp(-1.0, 1.0) * 2**23).clamp(-(2**23), 2**23 - 1)
    return (codes / 2**23).float(), how


def _finish(audio: torch.Tensor, model_rate: int, spec: PackSpec) -> tuple[torch.Tensor, str]:
    sr = spec.sample_rate
    x = resample(audio, model_rate, sr) if model_rate != sr else audio.clone()
    peak = float(x.abs().max())
    fade_in = int(round(spec.fade_in_ms * sr / 1000))
    if peak > 0:
        onset = int(torch.nonzero(x.abs() >= peak * 10 ** (spec.trim_db / 20))[0])
        x = x[max(0, onset - fade_in):]
    n = x.numel()
    fi, fo = min(fade_in, n // 2), min(int(round(spec.fade_out_ms * sr / 1000)), n // 2)
    if fi:
        x[:fi] *= torch.linspace(0.0, 1.0, fi + 1)[1:]
    if fo:
        x[n - fo:] *= torch.linspace(1.0, 0.0, fo + 1)[:-1]
    if peak == 0:
        return x, "silent"
    if spec.normalize == "peak":
        return peak_normalize(x, spec.peak_db), f"peak {spec.peak_db:g} dBFS"
    if spec.normalize == "lufs":
        if n < 0.4 * sr:
            return peak_normalize(x, spec.peak_db), f"peak {spec.peak_db:g} dBFS (too short for LUFS)"
        return lufs_normalize(x, sr, spec.lufs, peak_limit_db=spec.peak_db), f"{spec.lufs:g} LUFS"
    return x.clamp(-1.0, 1.0), "none"


# -- the pack -----------------------------------------------------------------------------------
@dataclass
class PackResult:
    """What a build wrote. `samples`: metadata rows of the kept samples; `dropped`: names of
    near-duplicate round robins left out."""

    out: Path
    samples: list[dict[str, Any]]
    dropped: list[str]
    instruments: list[dict[str, Any]]
    rendered: int
    reused: int
    diversity: float | None
    originality: float | None
    files: list[Path] = field(default_factory=list)
    zip: Path | None = None
    report: Path | None = None


@dataclass
class _Instrument:
    name: str
    model_name: str
    model: Generator
    model_hash: str
    latent: torch.Tensor


def _prepare_out(out: Path) -> Path:
    try:
        (out / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SynthStudioError(f"cannot create output directory {out}: "
                               f"{err.strerror or err}") from None
    probe = out / SAMPLES_DIR
    if not os.access(out, os.W_OK) or not os.access(probe, os.W_OK):
        raise SynthStudioError(f"output directory is not writable: {out}")
    return out


def _instruments(spec: PackSpec) -> list[_Instrument]:
    from studio.render import load_generator

    out, used = [], set()
    for mi, name in enumerate(spec.models):
        model, path = load_generator(name)
        if model.temporal_latent:
            raise SynthStudioError(f"{name}: packs need a global (B, D) latent; this {model.kind} "
                                   "model uses a per-frame latent")
        digest = file_hash(path)
        latents = region_latents(model, spec.region, mi)
        for k, z in enumerate(latents):
            if spec.region.names:
                inst = sanitize(spec.region.names[k])
            else:
                inst = sanitize(Path(name).stem) + (f"-{k + 1}" if len(latents) > 1 else "")
            if len(spec.models) > 1 and spec.region.names:
                inst = f"{sanitize(Path(name).stem)}-{inst}"
            while inst in used:
                inst += "-b"
            used.add(inst)
            out.append(_Instrument(inst, name, model, digest, z))
    return out


def build_pack(spec: PackSpec, progress: bool = True) -> PackResult:
    """Render `spec` into `spec.out` (see the module docstring)."""
    spec.validate()
    instruments = _instruments(spec)  # unknown models fail before anything is created
    corpus_feats = None
    if spec.corpus is not None:
        corpus_feats = distance.corpus_features(spec.corpus, "train", spec.corpus_notes, spec.seed)
    out = _prepare_out(Path(spec.out).expanduser())
    zones = key_zones(spec.keys.roots(), spec.keys.step)
    layers = velocity_layers(spec.velocities)
    render_hash = spec.render_hash()
    pack = sanitize(spec.name)
    total = len(instruments) * len(zones) * len(layers) * spec.round_robins
    kept: list[dict[str, Any]] = []
    audio_kept: list[torch.Tensor] = []
    logmels: list[torch.Tensor] = []
    dropped: list[str] = []
    slots: dict[str, list[dict[str, Any]]] = {i.name: [] for i in instruments}
    rendered = reused = 0
    with counting_bar("pack", progress, total) as tick:
        for inst in instruments:
            model = inst.model
            base_pca = model.to_pca(inst.latent[None])[0]
            for root, lokey, hikey in zones:
                for velocity, lovel, hivel in layers:
                    slot_rows, slot_mels = [], []
                    for rr in range(1, spec.round_robins + 1):
                        name = sample_name(pack, inst.name, root, velocity, rr)
                        seed = _seed(spec.seed, inst.model_hash, inst.name, root, velocity, rr)
                        z = inst.latent
                        if rr > 1 and spec.round_robin_spread > 0:
                            g = torch.Generator().manual_seed(seed)
                            noise = torch.randn(model.latent_dim, generator=g)
                            with torch.no_grad():
                                z = model.from_pca((base_pca + spec.round_robin_spread * noise)[None])[0]
                        item_hash = hashlib.sha256(json.dumps(
                            [render_hash, inst.model_hash, inst.name, root, velocity, rr, seed,
                             [round(float(v), 7) for v in z]]).encode()).hexdigest()[:16]
                        wav_path = inside(out / SAMPLES_DIR, name)
                        side = wav_path.with_suffix(".json")
                        audio = _reuse(wav_path, side, item_hash, spec.sample_rate)
                        fresh = audio is None
                        if fresh:
                            raw = render_note(model, z, root, velocity, spec.duration, seed)
                            audio, how = finish(raw, model.sample_rate, spec)
                        else:
                            how = json.loads(side.read_text()).get("normalization")
                        mel = distance.wavegan_logmel(audio[None], spec.sample_rate)[0]
                        near = [r for r, m in zip(slot_rows, slot_mels)
                                if float((m - mel).square().mean().sqrt()) < spec.dedup_threshold]
                        tick(f"{inst.name} {note_name(root)} v{velocity} rr{rr}")
                        if near:
                            dropped.append(name)
                            wav_path.unlink(missing_ok=True)
                            side.unlink(missing_ok=True)
                            continue
                        row = {
                            "file": f"{SAMPLES_DIR}/{name}", "instrument": inst.name,
                            "model": inst.model_name, "model_kind": model.kind,
                            "model_hash": inst.model_hash, "model_sample_rate": model.sample_rate,
                            "seed": seed, "latent": [float(v) for v in z], "pitch": root,
                            "note": note_name(root), "velocity": velocity, "round_robin": rr,
                            "lokey": lokey, "hikey": hikey, "lovel": lovel, "hivel": hivel,
                            "sample_rate": spec.sample_rate, "frames": int(audio.numel()),
                            "normalization": how, "item_hash": item_hash,
                            "descriptors": describe(audio.numpy(), spec.sample_rate, root,
                                                    held_seconds=spec.duration),
                        }
                        loop = _loop_frames(spec, audio.numel())
                        row["loop"] = list(loop) if loop else None
                        if fresh:
                            write_sampler_wav(
                                wav_path, audio, spec.sample_rate,
                                SamplerChunk(root, 0.0, *(loop or (None, None))),
                                InstrumentChunk(root, lokey, hikey, lovel, hivel))
                            atomic_write_text(side, json.dumps(row, indent=2))
                            rendered += 1
                        else:
                            reused += 1
                        slot_rows.append(row)
                        slot_mels.append(mel)
                        audio_kept.append(audio)
                        logmels.append(mel)
                    for pos, row in enumerate(slot_rows, start=1):
                        row["seq_position"] = pos
                    kept.extend(slot_rows)
                    slots[inst.name].append({
                        "root": root, "lokey": lokey, "hikey": hikey, "lovel": lovel,
                        "hivel": hivel,
                        "samples": [{"path": r["file"], "seq_position": r["seq_position"],
                                     "loop": r["loop"]} for r in slot_rows]})
    # -- metrics ---------------------------------------------------------------------------
    mels = torch.stack(logmels)
    stats = corpus_feats[1] if corpus_feats is not None else distance.logmel_stats(mels)
    feats = distance.normalize_logmel(mels, stats)
    div = distance.diversity(feats) if len(kept) >= 2 else None
    orig = held_out = None
    if corpus_feats is not None:
        per_item = distance.nearest_distances(feats, corpus_feats[0])
        orig = float(per_item.mean())
        for row, d in zip(kept, per_item):
            row["originality"] = float(d)
        held_out = _held_out_originality(spec, corpus_feats)
    for row in kept:
        row.setdefault("originality", None)
        side = (out / row["file"]).with_suffix(".json")
        text = json.dumps(row, indent=2)
        if not side.exists() or side.read_text() != text:
            atomic_write_text(side, text)
    # -- instrument files, metadata, report, zip -------------------------------------------
    files = []
    for inst in instruments:
        title = f"{spec.name} / {inst.name} ({inst.model_name})"
        stem = f"{pack}_{inst.name}"
        files.append(_write(out, f"{stem}.sfz", sfz_text(title, slots[inst.name])))
        files.append(_write(out, f"{stem}.dspreset", dspreset_text(title, slots[inst.name])))
    files.append(_write(out, "metadata.json", json.dumps(
        {"synthstudio": __version__, "spec": spec.to_dict(), "render_hash": render_hash,
         "samples": kept, "dropped": dropped}, indent=2)))
    files.append(_write(out, "metadata.csv", _csv(kept)))
    from studio.pack.report import write_report

    inst_info = [{"name": i.name, "model": i.model_name, "kind": i.model.kind,
                  "model_hash": i.model_hash, "model_sample_rate": i.model.sample_rate,
                  "latent": [float(v) for v in i.latent]} for i in instruments]
    report_files = write_report(out, spec, inst_info, kept, dropped, audio_kept, div, orig,
                                held_out, stats_source="corpus" if corpus_feats is not None
                                else "pack")
    files.extend(report_files)
    zip_path = _zip(out, pack, files, kept)
    return PackResult(out, kept, dropped, inst_info, rendered, reused, div, orig,
                      files, zip_path, report_files[0])


def _loop_frames(spec: PackSpec, n: int) -> tuple[int, int] | None:
    if spec.loop is None:
        return None
    start = int(round(spec.loop[0] * spec.sample_rate))
    end = min(int(round(spec.loop[1] * spec.sample_rate)), n - 1)
    if start >= end:
        raise SynthStudioError(f"loop {spec.loop} s lies beyond a sample of {n / spec.sample_rate:.2f} s")
    return start, end


def _reuse(wav: Path, side: Path, item_hash: str, sample_rate: int) -> torch.Tensor | None:
    """The audio of a finished sample with the same item hash, else None."""
    if not (wav.exists() and side.exists()):
        return None
    try:
        if json.loads(side.read_text()).get("item_hash") != item_hash:
            return None
        data, sr = sf.read(str(wav), dtype="float32")
    except (OSError, ValueError, RuntimeError, sf.LibsndfileError):
        return None
    if sr != sample_rate or data.ndim != 1:
        return None
    return torch.from_numpy(data)


def _held_out_originality(spec: PackSpec, corpus_feats: tuple) -> float | None:
    """|D|train of real held-out (test split) notes, on the same features: the reference row."""
    try:
        test, _, _ = distance.corpus_features(spec.corpus, "test", min(spec.corpus_notes, 500),
                                              spec.seed, stats=corpus_feats[1])
    except SynthStudioError:
        return None
    return distance.originality(test, corpus_feats[0])


def _write(out: Path, name: str, text: str) -> Path:
    path = inside(out, name)
    if not path.exists() or path.read_text() != text:
        atomic_write_text(path, text)
    return path


CSV_FIELDS = ("file", "instrument", "model", "model_kind", "model_hash", "seed", "pitch", "note",
              "velocity", "round_robin", "seq_position", "lokey", "hikey", "lovel", "hivel",
              "sample_rate", "frames", "normalization", "originality")


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    desc_keys = sorted(rows[0]["descriptors"]) if rows else []
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(CSV_FIELDS) + desc_keys + ["latent"])
    for r in rows:
        writer.writerow([r.get(k) for k in CSV_FIELDS] + [f"{r['descriptors'][k]:.6g}"
                                                          for k in desc_keys]
                        + [" ".join(f"{v:.6g}" for v in r["latent"])])
    return buf.getvalue()


def _zip(out: Path, pack: str, files: list[Path], rows: list[dict[str, Any]]) -> Path:
    """A deterministic zip (fixed timestamps, sorted names) of the pack, written last."""
    names = sorted({str(p.relative_to(out.resolve())) for p in files}
                   | {r["file"] for r in rows}
                   | {str(Path(r["file"]).with_suffix(".json")) for r in rows})
    target = inside(out, f"{pack}.zip")
    with atomic_path(target) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in names:
                info = zipfile.ZipInfo(f"{pack}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, (out / name).read_bytes())
    return target
