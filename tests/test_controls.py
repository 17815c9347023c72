import json
import shutil

import numpy as np
import pytest
import torch

from latent.controls import (Direction, SidecarError, apply_directions, direction_controls,
                             fit_directions, from_coords, load_directions, pca_controls,
                             save_directions, semantic_targets, to_coords)
from synth.base import Conditions
from synth.catalog import BUNDLED_DIR
from synth.checkpoint import save_model
from synth.data.descriptors import describe
from synth.errors import ConfigError
from synth.registry import build


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    model = build("ddsp", debug=True).eval()
    mix = torch.randn(model.latent_dim, model.latent_dim)
    model.fit_latent_stats(torch.randn(500, model.latent_dim) @ mix + 3.0)
    return model


def test_coords_round_trip_and_pca_controls(fitted):
    z = torch.randn(5, fitted.latent_dim)
    torch.testing.assert_close(from_coords(fitted, to_coords(fitted, z)), z, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(from_coords(fitted, to_coords(fitted, z[0])), z[0], atol=1e-4, rtol=1e-4)
    controls = pca_controls(fitted)
    assert [c.name for c in controls] == [f"pc{k + 1}" for k in range(fitted.latent_dim)]
    assert all(c.low < 0 < c.high for c in controls)
    assert controls[0].low == pytest.approx(float(fitted.latent_low[0]))
    with pytest.raises(ConfigError):
        pca_controls(build("ddsp", debug=True))


def test_fit_directions_recovers_a_planted_direction():
    g = torch.Generator().manual_seed(0)
    n, d = 2000, 6
    mix = torch.randn(d, d, generator=g) + 2 * torch.eye(d)
    z = torch.randn(n, d, generator=g, dtype=torch.float64) @ mix.double() + 1.0
    pitch = torch.randint(30, 90, (n,), generator=g).double()
    # Planted: y = 0.5 * (unit direction in latent space) . (z - mean) + pitch effect + noise.
    true = torch.randn(d, generator=g, dtype=torch.float64)
    true = true / true.norm()
    y = 0.5 * (z - z.mean(0)) @ true + 0.02 * pitch + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    dirs = fit_directions(z, {"bright": y.numpy()}, covariates=pitch.numpy()[:, None], units={"bright": "oct"})
    b = dirs["bright"]
    assert b.r2 > 0.95 and b.unit == "oct" and b.n == n
    # Moving one step along the direction changes the linear prediction by `slope`.
    z0 = z[:10].float()
    moved = apply_directions(z0, {"bright": 1.0}, dirs)
    pred_change = 0.5 * ((moved - z0).double() @ true)
    torch.testing.assert_close(pred_change, torch.full((10,), b.slope, dtype=torch.float64), rtol=0.03, atol=0)
    # The direction is cov(z, y) in latent space: aligned with cov @ true.
    cov = torch.cov(z.T)
    expect = cov @ true
    cos = float(expect @ b.vector.double() / (expect.norm() * b.vector.double().norm()))
    assert cos > 0.99
    # Without the pitch covariate the unexplained pitch effect lowers r2.
    assert fit_directions(z, {"bright": y.numpy()})["bright"].r2 < b.r2
    assert b.low < 0 < b.high
    assert direction_controls(dirs)[0].name == "bright"


def test_apply_directions_shapes_and_errors():
    d = Direction("x", torch.tensor([1.0, 0.0, 0.0]), "u", 1.0, 0.5)
    z = torch.zeros(2, 3, 4)
    out = apply_directions(z, {"x": 2.0}, {"x": d})
    assert out.shape == z.shape and torch.all(out[:, 0] == 2) and torch.all(out[:, 1:] == 0)
    torch.testing.assert_close(apply_directions(torch.zeros(3), {"x": -1}, {"x": d}),
                               torch.tensor([-1.0, 0.0, 0.0]))
    with pytest.raises(ConfigError, match="unknown direction"):
        apply_directions(z, {"y": 1.0}, {"x": d})


def test_semantic_targets_transforms():
    rows = [{"brightness": 1.0, "flatness": 0.01, "attack_s": 0.0, "decay_db_per_s": -10.0,
             "sustain_db": -6.0, "rms_db": -20.0}]
    t = semantic_targets(rows)
    assert t["brightness"][0] == 1.0 and t["noisiness"][0] == pytest.approx(-2.0, abs=1e-3)
    assert t["attack"][0] == pytest.approx(-3.0) and t["decay"][0] == 10.0


def test_direction_sidecar_round_trip_and_hash_check(tmp_path, fitted):
    path = save_model(fitted, tmp_path / "m.safetensors")
    z = torch.randn(100, fitted.latent_dim)
    dirs = fit_directions(z, {"a": z[:, 0].numpy()}, model=fitted)
    dirs["a"].measured = {"slope": 0.1, "monotonic": True}
    side = save_directions(dirs, path, n_notes=100)
    assert side == tmp_path / "m.directions.json"
    assert json.loads(side.read_text())["info"]["n_notes"] == 100
    back = load_directions(path)
    torch.testing.assert_close(back["a"].vector, dirs["a"].vector)
    assert back["a"].measured == {"slope": 0.1, "monotonic": True}
    # The same sidecar beside other weights is refused, naming both hashes.
    other = tmp_path / "other.safetensors"
    torch.manual_seed(1)
    save_model(build("ddsp", debug=True), other)
    shutil.copy(side, tmp_path / "other.directions.json")
    with pytest.raises(SidecarError, match="hash"):
        load_directions(other)
    (tmp_path / "other.directions.json").unlink()
    with pytest.raises(SidecarError, match="no directions sidecar"):
        load_directions(other)


def test_bundled_ddsp_brightness_raises_the_centroid():
    """On the trained ddsp-gm with its fitted sidecar (bench/fit_latent_tools.py), moving along
    "brightness" across its playable range (the slider's: 1st to 99th percentile of the training
    latents) raises the spectral centroid monotonically, by more than half again overall. (At the
    dark end a C4's centroid approaches its fundamental and the rise flattens: docs/LATENT.md.)"""
    path = BUNDLED_DIR / "ddsp-gm.safetensors"
    if not (path.with_name("ddsp-gm.directions.json")).exists():
        pytest.skip("no ddsp-gm directions sidecar")
    from synth.catalog import load_named

    model = load_named("ddsp-gm")
    dirs = load_directions("ddsp-gm")
    steps = np.linspace(dirs["brightness"].low, dirs["brightness"].high, 5).tolist()
    seconds = 0.5
    for base in (torch.zeros(1, model.latent_dim), ):
        z = model.from_pca(base)
        moved = torch.cat([apply_directions(z, {"brightness": a}, dirs) for a in steps])
        with torch.no_grad():
            audio = model.decode(moved, Conditions.note([60.0] * len(steps), 100, duration=seconds))
        centroid = [describe(a.numpy(), model.sample_rate, pitch=60.0)["centroid_hz"] for a in audio]
        assert np.all(np.diff(centroid) > 0), centroid
        assert centroid[-1] > 1.5 * centroid[0]
