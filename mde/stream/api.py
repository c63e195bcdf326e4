"""The Python API of ``mde stream``: load the models of the scales, then stream a source through them.

    from mde.stream import load_scales, stream_file
    arrays, summary = stream_file("song.mp3", load_scales([0.5, 3.7]))
    arrays[0.5].embedding  # (frames, dim), the frames `mde embed song.mp3 --window 0.5 --hop 0.5` gives
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

from mde.runtime import store
from mde.runtime.defaults import default_model_path
from mde.runtime.extractor import Model
from mde.runtime.limits import DEFAULT_BATCH_SIZE
from mde.runtime.precision import with_precision
from mde.stream.engine import FrameSink, StreamEngine, StreamSummary
from mde.stream.outputs import FrameCollector, StreamedArrays
from mde.stream.scales import DEFAULT_SCALES, PerScale, Scale, default_scale_models, pick, scale_grid
from mde.stream.sources import AudioSource, FileSource


def load_scales(
    scales: Sequence[float] = DEFAULT_SCALES,
    models: PerScale = None,
    hops: PerScale = None,
    threads: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    backend: str = "ort",
    device: str = "cpu",
    announce: Callable[[str], None] = print,
    precision: str = "fp32",
) -> list[Scale]:
    """The served scales (window seconds), each with its model and frame grid.

    models: one model name/path for every scale, or {scale: model}. A scale given none is served by its
      dedicated model at that model's own window (DEFAULT_SCALE_MODELS in mde.runtime.defaults: 0.5, 3.7
      and 29 s) when all of those are available, bundled with mde or stored (see default_scale_models);
      otherwise by the default model at the scale's length.
    hops: seconds between frame starts, one for every scale or {scale: hop}; None: the window, at most
      1 s. threads: inference threads per model (one session per model is shared by its scales).
    announce: receives a note when the default model is imported on first use. precision: which variant
      of each model runs (see :mod:`mde.runtime.precision`).
    """
    loaded: dict[Path, Model] = {}  # one session per model file, whichever name reached it
    dedicated = default_scale_models(scales)
    out = []
    for seconds in scales:
        name = pick(models, seconds, scales, "--models")
        hop = pick(hops, seconds, scales, "--hop")
        native = name is None and seconds in dedicated
        if native:
            name = dedicated[seconds]
        path = default_model_path(announce=announce) if name is None else store.resolve(str(name))
        given_as_file = name is not None and store.names_a_file(str(name))
        path = with_precision(path, precision, device, given_as_file=given_as_file)
        if path not in loaded:
            loaded[path] = Model(path, threads=threads, batch_size=batch_size, backend=backend, device=device)
        model = loaded[path]
        grid = scale_grid(model, seconds, hop, native=native)  # type: ignore[arg-type]
        out.append(Scale(seconds, model, grid, model.output_names(model.info.embedding_output)))
    return out


def stream(
    source: AudioSource,
    scales: Sequence[Scale],
    sinks: Sequence[FrameSink] = (),
    duration: Optional[float] = None,
    stop: Optional[threading.Event] = None,
) -> StreamSummary:
    """Stream ``source`` through ``scales`` into ``sinks`` until it ends, ``duration`` seconds of audio
    have passed, ``stop`` is set or Ctrl-C; returns the summary (frames, drops, latencies)."""
    return StreamEngine(source, scales, sinks).run(duration=duration, stop=stop)


def stream_file(
    path: str | Path,
    scales: Sequence[Scale],
    realtime: bool = False,
    sinks: Sequence[FrameSink] = (),
    duration: Optional[float] = None,
) -> tuple[dict[float, StreamedArrays], StreamSummary]:
    """Stream a file (as fast as possible unless ``realtime``) and return every frame per scale."""
    collector = FrameCollector()
    summary = stream(FileSource(str(path), realtime=realtime), scales, [collector, *sinks], duration=duration)
    return collector.results(), summary
