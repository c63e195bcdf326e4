"""The figures a finished distillation run wrote (metrics.json), as ``mde eval RUN...`` shows them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from mde.distill.agreement import AGREEMENT_KEYS
from mde.errors import MdeError

HEADER = ("run", "student", "window s", "teacher", *AGREEMENT_KEYS)


def is_distill_run(path: Path) -> bool:
    """Whether ``path`` is the folder of an ``mde distill`` run (its config names a teacher)."""
    config = path / "config.json"
    return config.is_file() and "teacher" in json.loads(config.read_text())


def distill_rows(runs: Sequence[Path], split: str) -> tuple[list[list[str]], dict[str, Any]]:
    """One row of HEADER per run for ``split`` ('valid' or 'test'), and each run's metrics.json by path.
    MdeError for a run that has not finished (no metrics.json)."""
    rows, data = [], {}
    for run in runs:
        metrics_path = run / "metrics.json"
        if not metrics_path.is_file():
            raise MdeError(f"{run}: no metrics.json yet (the run has not finished)")
        metrics = json.loads(metrics_path.read_text())
        if split not in metrics:
            raise MdeError(f"{run}: metrics.json has no {split!r} figures (valid and test are evaluated)")
        config = json.loads((run / "config.json").read_text())
        record = metrics.get("distillation", {})
        figures = metrics[split]
        rows.append([run.name, config["model"], _number(record.get("window_s")), config["teacher"],
                     *(_number(figures.get(key)) for key in AGREEMENT_KEYS)])
        data[str(run)] = metrics
    return rows, data


def _number(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"
