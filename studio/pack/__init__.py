"""Sample packs: playable multisampled instruments rendered from points in a latent space.

- `spec.py`: `PackSpec` (YAML/JSON or CLI flags), validated up front;
- `build.py`: `build_pack(spec) -> PackResult`: render, trim, fade, normalise, write 24-bit WAVs
  with `smpl`/`inst` chunks (`riff.py`), metadata, an SFZ (`sfz.py`), a DecentSampler preset
  (`dspreset.py`), a report with a spectrogram contact sheet (`report.py`) and a zip.
"""

from studio.pack.build import PackResult, build_pack, note_name, sample_name, sanitize
from studio.pack.spec import PackSpec

__all__ = ["PackResult", "PackSpec", "build_pack", "note_name", "sample_name", "sanitize"]
