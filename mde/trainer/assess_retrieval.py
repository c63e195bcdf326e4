"""``mde eval --retrieval``: similarity retrieval over a dataset split, for a run or model and a baseline.

Every embedding is judged against the same relevance, which belongs to the data, not to a model: tag-set
Jaccard >= 0.5, and, when the evaluated target is a similarity run, target cosine > 0.9 in each of the
run's target spaces (its own fitted spaces, from its ``targets/`` folder). A run's clip embedding is the
mean of its windows' embeddings (``eval_crops`` windows, as in training); a model file's (the baseline,
e.g. MTT_musicnn) the mean of its frames' embeddings over the whole file, through the runtime.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mde.errors import MdeError
from mde.trainer.data.dataset import TaggingDataset
from mde.trainer.retrieval import retrieval_table

ClipCallback = Optional[Callable[[str, int, int], None]]
"""``(what, done, total)`` after each clip embedded."""


def assess_retrieval(target: str, ds: TaggingDataset, split: str, eval_crops: Optional[int],
                     baseline: Optional[str] = None, on_clip: ClipCallback = None) -> dict[str, Any]:
    """{'split', 'tracks', 'relevance': [...], 'retrieval': {name: {relevance: figures}}} of ``target`` (a run
    folder or a model name / file) and, with ``baseline``, of that model, on ``split`` of ``ds``."""
    tags = ds.label_matrix(split)
    is_run = (Path(target) / "config.json").is_file()
    targets = _run_targets(Path(target), ds, split) if is_run else {}
    embed = _run_embeddings if is_run else _model_embeddings
    name = Path(target).name if is_run else target
    tables = {name: retrieval_table(embed(target, ds, split, eval_crops, on_clip), tags, targets)}
    if baseline is not None:
        if baseline == name:
            raise MdeError(f"--baseline {baseline} is the evaluated model itself")
        tables[baseline] = retrieval_table(_model_embeddings(baseline, ds, split, None, on_clip), tags, targets)
    return {"split": split, "tracks": len(tags), "relevance": list(next(iter(tables.values()))),
            "retrieval": tables}


def _run_targets(run: Path, ds: TaggingDataset, split: str) -> dict[str, np.ndarray]:
    """{kind: (clips, topics)}: the split's points in a similarity run's own target spaces ({} for a tagger)."""
    import torch

    from mde.trainer.config import TrainConfig
    from mde.trainer.targets import fit_targets

    folder = run / "targets"
    if not folder.is_dir():
        return {}
    kinds = TrainConfig.from_dict(json.loads((run / "config.json").read_text())).target_kinds
    fitted = fit_targets(ds, kinds, saved=folder)
    rows = np.stack([fitted.vectors[os.fspath(clip.path)] for clip in ds.split(split)])
    return {kind: columns.numpy() for kind, columns in fitted.split(torch.from_numpy(rows)).items()}


def _run_embeddings(run: str, ds: TaggingDataset, split: str, eval_crops: Optional[int],
                    on_clip: ClipCallback) -> np.ndarray:
    """(clips, dim) float64: the mean embedding of each clip's evaluation windows, from the run's best
    checkpoint."""
    from mde.trainer.clip_embeddings import RunNetwork, run_clip_embeddings
    from mde.trainer.loop import resolve_device
    from mde.trainer.run_dir import RunDir

    best = RunDir(Path(run)).load_checkpoint(RunDir(Path(run)).best)
    if tuple(best["tag_names"]) != ds.tag_names:
        raise MdeError(f"{run}: trained on other tags than this dataset's ({len(best['tag_names'])} vs {ds.n_tags})")
    network = RunNetwork(best, resolve_device("auto"))
    return run_clip_embeddings(network, ds, split, network.spec.embedding_output, eval_crops,
                               _named(on_clip, Path(run).name))


def _model_embeddings(model_name: str, ds: TaggingDataset, split: str, _eval_crops: Optional[int],
                      on_clip: ClipCallback) -> np.ndarray:
    """(clips, dim) float64: the mean of each file's frame embeddings from a model file (the runtime)."""
    from mde.runtime.defaults import DEFAULT_MODEL
    from mde.runtime.extractor import load_model
    from mde.trainer.clip_embeddings import model_clip_embeddings

    model = load_model(None if model_name == DEFAULT_MODEL else model_name)  # (None: imported on first use)
    return model_clip_embeddings(model, ds, split, on_clip=_named(on_clip, model_name))


def _named(on_clip: ClipCallback, what: str) -> Optional[Callable[[int, int], None]]:
    """``on_clip`` with ``what`` (the model being embedded) as its first argument."""
    return None if on_clip is None else partial(on_clip, what)
