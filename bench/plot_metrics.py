"""Plot a training run's loss curves from its metrics.jsonl to a PNG.

    python -m bench.plot_metrics runs/ddsp-gm/metrics.jsonl docs/img/ddsp_loss.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def plot(metrics: Path, out: Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    keys = sorted({k for r in rows for k in r if "/" in k and not k.startswith(("lr/", "grad_norm/"))
                   and not k.startswith("loss/")})
    fig, ax = plt.subplots(figsize=(8, 4))
    for key in keys:
        pts = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    wall = rows[-1].get("wall_time", 0) if rows else 0
    ax.set_title(title or f"{metrics.parent.name}: {rows[-1]['step'] if rows else 0} steps, "
                 f"{wall / 60:.0f} min")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(plot(Path(sys.argv[1]), Path(sys.argv[2])))
