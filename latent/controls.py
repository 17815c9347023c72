"""Latent controls: PCA-normalised coordinates and semantic directions.

Coordinates. Every Generator stores latent statistics measured on its training corpus (mean, PCA
basis and scales, 1st/99th percentiles per component). `to_coords` maps a latent to PCA-normalised
coordinates, where each component has unit variance over the corpus; `pca_controls` gives one
`ControlSpec` per component ranged by the percentiles.

Directions. A `Direction` is a line through latent space along which a descriptor of the sound
changes (brightness, noisiness, attack, ...). `fit_directions` regresses each descriptor on the
whitened coordinates c of training latents by least squares, y ~ w.c + b; the direction is
u = w / |w| in coordinates and `vector` = the same step in latent space. A step of 1 moves one
unit of whitened distance (one standard deviation of the training latents along u), and the fit
predicts a change of `slope` = |w| descriptor units per step. In latent space the direction is
proportional to cov(z, y), the way latents actually move with the descriptor in the data; the
gradient of a regression fitted in raw coordinates, cov(z)^-1 cov(z, y), instead leans on
low-variance components the decoder never saw vary, so steps along it leave the data.

Sidecar. `save_directions` writes `<model-stem>.directions.json` beside the checkpoint with the
checkpoint's file hash; `load_directions` refuses a sidecar made for other weights.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from synth.base import ControlSpec, Generator
from synth.checkpoint import file_hash
from synth.errors import ConfigError, SynthStudioError
from synth.fileio import atomic_write_text

DIRECTIONS_FORMAT = "synthstudio-directions"
DIRECTIONS_VERSION = 1
DIRECTIONS_SUFFIX = ".directions.json"


class SidecarError(SynthStudioError):
    """A latent-tools sidecar that is missing, malformed, or made for another model file."""


# -- coordinates --------------------------------------------------------------------------------
def to_coords(model: Generator, latent: torch.Tensor) -> torch.Tensor:
    """Latent (D,), (B, D) or (B, D, frames) -> PCA-normalised coordinates of the same shape."""
    z = torch.as_tensor(latent, dtype=torch.float32, device=model.latent_mean.device)
    return model.to_pca(z[None])[0] if z.ndim == 1 else model.to_pca(z)


def from_coords(model: Generator, coords: torch.Tensor) -> torch.Tensor:
    """PCA-normalised coordinates (D,), (B, D) or (B, D, frames) -> latent (inverse of to_coords)."""
    c = torch.as_tensor(coords, dtype=torch.float32, device=model.latent_mean.device)
    return model.from_pca(c[None])[0] if c.ndim == 1 else model.from_pca(c)


def pca_controls(model: Generator) -> list[ControlSpec]:
    """One control per principal component ("pc1", ...), in PCA-normalised units, ranged by the
    1st/99th percentiles of the training corpus, with its share of the latent variance.

    Raises ConfigError if the model's statistics were never fitted (the identity defaults would
    pretend to be a measured range).
    """
    if not bool(model.latent_fitted):
        raise ConfigError(f"{model.kind} model has no fitted latent statistics "
                          f"(run fit_latent_stats on training latents first)")
    return list(Generator.controls.fget(model))  # the PCA controls, not model extras


@dataclass(frozen=True)
class Whitening:
    """z -> c = ((z - mean) @ components.T) / scale. components: (D, D), rows are axes."""

    mean: torch.Tensor
    components: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def from_model(cls, model: Generator) -> "Whitening":
        return cls(model.latent_mean.detach().double().cpu(),
                   model.latent_components.detach().double().cpu(),
                   model.latent_scale.detach().double().cpu())

    @classmethod
    def from_latents(cls, latents: torch.Tensor) -> "Whitening":
        """PCA whitening of (N, D) latents (as `Generator.fit_latent_stats`)."""
        z = torch.as_tensor(latents).double()
        mean = z.mean(0)
        cov = (z - mean).T @ (z - mean) / max(z.shape[0] - 1, 1)
        evals, evecs = torch.linalg.eigh(cov)
        order = torch.argsort(evals, descending=True)
        return cls(mean, evecs[:, order].T.contiguous(), evals[order].clamp_min(1e-12).sqrt())

    def coords(self, z: torch.Tensor) -> torch.Tensor:
        return (z.double() - self.mean) @ self.components.T / self.scale

    def step(self, u: torch.Tensor) -> torch.Tensor:
        """A displacement u in coordinates -> the same displacement in latent space."""
        return (u.double() * self.scale) @ self.components


# -- directions ---------------------------------------------------------------------------------
@dataclass
class Direction:
    """A semantic direction in latent space.

    Attributes:
        name: e.g. "brightness".
        vector: (D,) latent-space step: `z + a * vector` moves `a` steps (one step = one standard
            deviation of the training latents along this direction).
        unit: unit of the descriptor, e.g. "octaves (log2 centroid/f0)".
        slope: descriptor change per step predicted by the fit (descriptor units / step).
        r2: fraction of the descriptor's variance the linear fit explains (training latents).
        coords: (D,) unit vector in PCA-normalised coordinates.
        descriptor: what was regressed (descriptor key and transform).
        low, high: 1st/99th percentiles of the training latents' (centred) positions along the
            direction, in steps: the playable range of an amount.
        n: number of latents fitted.
        measured: effect measured on renders (filled by bench/fit_latent_tools.py), e.g.
            {"steps": [...], "values": [...], "slope": ..., "monotonic": ...}.
    """

    name: str
    vector: torch.Tensor
    unit: str
    slope: float
    r2: float
    coords: torch.Tensor | None = None
    descriptor: str = ""
    low: float = -2.0
    high: float = 2.0
    n: int = 0
    measured: dict[str, Any] | None = None

    def control(self) -> ControlSpec:
        """A UI control for this direction: amount in steps, 0 = unchanged."""
        low, high = min(self.low, 0.0), max(self.high, 0.0)
        return ControlSpec(self.name, low, high, 0.0,
                           f"move along the fitted '{self.name}' direction: about "
                           f"{self.slope:+.3g} {self.unit} per step (fit r2 {self.r2:.2f})",
                           "steps")

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["vector"] = self.vector.detach().cpu().tolist()
        out["coords"] = None if self.coords is None else self.coords.detach().cpu().tolist()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Direction":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise SidecarError(f"direction {data.get('name')!r} has unknown fields {sorted(unknown)}")
        kwargs = dict(data)
        kwargs["vector"] = torch.tensor(data["vector"], dtype=torch.float32)
        if data.get("coords") is not None:
            kwargs["coords"] = torch.tensor(data["coords"], dtype=torch.float32)
        return cls(**kwargs)


def fit_directions(latents: torch.Tensor, descriptors: Mapping[str, Any], *,
                   model: Generator | None = None, covariates: Any = None, ridge: float = 1.0,
                   units: Mapping[str, str] | None = None) -> dict[str, Direction]:
    """Linear semantic directions by least squares in PCA-normalised coordinates.

    Args:
        latents: (N, D) training latents (global codes; pool temporal ones first).
        descriptors: name -> (N,) target values, one direction per name (see `semantic_targets`
            for the descriptor transforms the project uses). Non-finite values are skipped.
        model: whiten with this model's stored statistics (recommended: then the steps are in
            the same units as `pca_controls`); without it, with the PCA of `latents` itself.
        covariates: optional (N, K) nuisance regressors fitted jointly but kept out of the
            direction, e.g. the notes' pitch and velocity (which are conditions, not latents):
            the direction then says how the descriptor moves with the latent at a fixed pitch.
        ridge: L2 penalty on w, in units of observations (isotropic in whitened coordinates).
        units: name -> unit string for the Direction records.

    `Direction.r2` is the share of the descriptor's variance left after the covariates that the
    latent explains (the partial r2; the plain r2 without covariates).
    """
    z = torch.as_tensor(latents).double().cpu()
    if z.ndim != 2 or z.shape[0] < 3:
        raise ConfigError(f"fit_directions needs (N >= 3, D) latents, got {tuple(z.shape)}")
    white = Whitening.from_model(model) if model is not None else Whitening.from_latents(z)
    if white.mean.shape[0] != z.shape[1]:
        raise ConfigError(f"latents have D={z.shape[1]} but the model's latent_dim is "
                          f"{white.mean.shape[0]}")
    c_all = white.coords(z)
    d = c_all.shape[1]
    cov_all = None
    if covariates is not None:
        cov_all = torch.as_tensor(np.asarray(covariates, dtype=np.float64))
        cov_all = cov_all[:, None] if cov_all.ndim == 1 else cov_all
        if cov_all.shape[0] != z.shape[0] or cov_all.ndim != 2:
            raise ConfigError(f"covariates must be (N, K) with N={z.shape[0]}, got "
                              f"{tuple(cov_all.shape)}")
    out = {}
    for name, values in descriptors.items():
        y = torch.as_tensor(np.asarray(values, dtype=np.float64))
        if y.shape != (z.shape[0],):
            raise ConfigError(f"descriptor {name!r} has shape {tuple(y.shape)}, expected ({z.shape[0]},)")
        ok = torch.isfinite(y)
        if int(ok.sum()) < 3:
            raise ConfigError(f"descriptor {name!r} has fewer than 3 finite values")
        c, yy = c_all[ok], y[ok]
        cc, yc = c - c.mean(0), yy - yy.mean()
        if cov_all is not None:
            # Partial out the covariates (Frisch-Waugh): regress latents and target on them and
            # fit the direction on the residuals; the latent coefficients equal the joint fit's.
            k = cov_all[ok] - cov_all[ok].mean(0)
            proj = torch.linalg.pinv(k)
            cc = cc - k @ (proj @ cc)
            yc = yc - k @ (proj @ yc)
        gram = cc.T @ cc + ridge * torch.eye(d, dtype=c.dtype)
        w = torch.linalg.solve(gram, cc.T @ yc)
        norm = float(w.norm())
        sst = float((yc ** 2).sum())
        r2 = 1.0 - float(((yc - cc @ w) ** 2).sum()) / sst if sst > 0 else 0.0
        u = w / norm if norm > 0 else torch.zeros_like(w)
        proj = (c - c.mean(0)) @ u
        out[name] = Direction(
            name=name, vector=white.step(u).float(), unit=(units or {}).get(name, ""),
            slope=norm, r2=r2, coords=u.float(), descriptor=name,
            low=float(torch.quantile(proj, 0.01)), high=float(torch.quantile(proj, 0.99)),
            n=int(ok.sum()),
        )
    return out


def apply_directions(z: torch.Tensor, amounts: Mapping[str, float],
                     directions: Mapping[str, Direction]) -> torch.Tensor:
    """z + sum(amount * direction.vector) over `amounts` (name -> steps).

    Args:
        z: latent (D,), (B, D) or (B, D, frames) (a temporal latent moves in every frame).
    """
    z = torch.as_tensor(z)
    out = z.clone()
    for name, amount in amounts.items():
        if name not in directions:
            raise ConfigError(f"unknown direction {name!r}; known: {', '.join(directions) or 'none'}")
        v = directions[name].vector.to(device=z.device, dtype=z.dtype)
        if v.shape[0] != z.shape[1 if z.ndim > 1 else 0]:
            raise ConfigError(f"direction {name!r} has D={v.shape[0]}, latent {tuple(z.shape)}")
        out = out + float(amount) * (v[:, None] if z.ndim == 3 else v)
    return out


def direction_controls(directions: Mapping[str, Direction]) -> list[ControlSpec]:
    """One ControlSpec per direction (amount in steps; 0 = unchanged)."""
    return [d.control() for d in directions.values()]


# -- descriptor targets -------------------------------------------------------------------------
def _log10(floor: float) -> Callable[[float], float]:
    return lambda x: math.log10(max(float(x), 0.0) + floor)


#: direction name -> (descriptor key, unit, transform). The descriptors are those of
#: `synth.data.descriptors.describe`; transforms make heavy-tailed ones roughly linear.
SEMANTIC: dict[str, tuple[str, str, Callable[[float], float]]] = {
    "brightness": ("brightness", "octaves (log2 spectral centroid / f0)", float),
    "noisiness": ("flatness", "log10 spectral flatness", _log10(1e-6)),
    "attack": ("attack_s", "log10 s (10-90% rise time)", _log10(1e-3)),
    "decay": ("decay_db_per_s", "dB/s of decay over the first second (positive = faster)",
              lambda x: -float(x)),
    "sustain": ("sustain_db", "dB at release relative to the peak", float),
    "loudness": ("rms_db", "dB RMS", float),
}


def semantic_targets(rows: Sequence[Mapping[str, float]],
                     names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Descriptor dicts (manifest `descriptors` or `describe` output) -> name -> (N,) targets."""
    out = {}
    for name in names or list(SEMANTIC):
        key, _, fn = SEMANTIC[name]
        out[name] = np.array([fn(r[key]) if r.get(key) is not None else np.nan for r in rows],
                             dtype=np.float64)
    return out


def semantic_units(names: Sequence[str] | None = None) -> dict[str, str]:
    return {n: SEMANTIC[n][1] for n in (names or list(SEMANTIC))}


# -- sidecars -----------------------------------------------------------------------------------
def model_file(model: str | os.PathLike) -> Path:
    """A checkpoint path, or a catalog name ("ddsp-gm") resolved to its path."""
    from synth.catalog import resolve_model

    return resolve_model(str(model))


def sidecar_path(model: str | os.PathLike, suffix: str) -> Path:
    """`<model-stem><suffix>` beside the checkpoint."""
    path = model_file(model)
    return path.with_name(path.stem + suffix)


def require_model_hash(body: Mapping[str, Any], side: Path, path: Path, refit: str,
                       error: type[SidecarError] = SidecarError) -> None:
    """Raise `error` unless sidecar `side` (parsed `body`) records checkpoint `path`'s file hash:
    a companion fitted for other weights must not steer these."""
    actual = file_hash(path)
    if body.get("model_hash") != actual:
        fitted_for = body.get("model") or body.get("generator") or "?"
        raise error(f"{side.name} was fitted for model hash {body.get('model_hash')} "
                    f"({fitted_for}), but {path} has hash {actual}: the weights changed; refit "
                    f"with `{refit} --model {path}`")


def save_directions(directions: Mapping[str, Direction], model: str | os.PathLike,
                    **info: Any) -> Path:
    """Write `<model-stem>.directions.json` atomically beside the checkpoint `model` (a path or
    catalog name), recording the checkpoint's file hash; `info` is stored alongside (fit details)."""
    path = model_file(model)
    from synth.checkpoint import read_metadata

    meta = read_metadata(path)
    dims = {int(d.vector.shape[0]) for d in directions.values()}
    latent_dim = int(meta["config"].get("latent_dim", -1))
    if dims and dims != {latent_dim}:
        raise ConfigError(f"directions have D={sorted(dims)} but {path.name} has latent_dim {latent_dim}")
    body = {
        "format": DIRECTIONS_FORMAT, "version": DIRECTIONS_VERSION,
        "model": path.name, "model_hash": file_hash(path), "kind": meta["kind"],
        "latent_dim": latent_dim, "info": info,
        "directions": {k: d.to_json() for k, d in directions.items()},
    }
    out = path.with_name(path.stem + DIRECTIONS_SUFFIX)
    atomic_write_text(out, json.dumps(body, indent=1) + "\n")
    return out


def read_directions_file(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed sidecar JSON, schema-checked (no model check)."""
    path = Path(path)
    if not path.exists():
        raise SidecarError(f"no directions sidecar {path} (fit one with bench/fit_latent_tools.py)")
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SidecarError(f"corrupt directions sidecar {path}: {err}") from None
    if body.get("format") != DIRECTIONS_FORMAT or body.get("version") != DIRECTIONS_VERSION:
        raise SidecarError(f"{path} is not a {DIRECTIONS_FORMAT} v{DIRECTIONS_VERSION} file")
    return body


def load_directions(model: str | os.PathLike) -> dict[str, Direction]:
    """Directions from the sidecar beside checkpoint `model` (path or catalog name); refuses a
    sidecar whose recorded model hash is not the checkpoint's."""
    path = model_file(model)
    side = path.with_name(path.stem + DIRECTIONS_SUFFIX)
    body = read_directions_file(side)
    require_model_hash(body, side, path, "python -m bench.fit_latent_tools")
    return {k: Direction.from_json(v) for k, v in body["directions"].items()}


# -- measuring a direction on renders -----------------------------------------------------------
@torch.no_grad()
def measure_direction(model: Generator, direction: Direction, latents: torch.Tensor,
                      pitches: Sequence[float], steps: Sequence[float] = (-2, -1, 0, 1, 2), *,
                      velocity: float = 100.0, seconds: float = 1.0,
                      release: float | None = None) -> dict[str, Any]:
    """Render each base latent moved by each step along `direction` and measure its descriptor.

    Args:
        latents: (B, D) base latents; pitches: (B,) MIDI pitch of each render.
        release: seconds of release inside `seconds` (the sustain level is read before it;
            default: the model's ADSR release if it has one, else 0).
    Returns:
        {"steps", "values": (S,) mean transformed descriptor per step, "per_note": (B, S),
         "centroid_hz": (S,) mean spectral centroid, "slope": least-squares slope of the means
         per step, "monotonic": means strictly increase with the step, "monotonic_notes":
         fraction of base notes whose own values strictly increase}.
    """
    from synth.base import Conditions
    from synth.data.descriptors import describe

    key, _, fn = SEMANTIC[direction.descriptor or direction.name]
    z = torch.as_tensor(latents, dtype=torch.float32, device=model.latent_mean.device)
    if release is None:
        adsr = getattr(model.config, "adsr", None)
        release = float(adsr[3]) if adsr else 0.0
    b, s = z.shape[0], len(steps)
    moved = torch.cat([apply_directions(z, {direction.name: a}, {direction.name: direction})
                       for a in steps])                                        # (S*B, D)
    cond = Conditions.note([float(p) for p in pitches] * s, velocity, duration=seconds)
    audio = model.decode(moved, cond).cpu().numpy()
    values = np.zeros((b, s))
    centroid = np.zeros((b, s))
    for j in range(s):
        for i in range(b):
            d = describe(audio[j * b + i], model.sample_rate, pitch=float(pitches[i]),
                         held_seconds=max(seconds - release, 0.05))
            values[i, j], centroid[i, j] = fn(d[key]), d["centroid_hz"]
    means = values.mean(0)
    x = np.asarray(steps, dtype=np.float64)
    slope = float(np.polyfit(x, means, 1)[0]) if s > 1 else 0.0
    return {"steps": list(map(float, steps)), "values": means.tolist(),
            "per_note": values.tolist(), "centroid_hz": centroid.mean(0).tolist(),
            "slope": slope, "monotonic": bool(np.all(np.diff(means) > 0)),
            "monotonic_notes": float(np.mean(np.all(np.diff(values, axis=1) > 0, axis=1)))}
