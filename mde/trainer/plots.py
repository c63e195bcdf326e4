"""Evaluation pictures (matplotlib, drawn off screen on the Agg canvas): the confusion matrix of a
classifier and 2-D maps of clip embeddings.

Figures are bare :class:`matplotlib.figure.Figure` objects, so pyplot's global backend and figure list
are never touched, and every PNG is written through :func:`mde.atomic.atomic_path`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mde.atomic import atomic_path

DPI = 120
"""Resolution of the written PNGs, in dots per inch."""


def row_normalised(counts: np.ndarray) -> np.ndarray:
    """Each row of ``counts`` divided by its sum (the share of a true class's clips per prediction, i.e.
    the recall on the diagonal); a row without clips stays 0."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def confusion_figure(counts: np.ndarray, class_names: Sequence[str]) -> Any:
    """Two heat maps side by side, rows true classes and columns predictions: the counts, and the counts
    normalised per row; every cell carries its value. Returns the Figure."""
    counts = np.asarray(counts, dtype=np.int64)
    k = len(class_names)
    panel = max(4.0, 0.55 * k + 2.5)  # inches
    figure = _figure(2 * panel, panel)
    left, right = figure.subplots(1, 2)
    _heat_map(figure, left, counts, class_names, "counts", [str(int(v)) for v in counts.ravel()])
    shares = row_normalised(counts)
    _heat_map(figure, right, shares, class_names, "normalised per true class", [f"{v:.2f}" for v in shares.ravel()],
              vmax=1.0)
    figure.tight_layout()
    return figure


def write_confusion_png(counts: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """Write :func:`confusion_figure` of ``counts`` (k x k, rows true classes) to ``path`` (PNG), atomically."""
    counts = np.asarray(counts)
    k = len(class_names)
    if k == 0 or counts.shape != (k, k):
        raise ValueError(f"a confusion matrix of {k} classes must be {k} x {k}, got {counts.shape}")
    return save_png(confusion_figure(counts, class_names), path)


@dataclass(frozen=True)
class MapPanel:
    """One 2-D map: the points (n, 2), each point's class index (n,), and the panel's title."""

    points: np.ndarray
    classes: np.ndarray
    title: str


def maps_figure(rows: Sequence[Sequence[MapPanel]], class_names: Sequence[str], title: str) -> Any:
    """A grid of scatter maps (``rows`` of panels, each row as long), points coloured by class, with one
    legend of ``class_names`` and an overall ``title``. Returns the Figure."""
    n_rows, n_cols = len(rows), max(len(row) for row in rows)
    figure = _figure(4.2 * n_cols + 1.8, 4.0 * n_rows + 0.6)
    axes = np.atleast_2d(figure.subplots(n_rows, n_cols, squeeze=False))
    colours = _class_colours(len(class_names))
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            ax = axes[r, c]
            for index, name in enumerate(class_names):
                chosen = panel.classes == index
                ax.scatter(panel.points[chosen, 0], panel.points[chosen, 1], s=14, color=colours[index],
                           label=name if (r, c) == (0, 0) else None, alpha=0.85, linewidths=0)
            ax.set_title(panel.title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    figure.suptitle(title, fontsize=10)
    figure.legend(loc="center right", fontsize=8, markerscale=1.5, frameon=False)
    figure.tight_layout(rect=(0, 0, 1 - 1.6 / figure.get_figwidth(), 0.97))
    return figure


def save_png(figure: Any, path: Path) -> Path:
    """Write ``figure`` to ``path`` as PNG through a temporary file renamed into place; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    return path


def _figure(width: float, height: float) -> Any:
    """A Figure of ``width`` x ``height`` inches on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _heat_map(figure: Any, axes: Any, values: np.ndarray, class_names: Sequence[str], title: str,
              labels: Sequence[str], vmax: float | None = None) -> None:
    """One annotated heat map of a k x k matrix; ``labels`` are the cells' texts in row-major order."""
    k = len(class_names)
    image = axes.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(k), labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(range(k), labels=class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    threshold = (vmax if vmax is not None else float(values.max())) / 2
    for (row, column), text in zip(np.ndindex(k, k), labels):
        axes.text(column, row, text, ha="center", va="center", fontsize=8 if k > 12 else 10,
                  color="white" if values[row, column] > threshold else "black")


def _class_colours(n: int) -> list[Any]:
    """``n`` distinct colours: tab10 up to 10 classes, tab20 up to 20, then evenly along a rainbow."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["gist_rainbow"](i / max(n - 1, 1)) for i in range(n)]


def class_names_with_counts(class_names: Sequence[str], classes: np.ndarray) -> list[str]:
    """Legend entries: each name followed by its number of points, e.g. 'jazz (12)'."""
    counts: Mapping[int, int] = dict(zip(*np.unique(classes, return_counts=True)))
    return [f"{name} ({counts.get(i, 0)})" for i, name in enumerate(class_names)]
