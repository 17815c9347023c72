"""Shared helpers for bench scripts: machine description and JSON results."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What ran the benchmark: CPU model, cores, memory, GPU, library versions."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb,
                            "python": platform.python_version(), "platform": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    body = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
            **payload}
    path.write_text(json.dumps(body, indent=2) + "\n")
    return path


def mel_grid(path: str | Path, rows: list[list[tuple[Any, str]]], vmin: float = -12.0,
             vmax: float = 2.0, width: float = 9.0, fontsize: int = 9) -> Path:
    """Save a grid of log-mel images (one figure row per list, each cell (image (n_mels, F),
    title)) as a PNG, low frequencies at the bottom, one colour scale for all."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(len(r) for r in rows)
    fig, ax = plt.subplots(len(rows), cols, figsize=(width, 2.1 * len(rows)), squeeze=False)
    for k, row in enumerate(rows):
        for j, (img, title) in enumerate(row):
            ax[k, j].imshow(np.asarray(img), origin="lower", aspect="auto", vmin=vmin, vmax=vmax)
            ax[k, j].set_title(title, fontsize=fontsize)
            ax[k, j].set_xticks([])
            ax[k, j].set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return Path(path)
