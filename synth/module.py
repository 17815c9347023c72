"""`SynthModule`: what every registered model (generator or vocoder) shares.

A model is built from one dataclass config, knows its registry `kind`, and provides the hooks the
shared `Trainer` calls: `make_optimizers`, `training_step` (named losses for one phase) and
`loss_weights`. Models know nothing of files or CLIs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from synth.features import FeatureSpec

Batch = dict[str, torch.Tensor]


class SynthModule(nn.Module):
    """Base of every registered model.

    Subclasses set `kind` and `Config` (a dataclass), implement `debug_config`, `example_batch`
    and `training_step`, and may override `make_optimizers` (GANs return one optimizer per phase).

    Rules the Trainer relies on: phase names contain no "/" and `make_optimizers` returns exactly
    the keys of `phases()`; state that must survive a resume is a parameter or a persistent
    buffer; randomness inside a step comes from the global torch RNG (re-seeded by the Trainer
    from (seed, step, rank) every step).
    """

    kind: ClassVar[str] = ""
    Config: ClassVar[type]

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    # -- identity -----------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.config.sample_rate)

    @property
    def feature_spec(self) -> FeatureSpec | None:
        """The FeatureSpec of the mels this model makes or consumes (None if it uses none)."""
        return getattr(self.config, "feature_spec", None)

    @classmethod
    def debug_config(cls) -> Any:
        """A tiny config that builds, trains one step and runs in well under a second on a CPU."""
        raise NotImplementedError

    # -- training hooks -----------------------------------------------------------------------
    def example_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        """A random, valid training batch (CPU) for smoke tests and shape checks."""
        raise NotImplementedError

    def phases(self) -> list[str]:
        """Optimisation phases run in order every step; one optimizer per phase."""
        return ["main"]

    def make_optimizers(self, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                        weight_decay: float = 0.0) -> dict[str, torch.optim.Optimizer]:
        """One optimizer per phase. The default trains every parameter with AdamW."""
        return {"main": torch.optim.AdamW(self.parameters(), lr=lr, betas=betas,
                                          weight_decay=weight_decay)}

    def training_step(self, batch: Batch, phase: str = "main") -> dict[str, torch.Tensor]:
        """Named scalar losses for `phase`, keys namespaced like ``"recon/mss"``.

        The trainer minimises ``sum(loss_weights().get(k, 1.0) * v)``; keys starting with
        ``"log/"`` are logged but never optimised.
        """
        raise NotImplementedError

    def loss_weights(self) -> dict[str, float]:
        """Weight per loss key (default 1.0 for keys not listed)."""
        return {}

    def on_train_step_end(self, step: int) -> None:
        """Called after all phases of a step with the number of completed steps (from 1)."""
