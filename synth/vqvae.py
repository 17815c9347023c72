"""`vqvae`: a mel VQ-VAE with an EMA codebook and a causal transformer prior over its codes.

Encoder: the note's normalised log-mel (B, n_mels, n_frames), padded with silence to a multiple
of 2**(len(channels) - 1) frames, through a strided conv stack (`DownStack`) and a 1x1 conv ->
the pre-quantisation latent (B, D, F') with F' = ceil(n_frames / factor) (`encode` returns this:
`temporal_latent`). Quantiser (`EMACodebook`, van den Oord et al. 2017, appendix): nearest of K
codes, codebook moved by exponential moving averages of the assigned vectors (no codebook
gradient), k-means initialisation on the first training batch, restarts of codes whose EMA usage
falls below `restart_threshold` vectors per batch from random encoder outputs (Jukebox),
commitment loss ||z - sg(q)||^2 weighted by `commitment`. Decoder: codes' vectors -> conv ->
upsampling conv stack with FiLM from pitch and velocity embeddings (`UpStack`) -> log-mel (with
`harmonic_head`, the default: harmonic and noise envelopes over the pitch's analytic comb,
`synth.harmonic_mel`).

Prior (`CodePrior`): a small GPT over the code sequence after three conditioning tokens (pitch,
velocity, GM family 0-15 or 16 for "unknown"), trained as its own phase ("prior", own optimizer)
on the codes of the same batch, detached. `prior_sample` draws codes autoregressively with
temperature and top-k; item i uses a CPU `torch.Generator` seeded from `item_seeds(seed, n)[i]`.

Logged only (never optimised): "log/vq/perplexity" (exp of the entropy of the batch's code
histogram) and "log/vq/usage" (fraction of the K codes used in the batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from synth.base import Conditions, item_seeds
from synth.errors import ConfigError
from synth.features import FeatureSpec
from synth.melgen import DownStack, FractionalEmbedding, MelGenerator, UpStack
from synth.losses import spectral_convergence
from synth.morph import MelCentroid, morph_losses

#: Family index meaning "no family given" (GM families are 0-15).
UNKNOWN_FAMILY = 16


@dataclass
class VQVAEConfig:
    feature_spec: FeatureSpec = field(default_factory=FeatureSpec)
    vocoder: str = "griffinlim"  # until a trained vocoder beats it (bench/vocoder_eval.py)
    note_seconds: float = 4.0
    latent_dim: int = 64
    codebook_size: int = 256
    channels: tuple[int, ...] = (96, 160, 192)
    kernel_size: int = 5
    pitch_dim: int = 32
    velocity_dim: int = 8
    cond_hidden: int = 128
    mel_offset: float = -8.0
    mel_scale: float = 3.0
    ema_decay: float = 0.99
    commitment: float = 0.25
    restart_threshold: float = 1.0
    kmeans_iters: int = 10
    prior_dim: int = 192
    prior_layers: int = 4
    prior_heads: int = 4
    prior_ff: int = 768
    prior_dropout: float = 0.1
    family_dropout: float = 0.1
    prior_top_k: int = 0
    harmonic_head: bool = True  # source-filter output (synth/harmonic_mel.py)
    morph_weight: float = 0.0  # centroid-order hinge on quantised interpolations (synth/morph.py)
    morph_linear_weight: float = 0.0  # log-mel linearity along quantised interpolations (synth/morph.py)
    sc_weight: float = 0.0  # spectral convergence on the linear mel (synth.losses.spectral_convergence)

    def __post_init__(self) -> None:
        if self.morph_weight < 0 or self.morph_linear_weight < 0:
            raise ConfigError("vqvae: morph_weight and morph_linear_weight must be >= 0")
        if self.sc_weight < 0:
            raise ConfigError(f"vqvae: sc_weight must be >= 0, got {self.sc_weight}")
        if self.codebook_size < 2 or self.latent_dim < 1 or not self.channels:
            raise ConfigError("vqvae: codebook_size >= 2, latent_dim >= 1 and channels are required")
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"vqvae: ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.prior_dim % self.prior_heads:
            raise ConfigError(f"vqvae: prior_dim {self.prior_dim} must be a multiple of "
                              f"prior_heads {self.prior_heads}")
        if self.mel_scale <= 0 or self.prior_top_k < 0:
            raise ConfigError("vqvae: mel_scale must be positive and prior_top_k >= 0")


# -- the codebook -------------------------------------------------------------------------------
@dataclass
class QuantizedResult:
    """What the quantiser returns. quantized: (B, D, F') (straight-through in training);
    codes: (B, F') int64; commit: scalar ||z - sg(q)||^2; perplexity, usage: scalars (no grad)."""

    quantized: torch.Tensor
    codes: torch.Tensor
    commit: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor


def codebook_stats(codes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (any shape) -> (perplexity, usage): exp(entropy) of the code histogram (1 .. size)
    and the fraction of the `size` codes that occur."""
    counts = torch.bincount(codes.reshape(-1), minlength=size).float()
    p = counts / counts.sum().clamp_min(1.0)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return entropy.exp(), (counts > 0).float().mean()


def kmeans_plus_plus(flat: torch.Tensor, k: int) -> torch.Tensor:
    """k-means++ seeding (Arthur and Vassilvitskii 2007): (N, D) -> (k, D) rows of `flat`, each
    drawn with probability proportional to its squared distance to the nearest chosen one."""
    n = flat.shape[0]
    chosen = [int(torch.randint(0, n, ()))]
    nearest = (flat - flat[chosen[0]]).square().sum(1)
    for _ in range(k - 1):
        total = nearest.sum()
        i = int(torch.multinomial(nearest / total, 1)) if total > 0 else int(torch.randint(0, n, ()))
        chosen.append(i)
        nearest = torch.minimum(nearest, (flat - flat[i]).square().sum(1))
    return flat[chosen].clone()


def _world() -> int:
    """Processes in the default torch.distributed group (1 when none is initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather_rows(flat: torch.Tensor) -> torch.Tensor:
    """(N_r, D) on every rank -> (sum N_r, D), rank order, on every rank (N_r may differ)."""
    n = torch.tensor([flat.shape[0]], device=flat.device)
    sizes = [torch.zeros_like(n) for _ in range(_world())]
    dist.all_gather(sizes, n)
    most = int(max(int(x) for x in sizes))
    padded = torch.zeros(most, flat.shape[1], device=flat.device, dtype=flat.dtype)
    padded[: flat.shape[0]] = flat
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(k)] for p, k in zip(parts, sizes)])


class EMACodebook(nn.Module):
    """K codes of dimension D, updated by EMA (no gradient); all state is in buffers.

    `forward(z (B, D, F'), update)` quantises; with `update` (training) the first call runs
    k-means on the batch's vectors, and every call moves the codes and restarts dead ones.
    Randomness (k-means seeds, restarts) comes from the global torch RNG, which the Trainer
    seeds per step.

    Under torch.distributed (DDP) the codebook sees the global batch: k-means runs on every
    rank's vectors gathered, the EMA counts and sums are all-reduced, and restarts are drawn on
    rank 0 from the gathered vectors and broadcast, so every rank holds the same codebook and it
    equals one process's codebook on the union batch. `restart_threshold` then counts vectors
    per global batch.
    """

    def __init__(self, size: int, dim: int, decay: float = 0.99, restart_threshold: float = 1.0,
                 kmeans_iters: int = 10, eps: float = 1e-5) -> None:
        super().__init__()
        self.size, self.dim, self.decay, self.eps = size, dim, decay, eps
        self.restart_threshold, self.kmeans_iters = restart_threshold, kmeans_iters
        self.register_buffer("embedding", torch.randn(size, dim))
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("embed_sum", torch.zeros(size, dim))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @staticmethod
    def flatten(z: torch.Tensor) -> torch.Tensor:
        """(B, D, F') -> (B * F', D)."""
        return z.transpose(1, 2).reshape(-1, z.shape[1])

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N,) index of the nearest code (squared Euclidean)."""
        e = self.embedding
        d2 = flat.square().sum(1, keepdim=True) - 2 * flat @ e.T + e.square().sum(1)[None]
        return d2.argmin(1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, F') codes -> (B, D, F') code vectors."""
        if codes.min() < 0 or codes.max() >= self.size:
            raise ConfigError(f"codes must lie in [0, {self.size}), got {int(codes.min())}..{int(codes.max())}")
        return self.embedding[codes].transpose(1, 2)

    def forward(self, z: torch.Tensor, update: bool = False) -> QuantizedResult:
        with torch.autocast(z.device.type, enabled=False):  # distances in float32 under AMP
            return self._quantize(z, update)

    def _quantize(self, z: torch.Tensor, update: bool) -> QuantizedResult:
        flat = self.flatten(z.detach().float())
        if update and not bool(self.initialized):
            self.kmeans_init(_gather_rows(flat) if _world() > 1 else flat)
        codes = self.nearest(flat)
        q = self.embedding[codes].reshape(z.shape[0], z.shape[2], self.dim).transpose(1, 2).to(z.dtype)
        if update:
            self.ema_update(flat, codes)
        commit = F.mse_loss(z.float(), q.detach().float())
        perplexity, usage = codebook_stats(codes, self.size)
        codes = codes.reshape(z.shape[0], z.shape[2])
        if z.requires_grad and torch.is_grad_enabled():
            q = z + (q - z).detach()  # straight-through gradient to the encoder
        return QuantizedResult(q, codes, commit, perplexity, usage)

    @torch.no_grad()
    def kmeans_init(self, flat: torch.Tensor) -> None:
        """Codes <- k-means centroids of `flat` (N, D) (seeded from random rows; an empty cluster
        is reseeded from a random row); EMA state set as if the batch had been seen."""
        n = flat.shape[0]
        centroids = kmeans_plus_plus(flat, self.size)
        for _ in range(max(1, self.kmeans_iters)):
            d2 = flat.square().sum(1, keepdim=True) - 2 * flat @ centroids.T + centroids.square().sum(1)[None]
            assign = d2.argmin(1)
            counts = torch.bincount(assign, minlength=self.size).float()
            sums = torch.zeros_like(centroids).index_add_(0, assign, flat)
            empty = counts == 0
            centroids = torch.where(empty[:, None], flat[torch.randint(0, n, (self.size,), device=flat.device)],
                                    sums / counts.clamp_min(1.0)[:, None])
        if _world() > 1:  # one result for all ranks: rank 0's (seeds may differ between ranks)
            for t in (centroids, counts):
                dist.broadcast(t, 0)
        self.embedding.copy_(centroids)
        # Counts as if the k-means assignment were the EMA's history (empty ones restart soon).
        self.cluster_size.copy_(counts)
        self.embed_sum.copy_(centroids * counts[:, None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def ema_update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        """Move each code towards the mean of its assigned vectors; restart dead codes."""
        counts = torch.bincount(codes, minlength=self.size).float()
        sums = torch.zeros_like(self.embed_sum).index_add_(0, codes, flat)
        if _world() > 1:
            dist.all_reduce(counts)
            dist.all_reduce(sums)
            flat = _gather_rows(flat)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.size * self.eps) * total
        self.embedding.copy_(self.embed_sum / smoothed[:, None])
        self.restart_dead(flat)

    @torch.no_grad()
    def restart_dead(self, flat: torch.Tensor) -> torch.Tensor:
        """Codes used less than `restart_threshold` times per batch (EMA) jump to random rows of
        `flat`; returns the boolean mask of restarted codes (K,)."""
        dead = self.cluster_size < self.restart_threshold
        n_dead = int(dead.sum())
        if n_dead:
            picks = flat[torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)]
            if _world() > 1:  # rank 0's draw everywhere (`flat` is the gathered batch)
                dist.broadcast(picks, 0)
            self.embedding[dead] = picks
            self.embed_sum[dead] = picks * self.restart_threshold
            self.cluster_size[dead] = self.restart_threshold
        return dead


# -- the prior ----------------------------------------------------------------------------------
class _Block(nn.Module):
    """Pre-norm causal self-attention + MLP, (B, L, C) -> (B, L, C)."""

    def __init__(self, dim: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ff), nn.GELU(), nn.Linear(ff, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (y.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for y in self.qkv(self.ln1(x)).split(d, dim=-1))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.mlp(self.ln2(x)))


class CodePrior(nn.Module):
    """p(codes | pitch, velocity, family): a causal transformer over [pitch, velocity, family,
    c_0, c_1, ...]. `forward(codes (B, t), pitch, velocity, family)` -> logits (B, t + 1, K),
    row j predicting code j."""

    PREFIX = 3

    def __init__(self, size: int, length: int, dim: int, layers: int, heads: int, ff: int,
                 dropout: float) -> None:
        super().__init__()
        self.size, self.length = size, length
        self.code_emb = nn.Embedding(size, dim)
        self.pitch_emb = FractionalEmbedding(128, dim)
        self.velocity_emb = FractionalEmbedding(128, dim)
        self.family_emb = nn.Embedding(UNKNOWN_FAMILY + 1, dim)
        self.pos = nn.Parameter(0.02 * torch.randn(self.PREFIX + length, dim))
        self.blocks = nn.ModuleList(_Block(dim, heads, ff, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, size)

    def forward(self, codes: torch.Tensor, pitch: torch.Tensor, velocity: torch.Tensor,
                family: torch.Tensor) -> torch.Tensor:
        prefix = torch.stack([self.pitch_emb(pitch), self.velocity_emb(velocity),
                              self.family_emb(family)], dim=1)
        x = torch.cat([prefix, self.code_emb(codes)], dim=1)
        x = x + self.pos[: x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, self.PREFIX - 1:]))


def _pick(logits: torch.Tensor, generators: list[torch.Generator], temperature: float,
          top_k: int) -> torch.Tensor:
    """(B, K) logits -> (B,) codes; item i draws one uniform from generators[i] (CPU) and
    inverts its CDF, so it depends on nothing else in the batch. Greedy at temperature <= 0."""
    if temperature <= 0 or top_k == 1:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    cdf = torch.softmax(logits, dim=-1).double().cpu().cumsum(-1)
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])
    u = u[:, None] * cdf[:, -1:]
    codes = torch.searchsorted(cdf, u, right=True)[:, 0].clamp_max(logits.shape[-1] - 1)
    return codes.to(logits.device)


# -- the model ----------------------------------------------------------------------------------
class VQVAEGenerator(MelGenerator):
    """Mel VQ-VAE: pre-quantisation latent (B, D, F'); decode needs pitch (velocity default 100);
    the prior also uses `cond.family` (GM family 0-15; None: unknown)."""

    kind = "vqvae"
    Config = VQVAEConfig
    temporal_latent = True

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__(config)
        c, n_mels = config, config.feature_spec.n_mels
        self.encoder = DownStack(n_mels, tuple(c.channels), c.kernel_size)
        self.factor = self.encoder.factor
        self.code_frames = -(-self.n_frames // self.factor)
        self.pre_quant = nn.Conv1d(c.channels[-1], c.latent_dim, 1)
        self.codebook = EMACodebook(c.codebook_size, c.latent_dim, c.ema_decay, c.restart_threshold,
                                    c.kmeans_iters)
        self.post_quant = nn.Conv1d(c.latent_dim, c.channels[-1], 3, padding=1)
        self.pitch_emb = FractionalEmbedding(128, c.pitch_dim)
        self.velocity_emb = FractionalEmbedding(128, c.velocity_dim)
        self.cond_mlp = nn.Sequential(nn.Linear(c.pitch_dim + c.velocity_dim, c.cond_hidden),
                                      nn.LeakyReLU(0.2))
        self.decoder = UpStack(self.decoder_channels, tuple(c.channels), c.kernel_size, c.cond_hidden)
        self.morph_centroid = (MelCentroid(config.feature_spec)
                               if c.morph_weight > 0 or c.morph_linear_weight > 0 else None)
        self.prior = CodePrior(c.codebook_size, self.code_frames, c.prior_dim, c.prior_layers,
                               c.prior_heads, c.prior_ff, c.prior_dropout)
        self._codes_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def debug_config(cls) -> VQVAEConfig:
        spec = FeatureSpec(sample_rate=8000, n_fft=64, hop_length=16, n_mels=16, f_max=4000.0)
        return VQVAEConfig(feature_spec=spec, vocoder="griffinlim", note_seconds=0.5, latent_dim=4,
                           codebook_size=16, channels=(8, 12, 16), kernel_size=3, pitch_dim=4,
                           velocity_dim=2, cond_hidden=8, kmeans_iters=2, prior_dim=16,
                           prior_layers=1, prior_heads=2, prior_ff=32)

    # -- encoder and quantiser ------------------------------------------------------------------
    def encode_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, n_frames) log-mel -> (B, D, F') pre-quantisation latent."""
        x = self.pad_frames(self.normalize(mel), self.factor)
        z = self.pre_quant(self.encoder(x))
        # Each frame's vector is standardised over D (layer norm without affine): the codebook
        # then lives on a fixed scale, so the encoder's early drift cannot strand it (collapse).
        return F.layer_norm(z.transpose(1, 2), (z.shape[1],)).transpose(1, 2)

    def encode(self, audio: torch.Tensor, cond: Conditions | None = None) -> torch.Tensor:
        """(B, T) audio (cropped/padded to the note length) -> (B, D, F') pre-quantisation."""
        return self.encode_mel(self.mel(audio))

    def quantize(self, latent: torch.Tensor) -> QuantizedResult:
        """Pre-quantisation (B, D, F') -> nearest codes and their vectors (codebook unchanged)."""
        self._check_latent(latent)
        return self.codebook(latent, update=False)

    def _check_latent(self, latent: torch.Tensor) -> None:
        if latent.ndim != 3 or latent.shape[1] != self.latent_dim:
            raise ConfigError(f"vqvae: latent must be (B, {self.latent_dim}, frames), got "
                              f"{tuple(latent.shape)}")

    # -- decoder --------------------------------------------------------------------------------
    def decode_normalized(self, quantized: torch.Tensor, pitch: torch.Tensor,
                          velocity: torch.Tensor) -> torch.Tensor:
        """Code vectors (B, D, F') + pitch, velocity (B,) -> (B, n_mels, n_frames) normalised."""
        h = self.cond_mlp(torch.cat([self.pitch_emb(pitch), self.velocity_emb(velocity)], -1))
        return self.output_head(self.decoder(self.post_quant(quantized), h)[..., : self.n_frames], pitch)

    def decode_mel(self, latent: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """Pre-quantisation (B, D, F') (quantised here; an already quantised latent maps to
        itself) + conditions -> (B, n_mels, n_frames) log-mel."""
        pitch, velocity = self.require_note(cond, latent.shape[0], latent.device)
        return self.denormalize(self.decode_normalized(self.quantize(latent).quantized, pitch, velocity))

    def decode_codes(self, codes: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """(B, F') codes + conditions -> (B, T) audio."""
        return self.decode(self.codebook.lookup(codes), cond)

    # -- interpolation --------------------------------------------------------------------------
    def interpolate_pre_quant(self, z_a: torch.Tensor, z_b: torch.Tensor, t: float) -> torch.Tensor:
        """Linear interpolation of two pre-quantisation latents (B, D, F'), then quantised:
        the code vectors (B, D, F') of (1 - t) z_a + t z_b."""
        return self.quantize(torch.lerp(z_a, z_b, float(t))).quantized

    @staticmethod
    def crossfade_codes(codes_a: torch.Tensor, codes_b: torch.Tensor, t: float,
                        mode: str = "dither") -> torch.Tensor:
        """Code-level crossfade (B, F') x2 -> (B, F'): a fraction t of the frames take b's code.

        mode "dither": frame k takes b where frac(k * golden ratio) < t, so b's frames are spread
        over the note and the set grows with t; "boundary": frames at or after (1 - t) F' take b
        (a boundary moving from the end to the start). t = 0 gives a, t = 1 gives b.
        """
        if codes_a.shape != codes_b.shape:
            raise ConfigError(f"crossfade_codes: shapes differ, {tuple(codes_a.shape)} vs {tuple(codes_b.shape)}")
        n = codes_a.shape[-1]
        k = torch.arange(n, device=codes_a.device, dtype=torch.float64)
        if mode == "dither":
            take_b = torch.frac(k * (math.sqrt(5) - 1) / 2) < t
        elif mode == "boundary":
            take_b = k >= (1 - t) * n
        else:
            raise ConfigError(f"crossfade_codes: mode must be 'dither' or 'boundary', got {mode!r}")
        return torch.where(take_b, codes_b, codes_a)

    # -- prior ----------------------------------------------------------------------------------
    def _prior_cond(self, cond: Conditions, n: int, device: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pitch, velocity = self.require_note(cond, n, device)
        family = cond.expand(n).family
        family = torch.full((n,), UNKNOWN_FAMILY) if family is None else family.long()
        if family.min() < 0 or family.max() > UNKNOWN_FAMILY:
            raise ConfigError(f"vqvae: family must be a GM family 0-15 (or {UNKNOWN_FAMILY} for unknown)")
        return pitch, velocity, family.to(device)

    @torch.no_grad()
    def sample_codes(self, n: int, cond: Conditions, seed: int = 0, temperature: float = 1.0,
                     top_k: int | None = None) -> torch.Tensor:
        """(n, F') codes from the prior; item i depends only on (seed, i) and its conditions."""
        device = self.codebook.embedding.device
        pitch, velocity, family = self._prior_cond(cond, n, device)
        top_k = self.config.prior_top_k if top_k is None else int(top_k)
        generators = [torch.Generator().manual_seed(s) for s in item_seeds(seed, n)]
        codes = torch.zeros((n, 0), dtype=torch.long, device=device)
        was_training = self.prior.training
        self.prior.eval()
        try:
            for _ in range(self.code_frames):
                logits = self.prior(codes, pitch, velocity, family)[:, -1]
                codes = torch.cat([codes, _pick(logits, generators, temperature, top_k)[:, None]], 1)
        finally:
            self.prior.train(was_training)
        return codes

    def prior_sample(self, n: int, cond: Conditions, seed: int = 0, temperature: float = 1.0,
                     top_k: int | None = None) -> torch.Tensor:
        """(n, D, F') quantised latents of prior-sampled codes (see `sample_codes`)."""
        return self.codebook.lookup(self.sample_codes(n, cond, seed, temperature, top_k))

    @property
    def latent_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.latent_dim, self.code_frames)

    def default_latent(self, cond: Conditions, seed: int = 0) -> torch.Tensor:
        """A note's codes drawn from the prior for `cond` (pitch required; family optional), as
        code vectors (1, D, F'): the VQ-VAE has no meaningful mean latent."""
        return self.prior_sample(1, cond.expand(1), seed)

    def prior_logits(self, codes: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """Teacher-forced prior logits (B, F', K) for `codes` (B, F'): row j given codes < j."""
        pitch, velocity, family = self._prior_cond(cond, codes.shape[0], codes.device)
        return self.prior(codes[:, :-1], pitch, velocity, family)

    # -- training -------------------------------------------------------------------------------
    def phases(self) -> list[str]:
        return ["main", "prior"]

    def make_optimizers(self, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                        weight_decay: float = 0.0) -> dict[str, torch.optim.Optimizer]:
        """AdamW over the autoencoder ("main") and over the prior ("prior")."""
        prior_ids = {id(p) for p in self.prior.parameters()}
        main = [p for p in self.parameters() if id(p) not in prior_ids]
        return {"main": torch.optim.AdamW(main, lr=lr, betas=betas, weight_decay=weight_decay),
                "prior": torch.optim.AdamW(self.prior.parameters(), lr=lr, betas=betas,
                                           weight_decay=weight_decay)}

    def loss_weights(self) -> dict[str, float]:
        return {"vq/commit": self.config.commitment, "morph/order": self.config.morph_weight,
                "morph/anchor": self.config.morph_weight, "morph/linear": self.config.morph_linear_weight,
                "recon/sc": self.config.sc_weight}

    def training_step(self, batch: dict[str, torch.Tensor], phase: str = "main") -> dict[str, torch.Tensor]:
        """"main": {"recon/l1", "vq/commit", "log/vq/perplexity", "log/vq/usage"} (the codebook
        moves by EMA in training mode); "prior": {"prior/ce", "log/prior/accuracy"} on the codes
        of the same batch (reused from "main" when it ran on this batch, else recomputed)."""
        audio = batch["audio"]
        if phase == "main":
            mel = self.mel(audio)
            pre = self.encode_mel(mel)
            q = self.codebook(pre, update=self.training)
            pred = self.decode_normalized(q.quantized, batch["pitch"], batch["velocity"])
            self._codes_cache = (audio, q.codes.detach())
            out = {"recon/l1": (pred - self.normalize(mel)).abs().mean(), "vq/commit": q.commit,
                   "log/vq/perplexity": q.perplexity, "log/vq/usage": q.usage}
            if self.config.sc_weight > 0:
                out["recon/sc"] = spectral_convergence(self.denormalize(pred), mel)
            if self.morph_centroid is not None:
                # interpolate pre-quantisation outputs, quantise (straight-through), decode
                out.update(morph_losses(
                    lambda z, p, v: self.decode_normalized(self.codebook(z, update=False).quantized, p, v),
                    self.denormalize, self.morph_centroid, pre, pred, batch["pitch"], batch["velocity"],
                    ceiling=mel.max().detach(), target=mel, linear=self.config.morph_linear_weight > 0))
            return out
        if phase != "prior":
            raise ConfigError(f"vqvae has phases {self.phases()}, not {phase!r}")
        cached, self._codes_cache = self._codes_cache, None
        if cached is not None and cached[0] is audio:
            codes = cached[1]
        else:
            with torch.no_grad():
                codes = self.codebook(self.encode(audio), update=False).codes
        family = batch.get("family")
        b = codes.shape[0]
        family = torch.full((b,), UNKNOWN_FAMILY, device=codes.device) if family is None else family.long()
        if self.training and self.config.family_dropout > 0:
            drop = torch.rand(b, device=codes.device) < self.config.family_dropout
            family = torch.where(drop, torch.full_like(family, UNKNOWN_FAMILY), family)
        logits = self.prior(codes[:, :-1], batch["pitch"], batch["velocity"], family)
        return {"prior/ce": F.cross_entropy(logits.transpose(1, 2), codes),
                "log/prior/accuracy": (logits.argmax(-1) == codes).float().mean().detach()}
