"""``mde stream``: live frame embeddings and tags at several window lengths."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Optional

import typer

from mde.cli.console import err, out
from mde.cli.embed import BACKEND_HELP, DEVICE_HELP, PRECISION_HELP
from mde.runtime.defaults import DEFAULT_MODEL, DEFAULT_SCALE_MODELS

_DEDICATED = ", ".join(f"{seconds:g} s {name}" for seconds, name in DEFAULT_SCALE_MODELS.items())

SCALES_HELP = "Window lengths in seconds, comma-separated; each scale is served by its own model and hop."
MODELS_HELP = ("Model for every scale (a stored or bundled name, or an .onnx path), or SCALE:MODEL pairs like "
               f"0.5:fcn05,29:fcn29. Default: {_DEDICATED}, each at its own window, when all "
               f"{len(DEFAULT_SCALE_MODELS)} are available (bundled with mde or stored); otherwise, and for other "
               f"scales, {DEFAULT_MODEL} at each window length.")
HOP_HELP = ("Seconds between frame starts: one value for every scale, or SCALE:HOP pairs like 0.5:0.25,3.7:1. "
            "Default: the window, at most 1 s.")

MAX_FLUSH_SECONDS = 3600.0
"""The longest --flush-every accepted, in seconds."""


def register(app: typer.Typer) -> None:
    app.command("stream")(stream)


def stream(
    mic: bool = typer.Option(False, "--mic", help="Capture from a microphone (PortAudio)."),
    file: Optional[Path] = typer.Option(None, "--file", help="Stream an audio file, paced at real time."),
    stdin: bool = typer.Option(False, "--stdin", help="Read raw samples from standard input (needs --rate)."),
    input_device: Optional[str] = typer.Option(None, "--input-device", help="Capture device for --mic: index or (part of) its name, as --list-devices shows. Default: the system's default input."),
    list_devices: bool = typer.Option(False, "--list-devices", help="List capture devices and exit (non-zero when there is none)."),
    capture_rate: Optional[float] = typer.Option(None, "--capture-rate", help="Capture rate in Hz for --mic, 8000 to 384000 (default: the device's rate). Audio is resampled to each model's rate."),
    rate: Optional[float] = typer.Option(None, "--rate", help="Sample rate in Hz of the --stdin data, 8000 to 384000."),
    sample_format: str = typer.Option("s16le", "--format", help="Sample format of the --stdin data: s16le or f32le."),
    channels: Optional[int] = typer.Option(None, "--channels", help="Interleaved channels of --stdin data (default 1), or channels captured by --mic (default up to 2), at most 64; mixed to mono (kept as they are for a stereo waveform model, a mono source repeated on both channels)."),
    fast: bool = typer.Option(False, "--as-fast-as-possible", help="With --file: read as fast as compute allows instead of at real time (nothing is dropped)."),
    scales: str = typer.Option("0.5,3.7,29", "--scales", help=SCALES_HELP),
    models: Optional[str] = typer.Option(None, "--models", help=MODELS_HELP),
    hop: Optional[str] = typer.Option(None, "--hop", help=HOP_HELP),
    jsonl: Optional[str] = typer.Option(None, "--jsonl", help="Write one JSON object per frame to FILE, or '-' for standard output: timestamp (s), scale, model, latency_ms, embedding, top_tags. A closed pipe (| head) ends the stream quietly."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="Write all frames to FILE.npz or FILE.parquet at the end, rewritten every --flush-every seconds meanwhile."),
    flush_every: float = typer.Option(5.0, "--flush-every", help="Seconds between rewrites of --out while streaming, 0.1 to 3600."),
    top_k: int = typer.Option(5, "--top-k", min=0, help="Tags per frame in --jsonl and the live view."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Stop after this many seconds of audio (default: until the input ends or Ctrl-C)."),
    threads: int = typer.Option(1, "--threads", min=1, help="Inference threads per model (each scale also has its own worker thread)."),
    backend: str = typer.Option("ort", "--backend", help=BACKEND_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    view: Optional[bool] = typer.Option(None, "--view/--no-view", help="Live table of the newest tags per scale on stderr (default: when stderr is a terminal)."),
) -> None:
    """Frame embeddings and tags at several window lengths (0.5, 3.7 and 29 s by default), live.

    Without --models, the 0.5, 3.7 and 29 s scales are served by their dedicated models (see --models) when
    all of these are available, bundled with mde or stored; otherwise every scale by the default model.

    Each window is emitted as soon as its last sample arrives, with exactly the frames 'mde embed --window W
    --hop H' computes for the same audio. Ctrl-C stops cleanly, prints a summary (frames, drops, latency)
    and exits with 130.
    """
    from mde.errors import MdeError
    from mde.runtime.backends.factory import check_backend
    from mde.stream import api
    from mde.stream.live import LiveView, summary_lines
    from mde.stream.outputs import ArraySink, JsonlSink, check_array_path, check_writable
    from mde.stream.scales import parse_per_scale, parse_scales

    if list_devices:
        _print_devices()
        return
    if sum([mic, file is not None, stdin]) != 1:
        raise MdeError("choose one input: --mic, --file PATH or --stdin")
    if (input_device is not None or capture_rate is not None) and not mic:
        raise MdeError("--input-device and --capture-rate apply to --mic only")
    if fast and file is None:
        raise MdeError("--as-fast-as-possible applies to --file only")
    if jsonl == "-" and view:
        raise MdeError("--jsonl - writes to standard output; the live view goes to stderr, use --no-view or a file")
    if not 0.1 <= flush_every <= MAX_FLUSH_SECONDS:
        raise MdeError(f"--flush-every must be from 0.1 to {MAX_FLUSH_SECONDS:g} s, got {flush_every:g}")
    if duration is not None and not (duration > 0 and math.isfinite(duration)):
        raise MdeError(f"--duration must be a positive, finite number of seconds, got {duration:g}")
    check_backend(backend, device)
    seconds = parse_scales(scales)
    per_model = parse_per_scale(models, "--models", numeric=False)
    per_hop = parse_per_scale(hop, "--hop", numeric=True)
    if out_file is not None:  # before any model loads or audio flows
        check_array_path(out_file)
    if jsonl is not None and jsonl != "-":
        check_writable(Path(jsonl), "--jsonl")
    source = _source(mic, file, stdin, input_device, capture_rate, rate, sample_format, channels, fast)
    served = api.load_scales(seconds, per_model, per_hop, threads=threads, backend=backend, device=device,
                             announce=err.print, precision=precision)
    reader_gone = threading.Event()  # set when the reader of --jsonl closes its end: the stream ends quietly
    sinks: list = []
    if jsonl is not None:
        sinks.append(JsonlSink(jsonl, top_k=top_k, on_closed=reader_gone.set))
    arrays = ArraySink(out_file, flush_seconds=flush_every, warn=err.print) if out_file is not None else None
    if arrays is not None:
        sinks.append(arrays)
    show = err.is_terminal if view is None else view
    live = LiveView(err, seconds, top_k=top_k) if show else None
    if live is not None:
        sinks.append(live)
        live.start()
    err.print(f"streaming {source.describe()}: " + ", ".join(
        f"{s.label} by {s.model.name} every {s.hop_seconds:.3g} s" for s in served))
    summary = api.stream(source, served, sinks, duration=duration, stop=reader_gone)
    for line in summary_lines(summary):
        err.print(line)
    if arrays is not None:
        if arrays.write_error is not None:
            kept = f"the frames are kept in {arrays.kept_in}" if arrays.kept_in else "no copy could be kept either"
            raise MdeError(f"cannot write {out_file} ({arrays.write_error.strerror or arrays.write_error}); {kept}")
        err.print(f"wrote {out_file}")
    if summary.interrupted:
        raise typer.Exit(130)  # as any interrupted command


def _source(mic: bool, file: Optional[Path], stdin: bool, input_device: Optional[str], capture_rate: Optional[float],
            rate: Optional[float], sample_format: str, channels: Optional[int], fast: bool):
    from mde.stream.sources import FileSource, MicSource, StdinSource

    if mic:
        return MicSource(device=input_device, rate=capture_rate, channels=channels)  # type: ignore[arg-type]
    if file is not None:
        return FileSource(str(file), realtime=not fast)
    return StdinSource(rate=rate, sample_format=sample_format, channels=1 if channels is None else channels)  # type: ignore[arg-type]


def _print_devices() -> None:
    from mde.errors import MdeError
    from mde.stream.sources import NO_CAPTURE_DEVICE, list_input_devices

    devices = list_input_devices()
    if not devices:
        raise MdeError(NO_CAPTURE_DEVICE)
    for d in devices:
        out.print(f"{d['index']:>3}  {d['name']}  ({d['hostapi']}, {d['channels']} ch, {d['default_rate']:g} Hz)")
