"""The vocoder contract: `Vocoder.forward(mel) -> audio`.

A vocoder stores the `FeatureSpec` its mels must be made under and refuses any other, naming
both specs. Mels are natural-log magnitudes (B, n_mels, frames); audio is (B, frames * hop).
"""

from __future__ import annotations

import torch

from synth.errors import SpecMismatchError
from synth.features import FeatureSpec
from synth.module import SynthModule


class Vocoder(SynthModule):
    """Base of every mel-to-waveform model (Griffin-Lim, HiFi-GAN, iSTFT, WaveNet)."""

    @property
    def feature_spec(self) -> FeatureSpec:
        return self.config.feature_spec

    @property
    def sample_rate(self) -> int:
        return int(self.feature_spec.sample_rate)

    def check_mel(self, mel: torch.Tensor, spec: FeatureSpec | None = None) -> torch.Tensor:
        """Validate a mel (and, when given, the spec it was made under); returns (B, n_mels, F)."""
        if spec is not None:
            self.feature_spec.require(spec, what="the mel")
        if mel.ndim == 2:
            mel = mel.unsqueeze(0)
        if mel.ndim != 3 or mel.shape[1] != self.feature_spec.n_mels:
            raise SpecMismatchError(
                f"mel of shape {tuple(mel.shape)} does not fit this vocoder: expected "
                f"(batch, {self.feature_spec.n_mels}, frames) under {self.feature_spec}"
            )
        if not torch.isfinite(mel).all():
            raise SpecMismatchError("mel contains NaN or Inf values")
        return mel

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) log-mel -> (B, frames * hop_length) audio."""
        raise NotImplementedError
