"""What the app's pad fit costs per move: a fitted pad point against a straight one and against
rendering the note, on one CPU thread (as `synthstudio app` runs).

For `--moves` seeded pad points between four atlas instruments of the model (the corners the app
starts with are corpus instruments too), times `studio.app_logic.pad_coords` straight (the
bilinear mix) and fitted (`latent.interpolate.mel_mix_fit` at C4, velocity 100), and
`render_point` of the fitted point (a 2 s note, the app's default, without its picture). The
ratio that matters to a player is fit / render: how much longer a pad move takes with the fit
switch on. JSON in bench/results/pad_fit_<kind>.json.

    python -m bench.pad_fit --model vae-gm
    python -m bench.pad_fit --model vqvae-gm     # not in the app; the same fit through its quantiser
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from bench.common import write_result
from latent.atlas import AtlasError, load_atlas
from latent.interpolate import supports_melfit
from studio import app_logic as L


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vae-gm", help="bundled name or checkpoint path with an atlas")
    ap.add_argument("--moves", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default=None, help="result name (default pad_fit_<kind>)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = L.load_generator(args.model)
    if not supports_melfit(model):
        raise SystemExit(f"error: {model.kind} has no fitted pad (melfit needs a mel generator)")
    try:
        atlas = load_atlas(args.model)
    except AtlasError as err:
        raise SystemExit(f"error: {err}") from None
    rng = np.random.default_rng(args.seed)
    coords = L.clamp_coords(model, atlas.coords(model))
    note = L.Point(coords=[], pitch=60, velocity=100, duration=2.0)
    rows = []
    for _ in range(args.moves):
        corners = coords[torch.as_tensor(rng.choice(len(coords), size=4, replace=False))]
        x, y = (float(v) for v in rng.uniform(0.05, 0.95, size=2))
        t0 = time.perf_counter()
        L.pad_coords(corners, x, y)
        t1 = time.perf_counter()
        fitted = L.pad_coords(corners, x, y, (model, note))
        t2 = time.perf_counter()
        point = L.Point(coords=fitted.tolist(), pitch=60, velocity=100, duration=2.0)
        L.render_point(model, point, picture=False)
        t3 = time.perf_counter()
        rows.append({"x": x, "y": y, "straight_s": t1 - t0, "fit_s": t2 - t1, "render_s": t3 - t2})
    med = {k: statistics.median(r[k] for r in rows) for k in ("straight_s", "fit_s", "render_s")}
    summary = {**{f"median_{k}": v for k, v in med.items()},
               "fit_over_render": med["fit_s"] / med["render_s"]}
    print(f"{args.model} ({model.kind}), {args.moves} pad moves on {args.threads} thread(s): "
          f"straight {med['straight_s'] * 1e3:.2f} ms, fitted {med['fit_s']:.3f} s, render "
          f"{med['render_s']:.3f} s (median); the fit is {summary['fit_over_render']:.1f}x the render")
    payload = {"model": args.model, "kind": model.kind, "threads": args.threads, "moves": rows,
               "summary": summary}
    print(f"wrote {write_result(args.name or f'pad_fit_{model.kind}', payload)}")


if __name__ == "__main__":
    main()
