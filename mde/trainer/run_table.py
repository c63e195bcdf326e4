"""The comparison table of several training runs (``mde eval RUN RUN ...``), laid out as the JETATAG seed
reports its results: one row per model, one ROC-AUC / PR-AUC column pair per training variant (noJE,
withJE), each cell the mean ± standard deviation over the runs (seeds) that share the row and variant.

A run's variant is 'withJE' or 'noJE' for a family whose recipe has the joint-embedding stage (JETATAG),
and '' (one unnamed column pair) for every other family.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mde.errors import MdeError

VARIANTS = ("noJE", "withJE", "")
"""Column order of the variants."""
FIGURES = ("roc_auc", "pr_auc")
"""The metrics of each column pair."""
FIGURE_TITLES = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC"}


@dataclass(frozen=True)
class RunResult:
    """One run's place in the table and its figures (macro ROC-AUC and PR-AUC over the tags, 0..1)."""

    run: str
    model: str
    variant: str
    roc_auc: float
    pr_auc: float


@dataclass(frozen=True)
class Cell:
    """The runs of one (model, variant): mean and sample standard deviation (0 for one run) per figure."""

    runs: int
    mean: dict[str, float]
    std: dict[str, float]


def read_config(run: Path) -> dict[str, Any]:
    """The run folder's config.json (MdeError, one line, when it is missing or unreadable)."""
    try:
        return json.loads((run / "config.json").read_text())
    except FileNotFoundError:
        raise MdeError(f"{run}: not a training run folder (no config.json)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise MdeError(f"{run}: unreadable config.json ({exc})") from None


def run_variant(config: dict[str, Any]) -> str:
    """'withJE' / 'noJE' for a run of a joint-embedding family (by its config), '' for other families."""
    from mde.trainer.models import get_model_spec

    if "joint_embedding" not in get_model_spec(config["model"]).recipe:
        return ""
    return "withJE" if config.get("joint_embedding") else "noJE"


def stored_test_metrics(run: Path) -> dict[str, Any]:
    """The test metrics the run wrote when it finished (metrics.json); MdeError when there are none."""
    try:
        metrics = json.loads((run / "metrics.json").read_text())
    except FileNotFoundError:
        raise MdeError(f"{run}: no metrics.json (the run has not finished; give --dataset and --data "
                       "to evaluate its best checkpoint)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise MdeError(f"{run}: unreadable metrics.json ({exc})") from None
    test = metrics.get("test") if isinstance(metrics, dict) else None
    if not isinstance(test, dict) or not all(isinstance(test.get(k), (int, float)) for k in FIGURES):
        raise MdeError(f"{run}: metrics.json holds no test ROC-AUC and PR-AUC")
    return test


def run_result(run: Path, metrics: Optional[dict[str, Any]] = None) -> RunResult:
    """The table entry of ``run``: its model and variant from config.json, its figures from ``metrics``
    (default: the test metrics in its metrics.json)."""
    config = read_config(run)
    figures = stored_test_metrics(run) if metrics is None else metrics
    return RunResult(run=str(run), model=config["model"], variant=run_variant(config),
                     roc_auc=float(figures["roc_auc"]), pr_auc=float(figures["pr_auc"]))


def tabulate(results: Iterable[RunResult]) -> dict[str, dict[str, Cell]]:
    """model -> variant -> Cell, models and variants in table order."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for result in results:
        groups.setdefault((result.model, result.variant), []).append(result)
    table: dict[str, dict[str, Cell]] = {}
    for model, variant in sorted(groups, key=lambda key: (key[0], VARIANTS.index(key[1]))):
        members = groups[model, variant]
        values = {k: np.array([getattr(r, k) for r in members]) for k in FIGURES}
        table.setdefault(model, {})[variant] = Cell(
            runs=len(members), mean={k: float(v.mean()) for k, v in values.items()},
            std={k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()})
    return table


def columns(table: dict[str, dict[str, Cell]]) -> list[tuple[str, str]]:
    """The (variant, figure) columns the table's cells fill, in order."""
    present = {variant for row in table.values() for variant in row}
    return [(variant, figure) for variant in VARIANTS if variant in present for figure in FIGURES]


def column_title(variant: str, figure: str) -> str:
    return f"{variant} {FIGURE_TITLES[figure]}".strip()


def cell_text(cell: Optional[Cell], figure: str) -> str:
    """'0.9185', or '0.9185 ± 0.0031 (3 runs)' over several runs; '-' where no run fills the cell."""
    if cell is None:
        return "-"
    if cell.runs == 1:
        return f"{cell.mean[figure]:.4f}"
    return f"{cell.mean[figure]:.4f} ± {cell.std[figure]:.4f} ({cell.runs} runs)"


def rows(table: dict[str, dict[str, Cell]]) -> tuple[list[str], list[list[str]]]:
    """The header and the text rows of the table."""
    spec = columns(table)
    header = ["model", *(column_title(v, f) for v, f in spec)]
    body = [[model, *(cell_text(cells.get(v), f) for v, f in spec)] for model, cells in table.items()]
    return header, body


def markdown(table: dict[str, dict[str, Cell]]) -> str:
    """The table as GitHub Markdown (figures right-aligned)."""
    header, body = rows(table)
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def as_json(results: Sequence[RunResult], table: dict[str, dict[str, Cell]]) -> dict[str, Any]:
    """What ``mde eval RUN RUN ... --out F`` writes: every run's figures and the table's cells."""
    return {"runs": [asdict(r) for r in results],
            "table": [{"model": model, "variant": variant, **asdict(cell)}
                      for model, cells in table.items() for variant, cell in cells.items()]}
