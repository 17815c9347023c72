"""`synthstudio eval`: generate N notes per model and run the evaluation suite (`latent.evaluate`).

    synthstudio eval --models all --n 1000 --corpus data/gm --out out/eval

Pitches, velocities and families are drawn from the corpus test split (seeded, the same for every
model); each model samples from its prior (`Generator.sample`); audio at another rate is resampled
to the corpus rate. Calibration rows: real test notes (floor), white noise and, per model kind, an
untrained model of the same config (ceilings). The stages are plain functions, tested directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import numpy as np

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from synth.errors import ConfigError, SynthStudioError

console = Console()


def resolve_models(spec: str) -> list[tuple[str, Path]]:
    """'all' (every generator in the catalog) or comma-separated names/paths -> (name, path)."""
    from synth.base import Generator
    from synth.catalog import list_models, resolve_model
    from synth.registry import get_class

    if spec.strip() == "all":
        out = []
        for e in list_models():
            if e.meta is None:
                continue
            try:
                is_gen = issubclass(get_class(e.kind), Generator)
            except SynthStudioError:
                continue
            if is_gen:
                out.append((e.name, e.path))
        if not out:
            raise ConfigError("--models all: no generator checkpoints are installed")
        return out
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ConfigError("--models needs 'all' or a comma-separated list of names")
    return [(Path(n).stem if n.endswith(".safetensors") else n, resolve_model(n)) for n in names]


def draw_conditions(corpus: Any, n: int, seed: int) -> dict[str, np.ndarray]:
    """n (pitch, velocity, family) triples drawn from the test split (with replacement when the
    split is smaller than n), seeded."""
    import numpy as np

    idx = corpus.select(split="test")
    if not idx:
        raise ConfigError(f"{corpus.root}: the corpus has no test notes to draw conditions from")
    pick = np.random.default_rng(seed).choice(idx, n, replace=len(idx) < n)
    rows = [corpus.notes[i] for i in pick]
    return {"pitch": np.array([r["pitch"] for r in rows], float),
            "velocity": np.array([r["velocity"] for r in rows], float),
            "family": np.array([r["family_id"] for r in rows], int)}


def generate(model: Any, conds: dict[str, np.ndarray], seed: int, sample_rate: int,
             duration: float, batch: int = 16,
             progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(N, duration * sample_rate) float32 notes from `model.sample`; batch b uses seed
    seed + b * batch, so the result does not depend on anything but (seed, batch)."""
    import numpy as np
    import torch

    from synth.audio import resample
    from synth.base import Conditions

    n, length = len(conds["pitch"]), int(round(duration * sample_rate))
    out = np.zeros((n, length), np.float32)
    for s in range(0, n, batch):
        sl = slice(s, min(s + batch, n))
        cond = Conditions(pitch=torch.tensor(conds["pitch"][sl], dtype=torch.float32),
                          velocity=torch.tensor(conds["velocity"][sl], dtype=torch.float32),
                          family=torch.tensor(conds["family"][sl], dtype=torch.long),
                          duration=duration)
        with torch.no_grad():
            audio = model.sample(sl.stop - s, cond, seed=seed + s).float().cpu()
        if model.sample_rate != sample_rate:
            audio = resample(audio, model.sample_rate, sample_rate)
        m = min(length, audio.shape[-1])
        out[sl, :m] = audio[:, :m].numpy()
        if progress:
            progress(sl.stop - s)
    return np.clip(np.nan_to_num(out), -1.0, 1.0)


def untrained_like(model: Any, seed: int) -> Any:
    """A freshly initialised model of the same kind and config (seeded): a calibration ceiling."""
    import torch

    from synth.registry import build

    torch.manual_seed(seed)
    return build(model.kind, model.config).eval()


def eval_command(
    models: str = typer.Option("all", help="'all' or comma-separated model names/paths."),
    n: int = typer.Option(1000, help="Notes generated per model."),
    corpus: Path = typer.Option(Path("data/gm"), help="Corpus (train notes: reference; test "
                                "notes: conditions and the floor row)."),
    out: Path = typer.Option(Path("out/eval"), help="Report directory."),
    classifier: str = typer.Option("classifier-gm", help="Classifier checkpoint name or path."),
    seed: int = typer.Option(0), batch_size: int = typer.Option(16),
    untrained: bool = typer.Option(True, help="Add an untrained-model ceiling row per kind."),
    max_reference: int = typer.Option(5000, help="Training notes for k-means bins, KID, PRDC."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not cache training features."),
) -> None:
    """Generate N notes per model and write report.json, report.md and plots to OUT."""
    from latent.eval_report import write_report
    from latent.evaluate import EvalOptions, GeneratedSet, RealSet, evaluate
    from synth.catalog import load_named
    from synth.data.corpus import Corpus
    from synth.checkpoint import load_model

    if n < 10:
        raise ConfigError(f"--n must be at least 10, got {n}")
    data = Corpus.open(corpus)
    sr, duration = data.sample_rate, data.audio.shape[1] / data.sample_rate
    clf = load_named(classifier)
    if clf.kind != "classifier":
        raise ConfigError(f"--classifier {classifier} is a {clf.kind!r} model, not a classifier")
    chosen = resolve_models(models)
    conds = draw_conditions(data, n, seed)
    sets: dict[str, GeneratedSet] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        kinds_done: set[str] = set()
        for name, path in chosen:
            model = load_model(path)
            todo = [(name, model, "model")]
            if untrained and model.kind not in kinds_done:
                todo.append((f"untrained {model.kind}", untrained_like(model, seed), "ceiling"))
                kinds_done.add(model.kind)
            for label, m, role in todo:
                task = bar.add_task(f"generate {label}", total=n)
                audio = generate(m, conds, seed, sr, duration, batch_size,
                                 lambda k, t=task: bar.advance(t, k))
                sets[label] = GeneratedSet(audio, conds["pitch"], conds["family"], role)
        tasks: dict[str, Any] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done)

        train = RealSet.from_corpus(data, "train", cache=not no_cache)
        test = RealSet.from_corpus(data, "test", cache=not no_cache)
        report = evaluate(sets, train, test, clf, sr,
                          EvalOptions(max_reference=max_reference, batch_size=batch_size,
                                      seed=seed), progress)
    report["models"] = {name: str(path) for name, path in chosen}
    report["n_per_model"] = n
    path = write_report(report, out)
    console.print(f"wrote {path} (metrics {report['timing_s']['metrics']:.1f} s after features)")
