"""The settings of a distillation run: a training run's, plus the teacher's."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from mde.errors import MdeError
from mde.trainer.config import TrainConfig

DEFAULT_TEACHER = "MTT_musicnn"
DISTILL_DEFAULTS: dict[str, Any] = {
    "dataset": "manifest", "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "plateau",
    "plateau_patience": 2, "batch_size": 32, "epochs": 20, "crops_per_clip": "auto", "precise_bn": 0,
}
"""What a distillation run uses where it is not told (the student family's training recipe is for labelled
data and does not apply): Adam at 1e-3, lr x 0.2 after 2 epochs without a better validation loss."""


@dataclass
class DistillConfig(TrainConfig):
    """A :class:`~mde.trainer.config.TrainConfig` (``model`` is the student, ``data`` a manifest CSV or an
    audio folder, see :mod:`mde.distill.data`) plus:

    teacher: a stored model name or model file with tag outputs (the runtime runs it, without torch).
    teacher_cache: the folder of the teacher's outputs (None: ``<out>/teacher``); share it between runs
      of the same teacher and data to compute them once.
    teacher_hop: seconds between teacher windows (None: half the teacher's window).
    window: the student window in seconds (None: the student's own; another only for a student that
      takes any length).
    embedding_weight: weight of the embedding term (cosine distance between a learned linear projection
      of the student embedding and the teacher's embedding); 0 trains on the tags alone.
    eval_windows: the most non-overlapping windows evaluated per clip.
    crops_per_clip: as in TrainConfig, but 'auto' draws as many as the clip has non-overlapping student
      windows, at most 64 (see :mod:`mde.distill.data`).
    """

    teacher: str = DEFAULT_TEACHER
    teacher_cache: Optional[str] = None
    teacher_hop: Optional[float] = None
    window: Optional[float] = None
    embedding_weight: float = 0.0
    eval_windows: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = [
            (self.teacher_hop is None or (math.isfinite(self.teacher_hop) and self.teacher_hop > 0),
             f"the teacher hop must be a positive number of seconds, got {self.teacher_hop}"),
            (self.window is None or (math.isfinite(self.window) and self.window > 0),
             f"the window must be a positive number of seconds, got {self.window}"),
            (math.isfinite(self.embedding_weight) and self.embedding_weight >= 0,
             f"the embedding weight must be >= 0, got {self.embedding_weight}"),
            (self.eval_windows >= 1, f"eval windows must be at least 1, got {self.eval_windows}"),
        ]
        for ok, message in checks:
            if not ok:
                raise MdeError(message)

    @classmethod
    def for_student(cls, student: str, **settings: Any) -> DistillConfig:
        """The settings of a distillation of ``student``: ``settings`` where given, else DISTILL_DEFAULTS,
        else TrainConfig's defaults. ModelError for an unknown student."""
        from mde.trainer.models import get_model_spec

        if get_model_spec(student).objective != "tagging":
            raise MdeError(f"{student} has no tag output; a student must be a tagger")
        return cls(model=student, **{**DISTILL_DEFAULTS, **settings})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
