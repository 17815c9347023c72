"""Train the additive debug model on `NoteDataset` (test helper for tests/test_train.py).

Runs unchanged as a plain script or under ``python -m torch.distributed.run``. With
``--rank-weights DIR`` every rank writes its final weights to ``DIR/rank{RANK}.safetensors``;
``--also-two-phase`` then trains the two-phase variant too (``DIR/two-phase-rank{RANK}...``),
re-creating the process group, to cover DDP with unused parameters in one launch.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from common import NoteDataset, make_config, make_model
from synth.checkpoint import state_tensors
from synth.train import Trainer


def main() -> None:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--checkpoint-every", type=int, default=5)
    p.add_argument("--items", type=int, default=24)
    p.add_argument("--item-delay", type=float, default=0.0)
    p.add_argument("--sgd", action="store_true")
    p.add_argument("--grad-clip", type=float, default=1.0, help="0 turns clipping off")
    p.add_argument("--rank-weights", default=None)
    p.add_argument("--also-two-phase", action="store_true")
    args = p.parse_args()

    runs = [(args.out, "", make_model(seed=0, sgd=args.sgd))]
    if args.also_two_phase:
        runs.append((f"{args.out}-two-phase", "two-phase-", make_model(seed=0, two_phase=True)))
    for out, prefix, model in runs:
        config = make_config(out, steps=args.steps, batch_size=args.batch_size,
                             checkpoint_every=args.checkpoint_every, grad_clip=args.grad_clip or None)
        Trainer(model, NoteDataset(n=args.items, delay=args.item_delay), config).fit()
        if args.rank_weights:
            Path(args.rank_weights).mkdir(parents=True, exist_ok=True)
            rank = os.environ.get("RANK", "0")
            path = Path(args.rank_weights) / f"{prefix}rank{rank}.safetensors"
            save_file(state_tensors(model), str(path))


if __name__ == "__main__":
    main()
