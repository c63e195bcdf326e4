"""``mde synth``: synthesized corpora to train and test on (no download needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mde.cli.console import err, stage_progress
from mde.errors import MdeError

SYNTH_KINDS = ("tags", "genres")


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)


def synth(
    out_dir: Path = typer.Option(..., "--out", help="Folder for the corpus: clips/ and manifest.csv (--kind tags), or genres/<genre>/<genre>.NNNNN.wav (--kind genres)."),
    kind: str = typer.Option("tags", "--kind", help="tags: clips tagged with how each was made (instruments, drums, tempo, loudness), read with --dataset manifest. genres: a single-label corpus of 6 genres (classical, country, electronic, hiphop, jazz, rock) in GTZAN's layout, read with --dataset gtzan."),
    n: int = typer.Option(200, "--n", help="Number of clips (--kind genres: shared out evenly over the genres)."),
    seconds: float = typer.Option(4.0, "--seconds", help="Length of each clip in seconds."),
    sample_rate: int = typer.Option(16000, "--sample-rate", help="Rate of the written clips in Hz."),
    engine: str = typer.Option("auto", "--engine", help="fluidsynth (General MIDI SoundFont), numpy (built-in synthesizer) or auto (fluidsynth when installed)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same corpus."),
    workers: int = typer.Option(1, "--workers", help="Worker processes."),
    genres: Optional[str] = typer.Option(None, "--genres", help="--kind genres: make only these genres, comma-separated (e.g. rock,jazz); a clip is the same as in the whole corpus. Default: all six."),
) -> None:
    """Write a synthesized corpus whose labels come from how each clip was made (no download needed)."""
    from mde.trainer.data.synth import synthesize_corpus
    from mde.trainer.data.synth_genres import synthesize_genres

    if kind not in SYNTH_KINDS:
        raise MdeError(f"unknown corpus kind {kind!r}; choose one of {', '.join(SYNTH_KINDS)}")
    if genres is not None and kind != "genres":
        raise MdeError("--genres applies to --kind genres only")
    with stage_progress() as report:
        def announce(engine_name: str) -> None:  # after the argument checks: a bad argument stays one line
            err.print(f"synthesizing {n} clips with {engine_name} ...")
            report("clips", 0, n)

        def on_clip(done: int) -> None:
            report("clips", done, n)

        if kind == "tags":
            written = synthesize_corpus(out_dir, n, seed=seed, sample_rate=sample_rate, seconds=seconds,
                                        engine=engine, workers=workers, announce=announce, on_clip=on_clip)
        else:
            chosen = None if genres is None else [g.strip() for g in genres.split(",") if g.strip()]
            written = synthesize_genres(out_dir, n, seed=seed, sample_rate=sample_rate, seconds=seconds,
                                        engine=engine, workers=workers, genres=chosen, announce=announce,
                                        on_clip=on_clip)
    if kind == "tags":
        err.print(f"wrote {n} clips and {written}; train with: mde train --dataset manifest --data {written} ...")
    else:
        err.print(f"wrote {n} clips in {written}/genres; train with: mde train --dataset gtzan --data {written} ...")
