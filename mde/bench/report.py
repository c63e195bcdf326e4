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
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Optional


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated runs of one measured thing."""

    name: str
    median_s: float
    min_s: float
    max_s: float
    runs: int


def time_interleaved(methods: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> list[Timing]:
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
    return [Timing(name, statistics.median(t), min(t), max(t), len(t)) for name, t in samples.items()]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts(packages: Iterable[str] = ()) -> dict[str, object]:
    """CPU, core count, OS, Python and the versions of ``packages`` that are installed."""
    versions = {}
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
    """The command that is running, for the record."""
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def write_results(
    out_stem: Path,
    title: str,
    timings: list[Timing],
    ours: Optional[str],
    extra: dict[str, object],
    packages: Iterable[str] = (),
    notes: str = "",
) -> tuple[Path, Path]:
    """Write ``<out_stem>.json`` and ``<out_stem>.md``.

    Each row's ``ratio_to_ours`` is its median over the median of the row named ``ours``: how many times
    faster ours is than that baseline, all measured in the same run (None: no ratio column).
    """
    facts = machine_facts(packages)
    reference = next((t for t in timings if t.name == ours), None)
    rows = [
        {**asdict(t), "ratio_to_ours": round(t.median_s / reference.median_s, 3) if reference else None}
        for t in timings
    ]
    record = {"title": title, "command": command_line(), "machine": facts, "ours": ours, "results": rows, **extra}
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    json_path = out_stem.with_suffix(".json")
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    md_path = out_stem.with_suffix(".md")
    md_path.write_text(_markdown(title, record, rows, notes))
    return json_path, md_path


def _markdown(title: str, record: dict, rows: list[dict], notes: str) -> str:
    facts = record["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items() if v)
    lines = [
        f"# {title}", "",
        f"Machine: {facts['cpu']}, {facts['cores']} cores, {facts['os']}; Python {facts['python']}; {versions}.",
        f"Command: `{record['command']}`", "",
        f"| what | median (ms) | min (ms) | max (ms) | runs | time / {record['ours'] or '-'} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ratio = f"{row['ratio_to_ours']:.2f}x" if row["ratio_to_ours"] is not None else "-"
        lines.append(
            f"| {row['name']} | {row['median_s'] * 1e3:.3f} | {row['min_s'] * 1e3:.3f} | "
            f"{row['max_s'] * 1e3:.3f} | {row['runs']} | {ratio} |"
        )
    if notes:
        lines += ["", notes]
    return "\n".join(lines) + "\n"
