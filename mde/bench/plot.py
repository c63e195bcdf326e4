"""PNG plots of benchmark rows with matplotlib (Agg backend), imported only when a plot is drawn."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from mde.bench.report import Timing


def plot_timings(path: Path, title: str, timings: Sequence[Timing], subtitle: str = "",
                 groups: Optional[Sequence[str]] = None) -> Optional[str]:
    """Draw one horizontal bar per row (median, with a min-max whisker) on a log time axis in ms and write
    ``path`` (PNG). ``groups``: a group label per row; rows of a group share a colour.

    Returns None when written, else why not (matplotlib is not installed).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no PNG"
    labels = [t.name for t in timings]
    medians = [t.median_s * 1e3 for t in timings]
    lower = [(t.median_s - t.min_s) * 1e3 for t in timings]
    upper = [(t.max_s - t.median_s) * 1e3 for t in timings]
    palette = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]  # tab10 is a ListedColormap
    order = list(dict.fromkeys(groups or []))
    colours = [palette[order.index(g) % len(palette)] for g in groups] if groups else [palette[0]] * len(labels)
    height = 1.2 + 0.28 * len(labels)
    figure, axes = plt.subplots(figsize=(10, height))
    positions = list(range(len(labels)))[::-1]
    axes.barh(positions, medians, xerr=[lower, upper], color=colours, capsize=2, error_kw={"elinewidth": 0.8})
    axes.set_yticks(positions, labels, fontsize=7)
    axes.set_xscale("log")
    axes.set_xlabel("time per call (ms, log scale): median, whiskers min to max")
    axes.set_title(f"{title}\n{subtitle}" if subtitle else title, fontsize=9)
    axes.grid(axis="x", which="both", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return None
