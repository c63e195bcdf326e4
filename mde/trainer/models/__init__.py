"""Network architectures (torch). Importing this package registers every family."""

from mde.trainer.models import (  # noqa: F401  (registration side effect)
    crnn,
    fcn,
    jetatag,
    multiscale,
    music2vec,
    musicnn,
    samplecnn,
    schindler,
    shortchunk,
    soundnet,
)
from mde.trainer.models.registry import ModelSpec, build_model, get_model_spec, register, registered_names

__all__ = ["ModelSpec", "build_model", "get_model_spec", "register", "registered_names"]
