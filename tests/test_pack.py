"""Sample packs: names, zones, SFZ (parsed by sfzen), DecentSampler XML, idempotence, errors."""

import csv
import hashlib
import json
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
import sfzen
import soundfile as sf
import torch
import wavinfo
from typer.testing import CliRunner

from studio.pack import PackSpec, build_pack, note_name, sample_name, sanitize
from studio.pack import build as pack_build
from studio.pack.build import inside, key_zones, region_latents, velocity_layers
from studio.pack.spec import Region
from synth.checkpoint import load_model, save_model
from synth.errors import ConfigError, SynthStudioError
from synth.registry import build


@pytest.fixture(scope="module")
def ddsp_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "tiny-ddsp.safetensors"
    save_model(build("ddsp", debug=True), path)
    return path


@pytest.fixture(scope="module")
def additive_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "tiny-add.safetensors"
    save_model(build("additive", debug=True), path)
    return path


def small_spec(model, out, **kw):
    data = {"name": "Test Pack", "models": [str(model)], "out": str(out),
            "keys": {"low": 48, "high": 54, "step": 3}, "velocities": [64, 127],
            "round_robins": 2, "duration": 0.3, "region": {"kind": "random", "count": 1}}
    data.update(kw)
    return PackSpec.from_dict(data)


@pytest.fixture(scope="module")
def pack(ddsp_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("pack") / "out"
    return build_pack(small_spec(ddsp_path, out), progress=False)


def digest_tree(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# -- names and zones ----------------------------------------------------------------------------
def test_names_follow_the_convention_and_cannot_escape(tmp_path):
    assert note_name(48) == "C3" and note_name(61) == "C#4" and note_name(0) == "C-1"
    assert sample_name("My Pack!", "glass keys", 48, 100, 1) == \
        "My-Pack_glass-keys_C3_m48_v100_rr1.wav"
    evil = sample_name("../../etc", "a/b\\c_d", 61, 1, 2)
    assert "/" not in evil and "\\" not in evil and ".." not in evil
    assert set(evil) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-#.")
    assert evil.count(".") == 1 and evil.endswith(".wav")
    assert sanitize("") == "x" and sanitize("...") == "x" and sanitize("é") == "x"
    assert inside(tmp_path, evil).parent == tmp_path.resolve()
    with pytest.raises(SynthStudioError):
        inside(tmp_path, "../x.wav")


def test_zones_reach_halfway_and_velocity_layers_tile():
    assert key_zones([48, 51, 54], 3) == [(48, 47, 49), (51, 50, 52), (54, 53, 55)]
    assert key_zones([48, 50], 2) == [(48, 47, 48), (50, 49, 50)]
    assert key_zones([0, 127], 127)[0][1] == 0 and key_zones([0, 127], 127)[-1][2] == 127
    assert velocity_layers([64, 127]) == [(64, 1, 64), (127, 65, 127)]
    assert velocity_layers([100]) == [(100, 1, 127)]


def test_regions_interpolate_in_pca_space(additive_path):
    model = load_model(additive_path).eval()
    corners = [[1, 0], [0, 1], [-1, 0], [0, -1]]
    xy = Region(kind="xy", anchors=corners, x=0.0, y=0.0)
    (z,) = region_latents(model, xy, 0)
    torch.testing.assert_close(model.to_pca(z[None])[0], torch.tensor([1.0, 0, 0, 0]))
    (mid,) = region_latents(model, Region(kind="xy", anchors=corners, x=0.5, y=0.5), 0)
    torch.testing.assert_close(model.to_pca(mid[None])[0], torch.zeros(4), atol=1e-6, rtol=0)
    path = region_latents(model, Region(kind="path", anchors=[[2, 0], [0, 2]], steps=3), 0)
    ends = model.to_pca(torch.stack([path[0], path[-1]]))
    torch.testing.assert_close(ends, torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0]]))
    assert model.to_pca(path[1][None])[0].norm() == pytest.approx(2.0, rel=1e-5)  # slerp
    straight = region_latents(model, Region(kind="path", anchors=[[2, 0], [0, 2]], steps=3,
                                            morph="lerp"), 0)
    torch.testing.assert_close(model.to_pca(straight[1][None])[0], torch.tensor([1.0, 1.0, 0, 0]),
                               atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="region morph"):
        Region(kind="path", anchors=[[2, 0], [0, 2]], morph="cubic").validate()
    a = region_latents(model, Region(kind="random", count=3, seed=4), 0)
    b = region_latents(model, Region(kind="random", count=3, seed=4), 0)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], a[1])
    coords = model.to_pca(torch.stack(a))
    assert (coords >= model.latent_low - 1e-5).all() and (coords <= model.latent_high + 1e-5).all()


def test_melfit_regions_fit_the_anchors_sound(additive_path):
    """`morph: melfit` (the VAE): the path's ends are its anchors, its middle is the fitted
    latent (nearer the anchors' log-mel crossfade at C4 than the straight mix); a model that
    cannot fit is a one-line error."""
    from latent.interpolate import mel_mix_fit
    from synth.base import Conditions

    torch.manual_seed(0)
    vae = build("vae", debug=True).eval()
    anchors = [[1.5, 0.0], [0.0, 1.5]]
    path = region_latents(vae, Region(kind="path", anchors=anchors, steps=3, morph="melfit"), 0)
    line = region_latents(vae, Region(kind="path", anchors=anchors, steps=3, morph="lerp"), 0)
    torch.testing.assert_close(path[0], line[0])
    torch.testing.assert_close(path[2], line[2])
    ends = torch.stack([path[0], path[2]])
    expected = mel_mix_fit(vae, ends, torch.tensor([[0.5, 0.5]]), Conditions.note(60.0, 100.0))[0]
    torch.testing.assert_close(path[1], expected)
    assert not torch.allclose(path[1], line[1], atol=1e-3)
    (xy,) = region_latents(vae, Region(kind="xy", anchors=[[1, 0], [0, 1], [-1, 0], [0, -1]],
                                       x=0.0, y=0.0, morph="melfit"), 0)
    torch.testing.assert_close(vae.to_pca(xy[None])[0, :2], torch.tensor([1.0, 0.0]), atol=1e-5, rtol=0)
    with pytest.raises(SynthStudioError, match="melfit needs"):
        region_latents(load_model(additive_path).eval(),
                       Region(kind="path", anchors=anchors, steps=3, morph="melfit"), 0)


# -- the pack -----------------------------------------------------------------------------------
def test_sfz_parses_with_sfzen_and_points_at_the_right_files(pack):
    (sfz_path,) = pack.out.glob("*.sfz")
    sfz = sfzen.SFZ(str(sfz_path))
    assert sfz.errors == []
    regions = list(sfz.regions())
    assert len(regions) == 3 * 2 * 2 == len(pack.samples)
    for region in regions:
        sample = region.opcode("sample")
        assert sample.exists(), sample.value
        path = Path(sample.abspath)
        midi = int(path.stem.split("_m")[1].split("_")[0])
        assert region.pitch_keycenter == midi
        assert region.lokey <= midi <= region.hikey
        smpl = wavinfo.WavInfoReader(str(path)).smpl
        assert smpl.midi_note == midi
        assert region.seq_length == 2 and region.seq_position in (1, 2)
        vel = int(path.stem.split("_v")[1].split("_")[0])
        assert region.lovel <= vel <= region.hivel


def test_dspreset_is_xml_with_the_mapping(pack):
    (preset,) = pack.out.glob("*.dspreset")
    root = ET.parse(preset).getroot()
    assert root.tag == "DecentSampler"
    samples = root.findall("./groups/group/sample")
    assert len(samples) == len(pack.samples)
    for group in root.findall("./groups/group"):
        assert group.get("seqMode") == "round_robin" and group.get("seqLength") == "2"
    rows = {r["file"]: r for r in pack.samples}
    for s in samples:
        row = rows[s.get("path")]
        assert (pack.out / s.get("path")).is_file()
        assert int(s.get("rootNote")) == row["pitch"]
        assert (int(s.get("loNote")), int(s.get("hiNote"))) == (row["lokey"], row["hikey"])
        assert (int(s.get("loVel")), int(s.get("hiVel"))) == (row["lovel"], row["hivel"])
        assert int(s.get("seqPosition")) == row["seq_position"]


def test_wavs_metadata_report_and_zip(pack):
    row = pack.samples[0]
    path = pack.out / row["file"]
    info = sf.info(path)
    assert info.samplerate == 48000 and info.subtype == "PCM_24"
    audio, _ = sf.read(path)
    assert abs(abs(audio).max() - 10 ** (-1 / 20)) < 1e-3  # peak -1 dBFS
    assert abs(audio[0]) < 0.05  # faded in
    side = json.loads(path.with_suffix(".json").read_text())
    for key in ("model", "model_hash", "seed", "latent", "pitch", "velocity", "descriptors",
                "originality"):
        assert key in side
    assert len(side["latent"]) == 4 and "centroid_hz" in side["descriptors"]
    meta = json.loads((pack.out / "metadata.json").read_text())
    assert len(meta["samples"]) == len(pack.samples)
    with open(pack.out / "metadata.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(pack.samples)
    report = (pack.out / "report.md").read_text()
    assert "0-4000 Hz" in report and "not measured" in report and "diversity" in report
    assert (pack.out / "contact_sheet.png").read_bytes()[:4] == b"\x89PNG"
    assert pack.diversity is not None and pack.diversity > 0
    names = zipfile.ZipFile(pack.zip).namelist()
    assert "Test-Pack/" + row["file"] in names and "Test-Pack/Test-Pack_tiny-ddsp.sfz" in names
    assert not any(n.endswith(".zip") for n in names)


def test_rerun_is_idempotent(pack):
    before = digest_tree(pack.out)
    spec = small_spec(pack.samples[0]["model"], pack.out)
    again = build_pack(spec, progress=False)
    assert again.rendered == 0 and again.reused == len(pack.samples)
    assert digest_tree(pack.out) == before


def test_interrupted_run_leaves_complete_files_and_resumes(ddsp_path, tmp_path, monkeypatch):
    spec = small_spec(ddsp_path, tmp_path / "p", round_robins=1)
    real, calls = pack_build.write_sampler_wav, []

    def flaky(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pack_build, "write_sampler_wav", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_pack(spec, progress=False)
    files = [p for p in (tmp_path / "p").rglob("*") if p.is_file()]
    assert sorted(p.suffix for p in files) == [".json"] * 3 + [".wav"] * 3
    assert not any(p.name.startswith(".") for p in files)
    monkeypatch.setattr(pack_build, "write_sampler_wav", real)
    result = build_pack(spec, progress=False)
    assert (result.rendered, result.reused) == (3, 3) and result.zip.exists()


def test_near_duplicate_round_robins_are_dropped(additive_path, tmp_path):
    spec = small_spec(additive_path, tmp_path / "d", round_robins=3, round_robin_spread=0.0,
                      keys={"low": 60, "high": 60, "step": 1}, velocities=[100])
    result = build_pack(spec, progress=False)
    assert len(result.samples) == 1 and len(result.dropped) == 2
    assert not (tmp_path / "d" / "samples" / result.dropped[0]).exists()
    text = next((tmp_path / "d").glob("*.sfz")).read_text()
    assert "seq_length" not in text and text.count("<region>") == 1
    assert "2 round robin(s) closer" in (tmp_path / "d" / "report.md").read_text()


def test_lufs_loop_and_44k(additive_path, tmp_path):
    spec = small_spec(additive_path, tmp_path / "l", normalize="lufs", sample_rate=44100,
                      round_robins=1, velocities=[100], keys={"low": 60, "high": 63, "step": 3},
                      duration=0.2, loop=[0.05, 0.1])
    result = build_pack(spec, progress=False)
    row = result.samples[0]
    assert "too short for LUFS" in row["normalization"]
    smpl = wavinfo.WavInfoReader(str(result.out / row["file"])).smpl
    assert [(lp.start, lp.end) for lp in smpl.sample_loops] == [(2205, 4410)]
    assert "loop_start=2205" in next(result.out.glob("*.sfz")).read_text()


# -- specs and the CLI --------------------------------------------------------------------------
@pytest.mark.parametrize("change, needle", [
    ({"velocities": [0]}, "velocities"), ({"sample_rate": 22050}, "sample_rate"),
    ({"bit_depth": 16}, "bit_depth"), ({"keys": {"low": 80, "high": 60}}, "keys"),
    ({"region": {"kind": "xy", "anchors": [[0]]}}, "4 corner"),
    ({"region": {"kind": "blob"}}, "region kind"), ({"normalize": "loud"}, "normalize"),
    ({"colour": "red"}, "unknown pack spec field"), ({"round_robins": 0}, "round_robins"),
    ({"loop": [1, 0.5]}, "loop"), ({"models": []}, "needs models"),
])
def test_bad_specs_are_config_errors(change, needle, tmp_path):
    data = {"name": "p", "models": ["m"], "out": str(tmp_path)}
    data.update(change)
    with pytest.raises(ConfigError, match=needle):
        PackSpec.from_dict(data)


def test_yaml_spec_paths_are_relative_to_the_file(tmp_path, additive_path):
    (tmp_path / "s.yaml").write_text(
        f"name: y\nmodels: [{additive_path}]\nout: built\nkeys: {{low: 60, high: 66, step: 6}}\n"
        "region:\n  kind: anchors\n  anchors: [[0.5, -0.5], [1, 1, 0, 0]]\n  names: [soft, hard]\n")
    spec = PackSpec.load(tmp_path / "s.yaml")
    assert spec.out == str(tmp_path / "built") and spec.region.n_instruments == 2
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid"):
        PackSpec.load(tmp_path / "bad.yaml")


def run_main(monkeypatch, capsys, *args):
    """The console entry point in-process: (exit code, stderr lines)."""
    from studio import cli

    monkeypatch.setattr(sys, "argv", ["synthstudio", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return exc.value.code, err


def test_cli_builds_a_pack_from_flags(additive_path, tmp_path):
    from studio.cli import app

    res = CliRunner().invoke(app, ["pack", "--model", str(additive_path), "--name", "cli",
                                   "--low", "60", "--high", "62", "--step", "2",
                                   "--velocities", "64,127", "--duration", "0.2",
                                   "--out", str(tmp_path / "c"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "c" / "samples").glob("*.wav"))) == 4
    assert (tmp_path / "c" / "cli.zip").exists()


def test_cli_bad_inputs_exit_2_with_one_line(additive_path, tmp_path, monkeypatch, capsys):
    from studio.cli import app

    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    (tmp_path / "bad.yaml").write_text("name: p\nmodels: [m]\nout: o\nvelocities: [300]\n")
    common = ["--low", "60", "--high", "60", "--no-progress"]
    cases = [
        (["--model", "no-such-model", "--out", str(tmp_path / "o1")], "unknown model"),
        (["--model", str(additive_path), "--out", str(blocker / "o2")], "output directory"),
        (["--spec", str(tmp_path / "bad.yaml")], "velocities"),
        (["--spec", str(tmp_path / "missing.yaml")], "not found"),
        (["--model", str(additive_path), "--velocities", "6x", "--out", str(tmp_path / "o3")],
         "--velocities"),
        ([], "--spec FILE or at least one --model"),
    ]
    for args, needle in cases:
        code, err = run_main(monkeypatch, capsys, "pack", *args, *common)
        assert code == 2 and len(err) == 1 and needle in err[0], (args, err)
        res = CliRunner().invoke(app, ["pack", *args, *common])
        assert isinstance(res.exception, SynthStudioError), (args, res.output)
    assert blocker.read_text() == "a file"
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o3").exists()


def test_originality_against_a_procedural_corpus(additive_path, tmp_path):
    from synth.data.procedural import ProceduralOptions, build_procedural

    opts = ProceduralOptions(types=("additive", "saw"), instruments_per_type=1, pitch_low=48,
                             pitch_high=72, pitch_step=2, velocities=(100,), sample_rate=8000,
                             held_seconds=0.25, release_seconds=0.05)
    build_procedural(tmp_path / "corpus", opts, workers=1)
    spec = small_spec(additive_path, tmp_path / "o", round_robins=1, velocities=[100],
                      corpus=str(tmp_path / "corpus"))
    result = build_pack(spec, progress=False)
    assert result.originality is not None and result.originality > 0
    assert all(r["originality"] > 0 for r in result.samples)
    report = (tmp_path / "o" / "report.md").read_text()
    assert "held-out real notes score" in report and "training corpus's per-bin" in report
