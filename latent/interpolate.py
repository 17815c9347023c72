"""Interpolation in a generator's latent space: lerp, slerp, an XY pad, N anchors, paths.

Shapes: a latent is (D,) or a batch (B, D). Every function works on any tensor of latents, in any
coordinates; the recommended space is a model's PCA-normalised coordinates
(`model.to_pca` / `latent.controls.to_coords`), where every component has unit variance over the
training corpus:

- slerp there keeps a morph at the typical distance from the centre. Training latents in whitened
  coordinates sit near a shell of radius ~sqrt(D) (for a Gaussian-like cloud), and the straight
  line between two of them dips towards the centre (the midpoint of two orthogonal points has 0.71
  of their norm): lerp passes through an "average", duller sound no training note made. Slerp
  follows the shell (White 2016, "Sampling generative networks").
- in raw latent coordinates a few high-variance components dominate the angle, so slerp there is
  close to lerp along them and ignores the rest; whitening weighs every component by how much it
  varies in the data.

Straight lines (lerp, slerp) are only straight in the latent: the decoder bends them, and between
two instruments whose notes differ in brightness the decoded sound can first get duller than both
and then brighten (a dip in spectral centroid). Mel generators offer a third morph, "melfit"
(`fit_mel`): each intermediate latent is fitted, from the straight line, so that the note it
decodes is as close as the decoder can get to the crossfade of the two endpoint notes' log-mels,
the morph a listener expects (that crossfade's brightness moves steadily from one to the other).

`render_path` turns a sequence of latents into one evolving sound through the Generator contract:
time-varying latents when `model.temporal_latent` (e.g. DDSP with `z_mode="frames"`), otherwise
equal-power crossfades between notes decoded one per point (see `path_mode`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch

from synth.base import Conditions, Generator
from synth.errors import ConfigError

#: Below this angle (radians) slerp is numerically lerp; near pi the great circle is undefined.
_PARALLEL_EPS = 1e-4

TimeLike = float | Sequence[float] | torch.Tensor


def _times(t: TimeLike, like: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """t as a float tensor on `like`'s device; and whether it was a scalar."""
    tt = torch.as_tensor(t, dtype=like.dtype if like.is_floating_point() else torch.float32,
                         device=like.device)
    if tt.ndim > 1:
        raise ConfigError(f"t must be a float or a 1-D sequence, got shape {tuple(tt.shape)}")
    return tt, tt.ndim == 0


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape or a.ndim not in (1, 2):
        raise ConfigError(f"interpolate between (D,) or (B, D) latents of one shape, got "
                          f"{tuple(a.shape)} and {tuple(b.shape)}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    return a.to(dtype), b.to(dtype)


def lerp(a: torch.Tensor, b: torch.Tensor, t: TimeLike) -> torch.Tensor:
    """Linear interpolation (1 - t) a + t b.

    Args:
        a, b: (D,) or (B, D).
        t: a float (-> the shape of `a`) or (N,) times (-> (N, *a.shape), stacked).
    """
    a, b = _pair(a, b)
    tt, scalar = _times(t, a)
    w = tt.reshape(-1, *([1] * a.ndim))
    out = (1 - w) * a + w * b
    return out[0] if scalar else out


def slerp(a: torch.Tensor, b: torch.Tensor, t: TimeLike) -> torch.Tensor:
    """Spherical interpolation along the great circle from `a` to `b` (White 2016):

        sin((1 - t) w) / sin(w) a + sin(t w) / sin(w) b,  w = angle(a, b).

    Equal-norm inputs keep that norm all the way; the endpoints are exact. Parallel vectors (and
    zero vectors, and antiparallel ones, whose great circle is undefined) fall back to `lerp`
    row by row.

    Args:
        a, b: (D,) or (B, D).
        t: a float (-> the shape of `a`) or (N,) times (-> (N, *a.shape), stacked).
    """
    a, b = _pair(a, b)
    tt, scalar = _times(t, a)
    a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])          # (R, D)
    na, nb = a2.norm(dim=-1), b2.norm(dim=-1)
    cos = ((a2 * b2).sum(-1) / (na * nb).clamp_min(1e-30)).clamp(-1.0, 1.0)
    omega = torch.acos(cos)                                                   # (R,)
    degenerate = (na == 0) | (nb == 0) | (omega < _PARALLEL_EPS) | (omega > math.pi - _PARALLEL_EPS)
    sin = torch.sin(omega).clamp_min(1e-30)
    w = tt.reshape(-1, 1, 1)                                                  # (N, 1, 1)
    om = omega[None, :, None]
    ca = torch.sin((1 - w) * om) / sin[None, :, None]
    cb = torch.sin(w * om) / sin[None, :, None]
    spherical = ca * a2 + cb * b2                                             # (N, R, D)
    linear = (1 - w) * a2 + w * b2
    out = torch.where(degenerate[None, :, None], linear, spherical).reshape(-1, *a.shape)
    return out[0] if scalar else out


def bilinear(corners: torch.Tensor, x: TimeLike, y: TimeLike) -> torch.Tensor:
    """An XY pad over four latents (NSynth Super style).

    Args:
        corners: (4, D) ordered [top-left, top-right, bottom-left, bottom-right].
        x: 0 = left .. 1 = right; y: 0 = top .. 1 = bottom (screen coordinates). Floats give
            (D,); equal-length (N,) sequences give (N, D).
    """
    c = torch.as_tensor(corners)
    if not c.is_floating_point():
        c = c.float()
    if c.ndim != 2 or c.shape[0] != 4:
        raise ConfigError(f"bilinear needs corners (4, D), got {tuple(c.shape)}")
    xx, xs = _times(x, c)
    yy, ys = _times(y, c)
    if xx.shape != yy.shape:
        raise ConfigError(f"x and y must have one shape, got {tuple(xx.shape)} and {tuple(yy.shape)}")
    xx, yy = xx.reshape(-1, 1), yy.reshape(-1, 1)
    out = ((1 - xx) * (1 - yy) * c[0] + xx * (1 - yy) * c[1]
           + (1 - xx) * yy * c[2] + xx * yy * c[3])
    return out[0] if xs and ys else out


def barycentric(anchors: torch.Tensor, weights: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Weighted mix of N anchor latents, weights normalised to sum to 1.

    Args:
        anchors: (N, D).
        weights: (N,) -> (D,), or (M, N) -> (M, D). Negative weights extrapolate; a zero sum is
            an error.
    """
    a = torch.as_tensor(anchors)
    if not a.is_floating_point():
        a = a.float()
    w = torch.as_tensor(weights, dtype=a.dtype, device=a.device)
    if a.ndim != 2 or w.shape[-1] != a.shape[0] or w.ndim not in (1, 2):
        raise ConfigError(f"barycentric needs anchors (N, D) and weights (N,) or (M, N), got "
                          f"{tuple(a.shape)} and {tuple(w.shape)}")
    total = w.sum(-1, keepdim=True)
    if (total.abs() < 1e-12).any():
        raise ConfigError("barycentric weights sum to zero")
    return (w / total) @ a


def path(points: torch.Tensor, n: int) -> torch.Tensor:
    """`n` latents evenly spaced by arc length along the polyline through `points`.

    Args:
        points: (P, D) waypoints (first and last are kept exactly).
        n: number of samples (>= 1; 1 gives the first point).
    Returns:
        (n, D).
    """
    p = torch.as_tensor(points)
    if not p.is_floating_point():
        p = p.float()
    if p.ndim != 2 or p.shape[0] < 1:
        raise ConfigError(f"path needs points (P >= 1, D), got {tuple(p.shape)}")
    if n < 1:
        raise ConfigError(f"path needs n >= 1, got {n}")
    seg = (p[1:] - p[:-1]).norm(dim=-1)                                       # (P-1,)
    cum = torch.cat([seg.new_zeros(1), seg.cumsum(0)])                        # (P,)
    total = float(cum[-1]) if p.shape[0] > 1 else 0.0
    if total == 0.0:
        return p[:1].expand(n, -1).clone()
    s = torch.linspace(0.0, total, n, dtype=p.dtype, device=p.device)
    # Segment k holds s in [cum[k], cum[k+1]]; zero-length segments are never selected because
    # searchsorted(right=True) jumps past repeated cumulative values.
    k = (torch.searchsorted(cum, s, right=True) - 1).clamp(0, p.shape[0] - 2)
    length = seg[k]
    u = torch.where(length > 0, (s - cum[k]) / length.clamp_min(1e-30), torch.zeros_like(s))
    out = p[k] + u.clamp(0, 1)[:, None] * (p[k + 1] - p[k])
    out[-1] = p[-1]
    return out


# -- rendering ----------------------------------------------------------------------------------
def path_mode(model: Generator) -> str:
    """How `render_path` renders for this model: "frames" (one latent per frame, the model
    decodes a time-varying latent) or "crossfade" (one note per point, equal-power crossfades)."""
    return "frames" if getattr(model, "temporal_latent", False) else "crossfade"


def latent_frames(model: Generator, seconds: float, cond: Conditions) -> int:
    """Latent frames a temporal model uses for `seconds` of audio: a model may say so with a
    `latent_frames(n_samples)` method; otherwise the contract tells us by encoding silence."""
    n_samples = max(1, int(round(seconds * model.sample_rate)))
    own = getattr(model, "latent_frames", None)
    if callable(own):
        return int(own(n_samples))
    device = model.latent_mean.device
    with torch.no_grad():
        probe = model.encode(torch.zeros(1, n_samples, device=device), cond.select(slice(0, 1)))
    if probe.ndim != 3:
        raise ConfigError(f"{model.kind} says temporal_latent but encodes to {tuple(probe.shape)}")
    return int(probe.shape[-1])


def equal_power_gains(n_points: int, n_samples: int, crossfade: int) -> torch.Tensor:
    """(n_points, n_samples) gains: segment k holds [k, k+1) * n_samples / n_points, and
    neighbours cross over `crossfade` samples centred on their boundary with cos/sin gains, so
    the gains' squares sum to 1 at every sample (constant power for uncorrelated segments)."""
    t = torch.arange(n_samples, dtype=torch.float64) + 0.5
    bounds = torch.arange(1, n_points, dtype=torch.float64) * n_samples / n_points
    # Progress through each boundary's fade, 0 before it, 1 after: (n_points - 1, n_samples).
    half = max(crossfade, 1) / 2
    u = ((t[None] - (bounds[:, None] - half)) / (2 * half)).clamp(0, 1)
    # Cumulative "angle": theta in [k, k+1] while crossing boundary k; segment k's gain is
    # cos of the distance of theta from k, clamped to a quarter turn.
    theta = u.sum(0)                                                          # (n_samples,)
    k = torch.arange(n_points, dtype=torch.float64)[:, None]
    dist = (theta[None] - k).abs().clamp(max=1.0)
    return torch.cos(dist * math.pi / 2).float()


@torch.no_grad()
def render_path(model: Generator, points: torch.Tensor, cond: Conditions, seconds: float,
                segments: int | None = None, *, pca: bool = False,
                crossfade: float | None = None, batch: int = 16) -> torch.Tensor:
    """Render one evolving sound that travels through `points`.

    Args:
        model: any Generator.
        points: (P, D) waypoints in the model's latent space (or PCA-normalised coordinates with
            `pca=True`); the path between them is spaced evenly by arc length (`path`).
        cond: conditions of one note (batch 1 or unbatched), e.g. `Conditions.note(60, 100)`;
            its duration is replaced by `seconds`.
        seconds: length of the sound.
        segments: crossfade mode only: number of notes to decode along the path (default: one
            per point, P).
        crossfade: crossfade mode only: fade length in seconds at each boundary (default: the
            whole segment, a continuous morph; 0 gives hard cuts).
    Returns:
        (T,) audio at `model.sample_rate`, T = round(seconds * sample_rate).

    Modes (`path_mode`): with `model.temporal_latent` the path is sampled once per latent frame
    and decoded as one (1, D, frames) latent, so the timbre moves smoothly inside one note.
    Otherwise every sampled point is decoded as a full-length note with the same conditions (the
    same envelope and, for DDSP, the same oscillator phases and noise seed), and the notes are
    joined with equal-power (cos/sin) crossfades. Equal power keeps the level of uncorrelated
    renders constant; for strongly correlated neighbours (close latents) the middle of a fade
    can rise by up to +3 dB.
    """
    pts = torch.as_tensor(points, dtype=torch.float32)
    if pts.ndim == 1:
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[-1] != model.latent_dim:
        raise ConfigError(f"render_path needs points (P, {model.latent_dim}), got {tuple(pts.shape)}")
    if seconds <= 0:
        raise ConfigError(f"render_path needs seconds > 0, got {seconds}")
    device = model.latent_mean.device
    pts = pts.to(device)
    if pca:
        pts = model.from_pca(pts)
    if (cond.batch_size or 1) != 1:
        raise ConfigError(f"render_path renders one note: conditions have batch {cond.batch_size}")
    cond = dataclasses.replace(cond, duration=float(seconds)).to(device)
    n_samples = int(round(seconds * model.sample_rate))

    if path_mode(model) == "frames":
        frames = latent_frames(model, seconds, cond)
        z = path(pts, frames).T[None]                                         # (1, D, F)
        audio = model.decode(z, cond)[0]
        return _fit_length(audio, n_samples)

    n_seg = int(segments) if segments is not None else pts.shape[0]
    if n_seg < 1:
        raise ConfigError(f"segments must be >= 1, got {segments}")
    z = path(pts, n_seg)                                                      # (K, D)
    renders = []
    for start in range(0, n_seg, batch):
        zz = z[start:start + batch]
        renders.append(model.decode(zz, cond.expand(zz.shape[0])))
    audio = torch.cat([_fit_length(r, n_samples) for r in renders])          # (K, T)
    seg_len = n_samples / n_seg
    fade = seg_len if crossfade is None else min(max(float(crossfade), 0.0) * model.sample_rate,
                                                 seg_len)
    gains = equal_power_gains(n_seg, n_samples, int(round(fade))).to(audio.device)
    return (gains * audio).sum(0)


def _fit_length(audio: torch.Tensor, n: int) -> torch.Tensor:
    """Trim or zero-pad the last axis to n samples."""
    if audio.shape[-1] >= n:
        return audio[..., :n]
    return torch.nn.functional.pad(audio, (0, n - audio.shape[-1]))


# -- fitting latents to a target sound ------------------------------------------------------------
#: Adam steps of `fit_mel` for a continuous latent and for a quantised one, and the rate
#: (docs/VAE.md, "Fitted morphs"): on vae-gm 60 steps reach what 150 do, and a rate of 0.15
#: fits worse; vqvae-gm's quantised latent moves in jumps between codes and needs 150 (its note
#: morphs: 0.83 / 0.58 monotonic at 60 steps, 0.92 / 0.83 at 150, no better at 300).
FIT_STEPS = 60
FIT_STEPS_QUANTISED = 150
FIT_LR = 0.05


def fit_steps(model: Generator) -> int:
    """The default number of `fit_mel` steps for `model` (more for a quantised latent)."""
    return FIT_STEPS_QUANTISED if hasattr(model, "codebook") else FIT_STEPS


def supports_melfit(model: Generator) -> bool:
    """True when `fit_mel` can move the model's latent: a mel generator (`decode_mel`, the VAE
    and the VQ-VAE, whose quantiser passes a straight-through gradient to the pre-quantisation
    latent)."""
    return hasattr(model, "decode_mel")


def fit_mel(model: Generator, init: torch.Tensor, target: torch.Tensor, cond: Conditions,
            steps: int | None = None, lr: float = FIT_LR) -> torch.Tensor:
    """Latents whose decoded mel is as close as the decoder allows to `target`.

    Args:
        model: a mel generator (`supports_melfit`: the VAE, the VQ-VAE); its weights are
            not changed (gradients are taken for the latents only).
        init: (P, D) starting latents (e.g. the straight line between two notes), or (P, D, F')
            pre-quantisation latents of the VQ-VAE.
        target: (P, n_mels, F) natural-log mel magnitudes under the model's FeatureSpec.
        cond: conditions for one note (shared) or for P notes.
    Returns:
        (P, ...) latents after `steps` Adam steps (default `fit_steps(model)`; rate `lr`) on
        the sum over points of each point's relative squared error of mel magnitudes,
        ||exp(mel) - exp(target)||^2 / ||exp(target)||^2. Magnitudes, not log-mels: the loud
        bins that make a note's brightness dominate, not the near-silent ones a log error weighs
        alike. Points are independent (a point's result does not depend on the others),
        deterministic, on init's device.
    """
    if not supports_melfit(model):
        raise ConfigError(f"melfit needs a mel generator (the VAE or VQ-VAE), not "
                          f"{getattr(model, 'kind', type(model).__name__)}")
    if init.ndim < 2 or target.ndim != 3 or target.shape[0] != init.shape[0]:
        raise ConfigError(f"fit_mel needs init (P, D) or (P, D, F') and target (P, n_mels, F), got "
                          f"{tuple(init.shape)} and {tuple(target.shape)}")
    steps = fit_steps(model) if steps is None else steps
    if steps < 0 or not lr > 0:
        raise ConfigError(f"fit_mel needs steps >= 0 and lr > 0, got {steps} and {lr}")
    cond = cond.expand(init.shape[0])
    goal = target.detach().exp()
    scale = goal.square().sum((1, 2)).clamp_min(1e-12)                   # (P,)
    z = init.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            mel = model.decode_mel(z, cond).exp()
            loss = ((mel - goal).square().sum((1, 2)) / scale).sum()
            (z.grad,) = torch.autograd.grad(loss, [z])
            opt.step()
    return z.detach()


def mel_mix_fit(model: Generator, anchors: torch.Tensor, weights: torch.Tensor, cond: Conditions,
                steps: int | None = None, lr: float = FIT_LR) -> torch.Tensor:
    """Fitted mixes of K anchor latents: anchors (K, D) (VQ-VAE: (K, D, F')), weights (P, K)
    (rows summing to 1, e.g. an XY pad's bilinear weights) -> (P, D) (or (P, D, F')) latents,
    each fitted (`fit_mel`, starting from the
    straight mix weights @ anchors) to the same mix of the anchors' decoded log-mels,
    sum_k w_k mel_k, at the note `cond` (one note). A row that puts all its weight on one anchor
    returns that anchor itself."""
    if anchors.ndim < 2 or weights.ndim != 2 or weights.shape[1] != anchors.shape[0]:
        raise ConfigError(f"mel_mix_fit needs anchors (K, D) or (K, D, F') and weights (P, K), "
                          f"got {tuple(anchors.shape)} and {tuple(weights.shape)}")
    one = cond.select(slice(0, 1))
    weights = weights.to(anchors)
    with torch.no_grad():
        mels = model.decode_mel(anchors, one.expand(anchors.shape[0]))     # (K, n_mels, F)
        target = torch.einsum("pk,kmf->pmf", weights, mels)
        line = (weights @ anchors.flatten(1)).reshape(-1, *anchors.shape[1:])   # (P, ...)
    corner = (weights == 1).any(1)
    out = line.clone()
    out[corner] = anchors[weights[corner].argmax(1)]
    if (~corner).any():
        out[~corner] = fit_mel(model, line[~corner], target[~corner], one, steps, lr)
    return out


def mel_crossfade_fit(model: Generator, a: torch.Tensor, b: torch.Tensor, cond: Conditions,
                      t: torch.Tensor, steps: int | None = None, lr: float = FIT_LR) -> torch.Tensor:
    """The "melfit" morph: latents a, b (1, ...) and times t (n,) in [0, 1] -> (n, ...) latents,
    each fitted (`fit_mel`, from the lerp) to the crossfade (1 - t) mel_a + t mel_b of the two
    endpoints' decoded log-mels (`mel_mix_fit` with two anchors); t exactly 0 or 1 gives a or b
    itself."""
    t = t.reshape(-1, 1).to(a)
    return mel_mix_fit(model, torch.cat([a, b]), torch.cat([1 - t, t], 1), cond, steps, lr)


# -- measuring a morph ----------------------------------------------------------------------------
MORPH_MODES = ("lerp", "slerp", "melfit")


def morph_points(model: Generator, a: torch.Tensor, b: torch.Tensor, n: int,
                 mode: str = "slerp", cond: Conditions | None = None) -> torch.Tensor:
    """`n` latents from a to b (each (1, ...), the model's latent shape), t evenly spaced in
    [0, 1]: "lerp" on the raw latents, "slerp" in the model's PCA-normalised coordinates (the
    app's morph; a temporal latent is slerped frame by frame), or "melfit" (`mel_crossfade_fit`,
    needs `cond`, the note the morph is decoded at). Returns (n, ...)."""
    t = torch.linspace(0.0, 1.0, n, dtype=a.dtype, device=a.device)
    if mode == "lerp":
        return torch.lerp(a.expand(n, *a.shape[1:]), b.expand(n, *b.shape[1:]),
                          t.reshape(n, *([1] * (a.ndim - 1))))
    if mode == "melfit":
        if cond is None:
            raise ConfigError("morph mode 'melfit' needs the note's conditions")
        return mel_crossfade_fit(model, a, b, cond, t)
    if mode != "slerp":
        raise ConfigError(f"morph mode must be one of {', '.join(MORPH_MODES)}, got {mode!r}")
    ca, cb = model.to_pca(a), model.to_pca(b)
    if ca.ndim == 3:  # (1, D, F') -> frames as rows (F', D), slerped row by row
        rows = slerp(ca[0].T, cb[0].T, t)                          # (n, F', D)
        return model.from_pca(rows.transpose(1, 2).contiguous())   # (n, D, F')
    return model.from_pca(slerp(ca[0], cb[0], t))                  # (n, D)


@torch.no_grad()
def centroid_sweep(model: Generator, a: torch.Tensor, b: torch.Tensor, cond: Conditions,
                   n: int = 9, mode: str = "lerp") -> list[float]:
    """Spectral centroid (Hz, `synth.data.descriptors.spectral_centroid`: the whole signal, so a
    slightly earlier or later attack does not move it) of the note decoded at each of `n` evenly
    spaced points from a to b (`morph_points`: "lerp", "slerp" or "melfit"). a, b: one latent each, (1, ...)
    in the model's latent shape ((1, D), or (1, D, F') for temporal latents); cond: one note.
    Points are decoded one at a time (batch-size invariant)."""
    from synth.data.descriptors import spectral_centroid

    if n < 2:
        raise ConfigError(f"centroid_sweep needs n >= 2 points, got {n}")
    if a.shape != b.shape or a.ndim < 2 or a.shape[0] != 1:
        raise ConfigError(f"centroid_sweep: a and b must be single latents (1, ...) of one shape, "
                          f"got {tuple(a.shape)} and {tuple(b.shape)}")
    z = morph_points(model, a, b, n, mode, cond)
    audio = torch.cat([model.decode(z[i:i + 1], cond) for i in range(n)]).cpu().numpy()
    return [spectral_centroid(x, model.sample_rate) for x in audio]


def monotonic_within(values: Sequence[float], tolerance: float) -> bool:
    """True when `values` move from first to last without any step against that direction
    larger than `tolerance` x |last - first| (0: strictly no step back)."""
    if len(values) < 2:
        return True
    gap = values[-1] - values[0]
    sign = 1.0 if gap >= 0 else -1.0
    worst_back = max(0.0, max(-sign * (y - x) for x, y in zip(values[:-1], values[1:])))
    return worst_back <= tolerance * abs(gap)
