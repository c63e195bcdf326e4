"""``mde probe``: linear probes of several models' frozen embeddings on one labelled dataset (no torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mde.cli.console import Terminated, err, failure_line, file_progress, out, sigterm_raises
from mde.cli.train import DATA_HELP, DATASET_HELP, needs_train_extra
from mde.errors import MdeError

POOL_CHOICES = ("mean", "meanmax", "both")


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)


def probe(
    models: list[str] = typer.Argument(..., help="Models to compare: names in the store (see 'mde models', e.g. MTT_musicnn MSD_musicnn) or paths to .onnx model files (your exports); each is a row group of the table."),
    dataset: str = typer.Option(..., "--dataset", help=DATASET_HELP + " Its train, valid and test splits fit, choose and test the probes."),
    data: Path = typer.Option(..., "--data", help=DATA_HELP),
    layer: Optional[list[str]] = typer.Option(None, "--layer", help="Model output(s) to probe, repeatable or comma-separated (e.g. --layer embedding,penultimate); each model is probed on those it has (one line for each it lacks). Default: each model's embedding output."),
    pool: str = typer.Option("both", "--pool", help="How a clip's frame embeddings become one vector: mean (the mean over frames), meanmax (the mean and the max, concatenated: twice as wide) or both (a row each)."),
    single_label: bool = typer.Option(False, "--single-label", help="Read a manifest as one class per clip (multinomial probe: accuracy and weighted F1); gtzan always is. Default: any number of tags (one-vs-rest: ROC-AUC and PR-AUC)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder for probe.json (every figure, per tag or class too) and probe.md (the table); also holds the cache unless --cache is given."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Folder caching each clip's pooled statistics per model file and layer, so a rerun (or a stopped run) embeds only what is missing; may be shared between runs and datasets. Default: OUT/cache with --out, else a temporary folder removed at the end."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the table as Markdown instead of a terminal table."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON document (what probe.json holds) instead of the table."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Inference threads per model (default: ONNX Runtime's choice)."),
) -> None:
    """Fit linear probes (logistic regression) on each model's frozen clip embeddings and compare them.

    Every clip is decoded once and embedded by every model and layer; frames are pooled to clip vectors,
    standardised, and a logistic regression is fitted on the train split (one-vs-rest per tag, or
    multinomial for single-label data), its C chosen from 1e-3 ... 1e2 by the valid split's macro ROC-AUC
    (or accuracy). The table reports test ROC-AUC and PR-AUC (or accuracy and weighted F1) per model, layer
    and pooling. A file that fails to decode is skipped for every model with one line.
    """
    needs_train_extra("Probing", "sklearn")
    if markdown and as_json:
        raise MdeError("choose one of --markdown and --json")
    if pool not in POOL_CHOICES:
        raise MdeError(f"--pool {pool!r}: choose from {', '.join(POOL_CHOICES)}")
    pools = ("mean", "meanmax") if pool == "both" else (pool,)
    layers = [name.strip() for value in layer or [] for name in value.split(",") if name.strip()]
    if layer and not layers:
        raise MdeError("--layer needs a layer name")
    from mde.probe.api import resolve_models
    from mde.runtime.batch import check_destination
    from mde.trainer.data.sources import load_dataset

    for folder in (out_dir, cache):
        if folder is not None:
            check_destination(folder)  # before hours of embedding, not after
    _check_layers(resolve_models(models), layers)  # an unknown model or layer: one line, before any work
    ds = load_dataset(dataset, data, single_label=single_label or dataset == "gtzan")
    if cache is None and out_dir is not None:
        cache = out_dir / "cache"
    report = _run(models, ds, layers, pools, cache, threads)
    if cache is None:
        err.print("note: no --out or --cache: the clip embeddings were not kept (give --cache DIR to reuse them)")
    if out_dir is not None:
        from mde.probe.report import write_report

        json_path, md_path = write_report(report, out_dir)
        err.print(f"wrote {json_path} and {md_path}")
    _show(report, markdown, as_json)


def _check_layers(files: list[tuple[str, Path]], layers: list[str]) -> None:
    """MdeError unless some model has some of ``layers`` (the probe notes each one a model lacks)."""
    if not layers:
        return
    from mde.runtime.package import read_model_info

    have = {name for _, path in files for name in read_model_info(path).outputs}
    if not have & set(layers):
        raise MdeError(f"no model has the layer(s) {', '.join(layers)}: nothing to probe (their layers: "
                       f"{', '.join(sorted(have))})")


def _run(models, ds, layers: list[str], pools: tuple[str, ...], cache: Optional[Path], threads: Optional[int]):
    """The probes with a progress bar over the files; a stopped run says how to resume."""
    from mde.probe.api import probe as run_probe

    total = sum(len(ds.splits.get(split) or []) for split in ("train", "valid", "test"))
    try:
        with sigterm_raises(), file_progress() as progress:
            task = progress.add_task("embedding", total=total)

            def on_clip(done: int, files: int) -> None:
                progress.update(task, completed=done, total=files)

            def on_failure(path: Path, message: str) -> None:
                progress.console.print(failure_line(path, message), style="red")

            def on_note(line: str) -> None:
                progress.console.print(f"note: {line}")

            report = run_probe(models, ds, layers=layers, pools=pools, cache=cache, threads=threads,
                               on_clip=on_clip, on_failure=on_failure, on_note=on_note)
    except KeyboardInterrupt as stop:
        resume = f"; rerun the same command to resume from {cache}" if cache is not None else ""
        err.print(f"interrupted{resume}")
        raise typer.Exit(143 if isinstance(stop, Terminated) else 130) from None
    err.print(f"{report.embedded} clip embeddings computed, {report.cached} read from the cache, "
              f"{len(report.failed)} file(s) skipped")
    return report


def _show(report, markdown: bool, as_json: bool) -> None:
    """The table (terminal or Markdown) or the JSON document, on stdout."""
    from mde.probe import report as tables

    if as_json:
        out.print_json(json.dumps(tables.as_json(report)))
    elif markdown:
        out.print(tables.markdown(report), end="")
    else:
        from rich.table import Table

        view = Table(*tables.header(report), title=tables.title(report))
        for cells in tables.rows(report):
            view.add_row(*cells)
        out.print(view)
