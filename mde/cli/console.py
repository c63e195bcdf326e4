"""Shared terminal output: messages and progress go to stderr, results to stdout.

Neither console wraps long lines at the terminal's width: a message stays one line (the terminal may
still fold it on screen), so it can be read, copied and grepped whole.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
out = Console(highlight=False, soft_wrap=True, markup=False)


def file_progress() -> Progress:
    """A progress bar over files, drawn on stderr."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
    )


@contextmanager
def stage_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A callback ``(stage, done, total)`` drawing one bar per stage on stderr. The display starts at the
    first report, so an error raised before any stays the only line."""
    progress = file_progress()
    tasks: dict[str, TaskID] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            if not tasks:
                progress.start()
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    try:
        yield report
    finally:
        if tasks:
            progress.stop()


def failure_line(source: str | os.PathLike[str], message: str) -> str:
    """``failed: <source>: <message>``, naming the source once although audio errors start with it."""
    prefix = f"{os.fspath(source)}: "
    return f"failed: {prefix}{message[len(prefix):] if message.startswith(prefix) else message}"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that a batch stops its workers and says what was done."""


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (exit code 143 by the command's handler)."""
    def stop(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
