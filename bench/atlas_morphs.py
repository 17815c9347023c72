"""Morphs between corpus instruments as the app plays them: does the sound's brightness move
monotonically from one corner to the other?

The app's morph pad mixes corner coordinates bilinearly (a straight line between two corners) and
offers every instrument of the model's atlas (`corpus: NAME`, the instrument's mean latent over
its training notes, clamped to the slider ranges) as a corner. This script draws `--pairs` random
pairs of atlas instruments (seeded), decodes `--points` evenly spaced points between the two at
one pitch and velocity (`latent.interpolate.centroid_sweep`, lerp, `--mode slerp` or, for the
VAE, `--mode melfit`), and checks
the whole-note spectral centroid (`latent.interpolate.monotonic_within`: no step back larger than
`--tolerance` of the endpoints' gap). Reported over all pairs and over the pairs whose decoded
endpoints differ by at least 25 % (where the two corners sound clearly apart in brightness;
below that, 5 % of the gap is a few Hz).

`--crossfade` (mel generators): also vocode, for the same pairs, a log-mel crossfade of the two
decoded endpoints ((1 - t) mel_a + t mel_b, what the morph regulariser's "morph/linear" term
asks the decoder for between two notes) and a power-domain mix (log of (1 - t) mel_a^2 + t
mel_b^2, halved), to tell a decoder that leaves its target from a target that is itself not
monotonic.

    python -m bench.atlas_morphs --model vae-gm --pairs 60
    python -m bench.atlas_morphs --model ddsp-gm --pairs 60 --name atlas_morphs_ddsp
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.common import write_result
from latent.atlas import AtlasError, load_atlas
from latent.interpolate import MORPH_MODES, centroid_sweep, monotonic_within, supports_melfit
from studio.app_logic import clamp_coords
from synth.base import Conditions
from synth.catalog import load_named


CROSSFADES = ("logmel_crossfade", "power_crossfade")


def crossfades(model, a: torch.Tensor, b: torch.Tensor, cond: Conditions, n: int) -> dict[str, list[float]]:
    """Centroids (Hz) of the vocoded log-mel and power-domain crossfades of two latents' decoded
    log-mels ((1, n_mels, F) natural-log magnitude each), n points each."""
    from synth.data.descriptors import spectral_centroid

    if not hasattr(model, "decode_mel"):
        raise SystemExit(f"error: --crossfade needs a mel generator, not {model.kind}")
    mel_a, mel_b = model.decode_mel(a, cond), model.decode_mel(b, cond)
    out = {}
    for key in CROSSFADES:
        mels = []
        for t in torch.linspace(0, 1, n).tolist():
            if key == "logmel_crossfade":
                mels.append((1 - t) * mel_a + t * mel_b)
            else:
                mels.append(0.5 * torch.log((1 - t) * torch.exp(2 * mel_a) + t * torch.exp(2 * mel_b)))
        audio = torch.cat([model.vocode(m) for m in mels]).cpu().numpy()
        out[key] = [spectral_centroid(x, model.sample_rate) for x in audio]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="bundled name or checkpoint path with an atlas")
    ap.add_argument("--pairs", type=int, default=60)
    ap.add_argument("--points", type=int, default=9)
    ap.add_argument("--pitch", type=float, default=60.0)
    ap.add_argument("--velocity", type=float, default=100.0)
    ap.add_argument("--mode", default="lerp", choices=MORPH_MODES)
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crossfade", action="store_true",
                    help="mel generators: also the endpoints' log-mel and power crossfades")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default=None, help="result name (default atlas_morphs_<kind>)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_named(args.model)
    if args.mode == "melfit" and not supports_melfit(model):
        raise SystemExit(f"error: --mode melfit needs a mel generator (VAE, VQ-VAE), not {model.kind}")
    try:
        atlas = load_atlas(args.model)
    except AtlasError as err:
        raise SystemExit(f"error: {err}") from None
    latents = model.from_pca(clamp_coords(model, atlas.coords(model)))       # (N, D)
    rng = np.random.default_rng(args.seed)
    n = len(atlas.names)
    chosen: set[tuple[int, int]] = set()
    while len(chosen) < min(args.pairs, n * (n - 1) // 2):
        i, j = sorted(rng.choice(n, size=2, replace=False).tolist())
        chosen.add((i, j))
    cond = Conditions(pitch=torch.tensor([args.pitch]), velocity=torch.tensor([args.velocity]))
    start = time.perf_counter()
    sweeps = []
    with torch.no_grad():  # melfit takes its own gradients
        for i, j in sorted(chosen):
            values = centroid_sweep(model, latents[i:i + 1], latents[j:j + 1], cond,
                                    n=args.points, mode=args.mode)
            lo, hi = sorted((values[0], values[-1]))
            row = {"instruments": [atlas.names[i], atlas.names[j]], "centroid_hz": values,
                   "wide": hi >= 1.25 * lo, "monotonic": monotonic_within(values, args.tolerance)}
            if args.crossfade:
                for key, c in crossfades(model, latents[i:i + 1], latents[j:j + 1], cond,
                                         args.points).items():
                    row[key] = {"centroid_hz": c, "monotonic": monotonic_within(c, args.tolerance)}
            sweeps.append(row)
    wide = [s for s in sweeps if s["wide"]]
    frac = lambda rows: float(np.mean([s["monotonic"] for s in rows])) if rows else float("nan")  # noqa: E731
    summary = {"pairs": len(sweeps), "monotonic_fraction": frac(sweeps), "wide_pairs": len(wide),
               "wide_monotonic_fraction": frac(wide)}
    if args.crossfade:
        for key in CROSSFADES:
            summary[f"{key}_wide_monotonic_fraction"] = float(np.mean([s[key]["monotonic"] for s in wide])) if wide else float("nan")
            print(f"{key} of the decoded endpoints: monotonic in "
                  f"{summary[f'{key}_wide_monotonic_fraction']:.2f} of the {len(wide)} wide pairs")
    print(f"{args.model} ({args.mode}, MIDI {args.pitch:g}, velocity {args.velocity:g}): "
          f"monotonic within {args.tolerance:.0%} in {summary['monotonic_fraction']:.2f} of "
          f"{len(sweeps)} atlas pairs; {summary['wide_monotonic_fraction']:.2f} of the "
          f"{len(wide)} whose decoded endpoints differ by 25 %")
    for s in sweeps:
        if not s["monotonic"] and s["wide"]:
            print("  miss:", " -> ".join(s["instruments"]), [round(v) for v in s["centroid_hz"]])
    payload = {"model": args.model, "kind": model.kind, "mode": args.mode, "pitch": args.pitch,
               "velocity": args.velocity, "tolerance": args.tolerance, "summary": summary,
               "sweeps": sweeps, "seconds": time.perf_counter() - start}
    print(f"wrote {write_result(args.name or f'atlas_morphs_{model.kind}', payload)}")


if __name__ == "__main__":
    main()
