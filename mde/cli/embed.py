"""``mde embed`` and ``mde tag``: batch inference over files and folders."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from mde.cli.console import Terminated, err, failure_line, file_progress, out, sigterm_raises
from mde.cli.ray_options import ACTORS_HELP, RAY_ADDRESS_HELP, RAY_HELP, ray_connected, ray_requested

MODEL_HELP = "Model name in the store (see 'mde models') or path to an .onnx model file. Default: MTT_musicnn."
WINDOW_HELP = "Window length in seconds, for models that take any length (musicnn); default: the model's."
HOP_HELP = "Seconds between window starts (default: the model's hop, non-overlapping windows)."
THREADS_HELP = ("Threads in each process (default: the CPUs it may run on, as taskset or a container sets them): "
                "one process embeds that many files at a time, one thread each (a single file gets them all).")
BACKEND_HELP = ("Inference backend: ort (ONNX Runtime), tensorrt (a TensorRT engine built beside the model on "
                "first use; CUDA only) or torch (the model's graph run by torch; fp16 and CUDA graphs on CUDA).")
PRECISION_HELP = ("Which variant of the model runs: auto (int8 on CPUs with VNNI or AMX, where int8 was measured about "
                  "2x faster, when the model has an int8 variant; fp32 elsewhere), fp32, fp16 or int8 (the variant "
                  "<name>-fp16 / <name>-int8 that 'mde export --fp16 / --int8 --store' makes).")
DEVICE_HELP = "cpu or cuda (ort on cuda needs onnxruntime-gpu: pip install 'mde\\[gpu]')."
OFFSET_HELP = ("Seconds into each file where the embedded span starts; decoding seeks there (timestamps still count "
               "from the file's start).")
DURATION_HELP = "Seconds embedded from --offset; only that much is decoded (default: to the end of each file)."

def register(app: typer.Typer) -> None:
    app.command("embed")(embed)
    app.command("tag")(tag)


def _inputs(paths: list[Path]) -> list[Path]:
    from mde.audio import find_audio_files
    from mde.errors import MdeError

    files = find_audio_files(paths)
    if not files:
        raise MdeError("no audio files found in the given paths")
    return files


def _model_path(model: Optional[str], backend: str = "ort", device: str = "cpu", precision: str = "fp32") -> Path:
    """The model file to use (the default model when None; its ``precision`` variant: see
    :mod:`mde.runtime.precision`), after checking that ``backend`` can run on ``device`` here, before any
    work starts."""
    from mde.runtime import store
    from mde.runtime.backends.factory import check_backend
    from mde.runtime.defaults import default_model_path
    from mde.runtime.precision import with_precision

    check_backend(backend, device)
    path = default_model_path(announce=err.print) if model is None else store.resolve(model)
    return with_precision(path, precision, device, given_as_file=model is not None and store.names_a_file(model))


def embed(
    paths: list[Path] = typer.Argument(..., help="Audio files, or folders to search recursively for audio files."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    hop: Optional[float] = typer.Option(None, "--hop", help=HOP_HELP),
    window: Optional[float] = typer.Option(None, "--window", help=WINDOW_HELP),
    out: str = typer.Option("embeddings", "--out", "-o", help="Folder for the outputs, one <stem>.<format> per input: a local path, or a pyarrow filesystem URI (s3://bucket/emb, gs://..., hdfs://..., file:///...; credentials as pyarrow reads them)."),
    fmt: str = typer.Option("npz", "--format", "-f", help="npz (arrays), parquet (a row per frame) or jsonl (an object per frame)."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Which model output to store as the embedding (default: the model's embedding layer)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes, each with its own model copy."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute outputs that already exist (default: skip them, so a stopped batch resumes)."),
    no_pad: bool = typer.Option(False, "--no-pad", help="Skip clips shorter than one window instead of zero-padding them to one window."),
    offset: float = typer.Option(0.0, "--offset", min=0.0, help=OFFSET_HELP),
    duration: Optional[float] = typer.Option(None, "--duration", help=DURATION_HELP),
    backend: str = typer.Option("ort", "--backend", help=BACKEND_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
    ray: bool = typer.Option(False, "--ray", help=RAY_HELP),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    actors: Optional[int] = typer.Option(None, "--actors", min=1, help=ACTORS_HELP),
) -> None:
    """Compute frame embeddings (and tag probabilities) for audio files and write one output per file."""
    from mde.runtime.batch import EmbedSettings, check_destination, embed_files
    from mde.runtime.extractor import check_request
    from mde.runtime.package import read_model_info
    from mde.runtime.remote import output_path

    out_dir = output_path(out)
    on_ray = ray_requested(ray, ray_address, workers, actors)
    settings = EmbedSettings(fmt=fmt, hop=hop, window=window, pad=not no_pad, layer=layer, overwrite=overwrite,
                             backend=backend, device=device, offset=offset, duration=duration)
    check_destination(out_dir)  # before the default model's first-use import or any other work
    model_path = _model_path(model, backend, device, precision)
    check_request(read_model_info(model_path), layer, window, hop)  # before the progress bar starts
    sources = _inputs(paths)
    finished: list = []
    started = time.perf_counter()
    try:
        with sigterm_raises(), ray_connected(on_ray, ray_address, "Embedding on Ray", actors, threads, device), \
                file_progress() as progress:
            task = progress.add_task("embedding", total=len(sources))

            def report(outcome) -> None:
                finished.append(outcome)
                progress.advance(task)
                if outcome.status == "failed":
                    progress.console.print(failure_line(outcome.source, outcome.message), style="red")
                elif outcome.message and outcome.status != "skipped":
                    progress.console.print(f"note: {outcome.source}: {outcome.message}")

            if on_ray:
                from mde.cluster.embed import embed_files_on_ray

                result = embed_files_on_ray(model_path, sources, out_dir, settings, threads, actors, ray_address,
                                            on_outcome=report)
            else:
                result = embed_files(model_path, sources, out_dir, settings, threads, workers, on_outcome=report)
    except KeyboardInterrupt as stop:
        done = sum(1 for o in finished if o.status == "done")
        err.print(f"interrupted: {done} embedded, {len(sources) - len(finished)} left; "
                  "re-run the same command to resume")
        raise typer.Exit(143 if isinstance(stop, Terminated) else 130) from None
    elapsed = time.perf_counter() - started
    err.print(
        f"{result.count('done')} embedded, {result.count('skipped')} skipped (up to date), "
        f"{result.count('short')} too short, {len(result.failed)} failed in {elapsed:.1f} s -> {out_dir}"
    )
    if result.failed:
        raise typer.Exit(1)


def tag(
    paths: list[Path] = typer.Argument(..., help="Audio files, or folders to search recursively for audio files."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="How many tags to show per file (or per frame)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one document) instead of text."),
    frames: bool = typer.Option(False, "--frames", help="Show the top tags of every frame, not only the clip mean."),
    hop: Optional[float] = typer.Option(None, "--hop", help=HOP_HELP),
    window: Optional[float] = typer.Option(None, "--window", help=WINDOW_HELP),
    offset: float = typer.Option(0.0, "--offset", min=0.0, help=OFFSET_HELP),
    duration: Optional[float] = typer.Option(None, "--duration", help=DURATION_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    backend: str = typer.Option("ort", "--backend", help=BACKEND_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
) -> None:
    """Print the most probable tags of each file (mean over frames), or of each frame with --frames."""
    from mde.audio import check_span
    from mde.errors import MdeError, ModelError
    from mde.runtime.extractor import Model, check_request

    check_span(offset, duration)
    loaded = Model(_model_path(model, backend, device, precision), threads=threads, backend=backend, device=device)
    check_request(loaded.info, window=window, hop=hop)
    if not loaded.info.tag_names:
        raise ModelError(f"model {loaded.name!r} has no tags; use 'mde embed'")
    documents, failures = [], []
    for source in _inputs(paths):
        try:
            result = loaded.embed(source, hop=hop, window=window, offset=offset, duration=duration)
        except MdeError as exc:
            failures.append(source)
            err.print(failure_line(source, str(exc)), style="red")
            continue
        if result.padded:
            err.print(f"note: {source}: {result.duration:.2f} s is shorter than one window: zero-padded to one window")
        document = {"file": str(source), "model": loaded.name, "tags": _tag_list(result.top_tags(top_k))}
        if frames:
            document["frames"] = [
                {"timestamp": float(t), "tags": _tag_list(result.top_tags(top_k, frame=i))}
                for i, t in enumerate(result.timestamps)
            ]
        documents.append(document)
        if not as_json:
            _print_tags(document)
    if as_json:
        out.print_json(json.dumps(documents))
    if failures:
        raise typer.Exit(1)


def _tag_list(pairs: list[tuple[str, float]]) -> list[dict[str, object]]:
    return [{"tag": name, "p": round(p, 6)} for name, p in pairs]


def _print_tags(document: dict) -> None:
    def line(tags: list[dict]) -> str:
        return ", ".join(f"{t['tag']} {t['p']:.3f}" for t in tags)

    out.print(f"{document['file']}: {line(document['tags'])}")
    for frame in document.get("frames", []):
        out.print(f"  {frame['timestamp']:8.2f} s  {line(frame['tags'])}")
