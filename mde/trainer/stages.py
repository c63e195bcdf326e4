"""The stages of a training run. A plain run has one, 'tagging': the whole network learns its tags. A
JETATAG run with the joint embedding (``TrainConfig.joint_embedding``) has two, as its source trains:
'joint' (``stage1_epochs``: encoder, projector and tag autoencoder learn to put a clip's audio where
its tags go, :func:`mde.trainer.models.jetatag.joint_loss`), then 'classifier' (``epochs``: the
encoder frozen, in evaluation mode, the classifier learns the tags from its features). Each stage runs
the configured optimizer and schedule from its own first epoch. A fine-tuning run (``TrainConfig.init``)
whose backbone is frozen for its first epochs (``frozen_epochs``) has 'head' (the backbone frozen, in
evaluation mode: only the new head learns) and then, after ``unfreeze_after`` epochs, 'tagging'."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import nn

from mde.errors import MdeError
from mde.trainer.config import TrainConfig


@dataclass(frozen=True)
class Stage:
    """name: 'tagging', 'joint' or 'classifier'. start: its first epoch (0-based, counted over the whole
    run). epochs: how many it runs."""

    name: str
    start: int
    epochs: int

    @property
    def end(self) -> int:
        """The epoch after its last."""
        return self.start + self.epochs


def stage_plan(config: TrainConfig) -> list[Stage]:
    """The stages of a run of ``config``, in order."""
    if config.joint_embedding:
        return [Stage("joint", 0, config.stage1_epochs), Stage("classifier", config.stage1_epochs, config.epochs)]
    frozen = config.frozen_epochs
    if frozen:
        return [Stage("head", 0, frozen)] + ([Stage("tagging", frozen, config.epochs - frozen)]
                                             if frozen < config.epochs else [])
    return [Stage("tagging", 0, config.epochs)]


def stage_at(stages: list[Stage], epoch: int) -> Stage:
    """The stage that trains ``epoch`` (the last stage for epochs past the end)."""
    return next((stage for stage in stages if epoch < stage.end), stages[-1])


FROZEN_PARTS = {"classifier": "encoder", "head": "backbone"}
"""Stage -> the submodule it keeps frozen (in evaluation mode: BatchNorm statistics, dropout as at inference)."""
TRAINED_PARTS = {"classifier": "classifier", "head": "head"}
"""Stage -> the only submodule it trains (stages not named train the whole network)."""


def trainable_parameters(net: nn.Module, stage: Stage) -> list[nn.Parameter]:
    """The parameters ``stage`` trains: the classifier's in the 'classifier' stage, the new head's in the
    'head' stage, else all of them."""
    part = TRAINED_PARTS.get(stage.name)
    return list((net if part is None else net.get_submodule(part)).parameters())


def frozen_part(net: nn.Module, stage: Stage) -> Optional[nn.Module]:
    """The submodule ``stage`` keeps frozen (None: it trains the whole network)."""
    part = FROZEN_PARTS.get(stage.name)
    return None if part is None else net.get_submodule(part)


def check_joint_network(net: nn.Module, model: str) -> None:
    """MdeError unless ``net`` is a JETATAG network (the joint-embedding stage needs its parts)."""
    from mde.trainer.models.jetatag import Jetatag

    if not isinstance(net, Jetatag):
        raise MdeError(f"the joint-embedding stage needs a JETATAG model (--model jetatag), not {model}")
