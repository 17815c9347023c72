"""The Streamlit app through `streamlit.testing.v1.AppTest`, and its session logic directly.

The app runs in this process against the bundled `ddsp-gm` model (renders of a 2 s note take
~50 ms on one CPU thread; the first run loads the model, a few seconds).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from studio import app_logic as L

APP = str(Path(__file__).resolve().parent.parent / "studio" / "app.py")
MODEL = "ddsp-gm"


@pytest.fixture(scope="module")
def model():
    return L.load_generator(MODEL)


@pytest.fixture
def at():
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _audio(at) -> list:
    return at.get("audio")


def _metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


# -- the app ------------------------------------------------------------------------------------
def test_choose_model_move_pad_render_and_add_to_pack(at):
    names = at.selectbox(key="model").options  # "name (kind)"
    assert f"{MODEL} (ddsp)" in names and not any("istft" in n for n in names)  # generators only; vocoders are not listed
    at.selectbox(key="model").set_value(MODEL).run()
    assert len(_audio(at)) == 1 and _metric(at, "render latency").endswith("ms")
    first = at.session_state.result

    before = [at.session_state[f"lat_pc{k}"] for k in (1, 2, 3)]
    at.slider(key="pad_x").set_value(0.0).run()
    at.slider(key="pad_y").set_value(0.0).run()
    corner = at.session_state.anchors[at.session_state["corner_0"]]
    after = [at.session_state[f"lat_pc{k}"] for k in (1, 2, 3)]
    assert after != before
    assert after == pytest.approx(corner[:3], abs=2e-3)  # top-left corner = its anchor exactly
    at.button(key="render").click().run()
    assert not at.exception and not at.error
    assert len(_audio(at)) == 1 and float(_metric(at, "render latency").split()[0]) > 0
    assert len(at.image) >= 2  # the pad picture and the spectrogram
    assert not np.array_equal(at.session_state.result.audio, first.audio)  # a new sound

    at.button(key="add_pack").click().run()
    assert len(at.session_state.pack) == 1
    at.slider(key="pad_x").set_value(1.0).run()
    at.button(key="add_pack").click().run()
    items = at.session_state.pack
    assert len(items) == 2 and items[0].name != items[1].name
    from synth.catalog import load_named

    dim = load_named(MODEL).latent_dim  # the pack stores the bundled model's full latent
    assert items[0].latent != items[1].latent and all(len(i.latent) == dim for i in items)
    assert len(at.dataframe) == 1

    # undo walks back through the committed pad points
    at.button(key="undo").click().run()
    assert [at.session_state[f"lat_pc{k}"] for k in (1, 2, 3)] == pytest.approx(corner[:3], abs=2e-3)


def test_controls_change_the_sound_and_warn_out_of_range(at):
    base = at.session_state.result.audio
    at.slider(key="ctl_noise_db").set_value(-24.0).run()
    assert not np.allclose(at.session_state.result.audio, base)
    at.slider(key="pitch").set_value(10).run()  # below the trained 24-96
    assert any("pitch 10" in w.value for w in at.warning)
    at.slider(key="lat_pc1").set_value(L.slider_range(L.split_controls(
        L.load_generator(MODEL))[0][0])[0]).run()
    assert any("pc1=" in w.value for w in at.warning)
    assert len(_audio(at)) == 1


def test_bad_upload_is_an_inline_error_and_the_session_goes_on(at):
    at.file_uploader(key="upload").set_value(("notes.txt", b"this is not audio", "text/plain")).run()
    assert not at.exception
    assert any("notes.txt" in e.value for e in at.error)
    at.slider(key="pad_x").set_value(0.3).run()
    assert not at.exception and len(_audio(at)) == 1


def test_good_upload_becomes_a_corner_anchor(at):
    sr = 16000
    t = np.arange(sr) / sr
    note = (0.3 * np.sin(2 * np.pi * 220 * t) * np.exp(-3 * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, note, sr, format="WAV")
    at.file_uploader(key="upload").set_value(("pluck.wav", buf.getvalue(), "audio/wav")).run()
    assert not at.exception and not at.error
    assert "upload: pluck.wav" in at.session_state.anchors
    at.selectbox(key="corner_3").set_value("upload: pluck.wav").run()
    at.slider(key="pad_x").set_value(1.0).run()
    at.slider(key="pad_y").set_value(1.0).run()
    anchor = at.session_state.anchors["upload: pluck.wav"]
    got = [at.session_state[f"lat_pc{k}"] for k in range(1, len(anchor) + 1)]
    assert got == pytest.approx(anchor, abs=2e-3)


def test_render_error_is_inline(at, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("synthetic failure")

    monkeypatch.setattr(L, "render_point", boom)
    at.slider(key="pad_x").set_value(0.8).run()
    assert not at.exception
    assert any("synthetic failure" in e.value for e in at.error)
    monkeypatch.undo()
    at.button(key="render").click().run()
    assert not at.error and len(_audio(at)) == 1


def test_snapshot_save_and_load(at):
    at.text_input(key="snap_name").input("mine").run()
    at.button(key="save_snap").click().run()
    saved = at.session_state.history.snapshots["mine"].coords
    assert "snapshot: mine" in at.session_state.anchors
    at.slider(key="pad_x").set_value(0.0).run()
    at.button(key="load_snap").click().run()
    assert [at.session_state[f"lat_pc{k}"] for k in range(1, len(saved) + 1)] \
        == pytest.approx(saved, abs=2e-3)


def test_variations_and_pack_download(at):
    at.button(key="make_vars").click().run()
    assert len(at.session_state.variations) == 4 and len(_audio(at)) == 5
    at.button(key="var_pack_0").click().run()
    at.button(key="add_pack").click().run()
    assert len(at.session_state.pack) == 2
    at.number_input(key="pack_low").set_value(60).run()
    at.number_input(key="pack_high").set_value(62).run()
    at.number_input(key="pack_duration").set_value(0.5).run()
    at.button(key="build_pack").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("download_button")) == 1
    with zipfile.ZipFile(io.BytesIO(at.session_state.pack_zip)) as z:
        wavs = [n for n in z.namelist() if n.endswith(".wav")]
    assert len(wavs) == 2  # one root (60, zone step 3 covers 60-62) per instrument


# -- the logic ----------------------------------------------------------------------------------
def test_wav_bytes_keep_the_level(model):
    """The player gets our WAV: a quiet note stays quiet (no peak normalisation)."""
    point = L.Point(coords=[0.0] * model.latent_dim, velocity=30, duration=0.5)
    res = L.render_point(model, point, picture=False)
    data, sr = sf.read(io.BytesIO(res.wav), dtype="float32")
    assert sr == model.sample_rate and data.shape == res.audio.shape
    assert abs(np.abs(data).max() - res.peak) < 1e-4 and res.peak < 0.5
    assert res.latency_ms > 0


def test_pad_corners_are_exact_and_warnings(model):
    corners = L.random_anchors(model, 4, seed=3)
    for i, (x, y) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        assert torch.allclose(L.pad_coords(corners, x, y), corners[i], atol=1e-6)
    assert torch.equal(L.random_anchors(model, 4, seed=3), corners)
    inside = L.Point(coords=[0.0] * model.latent_dim, pitch=60)
    assert L.point_warnings(model, inside) == []
    far = L.Point(coords=[9.0] + [0.0] * (model.latent_dim - 1), pitch=110)
    text = " ".join(L.point_warnings(model, far))
    assert "pitch 110" in text and "pc1=9.00" in text


def test_history_and_variations(model):
    h = L.History()
    d = model.latent_dim
    a, b = L.Point(coords=[0.0] * d), L.Point(coords=[1.0] * d)
    h.push(a)
    h.push(a)  # repeated points are stored once
    h.push(b)
    assert h.undo().coords == b.coords and h.undo().coords == a.coords and h.undo() is None
    v1 = L.variations(model, a, 3, 0.5, seed=7)
    v2 = L.variations(model, a, 3, 0.5, seed=7)
    assert [p.coords for p in v1] == [p.coords for p in v2]
    spread = np.std(np.array([p.coords for p in v1]))
    assert 0.2 < spread < 1.0
    assert L.variations(model, a, 3, 0.0, seed=7)[0].coords == pytest.approx(a.coords)


def test_uploads_refused(model):
    from synth.errors import SynthStudioError

    with pytest.raises(SynthStudioError, match="empty"):
        L.encode_upload(model, b"", "x.wav")
    silent = io.BytesIO()
    sf.write(silent, np.zeros(8000, dtype=np.float32), 16000, format="WAV")
    with pytest.raises(SynthStudioError, match="silent"):
        L.encode_upload(model, silent.getvalue(), "quiet.wav")
    long = io.BytesIO()
    sf.write(long, np.full(16000 * 31, 0.1, dtype=np.float32), 16000, format="WAV")
    with pytest.raises(SynthStudioError, match="too long"):
        L.encode_upload(model, long.getvalue(), "long.wav")


def test_cli_has_app_command():
    from typer.testing import CliRunner

    from studio.cli import app

    result = CliRunner().invoke(app, ["app", "--help"])
    assert result.exit_code == 0 and "Streamlit" in result.output


# -- corpus anchors, the latent map, paths, vocoders ------------------------------------------------
def test_corpus_instruments_are_anchors_and_the_latent_map_shows(at):
    from latent.atlas import atlas_path

    if not atlas_path(MODEL).exists():
        pytest.skip("the bundled model has no atlas")
    corpus = [k for k in at.session_state.anchors if k.startswith("corpus: ")]
    assert len(corpus) >= 16
    assert all(at.session_state[f"corner_{i}"].startswith("corpus: ") for i in range(4))
    options = at.selectbox(key="corner_0").options
    assert set(corpus) <= set(options)
    target = corpus[-1]
    at.selectbox(key="corner_0").set_value(target).run()
    at.slider(key="pad_x").set_value(0.0).run()
    at.slider(key="pad_y").set_value(0.0).run()
    anchor = at.session_state.anchors[target]
    got = [at.session_state[f"lat_pc{k}"] for k in range(1, len(anchor) + 1)]
    assert got == pytest.approx(anchor, abs=2e-3)
    assert not at.exception and not at.error
    assert len(at.image) >= 3  # the pad, the sound's picture and the latent map


def test_drawn_path_renders_as_one_sound(at):
    at.slider(key="pad_x").set_value(0.0).run()
    at.slider(key="pad_y").set_value(0.0).run()
    at.button(key="path_add").click().run()
    at.slider(key="pad_x").set_value(1.0).run()
    at.button(key="path_add").click().run()
    at.slider(key="pad_y").set_value(1.0).run()
    at.button(key="path_add").click().run()
    assert at.session_state.path == [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)]
    at.number_input(key="path_seconds").set_value(2.0).run()
    at.button(key="path_render").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    res = at.session_state.path_result
    assert res is not None and len(res.audio) == 2 * res.sample_rate
    assert len(at.get("download_button")) >= 1
    at.button(key="path_clear").click().run()
    assert at.session_state.path == [] and at.session_state.path_result is None
    at.button(key="path_add").click().run()
    assert at.button(key="path_render").disabled  # one point is not a path
    assert at.session_state.path_result is None and not at.exception


def test_path_starts_at_its_first_point_and_ends_at_its_last(model):
    """A two-point path is the first point's note at its start and the last point's at its end
    (equal-power fades: the gains there are 1 and 0)."""
    corners = torch.zeros(4, model.latent_dim)
    corners[0, 0], corners[3, 0] = -2.0, 2.0  # top-left and bottom-right: far apart on pc1
    point = L.Point(coords=[0.0] * model.latent_dim, pitch=60, velocity=100, duration=1.0)
    res = L.render_pad_path(model, corners, [(0.0, 0.0), (1.0, 1.0)], point, seconds=1.0)
    sr = res.sample_rate
    assert len(res.audio) == sr and res.picture[:4] == b"\x89PNG" and res.wav[:4] == b"RIFF"

    def note(x, y):
        p = L.Point(coords=L.pad_coords(corners, x, y).tolist(), pitch=60, velocity=100,
                    duration=1.0)
        z = L.point_latent(model, p, {})
        with torch.no_grad():
            return model.decode(z[None], L.Conditions.note(60.0, 100.0, duration=1.0))[0].numpy()

    first, last = note(0.0, 0.0), note(1.0, 1.0)
    head, tail = slice(0, sr // 50), slice(sr - sr // 4, sr - sr // 10)
    err = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))  # noqa: E731
    assert err(res.audio[head], first[head]) < 0.02

    def shape(x):  # level-free magnitude spectrum (the fades change the level, not the timbre)
        m = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        return m / np.linalg.norm(m)

    near_last = np.linalg.norm(shape(res.audio[tail]) - shape(last[tail]))
    near_first = np.linalg.norm(shape(res.audio[tail]) - shape(first[tail]))
    assert near_last < 0.5 * near_first
    with pytest.raises(L.SynthStudioError, match="two points"):
        L.render_pad_path(model, corners, [(0.5, 0.5)], point)


def test_latent_map_picture_without_and_with_an_atlas(model):
    from latent.atlas import Atlas

    anchors = {f"a{i}": [float(i)] * model.latent_dim for i in range(4)}
    names = list(anchors)
    plain = L.latent_map_picture(model, None, anchors, names, [0.0] * model.latent_dim)
    atlas = Atlas(["x", "y"], ["guitar", "organ"], [24, 16],
                  torch.randn(2, model.latent_dim), [3, 3])
    rich = L.latent_map_picture(model, atlas, anchors, names, [0.0] * model.latent_dim,
                                path=[[0.0] * model.latent_dim, [1.0] * model.latent_dim])
    assert plain[:4] == rich[:4] == b"\x89PNG" and plain != rich


def test_vocoder_choice_for_a_mel_generator(tmp_path, monkeypatch):
    from synth.checkpoint import save_model
    from synth.registry import build

    monkeypatch.setenv("SYNTHSTUDIO_MODELS", str(tmp_path))
    torch.manual_seed(0)
    vae = build("vae", debug=True).eval()
    save_model(build("istft", debug=True), tmp_path / "tiny-istft.safetensors")
    assert L.vocoder_choices(vae) == ["griffinlim", "tiny-istft"]  # not istft-gm: another spec
    assert "istft-gm" in L.vocoder_choices(L.load_generator("vae-gm"))  # the bundled one fits it
    assert L.vocoder_choices(L.load_generator(MODEL)) == []  # DDSP makes audio itself
    other = L.with_vocoder(vae, "tiny-istft")
    assert other is not vae and other.vocoder.kind == "istft" and vae.vocoder.kind == "griffinlim"
    assert L.with_vocoder(vae, "griffinlim") is vae
    z = torch.zeros(1, vae.latent_dim)
    cond = L.Conditions.note(60.0, 100.0, duration=0.5)
    with torch.no_grad():
        a, b = vae.decode(z, cond), other.decode(z, cond)
    assert a.shape == b.shape and not torch.allclose(a, b)


def test_pad_fit_mixes_the_corners_sound_not_their_latents():
    """With the pad's fit on (the VAE), a pad point is the latent whose note is closest to the
    bilinear mix of the corners' log-mels: closer to it than the straight mix, and a corner is
    still the corner itself."""
    from latent.interpolate import bilinear, supports_melfit
    from synth.registry import build

    torch.manual_seed(0)
    vae = build("vae", debug=True).eval()
    assert supports_melfit(vae) and not supports_melfit(L.load_generator(MODEL))
    g = torch.Generator().manual_seed(5)
    corners = L.clamp_coords(vae, torch.randn(4, vae.latent_dim, generator=g))
    note = L.Point(coords=[], pitch=62, velocity=100)
    torch.testing.assert_close(L.pad_coords(corners, 1.0, 1.0, (vae, note)), corners[3])
    fitted = L.pad_coords(corners, 0.3, 0.6, (vae, note))
    straight = L.pad_coords(corners, 0.3, 0.6)
    cond = L.Conditions.note(62.0, 100.0)
    with torch.no_grad():
        mels = vae.decode_mel(vae.from_pca(corners), cond.expand(4))
        target = torch.einsum("k,kmf->mf", bilinear(torch.eye(4), 0.3, 0.6), mels).exp()

    @torch.no_grad()
    def err(coords):
        mel = vae.decode_mel(vae.from_pca(coords[None]), cond).exp()[0]
        return float((mel - target).square().sum() / target.square().sum())

    assert err(fitted) < 0.9 * err(straight), (err(fitted), err(straight))


def test_app_pad_fit_switch_for_the_vae(at):
    at.selectbox(key="model").set_value("vae-gm").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.toggle(key="pad_fit").value  # on by default for the VAE
    at.slider(key="pad_x").set_value(0.3).run()
    fitted = [at.session_state[f"lat_pc{k}"] for k in (1, 2, 3)]
    at.toggle(key="pad_fit").set_value(False).run()
    straight = [at.session_state[f"lat_pc{k}"] for k in (1, 2, 3)]
    expected = L.pad_coords(torch.tensor([at.session_state.anchors[at.session_state[f"corner_{i}"]]
                                          for i in range(4)]), 0.3, 0.5)
    assert straight == pytest.approx(expected[:3].tolist(), abs=2e-3)
    assert not at.exception and fitted != pytest.approx(straight, abs=1e-3)
    at.button(key="render").click().run()
    assert not at.exception and not at.error and len(_audio(at)) == 1
    at.selectbox(key="model").set_value(MODEL).run()
    assert "pad_fit" not in [t.key for t in at.toggle]  # DDSP: no fitted mixes


def test_upload_refinement_moves_the_anchor_toward_the_sound(model, at):
    """A DDSP upload with refine N: the anchor is the recording's refined latent (the
    analysis-by-synthesis of `render --resynth --refine`), not the encoder's; the app offers the
    step count for DDSP models."""
    from synth.ddsp_play import RefineOptions, recording_latent

    sr = model.sample_rate
    t = np.arange(sr) / sr
    tone = sum(0.2 / k * np.sin(2 * np.pi * k * 196.0 * t) for k in range(1, 6)) * np.exp(-2 * t)
    buf = io.BytesIO()
    sf.write(buf, tone.astype(np.float32), sr, format="WAV", subtype="FLOAT")
    plain = L.encode_upload(model, buf.getvalue(), "g.wav")
    refined = L.encode_upload(model, buf.getvalue(), "g.wav", refine=3)
    z = recording_latent(model, torch.from_numpy(tone).float(), RefineOptions(steps=3))
    assert torch.allclose(refined, L.clamp_coords(model, model.to_pca(z)[0].float()), atol=1e-5)
    assert not torch.allclose(refined, plain, atol=1e-3)
    assert L.refines_uploads(model) and at.number_input(key="upload_refine").value == 30
