"""``probe(models, dataset)``: linear probes of several models' frozen embeddings on one labelled dataset.

Every clip of the train, valid and test splits is embedded once per (model, layer) (each file decoded once
for all of them; cached, see :mod:`mde.probe.features`), its frames pooled to clip vectors
(:mod:`mde.probe.pooling`), and a logistic regression fitted per (model, layer, pooling)
(:mod:`mde.probe.fit`). The rows of the returned :class:`ProbeReport` are in the order of the models, then
layers, then poolings asked for; :mod:`mde.probe.report` turns it into a table, JSON or Markdown.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from mde.errors import MdeError
from mde.probe.features import ClipCallback, FailureCallback, FeatureCache, Target, extract
from mde.probe.fit import C_GRID, ProbeFit, fit_probe
from mde.probe.pooling import POOLS, pool_matrix
from mde.runtime import store
from mde.runtime.batch import file_sha256
from mde.runtime.extractor import Model
from mde.trainer.data.dataset import SPLITS, TaggingDataset

NoteCallback = Optional[Callable[[str], None]]
"""One line about something left out (a layer a model lacks, a model named twice)."""


@dataclass(frozen=True)
class ModelEntry:
    """A probed model file: ``label`` as the user named it, its metadata name, path and SHA-256."""

    label: str
    name: str
    path: str
    sha256: str


@dataclass(frozen=True)
class ProbeRow:
    """One probe: the model (its label), the layer, the pooling, the clip vector's width and the fit."""

    model: str
    layer: str
    pool: str
    dim: int
    fit: ProbeFit


@dataclass
class ProbeReport:
    """All probes of one run.

    ``splits``: clips per split that every target embedded (the probes' data); ``failed``: files skipped,
    with their one-line reason; ``notes``: what else was left out; ``embedded`` / ``cached``: (file, target)
    pairs computed in this run / read from the cache; ``decoded``: files decoded in this run.
    """

    dataset: str
    single_label: bool
    tag_names: tuple[str, ...]
    splits: dict[str, int]
    models: list[ModelEntry]
    rows: list[ProbeRow] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    embedded: int = 0
    cached: int = 0
    decoded: int = 0


def resolve_models(models: Sequence[str | os.PathLike[str]], on_note: NoteCallback = None) -> list[tuple[str, Path]]:
    """(label, model file) for each model name or path, each file once; ModelNotFound (one line) for one that
    is neither a stored model nor a model file. Reads no model."""
    if not models:
        raise MdeError("give at least one model to probe (a name from 'mde models' or an .onnx file)")
    found: dict[Path, str] = {}
    for model in models:
        label, path = os.fspath(model), store.resolve(model)
        key = path.resolve()
        if key in found:
            _note(on_note, f"{label} is the model file of {found[key]} again: probed once")
            continue
        found[key] = label
    return [(label, path) for path, label in found.items()]


def make_targets(loaded: Sequence[tuple[str, Model]], layers: Sequence[str], on_note: NoteCallback = None
                 ) -> tuple[list[Target], list[ModelEntry]]:
    """The (model, layer) targets: each of ``layers`` that a model has (default: its embedding output), a
    note for each it lacks; MdeError when no model has any of them."""
    targets: list[Target] = []
    entries: list[ModelEntry] = []
    for label, model in loaded:
        digest = file_sha256(model.path)
        entries.append(ModelEntry(label, model.name, os.fspath(model.path), digest))
        for layer in layers or (model.info.embedding_output,):
            if layer not in model.info.outputs:
                _note(on_note, f"{label} has no layer {layer!r} (its layers: {', '.join(sorted(model.info.outputs))}): "
                               "skipped")
                continue
            targets.append(Target(label, model, layer, digest))
    if not targets:
        raise MdeError(f"no model has the layer(s) {', '.join(layers)}: nothing to probe")
    return targets, entries


def probe(
    models: Sequence[str | os.PathLike[str]],
    dataset: TaggingDataset,
    *,
    layers: Sequence[str] = (),
    pools: Sequence[str] = POOLS,
    cache: Optional[str | os.PathLike[str]] = None,
    threads: Optional[int] = None,
    c_grid: Sequence[float] = C_GRID,
    on_clip: ClipCallback = None,
    on_failure: FailureCallback = None,
    on_note: NoteCallback = None,
) -> ProbeReport:
    """Probe each model (a store name or an .onnx path) on ``dataset``.

    Parameters
    ----------
    models : the models, in the order of the report's rows
    dataset : a dataset with clips in its train, valid and test splits (:func:`mde.trainer.data.sources.load_dataset`)
    layers : outputs to probe in every model that has them (a note for each model lacking one); () probes
        each model's embedding output
    pools : clip poolings, each of :data:`mde.probe.pooling.POOLS`
    cache : the clip-statistics cache folder (see :mod:`mde.probe.features`); None: a temporary folder,
        removed at the end (nothing is kept for a rerun)
    threads : inference threads per model (None: ONNX Runtime's choice)
    c_grid : inverse regularisation strengths tried on the valid split
    on_clip, on_failure, on_note : progress ``(files done, files)``, each skipped file ``(path, line)``,
        and other one-line notes

    Raises
    ------
    MdeError
        An unknown model or pooling, a split without clips (before anything is embedded), a split left
        without clips once the failed files are out, no target, nothing to learn (see :func:`fit_probe`),
        or a cache that cannot be written.
    """
    unknown = [p for p in pools if p not in POOLS]
    if unknown or not pools:
        raise MdeError(f"unknown pooling {', '.join(unknown) or '(none)'}; choose from {', '.join(POOLS)}")
    clips = {split: dataset.split(split) for split in SPLITS}  # a missing split: one line, before any work
    notes: list[str] = []

    def note(line: str) -> None:
        notes.append(line)
        _note(on_note, line)

    files = resolve_models(models, note)
    loaded = [(label, Model(path, threads=threads)) for label, path in files]
    targets, entries = make_targets(loaded, list(dict.fromkeys(layers)), note)
    with ExitStack() as stack:
        folder = Path(cache) if cache is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        paths = [clip.path for split in SPLITS for clip in clips[split]]
        features = extract(targets, paths, FeatureCache(folder), on_clip, on_failure)
    kept = {split: [c for c in clips[split] if c.path not in features.failed] for split in SPLITS}
    for split, left in kept.items():
        if not left:
            raise MdeError(f"every clip of the {split} split failed to decode or embed: nothing to probe")
    report = ProbeReport(
        dataset=dataset.name, single_label=dataset.single_label, tag_names=dataset.tag_names,
        splits={split: len(left) for split, left in kept.items()}, models=entries, failed=dict(features.failed),
        notes=notes, embedded=features.embedded, cached=features.cached, decoded=features.decoded,
    )
    labels = {split: np.stack([c.labels for c in kept[split]]) for split in SPLITS}
    for column, target in zip(features.stats, targets):
        for mode in dict.fromkeys(pools):
            x = {split: pool_matrix([column[c.path] for c in kept[split]], mode) for split in SPLITS}
            fit = fit_probe(x, labels, dataset.tag_names, dataset.single_label, c_grid)
            report.rows.append(ProbeRow(target.label, target.layer, mode, x["train"].shape[1], fit))
    return report


def _note(on_note: NoteCallback, line: str) -> None:
    if on_note:
        on_note(line)
