"""``mde distill``: train a student on a teacher's outputs over unlabelled audio (needs torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from mde.cli.console import err, failure_line, stage_progress
from mde.cli.options import number_or
from mde.cli.train import needs_train_extra, run_with_progress


def register(app: typer.Typer) -> None:
    app.command("distill")(distill)


def distill(
    teacher: str = typer.Option("MTT_musicnn", "--teacher", help="Stored model name or model file with tag outputs; run by the runtime at its own window."),
    data: Path = typer.Option(..., "--data", help="Unlabelled audio: a manifest CSV (path,split[,tags]: tags are ignored), e.g. from 'mde corpus debian', or a folder (split by a hash of each file's path: 80 % train, 10 % valid, 10 % test)."),
    student: str = typer.Option(..., "--student", help="Tagging architecture from the registry: fcn05 (0.5 s), shortchunk or shortchunk_res (3.7 s), fcn (29 s), crnn, musicnn, soundnet, ..."),
    out_dir: Path = typer.Option(..., "--out", help="Run folder: config, checkpoints, logs, metrics.json (export it with 'mde export')."),
    window: Optional[float] = typer.Option(None, "--window", help="Student window in seconds (default: the student's own; another only for a student that takes any length, e.g. musicnn)."),
    epochs: int = typer.Option(20, "--epochs", help="Passes over the training split."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Folder of the teacher's outputs, computed once and reused (resumable); default: OUT/teacher. Share it between students of the same teacher and data."),
    teacher_hop: Optional[float] = typer.Option(None, "--teacher-hop", help="Seconds between teacher windows (default: half the teacher's window)."),
    embedding_weight: float = typer.Option(0.0, "--embedding-weight", help="Weight of a second loss term: cosine distance between a learned projection of the student's embedding and the teacher's embedding (0: tags alone)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Windows per optimizer step."),
    crops_per_clip: str = typer.Option("auto", "--crops-per-clip", help="Random student windows per clip per epoch: a number, or 'auto' (the clip's non-overlapping windows, at most 64)."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam's learning rate (x 0.2 after 2 epochs without a better validation loss)."),
    eval_windows: int = typer.Option(32, "--eval-windows", help="The most non-overlapping windows evaluated per held-out clip."),
    memory_budget: float = typer.Option(4.0, "--memory-budget", help="GiB of float32 kept in memory: the decoded train and valid audio, and the validation windows."),
    workers: int = typer.Option(0, "--workers", help="Data-loading worker processes."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    seed: int = typer.Option(0, "--seed", help="Random seed (crops, shuffling, initialization)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint (--epochs may be raised)."),
) -> None:
    """Distill a teacher into a student: the student learns the teacher's tag probabilities for the span of each of its windows on unlabelled audio, and is evaluated against the teacher on the held-out split (ROC-AUC against the teacher's thresholded tags, top-5 overlap, Pearson r).

    The teacher's outputs are computed once and cached; the best checkpoint is the one with the lowest validation loss. The README's Distillation section says how windows map onto the teacher's.
    """
    needs_train_extra("Distillation", "torch", "sklearn")
    from mde.distill import DistillConfig, DistillTrainer

    crops = number_or(crops_per_clip, "auto", "--crops-per-clip", int)
    settings: dict[str, Any] = {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "eval_windows": eval_windows,
        "crops_per_clip": "auto" if crops is None else crops,
    }
    config = DistillConfig.for_student(
        student, data=str(data), out=str(out_dir), teacher=teacher, teacher_cache=str(cache) if cache else None,
        teacher_hop=teacher_hop, window=window, embedding_weight=embedding_weight, memory_budget=memory_budget,
        workers=workers, device=device, seed=seed, **settings)
    trainer = DistillTrainer(config, resume=resume)
    splits = ", ".join(f"{k} {len(v)}" for k, v in trainer.data.dataset.splits.items())
    err.print(f"distilling {trainer.teacher.name} into {config.model} ({trainer.spec.input_seconds:g} s windows) on "
              f"{trainer.device} ({splits} files; teacher outputs in {trainer.cache.directory})")
    with stage_progress() as report:
        refused = trainer.fill_teacher(report)
    for path, message in refused.items():
        err.print(failure_line(path, message) + " (left out)")
    run_with_progress(trainer)
