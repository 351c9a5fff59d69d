"""One progress-bar style for every long step (cache building, tiling): label, bar, count, ETA."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


@contextmanager
def progress_bar(label: str, total: int, console: Console):
    """Yield ``advance_to(n)``; the bar disappears when done (the numbers that matter are printed)."""
    progress = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with progress:
        bar = progress.add_task(label, total=total)
        yield lambda n: progress.update(bar, completed=n)
