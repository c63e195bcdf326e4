"""The training loop: random crops per epoch, validation by clip ROC-AUC (accuracy for single-label),
initial, best and last checkpoints, schedules, early stopping, resume, logs, and a clean stop on Ctrl-C."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mde.errors import MdeError
from mde.runtime.band_norm import BandNorm
from mde.runtime.package import TARGET_PREFIX
from mde.trainer.config import TrainConfig
from mde.trainer.data.dataset import TaggingDataset
from mde.trainer.evaluate import predict_clips, scalar_metrics, score_clips, selection_score
from mde.trainer.frontend import network_input
from mde.trainer.models import ModelSpec, get_model_spec
from mde.trainer.models.heads import build_network
from mde.trainer.run_dir import ReplicaRunDir, RunDir
from mde.trainer.stages import Stage, check_joint_network, frozen_part, stage_at, stage_plan, trainable_parameters
from mde.trainer.warm_start import WarmStart

AUTO_CACHE = "auto"
"""``cache`` value for a temporary feature cache in the run folder when the audio is over the memory budget."""

EpochCallback = Callable[[dict[str, Any]], None]
BatchCallback = Callable[[int, int, float], None]
StageCallback = Callable[[str, int, int], None]
"""``(stage, done, total)``: progress of the data preparation (see :meth:`Trainer.prepare_data`)."""


@dataclass
class TrainingData:
    """What the loop reads: the dataset description and a source of audio for each split."""

    dataset: TaggingDataset
    source: Any  # a FeatureCache when one was given, else the TaggingDataset (decoded on the fly)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; asking for CUDA without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MdeError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_training_data(config: TrainConfig) -> TrainingData:
    """The dataset named by the config, read through its feature cache when one is given."""
    from mde.trainer.data.sources import load_dataset

    mtat = config.dataset == "mtat"  # (its options are ignored for the others: a recipe may set them)
    dataset = load_dataset(config.dataset, Path(config.data), single_label=config.single_label, top_k=config.top_k,
                           merge_synonyms=mtat and config.merge_synonyms,
                           mtat_split=config.mtat_split if mtat else "sota")
    if config.cache in (None, AUTO_CACHE):
        return TrainingData(dataset, dataset)
    from mde.trainer.data.cache import FeatureCache

    cache = FeatureCache.open(Path(config.cache))
    if tuple(cache.tag_names) != dataset.tag_names:
        raise MdeError(f"{config.cache}: the cache's tags differ from the dataset's; rerun 'mde prepare'")
    return TrainingData(dataset, cache)


KERAS_RMSPROP_DECAY = 0.9
"""Keras' RMSprop ``rho`` (torch's ``alpha``): 'rmsprop' is Keras' RMSprop, as music2vec's recipe uses it."""
KERAS_RMSPROP_EPSILON = 1e-7


def build_optimizer(config: TrainConfig, params, kind: Optional[str] = None) -> torch.optim.Optimizer:
    """The optimizer ``kind`` (default: ``config.optimizer``); one that ``adam_then_sgd`` switched to
    (``kind`` other than ``config.optimizer``) starts at ``config.switch_lr`` when that is set."""
    kind = kind or config.optimizer
    lr = config.switch_lr if kind != config.optimizer and config.switch_lr is not None else config.lr
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, nesterov=True,
                               weight_decay=config.weight_decay)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=KERAS_RMSPROP_DECAY, eps=KERAS_RMSPROP_EPSILON,
                                   weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer):
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience)
    if config.schedule in ("step", "adam_then_sgd") and config.milestones:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=config.milestones, gamma=config.gamma)
    return None


@dataclass(frozen=True)
class Replica:
    """One of ``world`` data-parallel training processes (torch.distributed initialised, e.g. by Ray Train):
    each trains on its share of every batch (``batch_size / world`` windows) and DistributedDataParallel
    averages the gradients, so the steps are those of one process on the whole batch; rank 0 alone writes
    the run folder (checkpoints, log, metrics)."""

    rank: int
    world: int


class Trainer:
    """One run: call :meth:`run`. Everything it writes goes to ``config.out`` (see run_dir).

    replica: this process's place in a data-parallel run (None: a single process)."""

    def __init__(self, config: TrainConfig, resume: bool = False, replica: Optional[Replica] = None) -> None:
        self.config = config
        self.replica = replica
        if replica is not None and config.batch_size % replica.world:
            raise MdeError(f"a batch of {config.batch_size} windows does not split over {replica.world} workers")
        self.run_dir = RunDir(config.out) if self._writes else ReplicaRunDir(config.out)
        self.device = resolve_device(config.device)
        self.warm_start: Optional[WarmStart] = WarmStart.of(config, self.run_dir, resume) if config.init else None
        self.spec: ModelSpec = self.warm_start.spec if self.warm_start else self._model_spec()
        seed_everything(config.seed)
        self.data = self._load_data()
        self.single_label = self.data.dataset.single_label
        self.targets = self._fit_targets(resume) if self.spec.objective == "similarity" else None
        head = self.warm_start.head if self.warm_start else None
        self.net = build_network(self.spec, len(self.tag_names), self._network_args, head)
        if self.warm_start and self.warm_start.backbone_state is not None:
            self.net.get_submodule("backbone").load_state_dict(self.warm_start.backbone_state)
        self.net.to(self.device)
        if config.joint_embedding:
            check_joint_network(self.net, config.model)
        self.band_norm: Optional[BandNorm] = None  # fitted on the train split first (spec.band_norm), or resumed
        self.frontend = network_input(self.spec).to(self.device)
        if self.warm_start and self.warm_start.band_norm:
            self._use_band_norm(self.warm_start.band_norm)  # the pretrained network's own, never refitted
        self.stages = stage_plan(config)
        self.epoch = 0
        self._enter_stage(self.stages[0])
        self.scaler = torch.amp.GradScaler("cuda", enabled=self._amp)
        self.best_score = -math.inf
        self.stale_epochs = 0
        self._source_and_note: Optional[tuple[Any, str]] = None
        self._valid_inputs: Optional[list[tuple[torch.Tensor, torch.Tensor]]] = None
        self._prepare_folder(resume)

    @property
    def _writes(self) -> bool:
        """Whether this process writes the run folder (a single process, or rank 0 of a data-parallel run)."""
        return self.replica is None or self.replica.rank == 0

    def _model_spec(self) -> ModelSpec:
        """The registry entry of the configured network."""
        return get_model_spec(self.config.model)

    def _load_data(self) -> TrainingData:
        """The configured dataset (checked to be trainable) and its audio source."""
        data = load_training_data(self.config)
        data.dataset.check_trainable()
        return data

    @property
    def tag_names(self) -> tuple[str, ...]:
        """The tags the network outputs, in order."""
        return self.data.dataset.tag_names

    def _fit_targets(self, resume: bool):
        """A similarity run's target spaces (fitted on the train split, or the run's own when resuming) and
        every clip's target vector; a fresh run stores the spaces in its folder (``targets/<kind>.npz``)."""
        from mde.trainer.targets import fit_targets

        folder = self.run_dir.root / "targets"
        targets = fit_targets(self.data.dataset, self.config.target_kinds, self.config.topics, self.config.seed,
                              saved=folder if resume else None)
        if not resume and not self.run_dir.last.exists():
            targets.save(folder)
        return targets

    @property
    def _network_args(self) -> dict[str, Any]:
        """What the factory takes beside n_tags: a similarity network's head sizes ({'topics': {kind: n}})."""
        return {} if self.targets is None else {"topics": self.targets.topics}

    @property
    def _target_vectors(self) -> Optional[dict[str, np.ndarray]]:
        return None if self.targets is None else self.targets.vectors

    @property
    def _amp(self) -> bool:
        return self.config.amp and self.device.type == "cuda"

    def _prepare_folder(self, resume: bool) -> None:
        run = self.run_dir
        if resume:
            saved = type(self.config).from_dict(run.read_json(run.config_path))
            current = self.config.to_dict()
            changed = {k for k, v in saved.to_dict().items() if k not in ("epochs", "out") and current[k] != v}
            if changed:
                raise MdeError(f"{run.root}: --resume with different settings ({', '.join(sorted(changed))})")
            self._load_state(run.load_checkpoint(run.last, self.device))
            run.truncate_log(self.epoch)
        elif run.last.exists() and self._writes:
            raise MdeError(f"{run.root} already holds a run; use --resume to continue it or another --out")
        else:
            run.save_checkpoint(run.initial, self._best_payload({}))
        run.write_json(run.config_path, self.config.to_dict())

    # ------------------------------------------------------------------ state

    def _state(self) -> dict[str, Any]:
        return {
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "best_score": self.best_score,
            "stale_epochs": self.stale_epochs,
            "optimizer_kind": type(self.optimizer).__name__.lower(),  # the one held (a switch is due next epoch)
            "stage": self.stage.name,  # the stage the optimizer serves (the next one may be due)
            "torch_rng": torch.get_rng_state(),
            "band_norm": self.band_norm.to_dict() if self.band_norm else None,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.epoch = int(state["epoch"])
        stage = next(s for s in self.stages if s.name == state.get("stage", self.stages[0].name))
        self._enter_stage(stage, state["optimizer_kind"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.best_score = float(state["best_score"])
        self.stale_epochs = int(state["stale_epochs"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if state.get("band_norm"):
            self._use_band_norm(BandNorm.from_dict(state["band_norm"]))

    def _best_payload(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """What ``best.pt`` holds: weights plus what export needs to describe the model (``initial.pt``
        too, with epoch 0 and no validation figures)."""
        return {
            "model": self.net.state_dict(),
            "architecture": self.spec.name,
            "tag_names": list(self.tag_names),
            "single_label": self.single_label,
            "frontend": self.spec.frontend.to_dict() if self.spec.frontend else None,
            "band_norm": self.band_norm.to_dict() if self.band_norm else None,
            "network_args": self._network_args,
            "epoch": self.epoch,
            "valid": scalar_metrics(metrics),
            **(self.warm_start.payload() if self.warm_start else {}),
        }

    def _optimizer_kind(self, stage_epoch: int) -> str:
        """The optimizer of the stage's epoch ``stage_epoch`` (counted from the stage's first)."""
        if self.config.schedule == "adam_then_sgd" and stage_epoch >= self.config.switch_epoch:
            return "sgd"
        return self.config.optimizer

    @property
    def _stage_epoch(self) -> int:
        """The current epoch counted from the first epoch of its stage."""
        return self.epoch - self.stage.start

    def _enter_stage(self, stage: Stage, kind: Optional[str] = None) -> None:
        """Make ``stage`` current: only its parameters trainable, a fresh optimizer (``kind``: default the
        one due at the current epoch) and schedule, counted from the stage's first epoch."""
        self.stage = stage
        trainable = {id(p) for p in trainable_parameters(self.net, stage)}
        for param in self.net.parameters():
            param.requires_grad_(id(param) in trainable)
        self._build_optimizer(kind or self._optimizer_kind(self._stage_epoch))

    def _parameters(self) -> list[nn.Parameter]:
        """What the optimizer may update (those with ``requires_grad``): the network's parameters."""
        return list(self.net.parameters())

    def _param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups of what trains now: one, or for a fine-tuning run with
        ``backbone_lr`` the head's (first: its lr is the one logged) and the backbone's at that rate."""
        params = [p for p in self._parameters() if p.requires_grad]
        if self.config.backbone_lr is None or self.warm_start is None:
            return [{"params": params}]
        backbone = {id(p) for p in self.net.get_submodule("backbone").parameters()}
        groups: list[dict[str, Any]] = [{"params": [p for p in params if id(p) not in backbone]},
                  {"params": [p for p in params if id(p) in backbone], "lr": self.config.backbone_lr}]
        return [group for group in groups if group["params"]]

    def _build_optimizer(self, kind: str) -> None:
        self.optimizer = build_optimizer(self.config, self._param_groups(), kind)
        self.scheduler = build_scheduler(self.config, self.optimizer)
        if self.scheduler is not None and hasattr(self.scheduler, "last_epoch"):
            self.scheduler.last_epoch = self._stage_epoch

    # ------------------------------------------------------------------ data

    def prepare_data(self, on_progress: Optional[StageCallback] = None) -> str:
        """Read what the run keeps (the train and valid audio decoded into memory, or ``cache='auto'``'s
        temporary cache), fit the per-band input standardisation on the train split for a network that takes
        one (``ModelSpec.band_norm``), and compute the validation inputs when they fit the memory budget, calling
        ``on_progress(stage, done, total)`` as files are done; returns :attr:`data_note`. The first use of
        the data does this silently when it was not called; later calls do nothing more."""
        self._prepare(on_progress)
        return self.data_note

    def _prepare(self, on_progress: Optional[StageCallback]) -> None:
        """The work of :meth:`prepare_data`, done once."""
        if self._source_and_note is None:
            self._source_and_note = self._open_source(on_progress)
        if self.spec.band_norm and self.band_norm is None:
            self._fit_band_norm(on_progress)
        if self._valid_inputs is None and self._valid_bytes <= self._budget:
            total, items = len(self._eval_set("valid")), []
            for item in self._eval_loader("valid"):
                items.append(item)
                if on_progress:
                    on_progress("validation inputs", len(items), total)
            self._valid_inputs = items  # kept only when whole

    def _fit_band_norm(self, on_progress: Optional[StageCallback]) -> None:
        """Fit the per-band standardisation on the train split, use it from now on, and store it in
        ``initial.pt`` too (a fresh run: the weights there are untouched)."""
        from mde.trainer.band_stats import fit_band_norm

        clips = self._train_crops.clips
        signals = (clips.signal(i) for i in range(len(clips)))
        report = (lambda done: on_progress("band statistics", done, len(clips))) if on_progress else None
        norm = fit_band_norm(self.frontend, signals, self.spec.input_length, self.device, report)
        self._use_band_norm(norm)
        initial = self.run_dir.load_checkpoint(self.run_dir.initial, self.device)
        self.run_dir.save_checkpoint(self.run_dir.initial, {**initial, "band_norm": norm.to_dict()})

    def _use_band_norm(self, norm: BandNorm) -> None:
        self.band_norm = norm
        self.frontend = network_input(self.spec, norm).to(self.device)

    def _open_source(self, on_progress: Optional[StageCallback]) -> tuple[Any, str]:
        """Where epochs read audio and one line saying which and why: the given cache; else the train and
        valid files decoded once into memory when they fit the budget; else with ``cache='auto'`` a
        temporary cache in the run folder; else the files at every use."""
        from mde.trainer.data.loading import decode_if_it_fits

        if self.config.cache not in (None, AUTO_CACHE):
            return self.data.source, f"reading the feature cache {self.config.cache}"
        spill_to = self._auto_cache if self.config.cache == AUTO_CACHE else None
        return decode_if_it_fits(
            self.data.dataset, self.spec.sample_rate, ("train", "valid"), self._budget, spill_to,
            on_progress=(lambda done, total: on_progress("decoding", done, total)) if on_progress else None,
            workers=max(1, self.config.workers), channels=self.spec.channels,
        )

    def _opened(self) -> tuple[Any, str]:
        """The source and its note (see :meth:`prepare_data`), opened silently on first use."""
        if self._source_and_note is None:
            self._source_and_note = self._open_source(None)
        return self._source_and_note

    @property
    def _source(self) -> Any:
        """The source training and evaluation read."""
        return self._opened()[0]

    @property
    def _auto_cache(self) -> Path:
        """Where ``--cache auto`` keeps its temporary cache: kept by an interrupted run, removed by a finished one."""
        return self.run_dir.root / "auto-cache"

    @cached_property
    def _train_crops(self):
        """The training windows of every epoch (:meth:`_make_train_crops`), checked to fill one batch."""
        crops = self._make_train_crops()
        if len(crops) < self.config.batch_size:
            raise MdeError(f"the train split gives {len(crops)} windows per epoch ({len(crops.clips)} clips), "
                           f"fewer than one batch of {self.config.batch_size}")
        return crops

    def _make_train_crops(self):
        """The random training crops of the train split (with a similarity network's target vectors)."""
        from mde.trainer.data.loading import TrainCrops

        return TrainCrops(self._source, self.spec.input_length, self.spec.sample_rate, seed=self.config.seed,
                          crops_per_clip=self.config.crops_per_clip, channels=self.spec.channels,
                          targets=self._target_vectors)

    def _train_loader(self) -> DataLoader:
        from mde.trainer.data.loading import train_loader

        share = (self.replica.rank, self.replica.world) if self.replica else (0, 1)
        return train_loader(self._train_crops, self.config.batch_size, epoch=self.epoch,
                            num_workers=self.config.workers, pin_memory=self.device.type == "cuda", share=share)

    def _eval_loader(self, split: str) -> DataLoader:
        # its own generator: evaluating (once or every epoch) leaves the global torch RNG, and resume, alone
        return DataLoader(self._eval_set(split), batch_size=None, num_workers=self.config.workers,
                          generator=torch.Generator())

    def _eval_set(self, split: str):
        from mde.trainer.data.loading import EvalClips

        return EvalClips(self._source, split, self.spec.input_length, n_crops=self.config.eval_crops,
                         sample_rate=self.spec.sample_rate, channels=self.spec.channels,
                         targets=self._target_vectors)

    @property
    def _budget(self) -> int:
        """The memory budget in bytes."""
        return int(self.config.memory_budget * 2**30)

    @cached_property
    def _valid_bytes(self) -> int:
        """Bytes of float32 the validation inputs take (kept once computed when within the memory budget)."""
        return self._eval_set("valid").nbytes

    def _eval_clips(self, split: str):
        """The evaluation inputs of ``split``: for 'valid' within the budget the list computed once per
        run (see :meth:`prepare_data`), else a loader that cuts them from the source."""
        if split == "valid" and self._valid_bytes <= self._budget:
            self._prepare(None)
            return self._valid_inputs
        return self._eval_loader(split)

    @property
    def windows_per_epoch(self) -> int:
        """Training windows (random crops) per epoch: the train clips times their crops per clip."""
        return len(self._train_crops)

    @property
    def data_note(self) -> str:
        """One line: where training reads its audio and why, the windows per epoch, the validation inputs."""
        from mde.trainer.data.loading import size_text

        crops = self._train_crops
        size = size_text(self._valid_bytes)
        valid = (f"validation inputs computed once ({size})" if self._valid_bytes <= self._budget else
                 f"validation inputs cut every epoch ({size}, over the {size_text(self._budget)} memory budget)")
        per_clip = self.windows_per_epoch / len(crops.clips)
        return (f"data: {self._opened()[1]}; {self.windows_per_epoch} training windows per epoch "
                f"({per_clip:.3g} per clip, --crops-per-clip {self.config.crops_per_clip}); {valid}")

    def evaluate(self, split: str) -> dict[str, Any]:
        """Tagging metrics of ``split`` (in the joint stage: {'loss': the mean joint loss per clip})."""
        if self.stage.name == "joint":
            return {"loss": self._joint_loss(split)}
        if self.targets is not None:
            return self._similarity_metrics(split)
        scores, labels = predict_clips(self.net, self.frontend, self._eval_clips(split), self.device, self.single_label)
        return score_clips(scores, labels, self.data.dataset.tag_names, self.single_label)

    # ------------------------------------------------------------------ loop

    @torch.no_grad()
    def _joint_loss(self, split: str) -> float:
        """The joint-embedding loss of ``split``'s clips (each clip's windows against its tags), averaged."""
        from mde.trainer.evaluate import window_outputs
        from mde.trainer.models.jetatag import Jetatag, joint_loss

        self.net.eval()
        losses = []
        for windows, label in self._eval_clips(split):
            joint = window_outputs(self.net, self.frontend, windows.to(self.device))["joint"]
            tags = torch.as_tensor(np.asarray(label, dtype=np.float32), device=self.device).expand(len(joint), -1)
            losses.append(float(joint_loss(cast(Jetatag, self.net), joint.float(), tags)["total"]))
        return float(np.mean(losses))

    @torch.no_grad()
    def _similarity_metrics(self, split: str) -> dict[str, Any]:
        """A similarity network on ``split``: its loss over the clips (each clip's outputs the mean of its
        windows') and the retrieval figures of its clip embeddings (see :mod:`mde.trainer.retrieval`);
        'map' and 'p@5' by tag-set Jaccard are the selection figures."""
        from mde.trainer.evaluate import window_outputs
        from mde.trainer.retrieval import retrieval_table

        self.net.eval()
        outputs: dict[str, list[torch.Tensor]] = {}
        labels = []
        for windows, label in self._eval_clips(split):
            for key, value in window_outputs(self.net, self.frontend, windows.to(self.device)).items():
                outputs.setdefault(key, []).append(value.float().mean(dim=0))
            labels.append(torch.as_tensor(np.asarray(label, dtype=np.float32)))
        clip_outputs = {key: torch.stack(values) for key, values in outputs.items()}
        clip_labels = torch.stack(labels).to(self.device)
        loss = float(self._loss(clip_outputs, clip_labels))
        n_tags = self.data.dataset.n_tags
        assert self.targets is not None  # (evaluate calls this for similarity runs only)
        targets = {k: v.cpu().numpy() for k, v in self.targets.split(clip_labels[:, n_tags:]).items()}
        table = retrieval_table(clip_outputs["embedding"].cpu().numpy(), clip_labels[:, :n_tags].cpu().numpy(),
                                targets)
        return {"loss": loss, "map": table["jaccard"]["map"], "p@5": table["jaccard"]["p@5"], "retrieval": table}

    def _similarity_loss(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """The configured similarity loss: cosine regression of each target head, the batch-hard triplet loss
        of the embedding per target space, or their sum."""
        from mde.trainer.similarity_losses import batch_hard_triplet, cosine_regression

        assert self.targets is not None
        targets = self.targets.split(labels[:, self.data.dataset.n_tags:])
        terms = []
        if self.config.loss in ("cosine", "both"):
            terms += [cosine_regression(outputs[TARGET_PREFIX + kind].float(), t) for kind, t in targets.items()]
        if self.config.loss in ("triplet", "both"):
            terms += [batch_hard_triplet(outputs["embedding"].float(), t, aggregation=self.config.triplet_aggregation)
                      for t in targets.values()]
        return torch.stack(terms).sum()

    def _selection_score(self, valid: dict[str, Any]) -> float:
        """The validation figure that picks the best checkpoint: a similarity network's retrieval mAP by
        tag-set Jaccard (0 when no clip has a relevant other), else the tagging one."""
        if self.targets is not None:
            return 0.0 if valid["map"] is None else float(valid["map"])
        return selection_score(valid, self.single_label)

    def _loss(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """The training loss of the current stage for a batch's network outputs and labels."""
        if self.targets is not None:
            return self._similarity_loss(outputs, labels)
        if self.stage.name == "joint":
            from mde.trainer.models.jetatag import Jetatag, joint_loss

            return joint_loss(cast(Jetatag, self.net), outputs["joint"].float(), labels)["total"]
        logits = outputs["logits"].float()
        if self.single_label:
            return nn.functional.cross_entropy(logits, labels.argmax(dim=1))
        return nn.functional.binary_cross_entropy_with_logits(logits, labels)

    def _train_epoch(self, on_batch: Optional[BatchCallback]) -> tuple[float, int]:
        """The mean training loss of one epoch and the number of windows it trained on."""
        self.net.train()
        frozen = frozen_part(self.net, self.stage)
        if frozen is not None:
            frozen.eval()  # BatchNorm statistics and dropout as at inference
        loader = self._train_loader()
        network = self._parallel_network()
        total, count = 0.0, 0
        for step, (waveforms, labels) in enumerate(loader):
            waveforms, labels = waveforms.to(self.device), labels.to(self.device)
            with torch.autocast(self.device.type, enabled=self._amp):
                with torch.no_grad():
                    logmel = self.frontend(waveforms)
                loss = self._loss(network(logmel), labels)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.config.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.net.parameters(), self.config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += float(loss.detach()) * len(labels)
            count += len(labels)
            if on_batch:
                on_batch(step + 1, len(loader), total / count)
        if self.replica is not None:  # every replica's windows: the epoch's loss and count as one process has them
            summed = torch.tensor([total, float(count)], dtype=torch.float64)
            torch.distributed.all_reduce(summed)
            total, count = float(summed[0]), int(summed[1])
        return total / max(count, 1), count

    def _parallel_network(self) -> nn.Module:
        """What the training step runs: the network, or for a replica the network under
        DistributedDataParallel (made each epoch: a stage may change which parameters train)."""
        if self.replica is None:
            return self.net
        return nn.parallel.DistributedDataParallel(self.net)

    def _share_buffers(self) -> None:
        """Give every replica rank 0's buffers (BatchNorm statistics, updated by each replica's own
        windows), so that all evaluate, schedule and stop alike."""
        if self.replica is not None:
            for buffer in self.net.buffers():
                torch.distributed.broadcast(buffer, 0)

    def _recompute_batchnorm(self) -> None:
        """BatchNorm's running statistics from the first ``precise_bn`` windows of this epoch's batches."""
        from mde.trainer.batchnorm import recompute_batchnorm_stats

        def forward(waveforms: torch.Tensor) -> None:
            with torch.autocast(self.device.type, enabled=self._amp):
                self.net(self.frontend(waveforms.to(self.device)))

        batches = (waveforms for waveforms, _ in self._train_loader())
        recompute_batchnorm_stats(self.net, batches, forward, self.config.precise_bn)

    def _switch_optimizer_if_due(self) -> None:
        """Enter the next stage when it is due, else switch optimizer when the schedule says so."""
        stage = stage_at(self.stages, self.epoch)
        if stage != self.stage:
            self._enter_stage(stage)
        elif self._optimizer_kind(self._stage_epoch) != type(self.optimizer).__name__.lower():
            self._build_optimizer(self._optimizer_kind(self._stage_epoch))

    def _step_scheduler(self, valid_loss: float) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(valid_loss)
        elif self.scheduler is not None:
            self.scheduler.step()

    def run(self, on_epoch: Optional[EpochCallback] = None, on_batch: Optional[BatchCallback] = None) -> dict[str, Any]:
        """Train to the configured epochs (or early stop), then evaluate the best checkpoint on the valid
        and test splits and write metrics.json. KeyboardInterrupt saves ``last.pt`` and propagates."""
        self._prepare(None)  # (done already when prepare_data was called)
        writer = self._tensorboard()
        session_seconds, session_epochs = 0.0, 0
        try:
            while self.epoch < self.stages[-1].end:
                if self.config.early_stop and self.stale_epochs >= self.config.early_stop:
                    break
                self._switch_optimizer_if_due()
                started = time.perf_counter()
                train_loss, windows = self._train_epoch(on_batch)
                train_seconds = time.perf_counter() - started
                if self.config.precise_bn and frozen_part(self.net, self.stage) is None:  # (a frozen part keeps its)
                    self._recompute_batchnorm()
                self._share_buffers()
                valid = self.evaluate("valid")
                self.epoch += 1
                seconds = time.perf_counter() - started
                session_seconds += seconds
                session_epochs += 1
                speed = {"windows_per_s": windows / max(train_seconds, 1e-9),
                         "eta_s": session_seconds / session_epochs * (self.stages[-1].end - self.epoch)}
                self._after_epoch(train_loss, valid, seconds, writer, on_epoch, speed)
        except KeyboardInterrupt:
            self.run_dir.save_checkpoint(self.run_dir.last, self._state())
            raise
        finally:
            if writer:
                writer.close()
        results = self.finish()
        if self._auto_cache.exists() and self._writes:
            import shutil

            shutil.rmtree(self._auto_cache)
        return results

    def _after_epoch(self, train_loss: float, valid: dict[str, Any], seconds: float, writer, on_epoch,
                     speed: dict[str, float]) -> None:
        """Checkpoints, scheduler, log row; ``speed``: training windows/s and the ETA in seconds (for on_epoch)."""
        row: dict[str, Any] = {
            "epoch": self.epoch, "train_loss": round(train_loss, 6), "valid_loss": round(valid["loss"], 6),
            "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 2), "stage": self.stage.name,
        }
        if self.stage.name != "joint":  # the joint stage has no tagging score: its last epoch carries on
            score = self._selection_score(valid)
            row["valid_score"] = round(score, 6)
            if score > self.best_score:
                self.best_score, self.stale_epochs = score, 0
                self.run_dir.save_checkpoint(self.run_dir.best, self._best_payload(valid))
            else:
                self.stale_epochs += 1
        self._step_scheduler(valid["loss"])
        self.run_dir.save_checkpoint(self.run_dir.last, self._state())
        self.run_dir.append_log(row)
        if writer:
            for key in ("train_loss", "valid_loss", "valid_score", "lr"):
                if key in row:
                    tag = key if self.stage.name == "tagging" else f"{self.stage.name}/{key}"
                    writer.add_scalar(tag, row[key], self.epoch)
        if on_epoch:
            on_epoch({**row, **speed, "best_score": self.best_score})

    def _tensorboard(self):
        if not self._writes:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional; log.csv always has the figures
            return None
        return SummaryWriter(str(self.run_dir.tensorboard))

    def finish(self) -> dict[str, Any]:
        """Evaluate the best checkpoint on valid and test; write metrics.json (and the confusion matrix).
        A replica other than rank 0 has nothing to write: {}."""
        if not self._writes:
            return {}
        best = self.run_dir.load_checkpoint(self.run_dir.best, self.device)
        self.net.load_state_dict(best["model"])
        results: dict[str, Any] = {}
        for split in ("valid", "test"):
            metrics = self.evaluate(split)
            results[split] = scalar_metrics(metrics)
            if "retrieval" in metrics:
                results[split]["retrieval"] = metrics["retrieval"]
            if self.single_label and split == "test" and "confusion" in metrics:  # (a tagger's, not similarity's)
                from mde.trainer.metrics import write_confusion_matrix

                write_confusion_matrix(np.array(metrics["confusion"]), self.data.dataset.tag_names, self.run_dir.root)
        results["best_epoch"] = int(best["epoch"])
        if self.config.joint_embedding:
            results["stages"] = self.run_dir.log_by_stage()
        self.run_dir.write_json(self.run_dir.metrics_path, results)
        return results


def train(config: TrainConfig, resume: bool = False, on_epoch: Optional[EpochCallback] = None,
          on_batch: Optional[BatchCallback] = None) -> dict[str, Any]:
    """Run one training to completion; returns what metrics.json holds."""
    return Trainer(config, resume=resume).run(on_epoch=on_epoch, on_batch=on_batch)
