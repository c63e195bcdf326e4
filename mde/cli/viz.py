"""``mde viz``: PCA and t-SNE maps of clip embeddings, before and after training (needs torch for runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mde.cli.console import err, out, stage_progress
from mde.cli.train import DATA_HELP, DATASET_HELP, needs_train_extra


def register(app: typer.Typer) -> None:
    app.command("viz")(viz)


def viz(
    target: str = typer.Argument(..., help="A training run folder (maps of its initial weights, RUN/checkpoints/initial.pt, and of its best checkpoint, side by side) or a model name / .onnx file (after maps only)."),
    dataset: str = typer.Option(..., "--dataset", help=DATASET_HELP + " Multi-label data colours each clip by the most frequent (in the split) of its tags."),
    data: Path = typer.Option(..., "--data", help=DATA_HELP),
    split: str = typer.Option("test", "--split", help="train, valid or test: the clips that are mapped."),
    layer: Optional[str] = typer.Option(None, "--layer", help="The network output to map (default: the model's embedding); each window's output is flattened and averaged over the clip's windows."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for <layer>_maps.png and <layer>_maps.json (per map: 5-NN leave-one-out accuracy and silhouette)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the t-SNE maps."),
) -> None:
    """Map clip embeddings to 2-D (PCA; t-SNE at perplexity 5 and 30, each kept below the number of clips),
    coloured by class, and score how well each map separates the classes."""
    needs_train_extra("Mapping embeddings", "sklearn", *(["torch"] if (Path(target) / "config.json").is_file() else []))
    from mde.trainer.viz import embedding_maps

    with stage_progress() as report:
        result = embedding_maps(target, dataset, data, out_dir, split=split, layer=layer, seed=seed,
                                on_progress=report)
    for note in result.notes:
        err.print(f"note: {note}")
    out.print_json(json.dumps(result.scores))
    err.print(f"wrote {result.png} and {result.json}")
