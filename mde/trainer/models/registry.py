"""The model registry: one entry per architecture, with what the rest of mde needs to know about it.

A family module registers a factory with :func:`register`; importers, exporters and training code find it
by name with :func:`get_model_spec` and build it with :func:`build_model`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from mde.errors import ModelError
from mde.runtime.frontend_config import FrontendConfig
from mde.runtime.package import Framing

Factory = TypeVar("Factory", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelSpec:
    """What an architecture expects and produces.

    name: registry key (e.g. 'fcn05').
    architecture: the architecture's own name (e.g. 'FCN05', 'ShortChunkCNN_Res').
    input_length: samples per analysis window, at ``frontend.sample_rate``.
    frontend: the log-mel front end whose output (batch, n_mels, frames) the network takes.
    framing: how audio is cut into network inputs (see ``mde.runtime.package.ModelInfo``).
    embedding_dim: size of the ``embedding`` output per window.
    n_tags: size of the ``tags`` output per window.
    factory: builds the ``nn.Module``; keyword arguments are passed through.
    embedding_output: the key of the network's output dict that is the default embedding.
    variable_length: whether the network accepts inputs of other lengths than ``input_length``.
    """

    name: str
    architecture: str
    input_length: int
    frontend: FrontendConfig
    framing: Framing
    embedding_dim: int
    n_tags: int
    factory: Callable[..., nn.Module]
    embedding_output: str = "embedding"
    variable_length: bool = False

    @property
    def sample_rate(self) -> int:
        """Input sample rate in Hz."""
        return self.frontend.sample_rate

    @property
    def input_seconds(self) -> float:
        """Window length in seconds."""
        return self.input_length / self.frontend.sample_rate

    @property
    def n_frames(self) -> int:
        """Log-mel frames per window."""
        return self.frontend.n_frames(self.input_length)


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str, *, architecture: str, input_length: int, frontend: FrontendConfig, embedding_dim: int,
    n_tags: int = 50, framing: Framing = "audio_windows", embedding_output: str = "embedding",
    variable_length: bool = False,
) -> Callable[[Factory], Factory]:
    """Decorator registering a model factory under ``name`` (names are unique)."""

    def decorate(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(
            name=name, architecture=architecture, input_length=input_length, frontend=frontend,
            framing=framing, embedding_dim=embedding_dim, n_tags=n_tags, factory=factory,
            embedding_output=embedding_output, variable_length=variable_length,
        )
        return factory

    return decorate


def registered_names() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """The entry registered under ``name``; ModelError naming the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown architecture {name!r}; known: {', '.join(registered_names())}") from None


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """A freshly initialised network of the registered architecture ``name``."""
    return get_model_spec(name).factory(**kwargs)
