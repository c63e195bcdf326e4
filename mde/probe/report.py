"""A :class:`~mde.probe.api.ProbeReport` as table rows (terminal), a JSON document and a Markdown table.

One row per (model, layer, pooling): the clip vector's width, the chosen C, the valid split's selection
score at it, and the test figures: macro ROC-AUC and PR-AUC (multi-label) or accuracy and
support-weighted F1 (single-label), all in [0, 1]. Figures that are undefined (no test tag with both
classes) are '-' in the tables and null in JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mde.atomic import atomic_path
from mde.probe.api import ProbeReport

JSON_NAME = "probe.json"
MARKDOWN_NAME = "probe.md"


def figure_columns(single_label: bool) -> list[tuple[str, str]]:
    """(key in the test figures, column title) of the two test figures reported."""
    if single_label:
        return [("accuracy", "accuracy"), ("f1", "weighted F1")]
    return [("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC")]


def header(report: ProbeReport) -> list[str]:
    """The table's column titles."""
    selection = "valid accuracy" if report.single_label else "valid ROC-AUC"
    return ["model", "layer", "pool", "dim", "C", selection, *(f"test {title}" for _, title in
                                                               figure_columns(report.single_label))]


def rows(report: ProbeReport) -> list[list[str]]:
    """The table's cells, a row per probe in the report's order, figures to 3 decimals."""
    metrics = figure_columns(report.single_label)
    return [[row.model, row.layer, row.pool, str(row.dim), f"{row.fit.c:g}", _figure(row.fit.valid_score),
             *(_figure(row.fit.test.get(key)) for key, _ in metrics)] for row in report.rows]


def title(report: ProbeReport) -> str:
    """One line: the dataset, the task and the clips per split."""
    task = "single-label" if report.single_label else "multi-label"
    counts = ", ".join(f"{split} {n}" for split, n in report.splits.items())
    return f"linear probes on {report.dataset} ({task}, {len(report.tag_names)} tags; clips: {counts})"


def markdown(report: ProbeReport) -> str:
    """The report as a Markdown document: the title line, then the table."""
    names = header(report)
    lines = [f"**{title(report)}**", "", f"| {' | '.join(names)} |", f"|{'---|' * len(names)}"]
    lines += [f"| {' | '.join(cells)} |" for cells in rows(report)]
    if report.failed:
        lines += ["", f"{len(report.failed)} file(s) skipped (failed to decode or embed); see probe.json."]
    return "\n".join(lines) + "\n"


def as_json(report: ProbeReport) -> dict[str, Any]:
    """The report as a JSON-ready dictionary (NaN figures become None)."""
    metrics = figure_columns(report.single_label)
    document = {
        "dataset": report.dataset,
        "task": "single-label" if report.single_label else "multi-label",
        "tag_names": list(report.tag_names),
        "splits": report.splits,
        "selection": "valid accuracy" if report.single_label else "valid macro ROC-AUC",
        "refit": "train split at the chosen C (valid is used for the choice only)",
        "models": [vars(entry) for entry in report.models],
        "results": [
            {
                "model": row.model, "layer": row.layer, "pool": row.pool, "dim": row.dim, "c": row.fit.c,
                "valid_score": row.fit.valid_score, "valid_by_c": {f"{c:g}": s for c, s in row.fit.valid.items()},
                **{key: row.fit.test.get(key) for key, _ in metrics},
                "fitted": list(row.fit.fitted), "skipped_tags": list(row.fit.skipped_tags), "test": row.fit.test,
            }
            for row in report.rows
        ],
        "failed": [{"file": str(path), "message": message} for path, message in report.failed.items()],
        "notes": report.notes,
        "embedded": report.embedded,
        "cached": report.cached,
    }
    cleaned: dict[str, Any] = _clean(document)
    return cleaned


def write_report(report: ProbeReport, out_dir: Path) -> tuple[Path, Path]:
    """Write ``out_dir/probe.json`` and ``out_dir/probe.md`` atomically; returns their paths."""
    paths = (Path(out_dir) / JSON_NAME, Path(out_dir) / MARKDOWN_NAME)
    for path, text in zip(paths, (json.dumps(as_json(report), indent=2) + "\n", markdown(report))):
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    return paths


def _figure(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}"


def _clean(value: Any) -> Any:
    """``value`` with NaN and infinities as None, tuples as lists and numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
