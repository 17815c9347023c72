"""Run under torchrun (2 ranks, gloo): each rank feeds its half of a seeded batch to an
EMACodebook for a few updates (k-means init, EMA moves, a dead-code restart) and saves its final
codebook to OUT/rank{r}.pt. tests/test_vqvae.py compares the ranks with each other and with one
process fed the whole batch."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from synth.vqvae import EMACodebook  # noqa: E402

SIZE, DIM, BATCH, FRAMES, STEPS = 8, 3, 6, 5, 4


def batches() -> list[torch.Tensor]:
    """STEPS batches (BATCH, DIM, FRAMES), the same on every rank; later ones drift so some codes
    go unused and are restarted."""
    g = torch.Generator().manual_seed(0)
    return [torch.randn(BATCH, DIM, FRAMES, generator=g) + 3.0 * step for step in range(STEPS)]


def run(codebook: EMACodebook, rank: int, world: int) -> EMACodebook:
    torch.manual_seed(123)  # the same RNG stream on every rank and in the single process
    per = BATCH // world
    for z in batches():
        codebook(z[rank * per:(rank + 1) * per], update=True)
    return codebook


def new_codebook() -> EMACodebook:
    torch.manual_seed(7)
    return EMACodebook(SIZE, DIM, decay=0.5, restart_threshold=1.0, kmeans_iters=3)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    book = run(new_codebook(), rank, world)
    torch.save({k: v.clone() for k, v in book.state_dict().items()}, out / f"rank{rank}.pt")
    dist.destroy_process_group()
