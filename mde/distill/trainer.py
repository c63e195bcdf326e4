"""Distillation: a student network learns a teacher's tag probabilities (and optionally its embedding) on
unlabelled audio, with the training loop's checkpoints, resume, logs and Ctrl-C handling.

What differs from :class:`~mde.trainer.loop.Trainer`: the labels are the teacher's outputs per student
window (:mod:`mde.distill.spans`), computed once by the runtime and cached (:mod:`mde.distill.teacher`);
the loss is BCE on those soft targets (plus ``embedding_weight`` times the cosine distance between a
learned projection of the student's embedding and the teacher's); the validation loss picks the best
checkpoint; evaluation reports the agreement with the teacher (:mod:`mde.distill.agreement`); and the
best checkpoint records the teacher, the corpus and the test figures (``distillation``), which an
exported model carries in its metadata.
"""

from __future__ import annotations

import dataclasses
import json
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from mde.distill.config import DistillConfig
from mde.distill.data import DistillCrops, DistillEvalClips, load_unlabelled, mean_train_tags
from mde.distill.teacher import TeacherCache, fill_cache, open_cache
from mde.errors import MdeError
from mde.trainer.loop import StageCallback, Trainer, TrainingData, resolve_device
from mde.trainer.models import ModelSpec, get_model_spec

CORPUS_FILE = "corpus.json"
"""Written by ``mde corpus debian`` beside its manifest: its packages are named in the distillation record."""


class DistillTrainer(Trainer):
    """One distillation run: call :meth:`run` (see the module docstring)."""

    config: DistillConfig

    def __init__(self, config: DistillConfig, resume: bool = False) -> None:
        from mde.runtime.extractor import load_model

        self.teacher = load_model(config.teacher)
        if self.teacher.info.tags_output is None:
            raise MdeError(f"the teacher {self.teacher.name} has no tag output")
        hop = config.teacher_hop or self.teacher.info.window_seconds / 2
        folder = Path(config.teacher_cache) if config.teacher_cache else Path(config.out) / "teacher"
        self.cache: TeacherCache = open_cache(folder, self.teacher.name, self.teacher.path,
                                              self.teacher.info.window_seconds, hop, self.teacher.info.tag_names)
        self._teacher_filled = False
        self.refused: dict[Path, str] = {}
        self.config = config
        self.projection: Optional[nn.Linear] = None
        if config.embedding_weight > 0:  # made first: the optimizer and a resumed state include it
            torch.manual_seed(config.seed)
            teacher_dim = self.teacher.info.outputs[self.teacher.info.embedding_output]
            self.projection = nn.Linear(self._model_spec().embedding_dim, teacher_dim).to(
                resolve_device(config.device))
        super().__init__(config, resume)

    # ------------------------------------------------------------------ what differs from training

    def _model_spec(self) -> ModelSpec:
        spec = get_model_spec(self.config.model)
        if self.config.window is None:
            return spec
        length = round(self.config.window * spec.sample_rate)
        if length != spec.input_length and not spec.variable_length:
            raise MdeError(f"{spec.name} takes {spec.input_seconds:g} s windows only; --window applies to a "
                           "student that takes any length")
        return dataclasses.replace(spec, input_length=length)

    def _load_data(self) -> TrainingData:
        dataset = load_unlabelled(Path(self.config.data), self.teacher.info.tag_names)
        return TrainingData(dataset, dataset)

    @property
    def tag_names(self) -> tuple[str, ...]:
        return tuple(self.teacher.info.tag_names)

    @property
    def _all_paths(self) -> list[Path]:
        """Every clip, valid and test first (evaluation needs them whole), then train."""
        splits = self.data.dataset.splits
        return [clip.path for split in ("valid", "test", "train") for clip in splits.get(split, [])]

    def fill_teacher(self, on_progress: Optional[StageCallback] = None) -> dict[Path, str]:
        """Run the teacher over every clip not in the cache yet, and leave out of the run the files it could
        not decode; returns those and their one-line errors (also kept in :attr:`refused`)."""
        report = (lambda done, total: on_progress("teacher", done, total)) if on_progress else None
        self.refused = fill_cache(self.cache, self.teacher, self._all_paths, report)
        splits = self.data.dataset.splits
        for split in splits:
            splits[split] = [clip for clip in splits[split] if clip.path not in self.refused]
        self._teacher_filled = True
        return self.refused

    def _prepare(self, on_progress: Optional[StageCallback]) -> None:
        if not self._teacher_filled:
            self.fill_teacher(on_progress)
        super()._prepare(on_progress)

    @property
    def _embedding_term(self) -> bool:
        return self.config.embedding_weight > 0

    def _make_train_crops(self) -> DistillCrops:
        return DistillCrops(self._source, self.cache, self.spec.input_length, self.spec.sample_rate,
                            seed=self.config.seed, crops_per_clip=self.config.crops_per_clip,
                            embedding=self._embedding_term)

    def _eval_set(self, split: str) -> DistillEvalClips:
        return DistillEvalClips(self._source, split, self.cache, self.spec.input_length, self.spec.sample_rate,
                                most=self.config.eval_windows, embedding=self._embedding_term)

    @cached_property
    def thresholds(self) -> np.ndarray:
        """Per tag, the teacher's mean probability over the train windows (see :mod:`mde.distill.agreement`)."""
        return mean_train_tags(self.cache, [str(clip.path) for clip in self.data.dataset.split("train")])

    def _parameters(self) -> list[nn.Parameter]:
        extra = list(self.projection.parameters()) if self.projection is not None else []
        return super()._parameters() + extra

    def _loss(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        n_tags = len(self.tag_names)
        loss = nn.functional.binary_cross_entropy_with_logits(outputs["logits"].float(), labels[:, :n_tags])
        if self.projection is not None:
            projected = self.projection(outputs[self.spec.embedding_output].float())
            cosine = nn.functional.cosine_similarity(projected, labels[:, n_tags:], dim=1)
            loss = loss + self.config.embedding_weight * (1 - cosine).mean()
        return loss

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, Any]:
        """{'loss': the mean distillation loss per window, and the agreement figures (see
        :mod:`mde.distill.agreement`)} of ``split``'s clips."""
        from mde.distill.agreement import teacher_agreement
        from mde.trainer.evaluate import window_outputs

        self.net.eval()
        n_tags, losses, counts = len(self.tag_names), [], []
        student, teacher = [], []
        for windows, targets in self._eval_clips(split):
            outputs = window_outputs(self.net, self.frontend, windows.to(self.device))
            targets = targets.to(self.device)
            losses.append(float(self._loss(outputs, targets)) * len(targets))
            counts.append(len(targets))
            student.append(outputs["tags"].float().cpu().numpy())
            teacher.append(targets[:, :n_tags].cpu().numpy())
        return {"loss": sum(losses) / sum(counts), **teacher_agreement(student, teacher, self.thresholds)}

    def _selection_score(self, valid: dict[str, Any]) -> float:
        """Minus the validation loss: the best checkpoint is the one closest to the teacher."""
        return -float(valid["loss"])

    # ------------------------------------------------------------------ state and record

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        if self.projection is not None:
            state["projection"] = self.projection.state_dict()
        return state

    def _load_state(self, state: dict[str, Any]) -> None:
        if self.projection is not None:
            self.projection.load_state_dict(state["projection"])
        super()._load_state(state)

    def _best_payload(self, metrics: dict[str, Any]) -> dict[str, Any]:
        payload = super()._best_payload(metrics)
        payload["input_length"] = self.spec.input_length
        return payload

    def corpus_record(self) -> dict[str, Any]:
        """The audio the student learnt from: files and hours per split (from the teacher's grids), and
        the packages of an ``mde corpus debian`` corpus."""
        record: dict[str, Any] = {"data": str(self.config.data)}
        for split, clips in self.data.dataset.splits.items():
            seconds = sum(self.cache.load(clip.path).duration for clip in clips)
            record[split] = {"files": len(clips), "hours": round(seconds / 3600, 3)}
        described = Path(self.config.data).parent / CORPUS_FILE
        if Path(self.config.data).is_file() and described.is_file():
            packages = json.loads(described.read_text()).get("packages", {})
            for split in self.data.dataset.splits:
                record[split]["packages"] = sorted(p for p, v in packages.items() if v.get("split") == split)
        return record

    def finish(self) -> dict[str, Any]:
        """Evaluate the best checkpoint (see Trainer.finish) and record the distillation in it."""
        results = super().finish()
        record = {
            "teacher": self.teacher.name, "teacher_sha256": json.loads((self.cache.directory / "teacher.json")
                                                                       .read_text())["sha256"],
            "teacher_hop_s": self.cache.hop, "window_s": self.spec.input_seconds, "corpus": self.corpus_record(),
            "epochs": self.epoch, "best_epoch": results["best_epoch"],
            "embedding_weight": self.config.embedding_weight, "valid": results["valid"], "test": results["test"],
        }
        best = self.run_dir.load_checkpoint(self.run_dir.best, self.device)
        self.run_dir.save_checkpoint(self.run_dir.best, {**best, "distillation": record})
        results["distillation"] = {k: v for k, v in record.items() if k not in ("valid", "test")}
        self.run_dir.write_json(self.run_dir.metrics_path, results)
        return results


def distill(config: DistillConfig, resume: bool = False, on_epoch=None, on_batch=None) -> dict[str, Any]:
    """Run one distillation to completion; returns what metrics.json holds."""
    return DistillTrainer(config, resume=resume).run(on_epoch=on_epoch, on_batch=on_batch)
