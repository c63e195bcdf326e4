"""Network architectures (torch). Importing this package registers every family."""

from mde.trainer.models import crnn, fcn, musicnn, shortchunk  # noqa: F401  (registration side effect)
from mde.trainer.models.registry import ModelSpec, build_model, get_model_spec, register, registered_names

__all__ = ["ModelSpec", "build_model", "get_model_spec", "register", "registered_names"]
