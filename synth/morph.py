"""Morph regulariser for the mel generators: interpolations between two notes' latents should
move the sound's brightness steadily from one to the other.

Without it a decoder trained only on reconstructions is free to do anything between the codes
it has seen, and the trained vae-gm / vqvae-gm overshot: the spectral centroid of a
flute -> saw-lead morph rose past the saw lead's before coming back (bench/vae_eval.py,
"interpolation"; docs/VAE.md). In the spirit of attribute-regularised VAEs (Pati & Lerch 2020,
which tie an attribute's order to a latent axis), this ties the order of the centroid to the
interpolation parameter, on pairs drawn from the training batch:

- z_a (the batch's latents), z_b (the same batch rolled by one: another note), both decoded at
  z_a's pitch and velocity; two interior points t1 < t2 drawn uniformly per pair;
- "morph/order": hinge on the log centroid, so that c(0) <= c(t1) <= c(t2) <= c(1) in the
  direction of c(1) - c(0) (endpoints detached), as a fraction of the endpoints' gap (at least
  `MIN_GAP`, 5 % in log-Hz), the measure bench/vae_eval judges; unnormalised, the cheapest
  answer was to shrink every gap: a first fine-tune decoded all notes at 600-1,100 Hz centroids;
- "morph/anchor": |c(decoded note) - c(true note)| in log-Hz, so the brightness of the
  reconstructions stays the real one (the L1 reconstruction alone let it drift);
- "morph/linear" (optional): L1 between the decoded normalised log-mel at t and the same
  interpolation of the endpoints' decoded log-mels, which makes the decoder locally linear
  along chords between notes (a log-spectral crossfade at the limit).
- "morph/sc" (optional): the same target, scored by spectral convergence of the linear mel
  (`synth.losses.spectral_convergence`: the error weighed by energy). The L1 of log-mels weighs
  every band alike, so a middle whose loud upper bands sag by a few dB (a darker sound than
  either end) costs it little; energy weighting charges exactly that.
- `shrink` (optional, in [0, 1)): each chord's endpoints are first pulled towards the batch's
  mean latent by a factor drawn uniformly from [1 - shrink, 1] (and decoded), so the chords also
  run through the inner latents where the app's morphs live: an instrument's mean latent (the
  atlas corner) sits nearer the centre than any one note (vae-gm: median PCA norm 2.4 against
  3.2), the middle of two such means nearer still, and that is where the decoder's chords
  between single notes never went (bench/atlas_morphs.py, docs/VAE.md).

The centroid is measured on the log-mel itself (`MelCentroid`): each band's power is
estimated from its (area-normalised, magnitude) mel value as mel^2 x width^1.5, with width the
band's effective width in FFT bins, and placed at the band's centre; frames are pooled by power,
like `synth.data.descriptors.describe`'s centroid of the audio. The exponent sits between the two
regimes a magnitude mel confuses: a band full of partials or noise holds mel^2 x width of power,
one resolved partial mel^2 x width^2; with 1.5 the estimate is within 20 % of the audio's centroid
from sines to noise and keeps their order (tests/test_morph.py).

Measured (docs/VAE.md): in fine-tunes the centroid terms invited shortcuts (loud spike bins,
then homogenised brightness), while "morph/linear" alone raised the share of monotonic morphs
from 0.42 to 0.58-0.67 at equal reconstruction. The bundled vae-gm is trained with
"morph/linear" (weight 0.3) from the start: 0.83 / 0.50 of pairs through Griffin-Lim, 0.75 /
0.58 through istft-gm. The defaults (all weights 0) leave training unchanged.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from synth.features import FeatureSpec, mel_filterbank

#: Smallest endpoint gap (log-Hz) the order hinge is divided by.
MIN_GAP = 0.05


class MelCentroid(nn.Module):
    """Spectral centroid of log-mels: (B, n_mels, F) natural-log magnitude mel -> (B,) log Hz."""

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__()
        basis = mel_filterbank(spec).double()  # (n_mels, n_fft // 2 + 1)
        freqs = torch.linspace(0.0, spec.sample_rate / 2, basis.shape[1], dtype=torch.float64)
        total = basis.sum(1).clamp_min(1e-12)
        centre = (basis @ freqs) / total
        width = total.square() / basis.square().sum(1).clamp_min(1e-24)  # effective bins
        self.register_buffer("centre", centre.float(), persistent=False)
        self.register_buffer("log_width", 1.5 * width.log().float(), persistent=False)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        # power per band and frame, as log weights: 2 log|mel| + 1.5 log(width); softmax pools them.
        logw = (2.0 * logmel + self.log_width[:, None]).flatten(1)  # (B, n_mels * F)
        weights = torch.softmax(logw, dim=-1).reshape(logmel.shape)
        return torch.log((weights * self.centre[:, None]).sum((1, 2)).clamp_min(1.0))


def morph_losses(decode: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                 to_logmel: Callable[[torch.Tensor], torch.Tensor], centroid: MelCentroid,
                 z: torch.Tensor, end_a: torch.Tensor, pitch: torch.Tensor, velocity: torch.Tensor,
                 ceiling: torch.Tensor | float, target: torch.Tensor | None = None,
                 linear: bool = False, shrink: float = 0.0, sc: bool = False,
                 shrink_share: float = 1.0) -> dict[str, torch.Tensor]:
    """The morph terms for one batch.

    Args:
        decode: (z, pitch, velocity) -> (B, ...) normalised log-mel (the model's decoder; for a
            VQ-VAE, one that quantises its input first).
        to_logmel: normalised -> natural-log mel (the model's `denormalize`).
        centroid: a `MelCentroid` for the model's FeatureSpec.
        z: (B, ...) the batch's latents (pairs are z and z rolled by one along the batch).
        end_a: (B, ...) the decoded z (the reconstructions already computed), endpoint t = 0.
        pitch, velocity: (B,) the batch's; every point of a pair is decoded at z's own.
        ceiling: the loudest log-mel value the centroid may see (the batch's true maximum): a
            decoder could otherwise steer the centroid with a few absurdly loud bins, which the
            L1 reconstruction hardly charges for (a first fine-tune did: decoded log-mels
            peaked at +8 where real notes stop near +1).
        target: (B, n_mels, F) the true log-mels of z's notes: adds "morph/anchor".
        linear: also return "morph/linear".
        shrink: pull each chord's endpoints towards the batch's mean latent by a factor drawn
            from [1 - shrink, 1] (both endpoints are then decoded here; `end_a` still anchors).
        sc: also return "morph/sc" (energy-weighted distance to the same crossfade).
        shrink_share: the share of pairs that are shrunk (the others keep their full-length
            chords between the two notes).
    Returns:
        {"morph/order": hinge as a fraction of each pair's gap, "log/morph/violations": fraction
        of pairs with any step out of order, and "morph/anchor", "morph/linear", "morph/sc"
        when asked};
        empty for batches of one.
    """
    b = z.shape[0]
    if b < 2:
        return {}
    if not 0.0 <= shrink < 1.0 or not 0.0 <= shrink_share <= 1.0:
        raise ValueError(f"morph shrink must be in [0, 1) and its share in [0, 1], got {shrink}, "
                         f"{shrink_share}")
    z_b = z.roll(1, dims=0)
    t = torch.rand(b, 2, device=z.device, dtype=z.dtype).sort(dim=1).values
    shape = (b,) + (1,) * (z.ndim - 1)
    t1, t2 = t[:, 0].reshape(shape), t[:, 1].reshape(shape)
    out: dict[str, torch.Tensor] = {}
    if target is not None:
        c_true = centroid(target.clamp(max=ceiling)).detach()
        out["morph/anchor"] = (centroid(to_logmel(end_a).clamp(max=ceiling)) - c_true).abs().mean()
    if shrink > 0:
        centre = z.mean(0, keepdim=True).detach()
        pick = (torch.rand(shape, device=z.device) < shrink_share).to(z.dtype)  # same for both ends
        u = 1.0 - shrink * pick * torch.rand(2, *shape, device=z.device, dtype=z.dtype)
        z, z_b = centre + u[0] * (z - centre), centre + u[1] * (z_b - centre)
        points = torch.cat([z, z_b, z + t1 * (z_b - z), z + t2 * (z_b - z)])
        end_a, end_b, mid1, mid2 = decode(points, pitch.repeat(4), velocity.repeat(4)).chunk(4)
    else:
        points = torch.cat([z_b, z + t1 * (z_b - z), z + t2 * (z_b - z)])
        end_b, mid1, mid2 = decode(points, pitch.repeat(3), velocity.repeat(3)).chunk(3)
    end_a, end_b = end_a.detach(), end_b.detach()
    c = centroid(to_logmel(torch.cat([end_a, mid1, mid2, end_b])).clamp(max=ceiling)).reshape(4, b)
    gap = (c[3] - c[0]).detach()
    steps = torch.sign(gap) * (c[1:] - c[:-1])  # (3, B): should all be >= 0
    out["morph/order"] = (torch.relu(-steps).sum(0) / gap.abs().clamp_min(MIN_GAP)).mean()
    out["log/morph/violations"] = (steps < -0.05 * gap.abs()).any(0).float().mean().detach()
    if linear or sc:
        dims = (b,) + (1,) * (end_a.ndim - 1)
        s1, s2 = t[:, 0].reshape(dims), t[:, 1].reshape(dims)
        goal1, goal2 = end_a + s1 * (end_b - end_a), end_a + s2 * (end_b - end_a)
        if linear:
            out["morph/linear"] = 0.5 * ((mid1 - goal1).abs().mean() + (mid2 - goal2).abs().mean())
        if sc:
            from synth.losses import spectral_convergence

            out["morph/sc"] = 0.5 * (spectral_convergence(to_logmel(mid1), to_logmel(goal1))
                                     + spectral_convergence(to_logmel(mid2), to_logmel(goal2)))
    return out
