"""``mde index`` and ``mde search``: an index of many files' embeddings, searched by audio, tags or text."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from mde.cli.console import Terminated, err, failure_line, file_progress, out, sigterm_raises
from mde.cli.embed import MODEL_HELP, THREADS_HELP
from mde.cli.ray_options import ACTORS_HELP, RAY_ADDRESS_HELP, RAY_HELP, ray_connected, ray_requested

INDEX_MODEL_HELP = MODEL_HELP.replace("Default: MTT_musicnn.", "Default: the index's model; MTT_musicnn for a new index.")
LAYER_HELP = ("Model output to index (default: the index's; for a new index the model's embedding layer). 'joint' "
              "answers --tags through a tag encoder, target_text answers --text.")
HOP_HELP = ("Seconds between frame starts (default: the index's; for a new index the model's hop, non-overlapping "
            "windows). A shorter hop gives --frames finer times and more frame vectors.")
EXACT_HELP = ("Search exactly (faiss IndexFlatIP) at any size; --no-exact: IVF-Flat beyond 100,000 vectors. "
              "Default: as the index was built (exact only up to 100,000 vectors for a new index).")


def register(app: typer.Typer) -> None:
    app.command("index")(index)
    app.command("search")(search)


def index(
    paths: list[Path] = typer.Argument(..., help="Audio files, or folders to search recursively for audio files."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="The index folder (created, or updated: new files added, changed ones embedded again, vanished ones under PATHS removed)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=INDEX_MODEL_HELP),
    layer: Optional[str] = typer.Option(None, "--layer", help=LAYER_HELP),
    hop: Optional[float] = typer.Option(None, "--hop", help=HOP_HELP),
    workers: int = typer.Option(1, "--workers", min=1, help="Embedding processes, each with its own model copy (default 1)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    exact: Optional[bool] = typer.Option(None, "--exact/--no-exact", help=EXACT_HELP),
    ray: bool = typer.Option(False, "--ray", help=RAY_HELP.replace("the same outputs", "the same index")),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    actors: Optional[int] = typer.Option(None, "--actors", min=1, help=ACTORS_HELP),
) -> None:
    """Embed audio files into a searchable index of clip vectors (mean of the frames, unit norm) and frame
    vectors; rerun it to add, update or resume."""
    from mde.search.build import ADDED, FAILED, REMOVED, RESUMED, UNCHANGED, UPDATED, build_index

    embedder = None
    if ray_requested(ray, ray_address, workers, actors):
        from mde.cluster.index import ray_embedder

        embedder = ray_embedder(threads, actors, ray_address)

    done: list = []
    started = time.perf_counter()
    progress = file_progress()  # drawn from the first file on, so that a refusal before it stays one line
    tasks = []

    def on_start(total: int) -> None:
        if total:
            progress.start()
            tasks.append(progress.add_task("embedding", total=total))

    def on_outcome(outcome) -> None:
        done.append(outcome)
        if outcome.status == FAILED:
            progress.console.print(failure_line(outcome.path, outcome.message), style="red")
        elif outcome.message and outcome.message != RESUMED:
            progress.console.print(f"note: {outcome.path}: {outcome.message}")
        if tasks:
            progress.advance(tasks[0])

    try:
        with sigterm_raises(), ray_connected(embedder is not None, ray_address, "Indexing on Ray", actors,
                                             threads):
            try:
                report = build_index(paths, out_dir, model=model, layer=layer, hop=hop, workers=workers,
                                     threads=threads, exact=exact, on_start=on_start, on_outcome=on_outcome,
                                     announce=progress.console.print, embedder=embedder)
            finally:
                if tasks:
                    progress.stop()
    except KeyboardInterrupt as stop:
        embedded = sum(1 for o in done if o.status in (ADDED, UPDATED))
        err.print(f"interrupted: {embedded} files embedded and kept in {out_dir / 'staging'}, the index unchanged; "
                  "re-run the same command to resume")
        raise typer.Exit(143 if isinstance(stop, Terminated) else 130) from None
    manifest = report.manifest
    summary = (f"{manifest.n_files} files, {manifest.n_frames} frames; clips {_kind(manifest.clip_index)}, "
               f"frames {_kind(manifest.frame_index)}")
    resumed = sum(1 for o in report.outcomes if o.message == RESUMED)
    staged = f" ({resumed} of them embedded by an interrupted run)" if resumed else ""
    err.print(f"{report.count(ADDED)} added, {report.count(UPDATED)} updated{staged}, {report.count(REMOVED)} removed, "
              f"{report.count(UNCHANGED)} unchanged, {len(report.failed)} failed in "
              f"{time.perf_counter() - started:.1f} s -> {out_dir} ({summary})")
    if report.failed:
        raise typer.Exit(1)


def _kind(kind) -> str:
    if kind.kind == "flat":
        return "exact"
    return f"IVF nlist {kind.nlist}, nprobe {kind.nprobe} (recall@10 {kind.recall_at_10:.3f})"


def search(
    index_dir: Path = typer.Argument(..., help="The index folder ('mde index ... -o INDEX')."),
    query: Optional[Path] = typer.Argument(None, help="An audio file to find similar files to (embedded with the index's model, layer and hop)."),
    top_k: int = typer.Option(10, "--top-k", "-k", min=1, help="How many files to list (default 10)."),
    frames: bool = typer.Option(False, "--frames", help="Search the frame vectors: find the files holding the query and where in them it starts (t, seconds, within one hop)."),
    tags: Optional[str] = typer.Option(None, "--tags", help="Comma-separated tags instead of QUERY, e.g. piano,slow: by the tag encoder for a 'joint' index, else by the mean of the tags' clip probabilities (score 0-1)."),
    text: Optional[str] = typer.Option(None, "--text", help="Free text instead of QUERY, for an index of a model's text target layer (--layer target_text)."),
    as_json: bool = typer.Option(False, "--json", help='Print {"results": [{"path", "score", "t" (with --frames)}, ...]} instead of a table.'),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="The index's model file, if it is neither stored under its name nor where the index was built from (a store name or .onnx path; its SHA-256 must match)."),
) -> None:
    """List the indexed files nearest to an audio file (cosine of clip vectors, or aligned frames with
    --frames), to tags (--tags) or to text (--text)."""
    from mde.errors import MdeError
    from mde.search import Index

    given = [name for name, value in (("QUERY", query), ("--tags", tags), ("--text", text)) if value is not None]
    if len(given) != 1:
        raise MdeError("give one of QUERY (an audio file), --tags or --text" + (f", not {' and '.join(given)}" if given else ""))
    opened = Index.open(index_dir, model=model)
    if tags is not None:
        words = [word.strip() for word in tags.split(",") if word.strip()]
        hits = opened.search_tags(words, top_k, frames)
    elif text is not None:
        hits = opened.search_text(text, top_k, frames)
    else:
        hits = opened.search(str(query), top_k, frames)
    if as_json:
        out.print_json(json.dumps({"results": [hit.to_dict() for hit in hits]}))
        return
    _print_table(hits, frames)


def _print_table(hits: list, frames: bool) -> None:
    from rich.table import Table

    table = Table(show_edge=False)
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("path", overflow="fold")  # whole, never cut short
    if frames:
        table.add_column("t (s)", justify="right")
    for rank, hit in enumerate(hits, 1):
        cells = [str(rank), f"{hit.score:.4f}", hit.path] + ([f"{hit.t:.2f}"] if frames else [])
        table.add_row(*cells)
    out.print(table)
