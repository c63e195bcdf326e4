"""``mde eval``: one run or model file's metrics on a dataset split, or the comparison table of several runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from mde.cli.console import err, out
from mde.cli.options import number_or
from mde.cli.train import DATA_HELP, DATASET_HELP, needs_train_extra
from mde.errors import MdeError


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)


def evaluate(
    targets: list[str] = typer.Argument(..., help="A run folder (its best checkpoint, evaluated in torch) or a model name / .onnx file (evaluated through the runtime); or several run folders, for their comparison table."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help=DATASET_HELP + " Needed for one target; without it, several runs are compared on the test metrics they wrote when they finished (metrics.json)."),
    data: Optional[Path] = typer.Option(None, "--data", help=DATA_HELP),
    split: str = typer.Option("test", "--split", help="train, valid or test."),
    eval_crops: str = typer.Option("16", "--eval-crops", help="Run folders: windows per clip, a number or 'all'. Model files always use all windows."),
    single_label: bool = typer.Option(False, "--single-label", help="One class per clip (adds accuracy, precision, recall, F1)."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="Also write the metrics (several runs: each run's figures and the table's cells) to this JSON file."),
    figures: Optional[Path] = typer.Option(None, "--figures", help="Single-label, one target: also write confusion_matrix.png (two panels: counts, and counts normalised per true class) and confusion_matrix.csv into this folder."),
    markdown: bool = typer.Option(False, "--markdown", help="Several runs: print the table as Markdown instead of a terminal table; --retrieval: its table."),
    retrieval: bool = typer.Option(False, "--retrieval", help="One target: similarity retrieval instead of tagging metrics. Each clip of the split queries the others, ranked by embedding cosine: precision at 1, 5, 10 and mean average precision, with relevance = tag-set Jaccard >= 0.5 and, for a similarity run (schindler), target cosine > 0.9 in each of its target spaces."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="--retrieval: also a model name or .onnx file (e.g. MTT_musicnn) in the same run and table, against the same relevance."),
) -> None:
    """Evaluate a trained run or a model file on a dataset split (ROC-AUC, PR-AUC, loss, and accuracy... for
    single-label data), or compare several runs in one table: a row per model, a ROC-AUC / PR-AUC column pair
    per variant (JETATAG's noJE and withJE), the mean ± standard deviation over runs that share a cell."""
    needs_train_extra("Evaluating", "sklearn")
    if (dataset is None) != (data is None):
        raise MdeError("give --dataset and --data together")
    single_label = single_label or dataset == "gtzan"
    if figures is not None and (len(targets) > 1 or not single_label):
        raise MdeError("--figures draws one target's confusion matrix: it needs one target and a single-label "
                       "evaluation (--single-label)")
    crops = number_or(eval_crops, "all", "--eval-crops", int)
    if baseline is not None and not retrieval:
        raise MdeError("--baseline applies to --retrieval")
    if dataset is None and not retrieval and _all_distilled(targets):
        metrics = _distilled(targets, split, markdown)
    elif retrieval:
        if len(targets) != 1 or dataset is None or data is None:
            raise MdeError("--retrieval evaluates one target on --dataset and --data")
        metrics = _retrieval(targets[0], dataset, data, split, crops, baseline, markdown)
    elif len(targets) == 1:
        if dataset is None or data is None:
            raise MdeError("evaluating one target needs --dataset and --data (several runs can be compared on "
                           "their own metrics.json without them)")
        metrics = _one(targets[0], dataset, data, split, crops, single_label, figures)
    else:
        metrics = _table(targets, dataset, data, split, crops, single_label, markdown)
    text = json.dumps(metrics, indent=2)
    if out_file:
        from mde.atomic import atomic_path

        with atomic_path(out_file) as tmp:
            tmp.write_text(text + "\n")
    if len(targets) == 1 and not retrieval and not _all_distilled(targets):
        out.print_json(text)


def _one(target: str, dataset: str, data: Path, split: str, crops: Optional[int], single_label: bool,
         figures: Optional[Path]) -> dict[str, Any]:
    from mde.trainer.assess import assess

    metrics = assess(target, dataset, data, split, crops, single_label)
    if figures is not None:
        if "confusion" not in metrics:
            raise MdeError(f"{target}: this evaluation has no confusion matrix (a model file needs every class "
                           "of the dataset among its tags)")
        from mde.trainer.metrics import write_confusion_matrix

        csv_path, png_path = write_confusion_matrix(metrics["confusion"], metrics["class_names"], figures)
        err.print(f"wrote {png_path} and {csv_path}")
    return metrics


def _retrieval(target: str, dataset: str, data: Path, split: str, crops: Optional[int], baseline: Optional[str],
               markdown: bool) -> dict[str, Any]:
    """Print the retrieval table (stdout); return what --out writes."""
    from mde.cli.console import file_progress
    from mde.trainer.assess_retrieval import assess_retrieval
    from mde.trainer.data.sources import load_dataset
    from mde.trainer.retrieval import CUTOFFS

    ds = load_dataset(dataset, data)
    with file_progress() as progress:
        task = progress.add_task("embedding", total=None)

        def on_clip(what: str, done: int, total: int) -> None:
            progress.update(task, description=f"embedding ({what})", completed=done, total=total)

        report = assess_retrieval(target, ds, split, crops, baseline, on_clip)
    header = ["model", "relevance", *(f"P@{k}" for k in CUTOFFS), "mAP", "queries"]
    body = [[model, relevance, *(_figure(figures[f"p@{k}"]) for k in CUTOFFS), _figure(figures["map"]),
             str(figures["queries"])]
            for model, table in report["retrieval"].items() for relevance, figures in table.items()]
    _print_rows(header, body, f"retrieval on {report['tracks']} {split} tracks", markdown)
    return report


def _all_distilled(targets: list[str]) -> bool:
    from mde.distill.report import is_distill_run

    return all(is_distill_run(Path(target)) for target in targets)


def _distilled(targets: list[str], split: str, markdown: bool) -> dict[str, Any]:
    """Print the agreement with the teacher that distillation runs wrote for ``split`` (stdout); return what
    --out writes (each run's metrics.json)."""
    from mde.distill.report import HEADER, distill_rows

    body, data = distill_rows([Path(target) for target in targets], split)
    _print_rows(list(HEADER), body, f"agreement with the teacher, {split} split", markdown)
    return data


def _print_rows(header: list[str], body: list[list[str]], title: str, markdown: bool) -> None:
    """A table on stdout: Markdown, or a rich table with ``title``."""
    if markdown:
        lines = [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}", *(f"| {' | '.join(row)} |" for row in body)]
        out.print("\n".join(lines), markup=False)
    else:
        from rich.table import Table

        view = Table(*header, title=title)
        for row in body:
            view.add_row(*row)
        out.print(view)


def _figure(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"


def _table(targets: list[str], dataset: Optional[str], data: Optional[Path], split: str, crops: Optional[int],
           single_label: bool, markdown: bool) -> dict[str, Any]:
    """Print the runs' table (stdout); return what --out writes."""
    from mde.trainer import run_table

    needs_train_extra("Comparing runs", "torch")  # a run's variant comes from its family's recipe (the registry)
    runs = list({Path(target).resolve(): Path(target) for target in targets}.values())  # each run once
    for run in runs:
        run_table.read_config(run)  # every target is a run folder, before any evaluation starts
    if dataset is not None and data is not None:
        from mde.trainer.assess import assess_run
        from mde.trainer.data.sources import load_dataset

        ds = load_dataset(dataset, data, single_label=single_label)
        results = [run_table.run_result(run, assess_run(run, ds, split, crops)) for run in runs]
    else:
        results = [run_table.run_result(run) for run in runs]
    table = run_table.tabulate(results)
    if markdown:
        out.print(run_table.markdown(table))
    else:
        from rich.table import Table

        header, body = run_table.rows(table)
        view = Table(*header, title=f"{len(runs)} runs, {split if dataset else 'test (metrics.json)'} split")
        for row in body:
            view.add_row(*row)
        out.print(view)
    return run_table.as_json(results, table)
