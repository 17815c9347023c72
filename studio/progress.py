"""One rich progress bar for the commands that step through a known number of items."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator


@contextlib.contextmanager
def counting_bar(label: str, enabled: bool, total: int) -> Iterator[Callable[[str], None]]:
    """Yields `advance(text)`: one step done, `text` shown beside the bar (a no-op when off)."""
    if not enabled:
        yield lambda _text: None
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    with Progress(TextColumn(f"[bold]{label}[/bold] {{task.description}}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task("", total=total)
        yield lambda text: bar.update(task, advance=1, description=text)
