"""Progress of the long export steps (reading calibration audio, calibrating, checking), for a caller to draw.

A :data:`Progress` callback gets ``(stage, done, total)``: the stage's name (one line of text) and how
many of its items (files or windows) are done out of ``total``. The CLI draws one bar per stage on stderr.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    """A :data:`Progress` that reports nowhere."""
