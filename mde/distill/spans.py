"""Where a student window lies on the teacher's grid, and what its target is.

The teacher's windows (T seconds) start every ``hop`` seconds (see :mod:`mde.distill.teacher`). A student
window of W seconds is anchored at teacher window k and covers ``m`` consecutive teacher windows:

- W <= T (e.g. the 0.5 s student of a 3 s teacher): m = 1, and the student window is the centre of
  teacher window k (centred context: the teacher saw W's surroundings too);
- W > T (3.7 s, 29 s): m = 1 + floor((W - T) / hop), the most consecutive teacher windows that fit in W,
  and the student window is centred on their span.

The target is the mean of those m teacher rows (tag probabilities, and embeddings for the optional
embedding term). Anchors are those whose student window lies inside the clip; a clip too short for any
gets one window at its start (zero-padded past the end) whose target is the mean of all its rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mde.distill.teacher import TeacherGrid

_EPSILON = 1e-6  # seconds: tolerance of the grid arithmetic


def covered_windows(window: float, teacher_window: float, hop: float) -> int:
    """Teacher windows a student window of ``window`` seconds covers (all in seconds; see the module)."""
    if window <= teacher_window + _EPSILON:
        return 1
    return 1 + math.floor((window - teacher_window) / hop + _EPSILON)


@dataclass(frozen=True)
class StudentSpans:
    """The student windows of one clip that have targets: anchor k covers teacher rows k .. k + m - 1.

    starts: (anchors,) student window starts in seconds; rows: (anchors, 2) first and past-the-last teacher
    row of each.
    """

    starts: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def target(self, grid: TeacherGrid, anchor: int, what: str = "tags") -> np.ndarray:
        """float32 mean of the covered teacher rows of ``what`` ('tags' or 'embedding')."""
        first, last = self.rows[anchor]
        values = grid.tags if what == "tags" else grid.embedding
        return values[first:last].mean(axis=0).astype(np.float32)

    def targets(self, grid: TeacherGrid, anchors: np.ndarray, what: str = "tags") -> np.ndarray:
        """float32 (len(anchors), dim): :meth:`target` of each anchor."""
        return np.stack([self.target(grid, int(a), what) for a in anchors])


def student_spans(grid: TeacherGrid, window: float, hop: float) -> StudentSpans:
    """The student windows of ``window`` seconds over the clip of ``grid`` (teacher at ``hop`` seconds)."""
    m = covered_windows(window, grid.window, hop)
    n = len(grid)
    if n >= m:
        first = np.arange(n - m + 1)
        span_start = grid.starts[first]
        span_end = grid.starts[first + m - 1] + grid.window
        starts = span_start + (span_end - span_start - window) / 2
        inside = (starts >= -_EPSILON) & (starts + window <= grid.duration + _EPSILON)
        if inside.any():
            kept = first[inside]
            return StudentSpans(np.maximum(starts[inside], 0.0), np.stack([kept, kept + m], axis=1))
    return StudentSpans(np.zeros(1), np.array([[0, max(n, 1)]]))


def spread(count: int, most: int) -> np.ndarray:
    """Up to ``most`` of ``count`` indices, evenly spaced from the first (int64)."""
    if count <= most:
        return np.arange(count, dtype=np.int64)
    return np.round(np.linspace(0, count - 1, most)).astype(np.int64)


def evaluation_anchors(spans: StudentSpans, window: float, most: int) -> np.ndarray:
    """The anchors a clip is evaluated at: windows that do not overlap (each at least ``window`` seconds
    after the previous one), at most ``most`` of them evenly spread."""
    picked, next_start = [], -math.inf
    for anchor, start in enumerate(spans.starts):
        if start >= next_start - _EPSILON:
            picked.append(anchor)
            next_start = start + window
    chosen = np.asarray(picked, dtype=np.int64)
    return chosen[spread(len(chosen), most)]
