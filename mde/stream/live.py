"""The terminal side of a stream: a live table of the newest frame per scale, and the final summary."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.live import Live
from rich.table import Table

from mde.stream.engine import StreamFrame, StreamSummary
from mde.stream.scales import scale_label


class LiveView:
    """A rich table redrawn a few times a second: per scale, the newest frame's start, latency, counts
    and top tags. Use as a sink; :meth:`start` before streaming, ``close`` stops the display."""

    def __init__(self, console: Console, scales: list[float], top_k: int = 5) -> None:
        self._console = console
        self._scales = scales
        self._top_k = top_k
        self._latest: dict[float, StreamFrame] = {}
        self._counts: dict[float, int] = dict.fromkeys(scales, 0)
        self._lock = threading.Lock()
        self._live = Live(get_renderable=self._table, console=console, refresh_per_second=4, transient=True)

    def start(self) -> None:
        self._live.start()

    def add(self, frame: StreamFrame) -> None:
        with self._lock:
            self._latest[frame.scale] = frame
            self._counts[frame.scale] = self._counts.get(frame.scale, 0) + 1

    def close(self, summary: StreamSummary) -> None:
        self._live.stop()

    def _table(self) -> Table:
        table = Table(title="mde stream (Ctrl-C to stop)", title_justify="left")
        for column in ("scale", "t (s)", "frames", "latency (ms)", "top tags"):
            table.add_column(column, justify="left" if column == "top tags" else "right")
        with self._lock:
            for scale in self._scales:
                frame = self._latest.get(scale)
                if frame is None:
                    table.add_row(f"{scale:g} s", "-", "0", "-", "waiting for the first window")
                    continue
                tags = ", ".join(f"{name} {p:.2f}" for name, p in frame.top_tags(self._top_k))
                table.add_row(f"{scale:g} s", f"{frame.timestamp:.2f}", str(self._counts[scale]),
                              f"{frame.latency_ms:.1f}", tags or frame.model)
        return table


def summary_lines(summary: StreamSummary) -> list[str]:
    """The end-of-stream summary: a note per scale whose window the input never filled (zero-padded to
    one, or no frames for an empty input), a totals line,
    then frames, drops and latency percentiles per scale ('no frames' for a scale that had none)."""
    state = "interrupted" if summary.interrupted else "finished"
    lines = [
        f"note: {scale_label(s.scale)}: the input ended after {summary.audio_seconds:.2f} s, shorter than one "
        f"{s.scale:g} s window: " + ("zero-padded to one window" if s.padded else "no frames")
        for s in summary.scales
        if s.padded or (s.frames == 0 and s.dropped == 0 and not summary.interrupted
                        and summary.audio_seconds < s.scale)
    ]
    lines.append(
        f"{state}: {summary.audio_seconds:.1f} s of audio in {summary.wall_seconds:.1f} s, CPU load "
        f"{summary.cpu_load:.2f} cores, audio dropped {summary.dropped_audio_seconds:.2f} s, "
        f"device overflows {summary.device_overflows}"
    )
    for s in summary.scales:
        head = f"  {s.scale:g} s ({s.model}, hop {s.hop_s:.3g} s): "
        if s.frames == 0:
            lines.append(head + f"no frames, {s.dropped} dropped")
            continue
        lines.append(
            head + f"{s.frames} frame{'' if s.frames == 1 else 's'}, {s.dropped} dropped, "
            f"latency p50 {s.latency_p50_ms:.1f} ms, p99 {s.latency_p99_ms:.1f} ms, max {s.latency_max_ms:.1f} ms"
        )
    return lines
