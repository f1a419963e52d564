"""The one progress bar of both CLIs: a rich bar on stderr when it is a terminal, else nothing.

    with progress_bar("scoring", total=len(paths), enabled=show) as advance:
        for ...:
            advance(1)

The bar shows done/total, items per second and the time left. Off a terminal (a service, a pipe,
CI) it draws nothing, so logs stay clean.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(label: str, total: int, enabled: bool = True,
                 unit: str = "img") -> Iterator[Callable[[int], None]]:
    """Yield ``advance(count)``; a no-op when disabled or when stderr is not a terminal."""
    if not enabled:
        yield lambda count=1: None
        return
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda count=1: None
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(label, total=total, rate="")
        started = time.perf_counter()
        done = 0

        def advance(count: int = 1) -> None:
            nonlocal done
            done += count
            rate = done / max(time.perf_counter() - started, 1e-9)
            bar.update(task, advance=count, rate=f"{rate:.1f} {unit}/s")

        yield advance
