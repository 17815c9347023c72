"""The morph regulariser (synth/morph.py): its mel-domain centroid agrees with the audio
descriptor it stands in for, its hinge sees exactly the out-of-order interpolations, and both
mel generators train with it."""

import math

import numpy as np
import pytest
import torch

from synth.data.descriptors import describe, spectral_centroid
from synth.features import FeatureSpec, LogMel
from synth.morph import MelCentroid, morph_losses
from synth.registry import build, get_class

SPEC = FeatureSpec()  # the bundled models' 16 kHz / 80-mel spec


def tones(sr: int, seconds: float = 1.0) -> dict[str, np.ndarray]:
    """Sounds of very different brightness: sines, harmonic tones of two tilts, noise."""
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(0)

    def harmonic(f0: float, tilt: float) -> np.ndarray:
        ks = np.arange(1, int(sr / 2 / f0))
        return sum(k ** -tilt * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3)) for k in ks)

    return {"sine 220": np.sin(2 * np.pi * 220 * t), "sine 1000": np.sin(2 * np.pi * 1000 * t),
            "sine 3000": np.sin(2 * np.pi * 3000 * t), "dark 110": harmonic(110.0, 2.0),
            "bright 110": harmonic(110.0, 0.7), "dark 440": harmonic(440.0, 2.0),
            "bright 440": harmonic(440.0, 0.7), "noise": rng.standard_normal(len(t))}


def test_mel_centroid_tracks_the_audio_centroid_and_keeps_its_order():
    sounds = tones(SPEC.sample_rate)
    audio = torch.from_numpy(np.stack([0.3 * x / np.abs(x).max() for x in sounds.values()])).float()
    ours = MelCentroid(SPEC)(LogMel(SPEC)(audio)).exp().numpy()
    ref = np.array([describe(x.numpy(), SPEC.sample_rate)["centroid_hz"] for x in audio])
    # Sines land within a band's width of their frequency; broad spectra within 25 %.
    assert abs(ours[0] - 220) < 60 and abs(ours[1] - 1000) < 100 and abs(ours[2] - 3000) < 250
    assert np.abs(np.log(ours / ref)).max() < math.log(1.25), (ours, ref)
    # Same order as the audio descriptor (the quantity the morph check measures).
    assert (np.argsort(ours) == np.argsort(ref)).all(), (ours, ref)


def test_whole_signal_centroid_does_not_move_with_the_onset():
    """A plucked note (24 partials decaying faster the higher, a 5 ms noise click) delayed by 0
    to 512 samples: `spectral_centroid` moves by 1.7 % at most (measured), `describe`'s
    every-other-frame centroid by 42 % (328 to 499 Hz). Held to 3 %; on a steady tone both agree
    within 0.1 %."""
    sr = SPEC.sample_rate
    t = np.arange(2 * sr) / sr
    rng = np.random.default_rng(0)
    pluck = sum(np.exp(-t * (3 + 4 * k)) * np.sin(2 * np.pi * 262 * k * t + rng.uniform(0, 6.3)) / k
                for k in range(1, 25))
    pluck[:80] += rng.standard_normal(80) * np.exp(-np.arange(80) / 20)
    pluck = pluck.astype(np.float32)
    shifted = [spectral_centroid(np.concatenate([np.zeros(s, np.float32), pluck])[:len(pluck)], sr)
               for s in (0, 64, 128, 256, 512)]
    assert max(shifted) < 1.03 * min(shifted), shifted
    tone = (np.sin(2 * np.pi * 440 * t) + 0.5 * np.sin(2 * np.pi * 1320 * t)).astype(np.float32)
    assert spectral_centroid(tone, sr) == pytest.approx(describe(tone, sr)["centroid_hz"], rel=1e-3)
    assert spectral_centroid(tone, sr) == pytest.approx((440 + 0.25 * 1320) / 1.25, rel=0.01)


def tilt_decoder(bump: float):
    """A toy decoder: z (B, 1) in [0, 1] -> normalised log-mel with a spectral tilt growing with
    z, plus `bump` x z (1 - z) extra tilt (an overshoot between the endpoints when > 0)."""
    bands = torch.linspace(-1.0, 1.0, SPEC.n_mels)[None, :, None]

    def decode(z, pitch, velocity):
        zz = z.reshape(-1, 1, 1)
        return (zz + bump * 4 * zz * (1 - zz)) * bands * torch.ones(1, 1, 8)

    return decode


@pytest.mark.parametrize("bump", [0.0, 1.5])
def test_order_hinge_is_zero_for_a_monotonic_decoder_and_positive_for_an_overshoot(bump):
    torch.manual_seed(0)
    decode, centroid = tilt_decoder(bump), MelCentroid(SPEC)
    z = torch.tensor([[0.0], [1.0]] * 16)  # pairs (0 -> 1) and (1 -> 0) after the roll
    pitch = torch.full((32,), 60.0)
    out = morph_losses(decode, lambda x: x * 3.0 - 8.0, centroid, z, decode(z, pitch, pitch),
                       pitch, pitch, ceiling=10.0, linear=True, sc=True)
    if bump == 0.0:
        assert float(out["morph/order"]) == 0.0 and float(out["log/morph/violations"]) == 0.0
        assert float(out["morph/linear"]) < 1e-6  # this decoder is linear in z
        assert float(out["morph/sc"]) < 1e-5
    else:
        assert float(out["morph/order"]) > 0.01 and float(out["log/morph/violations"]) > 0.5
        assert float(out["morph/linear"]) > 0.05 and float(out["morph/sc"]) > 0.05


def test_shrunk_chords_run_through_the_inner_latents():
    """With `shrink`, the chords' endpoints are pulled towards the batch mean and decoded: the
    decoder sees latents nearer the centre than any batch note, and a decoder linear in z still
    costs nothing."""
    torch.manual_seed(0)
    seen = []
    base = tilt_decoder(0.0)

    def decode(z, pitch, velocity):
        seen.append(z.detach().clone())
        return base(z, pitch, velocity)

    z, pitch = torch.tensor([[0.0], [1.0]] * 16), torch.full((32,), 60.0)
    out = morph_losses(decode, lambda x: x * 3.0 - 8.0, MelCentroid(SPEC), z, base(z, pitch, pitch),
                       pitch, pitch, ceiling=10.0, linear=True, shrink=0.8)
    (points,) = seen
    assert points.shape[0] == 4 * 32                      # both endpoints decoded, 2 interior points
    ends = points[:64]
    assert ends.min() > 0.0 - 1e-6 and ends.max() < 1.0 + 1e-6
    assert ((ends - 0.5).abs() < 0.45).float().mean() > 0.5  # most pulled well inside
    assert float(out["morph/linear"]) < 1e-6 and float(out["morph/order"]) == 0.0
    with pytest.raises(ValueError, match="shrink"):
        morph_losses(decode, lambda x: x, MelCentroid(SPEC), z, z, pitch, pitch, 10.0, shrink=1.0)
    seen.clear()
    morph_losses(decode, lambda x: x * 3.0 - 8.0, MelCentroid(SPEC), z, base(z, pitch, pitch),
                 pitch, pitch, ceiling=10.0, linear=True, shrink=0.8, shrink_share=0.5)
    ends = seen[0][:32]                                   # z's own ends: 0 or 1 unless shrunk
    kept = ((ends == 0.0) | (ends == 1.0)).float().mean()
    assert 0.2 < float(kept) < 0.8                        # about half the pairs keep full chords


def test_order_hinge_passes_gradients_to_the_decoder_but_not_the_endpoints():
    torch.manual_seed(0)
    scale = torch.tensor(1.0, requires_grad=True)
    base = tilt_decoder(1.5)

    def decode(z, pitch, velocity):
        return base(z, pitch, velocity) * scale

    z, pitch = torch.tensor([[0.0], [1.0]] * 4), torch.full((8,), 60.0)
    end_a = decode(z, pitch, pitch)
    out = morph_losses(decode, lambda x: x * 3.0 - 8.0, MelCentroid(SPEC), z, end_a, pitch, pitch,
                       ceiling=10.0)
    out["morph/order"].backward()
    assert scale.grad is not None and float(scale.grad.abs()) > 0


def test_bins_above_the_ceiling_cannot_steer_the_centroid():
    """A decoder that answers the hinge with one absurdly loud bin gains nothing above the
    ceiling: no centroid change, no gradient through that bin."""
    centroid = MelCentroid(SPEC)
    logmel = torch.full((1, SPEC.n_mels, 8), -6.0)
    logmel[:, 10:30] = -1.0
    spiked = logmel.clone().requires_grad_(True)
    with torch.no_grad():
        spiked[0, 70, 3] = 8.0  # a high band, far above anything real
    at_ceiling = logmel.clone()
    at_ceiling[0, 70, 3] = 1.0
    value = centroid(spiked.clamp(max=1.0))
    assert torch.allclose(value, centroid(at_ceiling))
    value.backward()
    assert spiked.grad[0, 70, 3] == 0 and spiked.grad.abs().sum() > 0


@pytest.mark.parametrize("kind,overrides", [("vae", {"morph_weight": 1.0, "morph_linear_weight": 0.1}),
                                            ("vae", {"morph_weight": 1.0, "morph_linear_weight": 0.1,
                                                     "morph_shrink": 0.5, "morph_sc_weight": 0.5,
                                                     "morph_shrink_share": 0.5}),
                                            ("vqvae", {"morph_weight": 1.0, "morph_linear_weight": 0.1})])
def test_mel_generators_train_with_the_morph_terms(kind, overrides):
    torch.manual_seed(0)
    model = build(kind, {**vars(get_class(kind).debug_config()), **overrides})
    model.train()
    sr, n = model.sample_rate, model.n_samples
    t = torch.arange(n) / sr
    audio = torch.stack([torch.sin(2 * math.pi * f * t) * 0.3 for f in (200.0, 300.0, 450.0, 700.0)])
    batch = {"audio": audio, "pitch": torch.tensor([55.0, 62.0, 69.0, 77.0]),
             "velocity": torch.full((4,), 100.0)}
    losses = model.training_step(batch)
    assert "morph/order" in losses and torch.isfinite(losses["morph/order"])
    assert "morph/anchor" in losses and torch.isfinite(losses["morph/anchor"])
    assert "morph/linear" in losses and torch.isfinite(losses["morph/linear"])
    weights = model.loss_weights()
    assert weights["morph/order"] == 1.0 and weights["morph/linear"] == 0.1
    total = sum(v * weights.get(k, 1.0) for k, v in losses.items() if not k.startswith("log/"))
    total.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
