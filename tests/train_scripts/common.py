"""Shared pieces of the training test scripts: a tiny corpus with per-item randomness and the model.

Importable both by the scripts (their folder is on sys.path) and by tests/test_train.py.
"""

from __future__ import annotations

import time

import torch

from synth.additive import AdditiveGenerator
from synth.base import Conditions
from synth.registry import build
from synth.train import TrainConfig, seed_everything


class NoteDataset:
    """Decaying sines (fixed at construction); `get_item` takes a random crop and a random gain
    from the generator the Trainer hands it, so items differ every epoch but never between runs."""

    def __init__(self, n: int = 24, sample_rate: int = 8000, seconds: float = 0.25,
                 delay: float = 0.0) -> None:
        g = torch.Generator().manual_seed(1234)
        self.length = int(sample_rate * seconds)
        full = self.length + self.length // 2
        self.pitch = torch.randint(48, 72, (n,), generator=g).float()
        t = torch.arange(full) / sample_rate
        f0 = 440.0 * 2.0 ** ((self.pitch[:, None] - 69.0) / 12.0)
        self.audio = 0.3 * torch.sin(2 * torch.pi * f0 * t) * torch.exp(-3 * t)
        self.audio = self.audio + 0.01 * torch.randn(n, full, generator=g)
        self.delay = delay

    def __len__(self) -> int:
        return self.audio.shape[0]

    def get_item(self, index: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.delay:
            time.sleep(self.delay)  # makes a step slow enough to be killed mid-run
        start = int(torch.randint(0, self.audio.shape[1] - self.length + 1, (1,), generator=generator))
        gain = 0.5 + torch.rand((), generator=generator)
        return {"audio": self.audio[index, start:start + self.length] * gain,
                "pitch": self.pitch[index], "velocity": torch.tensor(100.0)}


class SGDAdditive(AdditiveGenerator):
    """The additive model trained with plain SGD (no momentum), for the DDP-equivalence check."""

    def make_optimizers(self, lr, betas=(0.9, 0.999), weight_decay=0.0):
        return {"main": torch.optim.SGD(self.parameters(), lr=lr)}


class TwoPhaseAdditive(AdditiveGenerator):
    """GAN-shaped phases: "aux" (encoder only; the decoder is unused in its forward, so DDP needs
    find_unused_parameters) then "main" (the reconstruction, optimising the decoder)."""

    def phases(self):
        return ["aux", "main"]

    def make_optimizers(self, lr, betas=(0.9, 0.999), weight_decay=0.0):
        return {"aux": torch.optim.SGD(self.encoder.parameters(), lr=lr),
                "main": torch.optim.AdamW(self.decoder.parameters(), lr=lr, betas=betas)}

    def training_step(self, batch, phase="main"):
        if phase == "aux":
            return {"aux/latent_l2": self.encode(batch["audio"], Conditions()).pow(2).mean()}
        return super().training_step(batch, phase)


def make_model(seed: int = 0, sgd: bool = False, two_phase: bool = False) -> AdditiveGenerator:
    seed_everything(seed)
    if two_phase:
        return TwoPhaseAdditive(AdditiveGenerator.debug_config())
    if sgd:
        return SGDAdditive(AdditiveGenerator.debug_config())
    return build("additive", debug=True)


def make_config(out_dir, **overrides) -> TrainConfig:
    """The scripts' training config (cosine schedule with warmup, clipping, per-step logging)."""
    kwargs = dict(steps=40, batch_size=4, lr=3e-3, grad_clip=1.0, seed=7, checkpoint_every=5,
                  log_every=1, schedule="cosine", warmup_steps=3, out_dir=str(out_dir),
                  device="cpu", progress=False)
    kwargs.update(overrides)
    return TrainConfig(**kwargs)
