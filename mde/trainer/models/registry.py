"""The model registry: one entry per architecture, with what the rest of mde needs to know about it.

A family module registers a factory with :func:`register`; importers, exporters and training code find it
by name with :func:`get_model_spec` and build it with :func:`build_model`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, TypeVar

from torch import nn

from mde.errors import ModelError
from mde.runtime.frontend_config import FrontendConfig
from mde.runtime.input_transform import IDENTITY, InputTransform
from mde.runtime.package import Framing

Factory = TypeVar("Factory", bound=Callable[..., nn.Module])
Objective = Literal["tagging", "similarity"]


@dataclass(frozen=True)
class ModelSpec:
    """What an architecture expects and produces.

    name: registry key (e.g. 'fcn05').
    architecture: the architecture's own name (e.g. 'FCN05', 'ShortChunkCNN_Res').
    input_length: samples per analysis window, at :attr:`sample_rate`.
    frontend: the log-mel front end whose output (batch, n_mels, frames) the network takes; None for a
      waveform network, which takes (batch, samples) (or (batch, channels, samples) when ``channels`` > 1)
      at ``waveform_rate`` Hz after ``input_transform``.
    framing: how audio is cut into network inputs (see ``mde.runtime.package.ModelInfo``).
    embedding_dim: size of the ``embedding`` output per window.
    n_tags: size of the ``tags`` output per window.
    factory: builds the ``nn.Module``; keyword arguments are passed through.
    embedding_output: the key of the network's output dict that is the default embedding.
    variable_length: whether the network accepts inputs of other lengths than ``input_length``.
    waveform_rate: the input rate in Hz of a waveform network (None for a log-mel one, whose rate is the
      front end's).
    input_transform: what is done to a waveform network's samples first (see mde.runtime.input_transform).
    channels: audio channels the network takes (1: mono).
    recipe: the family's training defaults, TrainConfig field -> value (its seed's recipe; flags override).
    layers: further outputs of the network that an export keeps beside the embedding and the tags (each
      one (batch, size) per window), for ``mde embed --layer``.
    band_norm: whether a log-mel network takes its input standardised per mel band by the mean and std of
      the training split (computed by the trainer, stored with the weights and in the exported model).
    objective: 'tagging' (the network outputs ``logits`` per tag, trained by cross-entropy) or 'similarity'
      (it outputs an embedding and one ``target_<kind>`` head per target space, trained by the similarity
      losses of :mod:`mde.trainer.similarity_losses`; its factory takes ``topics``, {kind: size}).
    """

    name: str
    architecture: str
    input_length: int
    frontend: Optional[FrontendConfig]
    framing: Framing
    embedding_dim: int
    n_tags: int
    factory: Callable[..., nn.Module]
    embedding_output: str = "embedding"
    variable_length: bool = False
    waveform_rate: Optional[int] = None
    input_transform: InputTransform = IDENTITY
    channels: int = 1
    recipe: Mapping[str, Any] = field(default_factory=dict)
    layers: tuple[str, ...] = ()
    band_norm: bool = False
    objective: Objective = "tagging"

    def __post_init__(self) -> None:
        if (self.frontend is None) == (self.waveform_rate is None):
            raise ValueError(f"model {self.name!r}: give a log-mel frontend or a waveform_rate, not both or neither")
        if self.band_norm and self.frontend is None:
            raise ValueError(f"model {self.name!r}: band_norm applies to a log-mel network only")

    @property
    def input_kind(self) -> str:
        """'logmel' (the network takes the front end's output) or 'waveform' (it takes samples)."""
        return "logmel" if self.frontend is not None else "waveform"

    @property
    def sample_rate(self) -> int:
        """Input sample rate in Hz."""
        if self.frontend is not None:
            return self.frontend.sample_rate
        assert self.waveform_rate is not None  # __post_init__
        return self.waveform_rate

    @property
    def input_seconds(self) -> float:
        """Window length in seconds."""
        return self.input_length / self.sample_rate

    @property
    def logmel_frontend(self) -> FrontendConfig:
        """The front end of a log-mel network; ModelError for a waveform one (for log-mel-only paths)."""
        if self.frontend is None:
            raise ModelError(f"{self.name} takes a waveform, not a log-mel")
        return self.frontend

    @property
    def n_frames(self) -> int:
        """Log-mel frames per window (log-mel networks only)."""
        return self.logmel_frontend.n_frames(self.input_length)


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str, *, architecture: str, input_length: int, embedding_dim: int,
    frontend: Optional[FrontendConfig] = None, waveform_rate: Optional[int] = None,
    input_transform: InputTransform = IDENTITY, channels: int = 1, n_tags: int = 50,
    framing: Framing = "audio_windows", embedding_output: str = "embedding", variable_length: bool = False,
    recipe: Optional[Mapping[str, Any]] = None, layers: tuple[str, ...] = (), band_norm: bool = False,
    objective: Objective = "tagging",
) -> Callable[[Factory], Factory]:
    """Decorator registering a model factory under ``name`` (names are unique): a log-mel network with
    ``frontend``, or a waveform network with ``waveform_rate`` (Hz) and ``input_transform``."""

    def decorate(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(
            name=name, architecture=architecture, input_length=input_length, frontend=frontend,
            framing=framing, embedding_dim=embedding_dim, n_tags=n_tags, factory=factory,
            embedding_output=embedding_output, variable_length=variable_length, waveform_rate=waveform_rate,
            input_transform=input_transform, channels=channels, recipe=dict(recipe or {}), layers=layers,
            band_norm=band_norm, objective=objective,
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
