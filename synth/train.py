"""The one `Trainer` for every registered model: phases, DDP, exact resume, checkpoints and logs.

    seed_everything(0)                 # optional: only this makes the model's *init* reproducible
    model = build("additive", debug=True)
    result = Trainer(model, dataset, TrainConfig(steps=1000, out_dir="runs/a")).fit()

Files in `out_dir` (rank 0 writes them): `state.safetensors` (everything a resume needs),
`model.safetensors` (the inference checkpoint, `synth.checkpoint.save_model`, with `steps`), both
written atomically every `checkpoint_every` steps and at the end; `metrics.jsonl` (one JSON object
per `log_every` steps: step, epoch, wall_time, steps_per_s, lr/<phase>, grad_norm/<phase>,
loss/<phase> (the weighted total) and every named loss, rank-averaged).

Distributed. The same script runs unchanged under ``torchrun --nproc_per_node=N``: the Trainer reads
WORLD_SIZE/RANK/LOCAL_RANK, creates the process group (nccl on CUDA, gloo on CPU) unless the caller
already did, runs `training_step` as the forward of a DDP-wrapped adapter (so gradients are
averaged), and destroys the group it created when `fit` returns.

Dataset protocol. Any map-style dataset (``__len__`` and ``__getitem__(index)``, e.g. a
`TensorDataset`) works; items are collated by `collate_fn` (default: torch's `default_collate`;
``named_collate("audio", "pitch")`` turns tuple items into the dict batch models expect) and the
batch goes to ``model.training_step(batch, phase)``. A dataset with per-item randomness (crops,
gain, augmentation) defines ``get_item(index, generator)`` instead: the Trainer passes a
`torch.Generator` seeded from (seed, epoch, index), so an item is the same in every run, on every
rank, after any resume and whatever `num_workers`. Draw all item randomness from it (numpy:
``np.random.default_rng(generator.initial_seed())``), never from the global RNGs.

Data order. Epoch e is a permutation of the dataset seeded by (seed, e). Each step takes the next
``batch_size * world_size`` indices and rank r takes the r-th slice of `batch_size`, so the union of
one step over the ranks is the batch one process with ``batch_size * world_size`` sees. The
incomplete last batch of an epoch is dropped. The position (epoch, batch) is a function of the step.
A dataset with a ``sample_weights`` attribute ((len,) non-negative numbers) is oversampled instead:
epoch e is len(dataset) draws with replacement, seeded the same way (`StepSampler`).

Exact resume. A run killed at any moment and resumed from its last checkpoint reaches the same
weights (bit-identical on CPU) as an uninterrupted run, because everything a step depends on is
saved or derived from (seed, step): weights and every optimizer state tensor; the data position
(from the step); per-item randomness (from (seed, epoch, index)); the learning rate (a function of
the step); the global torch/numpy/python RNGs, re-seeded from (seed, step, rank) before each step's
batch is fetched, so in-model randomness (dropout, noise) is reproducible on every rank without
gathering RNG states; GradScaler state. Rank 0's RNG states are saved and restored as well, so code
after `fit()` sees the same RNG state either way. Model state that must survive a resume has to be a
parameter or persistent buffer. `metrics.jsonl` is cut back to the resumed step, so the log reads
like one run. Nothing is pickled: tensors go into safetensors, the rest into the JSON metadata of
its header, with a checksum of the tensor data; a damaged state raises `CheckpointError`.

AMP (``amp=True``) is active on CUDA only: bf16 autocast where the GPU supports it (no scaler),
otherwise fp16 autocast with one `GradScaler` per phase. On the CPU it is off (with a warning).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save as st_save
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from synth import __version__
from synth.checkpoint import check_file, save_model, state_tensors, unwrap
from synth.config import config_to_dict
from synth.errors import CheckpointError, ConfigError
from synth.fileio import atomic_write_bytes, atomic_write_text
from synth.module import SynthModule

STATE_FILE = "state.safetensors"
MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
STATE_FORMAT = "synthstudio-train-state"
STATE_META_KEY = "synthstudio-train"

#: Process groups this module has created in this process. Each gets its own store prefix: torch
#: names every new default group "0" again after `destroy_process_group`, and a second `fit()` in
#: the same torchrun workers would otherwise read the first group's stale addresses from the store.
_GROUPS_CREATED = itertools.count()


@dataclass
class TrainConfig:
    """Everything a training run needs besides the model and the data.

    `batch_size` is per rank. `seed` fixes data order, per-item randomness and the per-step global RNG
    seeds; it does not touch the model's init (the caller builds the model: call `seed_everything`
    first for a reproducible init). `schedule`: "constant" or "cosine" (to ``min_lr_ratio * lr`` at
    `steps`), both after `warmup_steps` of linear warmup. `progress`: None shows the rich bar only when
    stdout is a TTY. `find_unused_parameters`: None means True when the model has several phases.
    """

    steps: int = 10_000
    batch_size: int = 16
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    amp: bool = False
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 50
    num_workers: int = 0
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    out_dir: str = "runs/train"
    device: str = "auto"
    progress: bool | None = None
    tensorboard: bool = False
    find_unused_parameters: bool | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 0, "steps must be >= 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip must be > 0 or None"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
            (self.log_every >= 1, "log_every must be >= 1"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (self.schedule in ("constant", "cosine"), "schedule must be 'constant' or 'cosine'"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio must be in [0, 1]"),
            (self.device in ("auto", "cpu", "cuda"), "device must be 'auto', 'cpu' or 'cuda'"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"TrainConfig: {message}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        self.out_dir = str(self.out_dir)


@dataclass
class TrainResult:
    """What `Trainer.fit` did. `losses`: the last logged (rank-averaged) values; `wall_time`:
    seconds of this call; `total_wall_time`: across all resumed sessions of the run."""

    steps: int
    losses: dict[str, float]
    wall_time: float
    total_wall_time: float
    resumed_from: int
    out_dir: Path
    state_path: Path
    model_path: Path
    metrics_path: Path


# -- seeds, schedule, data order ----------------------------------------------------------------
def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts, stable across processes and platforms (SHA-256)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def seed_everything(seed: int) -> None:
    """Seed the global torch (all devices), numpy and python RNGs, e.g. before building a model."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def lr_factor(config: TrainConfig, step: int) -> float:
    """Multiplier of each param group's initial lr at 0-based `step`."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine


class StepSampler:
    """Batch sampler over steps `start`..`stop`-1 yielding this rank's ``(index, item_seed)`` keys."""

    def __init__(self, n_items: int, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world_size: int = 1, weights: torch.Tensor | None = None) -> None:
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        if weights is not None:
            weights = torch.as_tensor(weights, dtype=torch.float64).flatten()
            if (len(weights) != n_items or not torch.isfinite(weights).all()
                    or (weights < 0).any() or weights.sum() <= 0):
                raise ConfigError(f"sample weights must be {n_items} finite non-negative numbers "
                                  f"with a positive sum")
        #: Optional (n_items,) draw weights: each epoch is then n_items draws with replacement,
        #: item i drawn with probability weights[i] / weights.sum() (oversampling), the same on
        #: every rank (one generator per epoch) and sharded like the permutation.
        self.weights = weights
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size
        self.steps_per_epoch = n_items // (batch_size * world_size)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"dataset of {n_items} items is smaller than one global batch "
                              f"({batch_size} x {world_size} ranks)")

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of 0-based `step`."""
        return divmod(step, self.steps_per_epoch)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        perm_epoch, perm = -1, []
        for step in range(self.start, self.stop):
            epoch, batch = self.position(step)
            if epoch != perm_epoch:
                g = torch.Generator().manual_seed(derive_seed(self.seed, "perm", epoch))
                if self.weights is None:
                    perm = torch.randperm(self.n_items, generator=g).tolist()
                else:
                    perm = torch.multinomial(self.weights, self.n_items, replacement=True,
                                             generator=g).tolist()
                perm_epoch = epoch
            lo = (batch * self.world_size + self.rank) * self.batch_size
            indices = perm[lo:lo + self.batch_size]
            yield [(i, derive_seed(self.seed, "item", epoch, i)) for i in indices]


class _KeyedDataset(Dataset):
    """Maps a sampler key ``(index, item_seed)`` to ``get_item(index, generator)`` or ``[index]``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.seeded = callable(getattr(dataset, "get_item", None))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, item_seed = key
        if self.seeded:
            return self.dataset.get_item(index, torch.Generator().manual_seed(item_seed))
        return self.dataset[index]


def _collate_named(names: tuple[str, ...], items: list[Any]) -> dict[str, Any]:
    fields = default_collate(items)
    if len(fields) != len(names):
        raise ConfigError(f"named_collate{names}: items have {len(fields)} fields")
    return dict(zip(names, fields))


def named_collate(*names: str) -> Callable[[list[Any]], dict[str, Any]]:
    """A collate_fn turning tuple items (a `TensorDataset`) into a dict batch with these keys."""
    return functools.partial(_collate_named, names)


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)) and not hasattr(x, "_fields"):
        return type(x)(_to_device(v, device) for v in x)
    return x


# -- losses --------------------------------------------------------------------------------------
def weighted_loss(losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """``sum(weights.get(k, 1.0) * v)`` over keys not starting with ``"log/"`` (fp32 scalar)."""
    total = None
    for key, value in losses.items():
        if not isinstance(value, torch.Tensor) or value.ndim != 0:
            raise ConfigError(f"loss {key!r} must be a scalar tensor, got {type(value).__name__} "
                              f"{tuple(getattr(value, 'shape', ()))}")
        if key.startswith("log/"):
            continue
        term = float(weights.get(key, 1.0)) * value.float()
        total = term if total is None else total + term
    if total is None:
        raise ConfigError(f"training_step returned no optimisable loss (keys: {sorted(losses)})")
    return total


class StepModule(nn.Module):
    """Makes ``training_step`` the forward pass, so DDP's forward/backward hooks (gradient
    averaging) run; calling the inner model directly would bypass them."""

    def __init__(self, model: SynthModule) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any, phase: str) -> dict[str, torch.Tensor]:
        return self.model.training_step(batch, phase)


# -- state file (no pickle: tensors in safetensors, the rest JSON) ------------------------------
def _jsonable(value: Any, what: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, what) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _jsonable(v, what) for k, v in value.items()}
    raise CheckpointError(f"cannot store {what} of type {type(value).__name__} without pickling")


def _like(saved: Any, current: Any) -> Any:
    return tuple(saved) if isinstance(current, tuple) and isinstance(saved, list) else saved


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous().clone()


def _optimizer_out(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        state[str(pid)] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}/state/{pid}/{key}"] = _cpu(value)
            else:
                state[str(pid)][key] = _jsonable(value, f"{prefix} state {pid}/{key}")
    groups = []
    for gi, group in enumerate(sd["param_groups"]):
        out = {}
        for key, value in group.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}/group/{gi}/{key}"] = _cpu(value)
            else:
                out[key] = _jsonable(value, f"{prefix} param group {gi}/{key}")
        groups.append(out)
    return tensors, {"state": state, "param_groups": groups}


def _optimizer_in(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                  meta: dict[str, Any]) -> set[str]:
    current = opt.state_dict()["param_groups"]
    if len(meta["param_groups"]) != len(current):
        raise CheckpointError(f"{prefix}: {len(meta['param_groups'])} param groups saved, "
                              f"the optimizer has {len(current)}")
    used: set[str] = set()
    groups = []
    for gi, (saved, cur) in enumerate(zip(meta["param_groups"], current)):
        if saved.get("params") != cur["params"]:
            raise CheckpointError(f"{prefix}: param group {gi} holds other parameters than saved")
        group = {k: _like(v, cur.get(k)) for k, v in saved.items()}
        for name in [n for n in tensors if n.startswith(f"{prefix}/group/{gi}/")]:
            group[name.rsplit("/", 1)[1]] = tensors[name]
            used.add(name)
        groups.append(group)
    state: dict[int, dict[str, Any]] = {int(pid): dict(entry) for pid, entry in meta["state"].items()}
    for name in [n for n in tensors if n.startswith(f"{prefix}/state/")]:
        pid, key = name[len(prefix) + 7:].split("/", 1)
        state.setdefault(int(pid), {})[key] = tensors[name]
        used.add(name)
    opt.load_state_dict({"state": state, "param_groups": groups})
    return used


def _tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def read_train_state(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The metadata and tensors of a training-state file, validated (format and checksum).
    Anything unreadable raises `CheckpointError` naming the path."""
    path = Path(path)
    check_file(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            raw = (fh.metadata() or {}).get(STATE_META_KEY)
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # safetensors raises its own error types for malformed files
        raise CheckpointError(f"unreadable training state {path}: {err}") from None
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file but not a synthstudio training state")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"corrupt metadata in training state {path}") from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a synthstudio training state (format)")
    if meta.get("checksum") != _tensor_checksum(tensors):
        raise CheckpointError(f"corrupt training state {path}: tensor data do not match the checksum")
    return meta, tensors


def _rng_state(device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng/torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng/cuda"] = torch.cuda.get_rng_state(device)
    _, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return tensors, {"numpy": {"keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                               "cached_gaussian": float(cached)},
                     "python": [py_version, list(py_internal), py_gauss]}


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                   device: torch.device) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    if device.type == "cuda" and "rng/cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng/cuda"], device)
    n = meta["numpy"]
    np.random.set_state(("MT19937", np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


# -- the trainer ---------------------------------------------------------------------------------
def _dist_env() -> tuple[int, int, int]:
    """(world_size, rank, local_rank) from an initialised process group or torchrun's env."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    return world, rank, int(os.environ.get("LOCAL_RANK", rank))


def _log_value(value: float, key: str) -> float | None:
    if math.isfinite(value):
        return value
    warnings.warn(f"non-finite {key} = {value}; logged as null", RuntimeWarning, stacklevel=3)
    return None


class Trainer:
    """Trains any `SynthModule` on a map-style dataset (see the module docstring).

    Each step runs the model's phases in order; per phase: zero that optimizer's grads,
    ``losses = training_step(batch, phase)``, backward the weighted sum (``"log/"`` keys excluded),
    clip over that optimizer's parameters, step. Then ``model.on_train_step_end(steps_done)``.
    ``resume=True`` continues from ``out_dir/state.safetensors`` if present; ``resume=False`` starts
    over and overwrites the run's files. Under torchrun only rank 0 logs and writes files.
    """

    def __init__(self, model: SynthModule, dataset: Any, config: TrainConfig,
                 collate_fn: Callable[[list[Any]], Any] | None = None, *, resume: bool = True) -> None:
        model = unwrap(model)
        if not isinstance(model, SynthModule):
            raise ConfigError(f"the Trainer trains SynthModules, got {type(model).__name__}")
        self.model, self.dataset, self.config, self.resume = model, dataset, config, resume
        self.collate_fn = collate_fn if collate_fn is not None else default_collate
        self.out_dir = Path(config.out_dir)
        self.phases = list(model.phases())
        if (not self.phases or len(set(self.phases)) != len(self.phases)
                or any("/" in p for p in self.phases)):
            raise ConfigError(f"phases must be unique names without '/', got {self.phases}")
        self.world_size, self.rank, self.local_rank = _dist_env()
        self.is_main = self.rank == 0
        self.device = self._resolve_device()
        self.model.to(self.device)
        self.optimizers = model.make_optimizers(config.lr, config.betas, config.weight_decay)
        if sorted(self.optimizers) != sorted(self.phases):
            raise ConfigError(f"make_optimizers returned {sorted(self.optimizers)} "
                              f"for phases {self.phases}")
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])
        self.amp_dtype: torch.dtype | None = None
        if config.amp and self.device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif config.amp:
            warnings.warn("amp=True is only active on CUDA; training in float32", RuntimeWarning,
                          stacklevel=2)
        use_scaler = self.amp_dtype == torch.float16
        self.scalers = {p: torch.amp.GradScaler("cuda", enabled=use_scaler) for p in self.phases}
        self.step = 0
        self.last_losses: dict[str, float] = {}
        self._wall_before = 0.0
        self.sampler = self._sampler()  # refuses a dataset smaller than one global batch now

    def _sampler(self) -> StepSampler:
        cfg = self.config
        return StepSampler(len(self.dataset), cfg.batch_size, cfg.seed, self.step, cfg.steps,
                           self.rank, self.world_size,
                           weights=getattr(self.dataset, "sample_weights", None))

    @property
    def state_path(self) -> Path:
        return self.out_dir / STATE_FILE

    def _resolve_device(self) -> torch.device:
        want = self.config.device
        if want == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device='cuda' but CUDA is not available")
        if want == "cpu" or (want == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        index = self.local_rank if self.world_size > 1 else torch.cuda.current_device()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)

    # -- the loop ---------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train to `config.steps` (resuming if allowed) and return what was done."""
        created = False
        if self.world_size > 1 and not dist.is_initialized():
            store, rank, world = next(dist.rendezvous("env://"))
            store = dist.PrefixStore(f"synth-train-{next(_GROUPS_CREATED)}", store)
            kwargs = {"device_id": self.device} if self.device.type == "cuda" else {}
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo", store=store,
                                    rank=rank, world_size=world, **kwargs)
            created = True
        try:
            return self._fit()
        finally:
            if created:
                dist.destroy_process_group()

    def _fit(self) -> TrainResult:
        cfg, start_time = self.config, time.perf_counter()
        if self.resume and self.state_path.exists():
            self.load_state(self.state_path)
        resumed_from = self.step
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for name in (STATE_FILE, MODEL_FILE):  # left by a kill during an atomic write
                for stale in self.out_dir.glob(f".{name}.tmp-*"):
                    stale.unlink(missing_ok=True)
            self._trim_metrics(resumed_from)
        runner: nn.Module = StepModule(self.model)
        if self.world_size > 1:
            find_unused = cfg.find_unused_parameters
            runner = nn.parallel.DistributedDataParallel(
                runner, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=len(self.phases) > 1 if find_unused is None else find_unused)
        self.sampler = self._sampler()
        loader = DataLoader(_KeyedDataset(self.dataset), batch_sampler=self.sampler,
                            collate_fn=self.collate_fn, num_workers=cfg.num_workers,
                            pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "loader")))
        show = self.is_main and (cfg.progress if cfg.progress is not None else sys.stdout.isatty())
        with contextlib.ExitStack() as stack:
            writer = self._tensorboard() if self.is_main else None
            if writer is not None:
                stack.callback(writer.close)
            progress = stack.enter_context(_progress_bar()) if show else None
            task = (progress.add_task("train", total=cfg.steps, completed=self.step, info="")
                    if progress is not None else None)
            self._loop(runner, iter(loader), start_time, writer, progress, task)
        if self.is_main and not (self.out_dir / MODEL_FILE).exists():
            save_model(self.model, self.out_dir / MODEL_FILE, steps=self.step)
        if self.world_size > 1:
            dist.barrier()  # every rank returns only once the final files exist
        wall = time.perf_counter() - start_time
        return TrainResult(steps=self.step, losses=dict(self.last_losses), wall_time=wall,
                           total_wall_time=self._wall_before + wall, resumed_from=resumed_from,
                           out_dir=self.out_dir, state_path=self.state_path,
                           model_path=self.out_dir / MODEL_FILE,
                           metrics_path=self.out_dir / METRICS_FILE)

    def _loop(self, runner: nn.Module, batches: Iterator[Any], start_time: float, writer: Any,
              progress: Any, task: Any) -> None:
        cfg = self.config
        sums: dict[str, torch.Tensor] = {}
        count, tick, tick_step = 0, time.perf_counter(), self.step
        self.model.train()
        while self.step < cfg.steps:
            step = self.step
            # Global RNGs from (seed, step, rank), before the batch is fetched: in-model and
            # plain-dataset randomness is then a pure function of the step on every rank.
            seed = derive_seed(cfg.seed, "step", step, self.rank)
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            batch = _to_device(next(batches), self.device)
            log_now = (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps
            losses, norms = self._step(runner, batch, step, need_norm=log_now)
            self.step += 1
            self.model.on_train_step_end(self.step)
            for key, value in losses.items():
                sums[key] = sums[key] + value if key in sums else value
            count += 1
            if log_now:
                record = self._log(sums, count, norms, tick_step, tick, start_time, writer)
                sums, count, tick, tick_step = {}, 0, time.perf_counter(), self.step
                if task is not None:
                    shown = {k: v for k, v in record.items() if k.startswith("loss/") and v is not None}
                    progress.update(task, info=" ".join(f"{k}={v:.4g}" for k, v in shown.items()))
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save(time.perf_counter() - start_time)
            if task is not None:
                progress.update(task, completed=self.step)

    def _step(self, runner: nn.Module, batch: Any, step: int,
              need_norm: bool) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        factor, weights = lr_factor(self.config, step), self.model.loss_weights()
        logged: dict[str, torch.Tensor] = {}
        norms: dict[str, float] = {}
        for phase in self.phases:
            opt, scaler = self.optimizers[phase], self.scalers[phase]
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * factor
            opt.zero_grad(set_to_none=True)
            autocast = (torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype is not None
                        else contextlib.nullcontext())
            with autocast:
                losses = runner(batch, phase)
            total = weighted_loss(losses, weights)
            scaler.scale(total).backward()
            params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
            if self.config.grad_clip is not None or need_norm:
                scaler.unscale_(opt)
                if self.config.grad_clip is not None:
                    norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
                else:
                    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
                if need_norm:
                    norms[phase] = float(norm)
            scaler.step(opt)
            scaler.update()
            logged[f"loss/{phase}"] = total.detach()
            for key, value in losses.items():
                name = key if "/" in key else f"{phase}/{key}"
                logged[f"{phase}/{key}" if name in logged else name] = value.detach().float()
        return logged, norms

    # -- logging ----------------------------------------------------------------------------
    def _log(self, sums: dict[str, torch.Tensor], count: int, norms: dict[str, float], tick_step: int,
             tick: float, start_time: float, writer: Any) -> dict[str, Any]:
        keys = sorted(sums)
        means = torch.stack([sums[k].float() for k in keys]) / count
        if self.world_size > 1:
            dist.all_reduce(means)
            means /= self.world_size
        now = time.perf_counter()
        record: dict[str, Any] = {
            "step": self.step, "epoch": self.sampler.position(self.step - 1)[0],
            "wall_time": round(self._wall_before + now - start_time, 4),
            "steps_per_s": round((self.step - tick_step) / max(now - tick, 1e-9), 3),
        }
        for phase in self.phases:
            record[f"lr/{phase}"] = self.optimizers[phase].param_groups[0]["lr"]
            if phase in norms:
                record[f"grad_norm/{phase}"] = _log_value(norms[phase], f"grad_norm/{phase}")
        losses = {k: _log_value(v, k) for k, v in zip(keys, means.tolist())}
        record.update(losses)
        self.last_losses = {k: v for k, v in losses.items() if v is not None}
        if self.is_main:
            with open(self.out_dir / METRICS_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, allow_nan=False) + "\n")
            if writer is not None:
                for key, value in record.items():
                    if key != "step" and isinstance(value, (int, float)):
                        writer.add_scalar(key, value, self.step)
        return record

    def _trim_metrics(self, step: int) -> None:
        """Keep only complete log lines up to `step` (all of them gone on a fresh start)."""
        path = self.out_dir / METRICS_FILE
        if not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line + "\n")
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by a kill
        atomic_write_text(path, "".join(kept) if step > 0 else "")

    def _tensorboard(self) -> Any:
        if not self.config.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("tensorboard=True but the tensorboard package is not installed") from None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    # -- checkpoints ------------------------------------------------------------------------
    def save(self, session_wall: float = 0.0) -> None:
        """Write `state.safetensors` then `model.safetensors` atomically (rank 0 only)."""
        if not self.is_main:
            return
        tensors = {f"model/{k}": v for k, v in state_tensors(self.model).items()}
        optim_meta = {}
        for phase, opt in self.optimizers.items():
            t, optim_meta[phase] = _optimizer_out(f"optim/{phase}", opt)
            tensors.update(t)
        rng_tensors, rng_meta = _rng_state(self.device)
        tensors.update(rng_tensors)
        epoch, batch_in_epoch = self.sampler.position(self.step)
        meta = {
            "format": STATE_FORMAT, "version": __version__, "kind": self.model.kind,
            "model_config": config_to_dict(self.model.config), "phases": self.phases,
            "step": self.step, "train_config": config_to_dict(self.config),
            "data": {"epoch": epoch, "batch_in_epoch": batch_in_epoch, "seed": self.config.seed,
                     "batch_size": self.config.batch_size, "world_size": self.world_size,
                     "dataset_len": len(self.dataset)},
            "optimizers": optim_meta,
            "scalers": {p: _jsonable(scaler.state_dict(), "GradScaler state")
                        for p, scaler in self.scalers.items()},
            "rng": rng_meta, "wall_time": self._wall_before + session_wall,
            "last_losses": self.last_losses, "checksum": _tensor_checksum(tensors),
        }
        data = st_save(tensors, metadata={STATE_META_KEY: json.dumps(meta)})
        atomic_write_bytes(self.state_path, data)
        save_model(self.model, self.out_dir / MODEL_FILE, steps=self.step)

    def load_state(self, path: str | os.PathLike) -> None:
        """Restore weights, optimizers, scalers, RNGs and the step from a training-state file."""
        path = Path(path)
        meta, tensors = read_train_state(path)
        try:
            if meta["kind"] != self.model.kind or meta["phases"] != self.phases:
                raise CheckpointError(f"{path} was written for kind {meta['kind']!r} with phases "
                                      f"{meta['phases']}, not {self.model.kind!r} with {self.phases}")
            weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
            try:
                self.model.load_state_dict(weights, strict=True)
            except RuntimeError as err:
                first = str(err).strip().splitlines()[0]
                raise CheckpointError(f"weights in {path} do not fit this model: {first}") from None
            used = {f"model/{k}" for k in weights} | {"rng/torch", "rng/cuda"}
            for phase, opt in self.optimizers.items():
                used |= _optimizer_in(f"optim/{phase}", opt, tensors, meta["optimizers"][phase])
            unknown = sorted(set(tensors) - used)
            if unknown:
                raise CheckpointError(f"{path} holds unexpected tensors: {', '.join(unknown[:5])}")
            for phase, scaler in self.scalers.items():
                if meta["scalers"][phase] and scaler.is_enabled():
                    scaler.load_state_dict(meta["scalers"][phase])
            _set_rng_state(tensors, meta["rng"], self.device)
            self.step = int(meta["step"])
            self._wall_before = float(meta["wall_time"])
            self.last_losses = dict(meta["last_losses"])
            data = meta["data"]
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise CheckpointError(
                f"corrupt training state {path}: {type(err).__name__}: {err}") from None
        now = {"seed": self.config.seed, "batch_size": self.config.batch_size,
               "world_size": self.world_size, "dataset_len": len(self.dataset)}
        changed = [f"{k} {data.get(k)} -> {v}" for k, v in now.items() if data.get(k) != v]
        if changed:
            warnings.warn(f"resuming {path} with a different data setup ({'; '.join(changed)}); "
                          f"the data order will not continue the original run exactly",
                          RuntimeWarning, stacklevel=2)


def _progress_bar() -> Any:
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
