"""RIFF sampler chunks: written by our writer, read back by wavinfo and by hand."""

import struct

import numpy as np
import pytest
import soundfile as sf
import wavinfo

from studio.pack.riff import (InstrumentChunk, SamplerChunk, parse_inst, parse_smpl, read_chunks,
                              write_sampler_wav)
from synth.audio import to_wav_bytes
from synth.errors import ConfigError, SynthStudioError


def tone(n=4000, sr=48000):
    t = np.arange(n) / sr
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def walk(path):
    """Independent struct-level walk of a RIFF file: [(id, offset, size)]."""
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
    pos, out = 12, []
    while pos < len(data):
        ident, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        out.append((ident, pos + 8, size))
        pos += 8 + size + size % 2
    assert pos == len(data)
    return data, out


def test_round_trip_with_wavinfo_struct_and_soundfile(tmp_path):
    audio = tone()
    path = write_sampler_wav(tmp_path / "a.wav", audio, 48000,
                             SamplerChunk(61, 0.25, loop_start=100, loop_end=3999),
                             InstrumentChunk(61, 59, 62, 65, 127, fine_tune=-3, gain=2))
    info = wavinfo.WavInfoReader(str(path))
    assert info.fmt.sample_rate == 48000 and info.fmt.bits_per_sample == 24
    assert info.smpl.midi_note == 61
    assert info.smpl.sample_period_ns == round(1e9 / 48000)
    assert info.smpl.midi_pitch_detune_cents == 2**30  # 0.25 semitone as a 32-bit fraction
    (loop,) = info.smpl.sample_loops
    assert (loop.loop_type, loop.start, loop.end, loop.repetition_count) == (0, 100, 3999, 0)
    inst = [c for c in info.main_list if getattr(c, "ident", None) == b"inst"]
    assert len(inst) == 1 and inst[0].length == 7
    with open(path, "rb") as fh:
        payload = inst[0].read_data(fh)
    assert struct.unpack("<BbbBBBB", payload) == (61, -3, 2, 59, 62, 65, 127)
    data, chunks = walk(path)
    ids = [c[0] for c in chunks]
    assert ids.count(b"smpl") == 1 and ids.count(b"inst") == 1 and b"data" in ids
    _, off, size = next(c for c in chunks if c[0] == b"smpl")
    assert size == 36 + 24
    assert struct.unpack_from("<9I", data, off)[3] == 61
    # The audio is what soundfile writes without the chunks.
    plain = tmp_path / "plain.wav"
    plain.write_bytes(to_wav_bytes(audio, 48000, "PCM_24"))
    got, sr = sf.read(path, dtype="float32")
    ref, _ = sf.read(plain, dtype="float32")
    assert sr == 48000 and sf.info(path).subtype == "PCM_24"
    np.testing.assert_array_equal(got, ref)
    assert np.abs(got - audio).max() <= 0.5 / 2**23 + 1e-9
    # Our own reader agrees.
    ours = dict(read_chunks(path.read_bytes()))
    assert parse_smpl(ours[b"smpl"])["loops"][0]["end"] == 3999
    assert parse_inst(ours[b"inst"])["high_velocity"] == 127


def test_rewrite_replaces_chunks_and_no_loop(tmp_path):
    path = tmp_path / "b.wav"
    write_sampler_wav(path, tone(), 44100, SamplerChunk(40), InstrumentChunk(40))
    write_sampler_wav(path, tone(), 44100, SamplerChunk(41), InstrumentChunk(41))
    _, chunks = walk(path)
    assert [c[0] for c in chunks].count(b"smpl") == 1
    info = wavinfo.WavInfoReader(str(path))
    assert info.smpl.midi_note == 41 and info.smpl.sample_loops == []
    assert info.smpl.sample_period_ns == round(1e9 / 44100)


@pytest.mark.parametrize("make", [
    lambda: SamplerChunk(128), lambda: SamplerChunk(60, 1.0), lambda: SamplerChunk(60, 0, 10, None),
    lambda: SamplerChunk(60, 0, 10, 5), lambda: InstrumentChunk(60, 70, 60),
    lambda: InstrumentChunk(60, fine_tune=80),
])
def test_bad_chunks_are_config_errors(make):
    with pytest.raises(ConfigError):
        make()


def test_loop_past_end_and_unwritable_target_leave_nothing(tmp_path):
    with pytest.raises(ConfigError, match="loop end"):
        write_sampler_wav(tmp_path / "c.wav", tone(100), 48000, SamplerChunk(60, 0, 0, 100))
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    with pytest.raises(SynthStudioError):
        write_sampler_wav(blocker / "d.wav", tone(), 48000, SamplerChunk(60))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]
