"""``mde synth``: synthesized corpora to train and test on (no download needed)."""

from __future__ import annotations

from pathlib import Path

import typer

from mde.cli.console import err, stage_progress


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)


def synth(
    out_dir: Path = typer.Option(..., "--out", help="Folder for clips/ and manifest.csv."),
    n: int = typer.Option(200, "--n", help="Number of clips."),
    seconds: float = typer.Option(4.0, "--seconds", help="Length of each clip in seconds."),
    sample_rate: int = typer.Option(16000, "--sample-rate", help="Rate of the written clips in Hz."),
    engine: str = typer.Option("auto", "--engine", help="fluidsynth (General MIDI SoundFont), numpy (built-in synthesizer) or auto (fluidsynth when installed)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same corpus."),
    workers: int = typer.Option(1, "--workers", help="Worker processes."),
) -> None:
    """Write a tagged corpus whose tags come from how each clip was made (no download needed)."""
    from mde.trainer.data.synth import synthesize_corpus

    with stage_progress() as report:
        def announce(engine_name: str) -> None:  # after the argument checks: a bad argument stays one line
            err.print(f"synthesizing {n} clips with {engine_name} ...")
            report("clips", 0, n)

        manifest = synthesize_corpus(out_dir, n, seed=seed, sample_rate=sample_rate, seconds=seconds,
                                     engine=engine, workers=workers, announce=announce,
                                     on_clip=lambda done: report("clips", done, n))
    err.print(f"wrote {n} clips and {manifest}; train with: mde train --dataset manifest --data {manifest} ...")
