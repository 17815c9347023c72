"""The instrument atlas (latent/atlas.py): fitting, the sidecar, and the bundled one."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from latent.atlas import AtlasError, fit_atlas, load_atlas, save_atlas
from synth.base import Conditions
from synth.catalog import BUNDLED_DIR
from synth.checkpoint import save_model
from synth.data.corpus import Corpus
from synth.data.procedural import ProceduralOptions, build_procedural
from synth.registry import build


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("atlas") / "corpus"
    opts = ProceduralOptions(types=("additive", "saw", "karplus"), instruments_per_type=2,
                             pitch_low=48, pitch_high=72, pitch_step=4, velocities=(60, 110),
                             sample_rate=8000, held_seconds=0.25, release_seconds=0.05)
    build_procedural(root, opts, workers=1)
    return Corpus.open(root)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build("ddsp", debug=True).eval()
    m.fit_latent_stats(torch.randn(200, m.latent_dim))
    return m


def test_fit_atlas_is_the_mean_latent_of_each_instruments_sampled_notes(corpus, model):
    atlas = fit_atlas(model, corpus, per_instrument=3, seed=5)
    instruments = {r["instrument_id"] for r in corpus.notes
                   if r["split"] == "train" and r["instrument_split"] == "train"}
    assert len(atlas) == len(instruments) >= 2  # held-out instruments are not in it
    assert atlas.latents.shape == (len(atlas), model.latent_dim) and all(n == 3 for n in atlas.notes)
    every = fit_atlas(model, corpus, per_instrument=3, instrument_split=None)
    assert len(every) == 6
    assert set(atlas.families) <= {r["family"] for r in corpus.notes}
    # Recompute one instrument's mean by hand from the same seeded draw.
    again = fit_atlas(model, corpus, per_instrument=3, seed=5)
    torch.testing.assert_close(again.latents, atlas.latents)
    other = fit_atlas(model, corpus, per_instrument=3, seed=6)
    assert not torch.allclose(other.latents, atlas.latents)
    name = atlas.names[0]
    rows = [i for i in corpus.select(split="train") if corpus.notes[i]["instrument"] == name]
    with torch.no_grad():
        z = model.encode(torch.from_numpy(corpus.waveform(rows)),
                         Conditions(duration=corpus.audio.shape[1] / corpus.sample_rate))
    # The atlas mean is the mean of 3 of these notes: inside their range, per component.
    assert bool(((atlas.latents[0] >= z.min(0).values - 1e-5)
                 & (atlas.latents[0] <= z.max(0).values + 1e-5)).all())
    coords = atlas.coords(model)
    torch.testing.assert_close(coords, model.to_pca(atlas.latents).float())


def test_atlas_sidecar_round_trip_and_refusals(tmp_path, corpus, model):
    path = save_model(model, tmp_path / "m.safetensors")
    atlas = fit_atlas(model, corpus, per_instrument=2)
    side = save_atlas(atlas, path)
    assert side == tmp_path / "m.atlas.json"
    back = load_atlas(path)
    assert back.names == atlas.names and back.families == atlas.families
    torch.testing.assert_close(back.latents, atlas.latents, atol=1e-6, rtol=0)
    assert back.info["corpus_hash"] == corpus.hash
    # Beside other weights: refused, naming the hash.
    torch.manual_seed(3)
    other = save_model(build("ddsp", debug=True), tmp_path / "o.safetensors")
    shutil.copy(side, tmp_path / "o.atlas.json")
    with pytest.raises(AtlasError, match="hash"):
        load_atlas(other)
    # Corrupt and missing sidecars: one clear error each.
    (tmp_path / "o.atlas.json").write_text("{not json")
    with pytest.raises(AtlasError, match="corrupt"):
        load_atlas(other)
    body = json.loads(side.read_text())
    body["instruments"][0]["latent"] = body["instruments"][0]["latent"][:-1]
    side.write_text(json.dumps(body))
    with pytest.raises(AtlasError, match="corrupt"):
        load_atlas(path)
    (tmp_path / "o.atlas.json").unlink()
    with pytest.raises(AtlasError, match="no atlas sidecar"):
        load_atlas(other)


def test_bundled_ddsp_atlas_matches_its_model_and_covers_its_families():
    if not (BUNDLED_DIR / "ddsp-gm.atlas.json").exists():
        pytest.skip("no bundled atlas")
    from synth.catalog import load_named

    atlas = load_atlas("ddsp-gm")
    model = load_named("ddsp-gm")
    families = set((model.checkpoint_meta.get("recipe") or {}).get("families") or atlas.families)
    assert set(atlas.families) == families and len(atlas) >= len(families)
    assert atlas.latents.shape[1] == model.latent_dim and torch.isfinite(atlas.latents).all()
    # Instruments spread over the trained range: most lie inside the 1st-99th percentiles.
    coords = atlas.coords(model)
    inside = ((coords >= model.latent_low) & (coords <= model.latent_high)).float().mean()
    assert float(inside) > 0.8
    assert float(np.std(coords[:, 0].numpy())) > 0.3  # instruments are not one point
