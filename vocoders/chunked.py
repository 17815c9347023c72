"""Chunked synthesis of long mels, and a gradient-based receptive-field measurement.

`vocode_chunked` splits the F frames into chunks of `chunk_frames`, runs the vocoder on each chunk
plus `overlap_frames` of real context on both sides, keeps only the chunk's own samples and, with
``crossfade_frames > 0``, blends neighbouring chunks over that many frames with complementary
sin^2 / cos^2 ramps.

Exactness. For a vocoder whose output block c (samples c*hop .. (c+1)*hop - 1) depends only on
frames c - left .. c + right (`receptive_field()` of `hifigan` and `istft`; no normalisation across
time), the result equals whole-file synthesis up to float rounding whenever
``overlap_frames >= max(left, right)``: every kept sample sees exactly the frames it sees in the
whole file (crossfading two equal signals changes nothing either; the crossfade region needs its
own context, which is included). Griffin-Lim is iterative and global: each chunk finds its own
phases, so chunking is never exact there; use overlap and a crossfade to hide the seams.
"""

from __future__ import annotations

import copy
import math

import torch

from synth.errors import ConfigError
from synth.features import FeatureSpec
from vocoders.base import Vocoder


def _ramp(n: int, rising: bool, like: torch.Tensor) -> torch.Tensor:
    """(n,) sin^2 ramp (0 -> 1) or its complement cos^2; the two sum to 1 sample by sample."""
    phase = (torch.arange(n, dtype=torch.float64) + 0.5) / n * (math.pi / 2)
    ramp = torch.sin(phase) ** 2 if rising else torch.cos(phase) ** 2
    return ramp.to(device=like.device, dtype=like.dtype)


def vocode_chunked(vocoder: Vocoder, mel: torch.Tensor, chunk_frames: int, overlap_frames: int,
                   crossfade_frames: int = 0, spec: FeatureSpec | None = None) -> torch.Tensor:
    """Vocode a long mel chunk by chunk.

    Args:
        vocoder: any `Vocoder`.
        mel: (B, n_mels, F) or (n_mels, F) log-mel under the vocoder's spec.
        chunk_frames: frames of output each call produces (a short last chunk is merged into the
            previous one when it could not hold half a crossfade).
        overlap_frames: context frames given to each call on both sides (see module docstring).
        crossfade_frames: frames over which neighbouring chunks are blended (0: hard cut);
            at most `chunk_frames`.
        spec: the FeatureSpec the mel was made under, if known (checked).
    Returns:
        (B, F * hop) audio.
    """
    if chunk_frames < 1 or overlap_frames < 0 or not 0 <= crossfade_frames <= chunk_frames:
        raise ConfigError(f"vocode_chunked needs chunk_frames >= 1, overlap_frames >= 0 and "
                          f"0 <= crossfade_frames <= chunk_frames; got {chunk_frames}, "
                          f"{overlap_frames}, {crossfade_frames}")
    mel = vocoder.check_mel(mel, spec)
    n_frames, hop = mel.shape[-1], vocoder.feature_spec.hop_length
    fade = crossfade_frames * hop
    bounds = list(range(chunk_frames, n_frames, chunk_frames))  # chunk starts after the first
    if bounds and (n_frames - bounds[-1]) * hop < fade - fade // 2:
        bounds.pop()
    edges = [0, *[b * hop for b in bounds], n_frames * hop]
    out = None
    for i in range(len(edges) - 1):
        lo = edges[i] - (fade // 2 if i > 0 else 0)  # output samples [lo, hi) of this chunk
        hi = edges[i + 1] + (fade - fade // 2 if i < len(edges) - 2 else 0)
        first = max(0, lo // hop - overlap_frames)
        last = min(n_frames, -(-hi // hop) + overlap_frames)
        audio = vocoder(mel[..., first:last])[..., lo - first * hop: hi - first * hop]
        if fade:
            weight = torch.ones(hi - lo, dtype=audio.dtype, device=audio.device)
            if i > 0:
                weight[:fade] = _ramp(fade, True, audio)
            if i < len(edges) - 2:
                weight[-fade:] = _ramp(fade, False, audio)
            audio = audio * weight
        if out is None:
            out = audio.new_zeros(audio.shape[0], n_frames * hop)
        out[..., lo:hi] += audio
    return out


def measure_receptive_field(vocoder: Vocoder, n_frames: int = 128, seed: int = 0) -> tuple[int, int]:
    """Frames (left, right) of the mel whose gradient reaches the output block in the middle.

    Runs a float64 copy of the vocoder on a random (1, n_mels, n_frames) mel and back-propagates a
    random projection of output block c = n_frames // 2 (samples c*hop .. (c+1)*hop - 1); the
    frames with a non-zero gradient are its receptive field. Raises `ValueError` when the field
    touches either end of the mel (make `n_frames` larger).
    """
    model = copy.deepcopy(vocoder).double().eval()
    gen = torch.Generator().manual_seed(seed)
    spec = model.feature_spec
    mel = (torch.randn(1, spec.n_mels, n_frames, generator=gen, dtype=torch.float64) - 4.0)
    mel.requires_grad_(True)
    c, hop = n_frames // 2, spec.hop_length
    block = model(mel)[0, c * hop:(c + 1) * hop]
    weights = torch.randn(block.shape, generator=gen, dtype=torch.float64)
    (grad,) = torch.autograd.grad((block * weights).sum(), mel)
    frames = torch.nonzero(grad[0].abs().sum(0) > 0).flatten()
    lo, hi = int(frames.min()), int(frames.max())
    if lo == 0 or hi == n_frames - 1:
        raise ValueError(f"the receptive field reaches the edge of {n_frames} frames; measure with more")
    return c - lo, hi - c
