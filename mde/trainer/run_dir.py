"""The run folder: resolved config, checkpoints, logs and metrics of one training run.

RUN_DIR/
  config.json            the TrainConfig, as resolved
  checkpoints/last.pt    model, optimizer, scheduler, epoch and RNG states (for --resume)
  checkpoints/best.pt    the model with the best validation score, its tag names and front end
  log.csv                one row per epoch
  tensorboard/           TensorBoard event files (when tensorboard is installed)
  metrics.json           {split: {"roc_auc", "pr_auc", "loss", ...}} of the best checkpoint
  confusion_matrix.*     single-label runs: the test split's confusion matrix (CSV and PNG)

Checkpoints hold tensors and plain Python values only, so they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch

from mde.atomic import atomic_path
from mde.errors import MdeError

LOG_FIELDS = ("epoch", "train_loss", "valid_loss", "valid_score", "lr", "seconds", "stage")


def _without_nan(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(v) for v in value]
    return value


class RunDir:
    """Paths and atomic reads / writes inside one run folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def last(self) -> Path:
        return self.root / "checkpoints" / "last.pt"

    @property
    def best(self) -> Path:
        return self.root / "checkpoints" / "best.pt"

    @property
    def initial(self) -> Path:
        """``checkpoints/initial.pt``: the network as a fresh run initialised it, before any step, in
        ``best.pt``'s format (written once; a resumed run leaves it)."""
        return self.root / "checkpoints" / "initial.pt"

    @property
    def log_path(self) -> Path:
        return self.root / "log.csv"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def write_json(self, path: Path, data: Any) -> None:
        """Write ``data`` as strict JSON: an undefined figure (NaN, e.g. ROC-AUC without positives) is null."""
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(_without_nan(data), indent=2, allow_nan=False) + "\n")

    def read_json(self, path: Path) -> Any:
        if not path.is_file():
            raise MdeError(f"{self.root}: no {path.name} (is this a training run folder?)")
        return json.loads(path.read_text())

    def save_checkpoint(self, path: Path, state: dict[str, Any]) -> None:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def load_checkpoint(self, path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
        if not path.is_file():
            raise MdeError(f"{self.root}: no checkpoint {path.relative_to(self.root)}")
        return torch.load(path, map_location=device, weights_only=True)

    def append_log(self, row: dict[str, Any]) -> None:
        new = not self.log_path.is_file()
        with open(self.log_path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow({key: row.get(key, "") for key in LOG_FIELDS})

    def log_by_stage(self) -> dict[str, list[dict[str, float]]]:
        """The log's rows grouped by stage (see mde.trainer.stages), each {'epoch', 'train_loss',
        'valid_loss'[, 'valid_score']} as numbers; rows without a stage count as 'tagging'."""
        with open(self.log_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        stages: dict[str, list[dict[str, float]]] = {}
        for row in rows:
            figures = {key: float(row[key]) for key in ("epoch", "train_loss", "valid_loss", "valid_score")
                       if row.get(key) not in (None, "")}
            figures["epoch"] = int(figures["epoch"])
            stages.setdefault(row.get("stage") or "tagging", []).append(figures)
        return stages

    def truncate_log(self, epochs: int) -> None:
        """Keep the log rows of the first ``epochs`` epochs (a resumed run rewrites later ones)."""
        if not self.log_path.is_file():
            return
        with open(self.log_path, newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["epoch"]) <= epochs]
        with atomic_path(self.log_path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)


class ReplicaRunDir(RunDir):
    """The run folder as a data-parallel replica other than rank 0 sees it: it reads what rank 0 wrote
    (config, checkpoints to resume from) and writes nothing."""

    def write_json(self, path: Path, data: Any) -> None:
        pass

    def save_checkpoint(self, path: Path, state: dict[str, Any]) -> None:
        pass

    def append_log(self, row: dict[str, Any]) -> None:
        pass

    def truncate_log(self, epochs: int) -> None:
        pass
