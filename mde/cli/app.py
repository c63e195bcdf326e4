"""The ``mde`` command: one typer app; each command group lives in its own module."""

from __future__ import annotations

import sys

import typer

from mde.errors import MdeError

app = typer.Typer(
    name="mde",
    help="Music deep embeddings: frame embeddings and tags from audio, with models you train, import or export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_commands() -> None:
    from mde.cli import (
        bench,
        corpus,
        distill,
        embed,
        evaluate,
        export,
        models,
        probe,
        search,
        stream,
        synth,
        train,
        viz,
    )

    bench.register(app)
    corpus.register(app)
    distill.register(app)
    embed.register(app)
    export.register(app)
    models.register(app)
    probe.register(app)
    search.register(app)
    stream.register(app)
    synth.register(app)
    train.register(app)
    evaluate.register(app)
    viz.register(app)


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 1."""
    try:
        _register_commands()
        app()
    except MdeError as exc:
        print(f"mde: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("mde: interrupted", file=sys.stderr)
        sys.exit(130)
