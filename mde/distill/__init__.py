"""``mde distill``: train a student network on a teacher's outputs over unlabelled audio (see
:mod:`mde.distill.trainer`). Imports torch (training); the teacher itself runs on the runtime."""

from mde.distill.config import DistillConfig
from mde.distill.trainer import DistillTrainer, distill

__all__ = ["DistillConfig", "DistillTrainer", "distill"]
