"""`NoteClassifier`: the project's own audio embedding, a small CNN on log-mel with two heads.

No pretrained audio embedding can be downloaded here, so (like GANSynth, which trained its own
pitch classifier for its inception score) the quality metrics run on a classifier trained on the
corpus: a 16-way GM family head and a 128-way MIDI pitch head over a shared embedding.

    log-mel (B, n_mels, F) -> 4 conv blocks (3x3 conv, GroupNorm, GELU; 2x2 max-pool after the
    first three) -> (B, C, n_mels/8, F/8) -> frames (B, F/8, C * n_mels/8) -> attention pooling
    over time -> Linear + GELU -> embedding (B, E) -> family (B, 16) and pitch (B, 128) logits.

The convolutions keep the frequency axis (only time is pooled globally), so the pitch head sees
where the harmonics sit. Attention pooling over frames makes the model length-agnostic: it trains
on ~1 s crops and embeds whole notes of any length in one pass (silent tail frames get low weight).
Inputs at another sample rate are resampled to the classifier's rate (soxr, `synth.audio.resample`).

Training (`training_step`): cross-entropy on both heads; the pitch loss only counts notes of pitched
families (`Config.unpitched_families` are masked: synth effects, percussive, sound effects by
default). Accuracies are logged under ``log/`` keys, which the Trainer never optimises.

    synthstudio train classifier --corpus data/gm --out runs/classifier-gm --crop-seconds 1.0 \
        --all-instruments --batch-size 32 --steps 4000 --lr 2e-3 --warmup-steps 200
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from synth.errors import ConfigError
from synth.features import FeatureSpec, LogMel
from synth.module import Batch, SynthModule

N_FAMILIES = 16
N_PITCHES = 128


@dataclass
class ClassifierConfig:
    """Attributes:
        sample_rate: the rate the classifier runs at (inputs are resampled to it).
        feature_spec: the log-mel front end (default: 16 kHz, n_fft 1024, hop 256, 80 mels).
        channels: conv channels per block (four blocks; the first three halve both axes).
        embed_dim: size of the penultimate embedding returned by `embed`.
        dropout: dropout on the embedding before the heads (training only).
        unpitched_families: GM family ids whose notes carry no pitch loss.
        pitch_loss_weight: weight of the pitch cross-entropy against the family one.
        log_offset, log_scale: fixed input normalisation, x = (log-mel - offset) / scale.
        chunk_seconds: `embed` and the heads process long audio in batches of at most this many
            seconds of audio per item (memory bound only; results do not depend on it).
    """

    sample_rate: int = 16000
    feature_spec: FeatureSpec = field(default_factory=FeatureSpec)
    channels: tuple[int, ...] = (24, 48, 96, 128)
    embed_dim: int = 256
    dropout: float = 0.1
    unpitched_families: tuple[int, ...] = (12, 14, 15)
    pitch_loss_weight: float = 1.0
    log_offset: float = -5.0
    log_scale: float = 3.0
    chunk_seconds: float = 8.0


def _block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1),
                               nn.GroupNorm(min(8, c_out), c_out), nn.GELU()]
    if pool:
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    return nn.Sequential(*layers)


class NoteClassifier(SynthModule):
    """Family + pitch classifier whose penultimate layer is the metric embedding."""

    kind = "classifier"
    Config = ClassifierConfig

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__(config)
        spec = config.feature_spec
        if spec.sample_rate != config.sample_rate:
            raise ConfigError(f"classifier feature_spec runs at {spec.sample_rate} Hz but "
                              f"sample_rate is {config.sample_rate}")
        if len(config.channels) != 4:
            raise ConfigError(f"classifier channels needs four entries, got {config.channels}")
        self.melspec = LogMel(spec)
        chans = (1, *config.channels)
        self.convs = nn.Sequential(*[_block(chans[i], chans[i + 1], pool=i < 3) for i in range(4)])
        freq = spec.n_mels
        for _ in range(3):
            freq = -(-freq // 2)
        frame_dim = chans[-1] * freq
        self.attention = nn.Linear(frame_dim, 1)
        self.project = nn.Sequential(nn.Linear(frame_dim, config.embed_dim), nn.GELU())
        self.dropout = nn.Dropout(config.dropout)
        self.family_head = nn.Linear(config.embed_dim, N_FAMILIES)
        self.pitch_head = nn.Linear(config.embed_dim, N_PITCHES)
        unpitched = torch.zeros(N_FAMILIES, dtype=torch.bool)
        unpitched[list(config.unpitched_families)] = True
        self.register_buffer("unpitched", unpitched, persistent=False)

    @classmethod
    def debug_config(cls) -> ClassifierConfig:
        return ClassifierConfig(feature_spec=FeatureSpec(n_fft=256, hop_length=128, n_mels=16),
                                channels=(4, 4, 8, 8), embed_dim=16)

    @property
    def embed_dim(self) -> int:
        return int(self.config.embed_dim)

    # -- forward ------------------------------------------------------------------------------
    def _prepare(self, audio: torch.Tensor, sample_rate: int | None) -> torch.Tensor:
        """(T,) or (B, T) at `sample_rate` -> (B, T') float32 at the classifier's rate."""
        if audio.ndim == 1:
            audio = audio.unsqueeze(0)
        if audio.ndim != 2:
            raise ConfigError(f"classifier expects audio (B, T), got {tuple(audio.shape)}")
        audio = audio.float()
        sr = self.sample_rate if sample_rate is None else int(sample_rate)
        if sr != self.sample_rate:
            from synth.audio import resample

            audio = resample(audio.cpu(), sr, self.sample_rate)
        device = self.family_head.weight.device
        audio = audio.to(device)
        need = self.config.feature_spec.n_fft // 2 + 1
        if audio.shape[-1] < need:
            audio = F.pad(audio, (0, need - audio.shape[-1]))
        return audio

    def activations(self, audio: torch.Tensor) -> list[torch.Tensor]:
        """(B, T) audio at the classifier's rate -> the four conv blocks' outputs (B, C_i, F_i,
        frames_i) and the (B, E) embedding (before dropout), in that order; differentiable in
        `audio` (the perceptual term of `synth.ddsp` reads them)."""
        h = ((self.melspec(audio) - self.config.log_offset) / self.config.log_scale).unsqueeze(1)
        outs = []
        for block in self.convs:
            h = block(h)
            outs.append(h)
        frames = h.flatten(1, 2).transpose(1, 2)             # (B, frames, C * F')
        weights = torch.softmax(self.attention(frames), dim=1)
        pooled = (weights * frames).sum(1)                   # (B, C * F')
        return outs + [self.project(pooled)]

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, T) audio at the classifier's rate -> (B, E) embedding (before dropout)."""
        return self.activations(audio)[-1]

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T) at the classifier's rate -> (embedding (B, E), family (B, 16), pitch (B, 128))."""
        emb = self.features(audio)
        h = self.dropout(emb)
        return emb, self.family_head(h), self.pitch_head(h)

    @torch.no_grad()
    def analyse(self, audio: torch.Tensor, sample_rate: int | None = None, batch_size: int = 16
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embedding (B, E), family logits (B, 16) and pitch logits (B, 128) on the CPU, in
        eval mode, processing `batch_size` items at a time (results do not depend on it)."""
        was_training = self.training
        self.eval()
        try:
            audio = self._prepare(audio, sample_rate)
            per = max(1, int(batch_size * self.config.chunk_seconds * self.sample_rate
                             // max(1, audio.shape[-1])))
            outs = [self(audio[i:i + per]) for i in range(0, audio.shape[0], per)]
        finally:
            self.train(was_training)
        return tuple(torch.cat([o[k] for o in outs]).cpu() for k in range(3))  # type: ignore

    def embed(self, audio: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """(B, T) audio -> (B, E) penultimate embedding (the FD/KID/PRDC feature)."""
        return self.analyse(audio, sample_rate)[0]

    def family_logits(self, audio: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """(B, T) audio -> (B, 16) GM family logits."""
        return self.analyse(audio, sample_rate)[1]

    def pitch_logits(self, audio: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """(B, T) audio -> (B, 128) MIDI pitch logits."""
        return self.analyse(audio, sample_rate)[2]

    def weights_hash(self) -> str:
        """12-hex identity of config + weights (keys the feature caches of `latent.evaluate`)."""
        h = hashlib.sha256(repr(self.config).encode())
        for name, tensor in self.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:12]

    # -- training -----------------------------------------------------------------------------
    def example_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        n = self.sample_rate // 2
        return {
            "audio": torch.rand(batch_size, n, generator=generator) * 0.2 - 0.1,
            "pitch": torch.randint(24, 97, (batch_size,), generator=generator).float(),
            "velocity": torch.full((batch_size,), 100.0),
            "family": torch.randint(0, N_FAMILIES, (batch_size,), generator=generator),
        }

    def pitched(self, family: torch.Tensor) -> torch.Tensor:
        """(B,) family ids -> (B,) bool, True where the pitch label is meaningful."""
        return ~self.unpitched[family.long()]

    def training_step(self, batch: Batch, phase: str = "main") -> dict[str, torch.Tensor]:
        _, fam_logits, pitch_logits = self(batch["audio"])
        family = batch["family"].long()
        pitch = batch["pitch"].round().long().clamp(0, N_PITCHES - 1)
        mask = self.pitched(family).float()
        fam_loss = F.cross_entropy(fam_logits, family)
        per_item = F.cross_entropy(pitch_logits, pitch, reduction="none")
        pitch_loss = (per_item * mask).sum() / mask.sum().clamp_min(1.0)
        with torch.no_grad():
            pred = pitch_logits.argmax(-1)
            denom = mask.sum().clamp_min(1.0)
            out = {
                "log/family_acc": (fam_logits.argmax(-1) == family).float().mean(),
                "log/pitch_acc": ((pred == pitch).float() * mask).sum() / denom,
                "log/pitch_acc_1st": (((pred - pitch).abs() <= 1).float() * mask).sum() / denom,
            }
        return {"ce/family": fam_loss, "ce/pitch": pitch_loss, **out}

    def loss_weights(self) -> dict[str, float]:
        return {"ce/family": 1.0, "ce/pitch": float(self.config.pitch_loss_weight)}
