"""Everything a training run is told, as one JSON-able dataclass saved in the run folder."""

from __future__ import annotations

import copy
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Optional, Union

from mde.errors import MdeError
from mde.trainer.data.mtat import MTAT_SPLITS
from mde.trainer.data.sources import DATASET_KINDS

OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop")
SCHEDULES = ("none", "plateau", "step", "adam_then_sgd")
SIMILARITY_LOSSES = ("cosine", "triplet", "both")
TARGET_KINDS = ("tags", "text")
HEADS = ("linear", "mlp")
"""The new heads of a fine-tuning run (see mde.trainer.models.heads)."""
TRIPLET_AGGREGATIONS = ("hardest", "mean")
"""Each anchor's positive distance in the triplet loss: its farthest positive, or the mean of its positives."""


@dataclass
class TrainConfig:
    """Settings of one training run. :meth:`for_model` fills what it is not told from the model family's
    recipe (``ModelSpec.recipe``) before these defaults; ``TrainConfig(...)`` itself uses only these.

    model: registry name (``mde.trainer.models.registered_names()``).
    dataset, data: the data source ('mtat', 'gtzan', 'manifest') and its folder or CSV file.
    cache: a feature cache folder made by ``mde prepare`` for this dataset (read when given), or 'auto':
      without one, the train and valid files are decoded once into memory when their float32 audio fits
      ``memory_budget``, and with 'auto' into a temporary cache in the run folder when it does not (else
      they are decoded at every use).
    memory_budget: GiB of float32 the loop may keep in memory: the decoded train and valid audio, and
      (separately) the validation inputs, which are then computed once per run; 0 keeps nothing.
    merge_synonyms, mtat_split: MagnaTagATune only (ignored for other datasets, so that a recipe can set
      them): merge its synonymous tags before the top ``top_k``; its split, 'sota' (the
      sota-music-tagging-models split) or 'random' (the multi-scale CNN's seeded 18,000 / 2,000 / rest).
    epochs, batch_size: passes over the training split; windows (random crops) per optimizer step.
    crops_per_clip: random training crops per clip per epoch, each at its own start: a positive int (1 is
      the sota recipe), or 'auto' for as many as non-overlapping windows fit in the clip, at most 4.
    lr, weight_decay, momentum: optimizer settings (momentum is SGD's, with Nesterov).
    optimizer: 'adamw', 'adam', 'sgd' or 'rmsprop' (Keras' RMSprop: decay 0.9, epsilon 1e-7, no momentum).
    schedule: 'none'; 'plateau' (ReduceLROnPlateau on validation loss, ``plateau_factor``,
      ``plateau_patience`` epochs); 'step' (lr times ``gamma`` at each epoch in ``milestones``);
      'adam_then_sgd' (the sota-music-tagging-models recipe: the chosen optimizer until epoch
      ``switch_epoch``, then SGD with Nesterov momentum at ``switch_lr`` (None: ``lr``) with step decays
      at ``milestones``).
    grad_clip: max gradient norm (None: no clipping).
    amp: mixed precision on CUDA (ignored on CPU).
    early_stop: stop after this many epochs without a better validation score (None: never).
    joint_embedding, stage1_epochs: JETATAG's two stages (:mod:`mde.trainer.stages`): ``stage1_epochs``
      of the joint embedding, then ``epochs`` of the classifier on the frozen encoder ("withJE"); False
      trains encoder and classifier together on the tags for ``epochs`` ("noJE").
    precise_bn: after each epoch, recompute BatchNorm's running statistics as the plain average over this
      many training windows (:mod:`mde.trainer.batchnorm`), so that validation, the checkpoints and the
      exported model normalise as training did (not in JETATAG's classifier stage, whose encoder is
      frozen); 0 keeps torch's running averages.
    eval_crops: windows averaged per clip at evaluation (16 evenly spaced, as the sota recipe), or
      None for all non-overlapping windows as the runtime cuts them.
    workers: DataLoader worker processes.
    device: 'cpu', 'cuda' or 'auto'.
    loss, targets, topics, triplet_aggregation: the similarity networks' training (Schindler et al.; ignored
      by taggers): 'cosine' regression of one head per target space, the batch-hard 'triplet' loss on the
      embedding (positives: target cosine > 0.9; with several targets one term each), or 'both' (their sum);
      ``targets`` the comma-separated target spaces ('tags', 'text', 'tags,text'), each TF-IDF + LSI of at
      most ``topics`` topics fitted on the train split; ``triplet_aggregation`` 'hardest' or 'mean' positive.
    init, head, freeze_backbone, unfreeze_after, backbone_lr: fine-tuning (:mod:`mde.trainer.warm_start`):
      ``init`` the pretrained source (a stored model's name or .onnx path, a run folder or a .pt checkpoint;
      None: a fresh network), whose network becomes the backbone under a new ``head`` ('linear' or 'mlp');
      ``freeze_backbone`` trains the head alone (the backbone frozen, in evaluation mode) for the whole run,
      or for the first ``unfreeze_after`` epochs (which implies it), after which the whole network trains;
      the backbone learns at ``backbone_lr`` (None: ``lr``) whenever it trains, the head at ``lr``.
    """

    model: str
    dataset: str
    data: str
    out: str
    cache: Optional[str] = None
    memory_budget: float = 2.0
    single_label: bool = False
    merge_synonyms: bool = False
    mtat_split: str = "sota"
    top_k: int = 50
    epochs: int = 10
    batch_size: int = 16
    crops_per_clip: Union[int, str] = "auto"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    optimizer: str = "adamw"
    schedule: str = "plateau"
    plateau_factor: float = 0.2
    plateau_patience: int = 3
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    switch_epoch: int = 0
    switch_lr: Optional[float] = None
    grad_clip: Optional[float] = None
    amp: bool = True
    early_stop: Optional[int] = None
    joint_embedding: bool = False
    stage1_epochs: int = 0
    precise_bn: int = 0
    eval_crops: Optional[int] = 16
    workers: int = 0
    device: str = "auto"
    seed: int = 0
    loss: str = "cosine"
    targets: str = "tags"
    topics: int = 340
    triplet_aggregation: str = "hardest"
    init: Optional[str] = None
    head: str = "linear"
    freeze_backbone: bool = False
    unfreeze_after: Optional[int] = None
    backbone_lr: Optional[float] = None

    def __post_init__(self) -> None:
        checks = [
            (self.dataset in DATASET_KINDS, f"dataset must be one of {', '.join(DATASET_KINDS)}, got {self.dataset!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (self.mtat_split in MTAT_SPLITS,
             f"mtat split must be one of {', '.join(MTAT_SPLITS)}, got {self.mtat_split!r}"),
            (self.device in ("cpu", "cuda", "auto"), f"device must be cpu, cuda or auto, got {self.device!r}"),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.crops_per_clip == "auto" or (type(self.crops_per_clip) is int and self.crops_per_clip >= 1),
             f"crops per clip must be a positive integer or 'auto', got {self.crops_per_clip!r}"),
            (math.isfinite(self.memory_budget) and self.memory_budget >= 0,
             f"the memory budget must be a number of GiB >= 0, got {self.memory_budget}"),
            (self.lr > 0, f"learning rate must be positive, got {self.lr}"),
            (self.switch_lr is None or self.switch_lr > 0,
             f"the switch learning rate must be positive, got {self.switch_lr}"),
            (not self.joint_embedding or self.stage1_epochs >= 1,
             f"the joint-embedding stage needs at least one epoch, got {self.stage1_epochs}"),
            (type(self.precise_bn) is int and self.precise_bn >= 0,
             f"precise BatchNorm takes a number of windows >= 0, got {self.precise_bn!r}"),
            (self.eval_crops is None or self.eval_crops >= 1, f"eval crops must be positive, got {self.eval_crops}"),
            (self.schedule != "adam_then_sgd" or self.switch_epoch >= 1, "adam_then_sgd needs --switch-epoch >= 1"),
            (self.loss in SIMILARITY_LOSSES, f"loss must be one of {', '.join(SIMILARITY_LOSSES)}, got {self.loss!r}"),
            (bool(self.target_kinds) and all(k in TARGET_KINDS for k in self.target_kinds)
             and len(set(self.target_kinds)) == len(self.target_kinds),
             f"targets must be tags, text or tags,text, got {self.targets!r}"),
            (self.topics >= 1, f"topics must be at least 1, got {self.topics}"),
            (self.triplet_aggregation in TRIPLET_AGGREGATIONS,
             f"triplet aggregation must be {' or '.join(TRIPLET_AGGREGATIONS)}, got {self.triplet_aggregation!r}"),
            (self.head in HEADS, f"head must be one of {', '.join(HEADS)}, got {self.head!r}"),
            (self.unfreeze_after is None or self.unfreeze_after >= 1,
             f"unfreeze after must be at least 1 epoch, got {self.unfreeze_after}"),
            (self.backbone_lr is None or self.backbone_lr > 0,
             f"the backbone learning rate must be positive, got {self.backbone_lr}"),
            (self.init is not None or not (self.freeze_backbone or self.unfreeze_after or self.backbone_lr),
             "--freeze-backbone, --unfreeze-after and --backbone-lr fine-tune a pretrained network: give --init"),
            (self.init is None or not self.joint_embedding,
             "--init fine-tunes a tagger; JETATAG's joint-embedding stage (--je) trains from scratch"),
        ]
        for ok, message in checks:
            if not ok:
                raise MdeError(message)

    @property
    def frozen_epochs(self) -> int:
        """Epochs at the start of a fine-tuning run during which the backbone is frozen (0: none)."""
        if self.unfreeze_after is not None:
            return min(self.unfreeze_after, self.epochs)
        return self.epochs if self.freeze_backbone else 0

    @property
    def target_kinds(self) -> tuple[str, ...]:
        """The target spaces of ``targets``, in order: e.g. ('tags', 'text')."""
        return tuple(kind.strip() for kind in self.targets.split(",") if kind.strip())

    @classmethod
    def for_model(cls, model: str, **settings: Any) -> TrainConfig:
        """The settings of a run of ``model``: ``settings`` where given, else the model family's recipe,
        else the defaults above (:func:`default_settings`). ModelError for an unknown model."""
        from mde.trainer.models import get_model_spec

        recipe = copy.deepcopy(dict(get_model_spec(model).recipe))
        return cls(model=model, **{**recipe, **settings})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        legacy = {"crops_per_clip": 1}  # run folders from before the setting drew one crop per clip
        return cls(**{**legacy, **{k: v for k, v in data.items() if k in known}})


def default_settings() -> dict[str, Any]:
    """The defaults of every TrainConfig setting that has one (what applies where a recipe is silent)."""
    defaults = {}
    for f in fields(TrainConfig):
        if f.default is not MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not MISSING:
            defaults[f.name] = f.default_factory()
    return defaults
