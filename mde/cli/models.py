"""``mde models`` (the models bundled with mde and those in the user's store) and ``mde import`` (turn outside
checkpoints into model files)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from mde.cli.console import err, out
from mde.errors import MissingExtraError

if TYPE_CHECKING:
    from mde.runtime.package import ModelInfo

OPTIONAL_EXPORT_PACKAGES = ("torch", "onnx")
"""Packages of the 'export' extra that importers need and the runtime does not."""

import_app = typer.Typer(help="Import pretrained checkpoints into the model store.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
    app.add_typer(import_app, name="import")


def models(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the models available by name, bundled with mde or stored by you: name, input (log-mel or waveform,
    channels, input transform), window, hop, rate, embedding size, tag count, and its store ('bundled':
    shipped with mde, 'user': in $MDE_HOME/models; a user model hides a bundled one of the same name) and
    source."""
    import json

    from rich.table import Table

    from mde.runtime import store
    from mde.runtime.package import ModelInfo

    rows = store.list_models()
    if as_json:
        out.print_json(json.dumps([_model_row(path, info) for path, info in rows]))
        return
    if not rows:
        err.print(f"no models in {store.models_dir()} yet and none bundled with mde; see 'mde import --help'")
        return
    table = Table(caption=f"bundled: shipped with mde ({store.bundled_models_dir()}); "
                          f"user: stored in {store.models_dir()}")
    table.add_column("name", no_wrap=True)
    table.add_column("input", min_width=8)  # may wrap: the source keeps room on an 80-column terminal
    for heading in ("window s", "hop s", "rate Hz", "dim", "tags"):
        table.add_column(heading, justify="right", no_wrap=True)
    table.add_column("store: source", min_width=10)  # the store first: a wrapped source does not hide it
    broken = []
    for path, info in rows:
        if isinstance(info, ModelInfo):
            table.add_row(
                info.name, _input_text(info), f"{info.window_seconds:g}", f"{info.hop_seconds:g}",
                str(info.sample_rate), str(info.embedding_dim), str(info.n_tags),
                f"{_store_of(path)}: {info.source}",
            )
        else:
            broken.append(f"{path.stem} ({_store_of(path)}): broken: {str(info).removeprefix(f'{path}: ')}")
    out.print(table)
    for line in broken:  # below the table, whole: an error does not fit a table cell
        out.print(line)


def _store_of(path: Path) -> str:
    """'bundled' for a model file shipped with mde, 'user' for one in the user's store."""
    from mde.runtime import store

    return "bundled" if store.is_bundled(path) else "user"


def _model_row(path: Path, info: object) -> dict[str, object]:
    from mde.runtime.package import ModelInfo

    if not isinstance(info, ModelInfo):
        return {"name": path.stem, "path": str(path), "store": _store_of(path), "error": str(info)}
    return {
        "name": info.name, "path": str(path), "store": _store_of(path), "window_s": info.window_seconds,
        "hop_s": info.hop_seconds,
        "sample_rate": info.sample_rate, "embedding_dim": info.embedding_dim, "n_tags": info.n_tags,
        "source": info.source, "architecture": info.architecture, "input_kind": info.input_kind,
        "channels": info.channels,
        "input_transform": info.input_transform.to_dict() if info.input_transform else None,
    }


def _input_text(info: ModelInfo) -> str:
    """'log-mel', or for a waveform model e.g. 'waveform', 'waveform x256', 'stereo waveform mu-law 255'."""
    if info.input_kind == "logmel":
        return "log-mel"
    transform = info.input_transform
    detail = ""
    if transform is not None and transform.kind == "gain":
        detail = f" x{transform.gain:g}"
    elif transform is not None and transform.kind == "mulaw":
        detail = f" mu-law {transform.mu}"
    return ("stereo " if info.channels == 2 else "") + "waveform" + detail


@import_app.command("seed")
def import_seed(
    checkpoint: Path = typer.Argument(..., help="The first seed's Lightning checkpoint (.ckpt) of FCN05, FCN29 or ShortChunkCNN_Res."),
    name: Optional[str] = typer.Option(None, "--name", help="Store name (default: fcn05-mtat, fcn29-mtat or shortchunk-res-mtat)."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture when it cannot be recognized: fcn05, fcn or shortchunk_res."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a stored model of the same name."),
) -> None:
    """Import a checkpoint of the first seed (read without running pickled code), check parity, store it."""
    try:
        from mde.export.importers.seed import import_seed as run_import
        from mde.export.importers.seed import load_seed
    except ImportError as exc:
        if exc.name not in OPTIONAL_EXPORT_PACKAGES:
            raise
        raise MissingExtraError(exc.name, "export", "Importing checkpoints") from None
    from mde.errors import ModelError
    from mde.runtime import store

    try:
        path, info = run_import(checkpoint, name=name, overwrite=overwrite, arch=arch)
    except ModelError:  # the name is taken: a no-op if it holds this very checkpoint
        _, info = load_seed(checkpoint, name=name, arch=arch)
        if overwrite or store.stored_source(info.name) != info.source:
            raise
        err.print(f"{info.name} is already in the store (same source); nothing to do")
        return
    err.print(f"stored {info.name} ({info.architecture}, {info.window_seconds:g} s window, "
              f"{info.embedding_dim}-d embedding, {info.n_tags} tags) at {path}")


MUSICNN_CHOICES = ("MTT_musicnn", "MSD_musicnn", "MTT_vgg", "MSD_vgg")


@import_app.command("musicnn")
def import_musicnn(
    names: Optional[list[str]] = typer.Argument(
        None, help="Models to import: MTT_musicnn, MSD_musicnn, MTT_vgg, MSD_vgg or all (default: all)."
    ),
    from_dir: Optional[Path] = typer.Option(
        None, "--from", help="Folder holding the model folders (MTT_musicnn/ ...); default: the installed musicnn package."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace stored models of the same names."),
) -> None:
    """Import the musicnn package's pretrained TensorFlow models (read without TensorFlow) into the store."""
    from mde.errors import MdeError

    wanted = list(MUSICNN_CHOICES) if not names or "all" in names else names
    unknown = [name for name in wanted if name not in MUSICNN_CHOICES]
    if unknown:
        raise MdeError(f"unknown musicnn model {unknown[0]!r}; choose from {', '.join(MUSICNN_CHOICES)} or all")
    try:
        from mde.export.importers.musicnn import import_musicnn as run_import
    except ImportError as exc:
        if exc.name not in OPTIONAL_EXPORT_PACKAGES:
            raise
        raise MissingExtraError(exc.name, "export", "Importing musicnn models") from None
    from mde.export.importers.musicnn import musicnn_source
    from mde.runtime import store

    for name in wanted:
        if not overwrite and store.stored_source(name) == musicnn_source(name):
            err.print(f"{name} is already in the store (same source); nothing to do")
            continue
        path, info = run_import(name, from_dir=from_dir, overwrite=overwrite)
        err.print(f"stored {info.name} ({info.architecture}, {info.window_seconds:g} s patches of "
                  f"{info.patch_frames} frames, {info.embedding_dim}-d {info.embedding_output}, "
                  f"{info.n_tags} tags) at {path}")
