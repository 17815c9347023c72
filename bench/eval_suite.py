"""Time `synthstudio eval` end to end and record its stages.

    python -m bench.eval_suite --n 1000            # = synthstudio eval --models all --n 1000

Runs the real command in a subprocess (the bundled generators, the bundled classifier, the corpus's
training notes as the reference), measures its wall time, and reads the stage timings the report
carries (`latent.evaluate`: real-note features, generated-set features, metrics). Issue 7's goal:
the metric computation after generation (generated features + metrics, with the training
features cached) under 5 minutes for 1,000 samples per model on a 2-core CPU. The first run on a
corpus also embeds every training note once (cached under <corpus>/eval_cache/); the JSON says
whether this run found that cache. Writes bench/results/eval_suite.json with the report's rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import write_result

GOAL_S = 300.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="all")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--corpus", default="data/gm")
    ap.add_argument("--out", default="out/eval")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cache = Path(args.corpus) / "eval_cache"
    cached_before = sorted(p.name for p in cache.glob("*.npy")) if cache.exists() else []
    cmd = [sys.executable, "-m", "studio.cli", "eval", "--models", args.models, "--n", str(args.n),
           "--corpus", args.corpus, "--out", args.out, "--seed", str(args.seed)]
    print("$ " + " ".join(cmd[2:]), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    report = json.loads((Path(args.out) / "report.json").read_text())
    t = report["timing_s"]
    after_generation = t["generated_features"] + t["metrics"]
    payload = {
        "command": "synthstudio " + " ".join(cmd[3:]), "n_per_model": args.n,
        "models": report.get("models"), "wall_s": wall,
        "stages_s": {**t, "generation_and_loading": wall - t["total"]},
        "after_generation_s": after_generation, "goal_s": GOAL_S,
        "ratio_to_goal": after_generation / GOAL_S,
        "training_features_cached_before": bool(cached_before),
        "n_train": report["n_train"], "n_test": report["n_test"],
        "rows": report["rows"], "separation": report["separation"],
    }
    path = write_result("eval_suite", payload)
    print(f"wall {wall:.0f} s; real features {t['real_features']:.0f} s "
          f"({'cached' if cached_before else 'first run: embedded and cached'}); after generation "
          f"{after_generation:.0f} s (goal {GOAL_S:.0f} s); wrote {path}")


if __name__ == "__main__":
    main()
