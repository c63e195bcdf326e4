"""``mde corpus``: corpora of real music fetched from public sources (data: never commit them)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mde.cli.console import err, stage_progress

corpus_app = typer.Typer(
    help=("Corpora of real, unlabelled music to train or distill on, fetched from public sources. A corpus is "
          "data: keep its folder out of git (never commit it)."),
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(corpus_app, name="corpus")


def _names(text: Optional[str]) -> Optional[list[str]]:
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


@corpus_app.command("debian")
def debian(
    out_dir: Path = typer.Option(..., "--out", help="Folder for the corpus: extract/<package>/..., manifest.csv, corpus.json, corpus.log.tsv. Data: never commit it."),
    packages: Optional[str] = typer.Option(None, "--packages", help="Packages to use, comma-separated (default: all nine: nexuiz-music, ufoai-music, warzone2100-music, singularity-music, asc-music, drascula-music, hyperrogue-music, planetblupi-music-ogg, xblast-tnt-musics); no others are accepted."),
    valid: Optional[str] = typer.Option(None, "--valid", help="Packages for the valid split, comma-separated (default: singularity-music,drascula-music, about 12 % of the hours)."),
    test: Optional[str] = typer.Option(None, "--test", help="Packages for the test split, comma-separated (default: nexuiz-music,hyperrogue-music, about 12 % of the hours). --valid and --test hold at least two packages together; a package is never on both sides."),
    min_seconds: float = typer.Option(5.0, "--min-seconds", help="Skip audio files shorter than this (seconds, from the file's header)."),
    keep_debs: bool = typer.Option(False, "--keep-debs", help="Keep the downloaded .deb files in DIR/debs (a rerun extracts from them instead of downloading)."),
    debs: Optional[Path] = typer.Option(None, "--debs", help="Folder of .deb files (e.g. an offline mirror's pool, searched recursively for <package>_*.deb): apt-get is not run."),
) -> None:
    """Build a corpus of real music from Debian's game-soundtrack packages, split by package (resumable; data: never commit it)."""
    from mde.trainer.data.debian_corpus import DEFAULT_PACKAGES, build_debian_corpus

    chosen = _names(packages)
    with stage_progress() as report:
        result = build_debian_corpus(
            out_dir, DEFAULT_PACKAGES if chosen is None else chosen, _names(valid), _names(test),
            min_seconds=min_seconds, keep_debs=keep_debs, on_progress=report, debs=debs, announce=err.print,
        )
    for split in ("train", "valid", "test"):
        names = [p.name for p in result.packages if p.split == split]
        files = sum(p.files for p in result.packages if p.split == split)
        err.print(f"{split}: {files} files, {result.split_hours(split):.2f} h "
                  f"({100 * result.split_fraction(split):.0f} %) from {', '.join(names)}")
    err.print(f"wrote {result.manifest} ({result.files} files, {result.hours:.2f} h), {result.summary} and "
              f"{result.log}; train with: mde train --dataset manifest --data {result.manifest} ...")
