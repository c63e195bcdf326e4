"""``mde eval``: metrics of a training run (its best checkpoint, in torch) or of a model file (through
the runtime, ONNX Runtime) on a dataset split."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from mde.errors import MdeError
from mde.trainer.data.dataset import TaggingDataset


def assess(target: str, dataset: str, data: Path, split: str, eval_crops: Optional[int],
           single_label: bool) -> dict[str, Any]:
    """Metrics of ``target`` (a run folder or a model name / file) on ``split`` of the dataset."""
    from mde.trainer.data.sources import load_dataset

    ds = load_dataset(dataset, data, single_label=single_label)
    if (Path(target) / "config.json").is_file():
        return assess_run(Path(target), ds, split, eval_crops)
    return assess_model_file(target, ds, split)


def assess_run(run: Path, ds: TaggingDataset, split: str, eval_crops: Optional[int]) -> dict[str, Any]:
    """The run's best checkpoint, windows averaged per clip as in training."""
    import torch

    from mde.trainer.data.loading import EvalClips
    from mde.trainer.evaluate import checkpoint_network, predict_clips, report_metrics, score_clips
    from mde.trainer.loop import resolve_device
    from mde.trainer.run_dir import RunDir

    best = RunDir(run).load_checkpoint(RunDir(run).best)
    if tuple(best["tag_names"]) != ds.tag_names:
        raise MdeError(f"{run}: trained on other tags than this dataset's ({len(best['tag_names'])} vs {ds.n_tags})")
    spec, net, frontend = checkpoint_network(best, resolve_device("auto"))
    device = next(net.parameters()).device
    crops = EvalClips(ds, split, spec.input_length, n_crops=eval_crops, sample_rate=spec.sample_rate)
    clips = torch.utils.data.DataLoader(crops, batch_size=None)
    scores, labels = predict_clips(net, frontend, clips, device, ds.single_label)
    return report_metrics(score_clips(scores, labels, ds.tag_names, ds.single_label), ds.tag_names)


def assess_model_file(name_or_path: str, ds: TaggingDataset, split: str) -> dict[str, Any]:
    """A model file's clip tags (mean over all its frames) against the dataset labels of the tags both share."""
    from mde.runtime.extractor import load_model
    from mde.trainer.evaluate import report_metrics, score_clips

    model = load_model(name_or_path)
    shared = [tag for tag in model.info.tag_names if tag in ds.tag_names]
    if not shared:
        raise MdeError(f"{model.name} shares no tag with the dataset {ds.name}")
    ours = [model.info.tag_names.index(tag) for tag in shared]
    theirs = [ds.tag_names.index(tag) for tag in shared]
    clips = ds.split(split)
    scores = np.stack([model.embed(clip.path).mean_tags()[ours] for clip in clips])
    labels = np.stack([clip.labels[theirs] for clip in clips])
    metrics = report_metrics(score_clips(scores, labels, shared, ds.single_label and len(shared) == ds.n_tags), shared)
    return {**metrics, "tags_evaluated": len(shared)}
