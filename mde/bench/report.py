"""Measuring and reporting: repeated timings, machine facts, JSON + Markdown results.

Every benchmark reports medians over repeated runs with min and max, and ratios against a baseline
measured in the same run, with the machine, the versions and the command named.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import NamedTuple, Optional


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated runs of one measured thing."""

    name: str
    median_s: float
    min_s: float
    max_s: float
    runs: int


class Column(NamedTuple):
    """An extra column of the results table: the row field ``key``, its heading and a format spec
    (e.g. ``".1f"``) for its values; rows without the field show '-'."""

    key: str
    heading: str
    spec: str = ".3g"


def timing_of(name: str, seconds: Sequence[float]) -> Timing:
    """The Timing of repeated measurements (seconds) taken by the caller."""
    return Timing(name, statistics.median(seconds), min(seconds), max(seconds), len(seconds))


def time_interleaved(methods: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 1) -> list[Timing]:
    """Time each method ``rounds`` times, one call of each per round, after ``warmup`` untimed rounds.

    Interleaving makes drifts in machine load affect every method alike.
    """
    for _ in range(warmup):
        for call in methods.values():
            call()
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, call in methods.items():
            started = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - started)
    return [timing_of(name, t) for name, t in samples.items()]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def own_peak_mb() -> float | None:
    """This process's peak resident set in MB from /proc/self/status VmHWM (Linux), or None.

    Preferred to RUSAGE_SELF, which Linux carries across fork + exec: a process started by a large one
    would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set (VmHWM) so :func:`own_peak_mb` covers what follows only (Linux >= 4.0:
    writing 5 to /proc/self/clear_refs); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def machine_facts(packages: Iterable[str] = ()) -> dict[str, object]:
    """CPU, core count, OS, Python and the versions of ``packages`` that are installed."""
    versions: dict[str, Optional[str]] = {}
    for name in ("mde", *packages):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


def command_line() -> str:
    """The command that is running, for the record: ``python -m pkg ...`` for a package run with -m,
    ``python script.py ...`` for a script, the console script's name (e.g. ``mde ...``) otherwise."""
    first, rest = Path(sys.argv[0]) if sys.argv else Path("-c"), sys.argv[1:]
    if first.name == "__main__.py":
        words = [Path(sys.executable).name, "-m", first.parent.name]
    elif first.suffix == ".py" or first.name == "-c":
        words = [Path(sys.executable).name, str(first)]
    else:
        words = [first.name]
    return " ".join(shlex.quote(a) for a in [*words, *rest])


def write_results(
    out_stem: Path,
    title: str,
    timings: list[Timing],
    ours: Optional[str],
    extra: dict[str, object],
    packages: Iterable[str] = (),
    notes: str = "",
    *,
    references: Optional[Mapping[str, str]] = None,
    metrics: Optional[Mapping[str, Mapping[str, object]]] = None,
    columns: Sequence[Column] = (),
    ratio_heading: Optional[str] = None,
) -> tuple[Path, Path]:
    """Write ``<out_stem>.json`` and ``<out_stem>.md``.

    Each row's ``ratio_to_ours`` is its median over the median of the row named ``ours``: how many times
    faster ours is than that baseline, all measured in the same run (None: no ratio column).
    references: per row name, the row its ratio is taken against instead (e.g. ours in the same group);
      rows not named there use ``ours``. The JSON row then names it as ``reference``.
    metrics, columns: extra per-row fields (row name -> {key: value}), merged into the JSON rows, and
      the ones shown as extra Markdown columns. ratio_heading: the ratio column's heading.
    """
    facts = machine_facts(packages)
    medians = {t.name: t.median_s for t in timings}
    rows = []
    for t in timings:
        reference = (references or {}).get(t.name, ours)
        base = medians.get(reference) if reference is not None else None
        row = {**asdict(t), "ratio_to_ours": round(t.median_s / base, 3) if base else None}
        if references is not None:
            row["reference"] = reference if base else None
        rows.append({**row, **(metrics or {}).get(t.name, {})})
    record = {"title": title, "command": command_line(), "machine": facts, "ours": ours, "results": rows, **extra}
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    json_path = out_stem.with_suffix(".json")
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    md_path = out_stem.with_suffix(".md")
    heading = ratio_heading or f"time / {ours or '-'}"
    md_path.write_text(_markdown(title, record, rows, notes, columns, heading))
    return json_path, md_path


def _markdown(title: str, record: dict, rows: list[dict], notes: str, columns: Sequence[Column] = (),
              ratio_heading: str = "time / -") -> str:
    facts = record["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items() if v)
    extra_headings = "".join(f" {c.heading} |" for c in columns)
    lines = [
        f"# {title}", "",
        f"Machine: {facts['cpu']}, {facts['cores']} cores, {facts['os']}; Python {facts['python']}; {versions}.",
        f"Command: `{record['command']}`", "",
        f"| what | median (ms) | min (ms) | max (ms) | runs | {ratio_heading} |{extra_headings}",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(columns),
    ]
    for row in rows:
        ratio = f"{row['ratio_to_ours']:.2f}x" if row["ratio_to_ours"] is not None else "-"
        cells = "".join(f" {_cell(row.get(c.key), c.spec)} |" for c in columns)
        lines.append(
            f"| {row['name']} | {row['median_s'] * 1e3:.3f} | {row['min_s'] * 1e3:.3f} | "
            f"{row['max_s'] * 1e3:.3f} | {row['runs']} | {ratio} |{cells}"
        )
    if notes:
        lines += ["", notes]
    return "\n".join(lines) + "\n"


def _cell(value: object, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)
