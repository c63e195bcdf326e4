"""Where a fine-tuning run starts (``mde train --init MODEL|RUN|CKPT``): the pretrained network, its input
standardisation, the new head and the lineage record that the run's checkpoints and exported model keep.

An init source is one of
* a stored model (a store name such as MTT_musicnn or MTT_fcn05, or an ``.onnx`` path): its weights are
  imported into the registry's torch network by :func:`mde.export.onnx_weights.torch_network_from_model`
  (checked against ONNX Runtime there);
* a training run folder (its ``checkpoints/best.pt``), or a checkpoint file (``.pt``: best.pt, last.pt's
  weights saved in best.pt's format, initial.pt).

The run's network is :class:`~mde.trainer.models.heads.HeadedNetwork`: the source's whole network as the
backbone, a fresh head for the new dataset. Only taggers can be fine-tuned (a similarity network has no tag
head to replace).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from mde.errors import MdeError
from mde.runtime.band_norm import BandNorm
from mde.trainer.config import TrainConfig
from mde.trainer.models import ModelSpec, get_model_spec
from mde.trainer.models.heads import build_network
from mde.trainer.run_dir import RunDir

CHECKPOINT_SUFFIX = ".pt"


@dataclass(frozen=True)
class Pretrained:
    """A loaded init source.

    spec: the registry entry of its network (``input_length`` the source's window, which may differ from the
      entry's for a distilled student).
    network: that network (eval mode) with the source's weights; a HeadedNetwork when the source was itself
      fine-tuned (``head`` then describes its head).
    tag_names: the tags its network outputs (what the backbone is built for).
    head: the source network's own head description (None: a plain registry network).
    band_norm: the per-band input standardisation it was trained with (None: none).
    record: what it is, for the lineage: {'init', 'kind' ('model', 'run' or 'checkpoint'), 'path',
      'sha256', 'architecture', 'tags'}, and 'parent': the source's own lineage when it has one.
    """

    spec: ModelSpec
    network: torch.nn.Module
    tag_names: tuple[str, ...]
    head: Optional[dict[str, Any]]
    band_norm: Optional[BandNorm]
    record: dict[str, Any]


def _checkpoint_file(source: str) -> Optional[Path]:
    """The checkpoint a run folder or ``.pt`` path names; None when ``source`` names a model."""
    path = Path(source).expanduser()
    if path.is_dir():
        best = RunDir(path).best
        if not best.is_file():
            raise MdeError(f"--init {source}: no checkpoints/best.pt (is this a training run folder?)")
        return best
    if path.suffix == CHECKPOINT_SUFFIX:
        if not path.is_file():
            raise MdeError(f"--init {source}: no such checkpoint file")
        return path
    return None


def init_architecture(source: str) -> str:
    """The registry name of the network an init source holds, read cheaply (no weights imported)."""
    checkpoint = _checkpoint_file(source)
    if checkpoint is not None:
        return str(_read_checkpoint(checkpoint, source)["architecture"])
    from mde.export.onnx_weights import registry_candidates
    from mde.runtime import store
    from mde.runtime.package import read_model_info

    path = store.resolve(source)
    return registry_candidates(read_model_info(path), str(path))[0].name


def load_pretrained(source: str) -> Pretrained:
    """The init source ``source`` loaded (see the module docstring); MdeError / ModelError in one line for a
    missing source, an architecture not in the registry, weights that do not map, or a similarity network."""
    from mde.runtime.batch import file_sha256

    checkpoint = _checkpoint_file(source)
    if checkpoint is not None:
        payload = _read_checkpoint(checkpoint, source)
        spec = spec_of_payload(payload)
        tag_names = tuple(payload["tag_names"])
        network = build_network(spec, len(tag_names), payload.get("network_args"), payload.get("head"))
        network.load_state_dict(payload["model"])
        norm = BandNorm.from_dict(payload["band_norm"]) if payload.get("band_norm") else None
        kind = "run" if Path(source).expanduser().is_dir() else "checkpoint"
        pretrained = Pretrained(spec, network.eval(), tag_names, payload.get("head"), norm,
                                _record(source, kind, checkpoint, spec, tag_names, payload.get("lineage")))
    else:
        from mde.export.onnx_weights import torch_network_from_model
        from mde.runtime import store

        path = store.resolve(source)
        imported = torch_network_from_model(path)
        info = imported.info
        pretrained = Pretrained(imported.spec, imported.network, info.tag_names, info.lineage.get("head"),
                                info.band_norm, _record(source, "model", path, imported.spec, info.tag_names,
                                                        info.lineage or None))
    if pretrained.spec.objective != "tagging":
        raise MdeError(f"--init {source}: a {pretrained.spec.objective} network has no tag head to replace; "
                       "--init takes taggers")
    pretrained.record["sha256"] = file_sha256(Path(pretrained.record["path"]))
    return pretrained


def spec_of_payload(payload: dict[str, Any]) -> ModelSpec:
    """The registry entry of a checkpoint payload, at its own window when it names one ('input_length')."""
    spec = get_model_spec(payload["architecture"])
    if "input_length" in payload and int(payload["input_length"]) != spec.input_length:
        spec = dataclasses.replace(spec, input_length=int(payload["input_length"]))
    return spec


def new_head(kind: str, pretrained: Pretrained) -> dict[str, Any]:
    """The head description of a run fine-tuning ``pretrained`` with a fresh ``kind`` head."""
    head: dict[str, Any] = {"kind": kind, "backbone_tags": len(pretrained.tag_names)}
    if pretrained.head is not None:
        head["backbone_head"] = pretrained.head
    return head


def _read_checkpoint(path: Path, source: str) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torch.load of a bad file raises many kinds; one line names the file
        raise MdeError(f"--init {source}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict):
        raise MdeError(f"--init {source}: not an mde checkpoint (a {type(payload).__name__})")
    missing = [key for key in ("architecture", "tag_names", "model") if key not in payload]
    if missing:
        raise MdeError(f"--init {source}: not an mde checkpoint (no {', '.join(missing)})")
    return payload


def _record(source: str, kind: str, path: Path, spec: ModelSpec, tag_names: tuple[str, ...],
            parent: Optional[dict[str, Any]]) -> dict[str, Any]:
    record: dict[str, Any] = {"init": source, "kind": kind, "path": os.fspath(path.resolve()),
                              "architecture": spec.architecture, "tags": len(tag_names)}
    if parent:
        record["parent"] = parent
    return record


@dataclass(frozen=True)
class WarmStart:
    """What a fine-tuning run's trainer builds its network from.

    spec: the network's registry entry (at the pretrained network's window).
    head: the run network's head description (:func:`mde.trainer.models.heads.build_network`).
    lineage: what the run was initialised from and how it trains: the init source's record (see
      :class:`Pretrained`) plus 'head', 'freeze_backbone', 'unfreeze_after' and 'backbone_lr'; kept in
      every checkpoint and in the exported model's metadata.
    band_norm: the pretrained network's input standardisation (None: none).
    backbone_state: the pretrained weights for the run network's backbone; None when resuming (the run's
      last checkpoint holds the weights).
    """

    spec: ModelSpec
    head: dict[str, Any]
    lineage: dict[str, Any]
    band_norm: Optional[BandNorm]
    backbone_state: Optional[dict[str, torch.Tensor]]

    @classmethod
    def of(cls, config: TrainConfig, run_dir: RunDir, resume: bool) -> WarmStart:
        """The warm start of ``config`` (whose ``init`` is set): from the init source, or when resuming from
        the run's own initial checkpoint (so that the source may have changed or gone since)."""
        if resume:
            payload = run_dir.load_checkpoint(run_dir.initial)
            if "head" not in payload or "lineage" not in payload:
                raise MdeError(f"{run_dir.root}: --resume with --init, but the run was not initialised from one")
            norm = BandNorm.from_dict(payload["band_norm"]) if payload.get("band_norm") else None
            return cls(spec_of_payload(payload), payload["head"], payload["lineage"], norm, None)
        pretrained = load_pretrained(str(config.init))
        if pretrained.spec.name != config.model:
            raise MdeError(f"--init {config.init} holds a {pretrained.spec.name} network, not --model {config.model}")
        head = new_head(config.head, pretrained)
        lineage = {**pretrained.record, "head": head, "freeze_backbone": config.freeze_backbone,
                   "unfreeze_after": config.unfreeze_after, "backbone_lr": config.backbone_lr}
        return cls(pretrained.spec, head, lineage, pretrained.band_norm, pretrained.network.state_dict())

    def payload(self) -> dict[str, Any]:
        """What the run's checkpoints add: 'head', 'lineage' and, when the window is not the registry
        entry's, 'input_length'."""
        extra: dict[str, Any] = {"head": self.head, "lineage": self.lineage}
        if self.spec.input_length != get_model_spec(self.spec.name).input_length:
            extra["input_length"] = self.spec.input_length
        return extra
