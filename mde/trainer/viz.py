"""``mde viz``: 2-D maps of clip embeddings coloured by class, before and after training.

A clip's embedding is the mean over its windows of one output of the network (``--layer``; the model's
embedding by default), each window's output flattened. A training run's windows are cut as its
evaluation cuts them (:class:`~mde.trainer.data.loading.EvalClips` with the run's ``eval_crops``) and fed
through the architecture's input stage (:func:`~mde.trainer.frontend.network_input`, so log-mel and
waveform networks alike); a model file's are the runtime's non-overlapping windows
(:meth:`mde.runtime.extractor.Model.embed`). The embeddings are mapped to 2-D by PCA and by t-SNE at
perplexities 5 and 30 (each clamped below the number of clips), for the run's initial weights
(``checkpoints/initial.pt``) and its best checkpoint side by side; a model file, or a run saved before
initial weights were kept, gets the after-training maps only, with a note.

Each map is scored by the leave-one-out accuracy of a 5-nearest-neighbour vote among its 2-D points and
by the silhouette of its classes (scikit-learn), so a test can check that training separated them.
Multi-label data colours each clip by the most frequent (in the split) of its tags.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mde.atomic import atomic_path
from mde.errors import MdeError
from mde.trainer.data.dataset import TaggingDataset

StageCallback = Callable[[str, int, int], None]
"""``(stage, done, total)``: progress of the embedding and of the t-SNE maps."""
Embedder = Callable[[Callable[[int, int], None]], np.ndarray]
"""``embed(on_clip)``: the clip embeddings (clips, dim) of one stage; ``on_clip(done, total)`` after each clip."""

TSNE_PERPLEXITIES = {"tsne5": 5.0, "tsne30": 30.0}
"""The t-SNE maps, by name, and their perplexities."""
MAP_TITLES = {"pca": "PCA", "tsne5": "t-SNE, perplexity {perplexity:g}", "tsne30": "t-SNE, perplexity {perplexity:g}"}
EXACT_TSNE_CLIPS = 1000
"""Up to this many clips t-SNE runs exactly (O(n^2) memory, faster there than Barnes-Hut); above, Barnes-Hut."""
KNN_NEIGHBOURS = 5
"""Neighbours that vote in a map's leave-one-out nearest-neighbour accuracy."""
NO_TAG = "(no tag)"
"""The class of a multi-label clip without any tag."""
NO_INITIAL_WEIGHTS = "trained before initial weights were saved: after maps only"
MODEL_FILE_NOTE = "a model file has no initial weights: after maps only"
MIN_CLIPS = 3


@dataclass(frozen=True)
class ClipClasses:
    """The colour class of each clip of a split: class indices (n,), their names, and how they were chosen."""

    classes: np.ndarray
    names: tuple[str, ...]
    by: str  # 'class' (single-label) or 'most frequent tag' (multi-label)


@dataclass
class VizResult:
    """What :func:`embedding_maps` wrote: the PNG, the JSON beside it, the scores per map and the notes."""

    png: Path
    json: Path
    scores: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def embedding_maps(
    target: str, dataset: str, data: Path, out_dir: Path, *, split: str = "test", layer: Optional[str] = None,
    seed: int = 0, on_progress: Optional[StageCallback] = None,
) -> VizResult:
    """Map the clip embeddings of ``target`` (a run folder, or a model name / ``.onnx`` file) on ``split``
    of the dataset (``dataset`` kind and ``data`` as for ``mde train``) and write
    ``out_dir/<layer>_maps.png`` and ``out_dir/<layer>_maps.json``.

    The JSON holds, per map, ``knn_accuracy`` and ``silhouette`` (None where undefined, e.g. one class)
    and for t-SNE the perplexity used, keyed ``before_pca``, ``before_tsne5``, ``before_tsne30``,
    ``after_pca``, ``after_tsne5``, ``after_tsne30`` (before maps only for a run with initial weights),
    plus ``info`` (target, dataset, split, layer, clips, class counts, what colours them, the chance level
    = the largest class's share, notes). ``seed`` fixes the t-SNE maps. Raises MdeError (one line) for a
    bad target, dataset, split or layer.
    """
    from mde.trainer.data.sources import load_dataset

    report = on_progress or (lambda stage, done, total: None)
    ds = load_dataset(dataset, Path(data), single_label=dataset == "gtzan")
    n = len(ds.split(split))
    if n < MIN_CLIPS:
        raise MdeError(f"{ds.name}: the {split} split has {n} clips; a map needs at least {MIN_CLIPS}")
    colours = clip_classes(ds, split)
    stages, layer, notes = _stages(target, ds, split, layer)
    _writable(Path(out_dir))
    embeddings = {stage: embed(partial(report, f"embedding clips ({stage} training)")) for stage, embed in stages}
    maps, perplexities, clamp_notes = _project(embeddings, seed, report)
    notes += clamp_notes
    if colours.by != "class":
        notes.append("multi-label data: each clip is coloured by the most frequent of its tags")
    scores = {name: {**map_scores(points, colours.classes), **perplexities.get(name, {})}
              for name, points in maps.items()}
    counts = np.bincount(colours.classes, minlength=len(colours.names))
    info = {
        "target": str(target), "dataset": ds.name, "data": str(data), "split": split, "layer": layer, "clips": n,
        "classes": dict(zip(colours.names, counts.tolist())), "coloured_by": colours.by,
        "chance": float(counts.max() / n), "knn_neighbours": min(KNN_NEIGHBOURS, n - 1), "notes": notes,
    }
    png, json_path = Path(out_dir) / f"{layer}_maps.png", Path(out_dir) / f"{layer}_maps.json"
    _write_figure(png, maps, scores, perplexities, colours, f"{Path(target).name}: '{layer}' of {n} {split} clips of "
                  f"{ds.name}, coloured by {colours.by}")
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps({**scores, "info": info}, indent=2, allow_nan=False) + "\n")
    return VizResult(png, json_path, scores, notes)


def _writable(folder: Path) -> None:
    """Create ``folder``; MdeError (one line) if that fails or files cannot be made in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MdeError(f"{folder}: cannot create the output folder ({e.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise MdeError(f"{folder}: the output folder is not writable")


def clip_classes(ds: TaggingDataset, split: str) -> ClipClasses:
    """Each clip's colour class: its class (single-label), else its tag that is most frequent in the split
    (ties: the earlier tag), or :data:`NO_TAG`; multi-label names keep only the tags chosen, in tag order."""
    labels = ds.label_matrix(split) > 0
    if ds.single_label:
        return ClipClasses(labels.argmax(axis=1), ds.tag_names, "class")
    frequency = labels.sum(axis=0)
    chosen = np.where(labels.any(axis=1), np.argmax(np.where(labels, frequency, -1), axis=1), len(ds.tag_names))
    used = sorted(set(chosen.tolist()))
    names = tuple(ds.tag_names[i] if i < len(ds.tag_names) else NO_TAG for i in used)
    return ClipClasses(np.searchsorted(used, chosen), names, "most frequent tag")


def map_scores(points: np.ndarray, classes: np.ndarray) -> dict[str, Optional[float]]:
    """``knn_accuracy``: the share of points whose class wins the vote of their min(5, n - 1) nearest other
    points (a tie goes to the class of the nearest tied voter); ``silhouette``: sklearn's silhouette score
    of the classes, None unless 2 <= classes present <= n - 1."""
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import NearestNeighbors

    n = len(points)
    k = min(KNN_NEIGHBOURS, n - 1)
    _, nearest = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    correct = 0
    for i, row in enumerate(nearest):
        others = [j for j in row if j != i][:k]  # duplicates of point i may come before it
        votes = classes[others]
        counts = np.bincount(votes)
        winner = next(int(c) for c in votes if counts[c] == counts.max())
        correct += winner == classes[i]
    present = len(np.unique(classes))
    silhouette = float(silhouette_score(points, classes)) if 2 <= present <= n - 1 else None
    return {"knn_accuracy": float(correct / n), "silhouette": silhouette}


def _project(embeddings: dict[str, np.ndarray], seed: int, report: StageCallback,
             ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]], list[str]]:
    """The 2-D maps ``<stage>_<method>`` of each stage's embeddings (n, d), the perplexity of each t-SNE
    map, and a note per clamped perplexity."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = len(next(iter(embeddings.values())))
    used = {name: min(perplexity, n - 1.0) for name, perplexity in TSNE_PERPLEXITIES.items()}
    notes = [f"t-SNE perplexity {TSNE_PERPLEXITIES[name]:g} clamped to {p:g}: it must be below the number of "
             f"clips ({n})" for name, p in used.items() if p != TSNE_PERPLEXITIES[name]]
    maps: dict[str, np.ndarray] = {}
    perplexities: dict[str, dict[str, float]] = {}
    total, done = len(embeddings) * len(used), 0
    report("t-SNE maps", 0, total)
    for stage, points in embeddings.items():
        maps[f"{stage}_pca"] = PCA(n_components=2, random_state=seed).fit_transform(points)
        for name, perplexity in used.items():
            tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                        method="exact" if n <= EXACT_TSNE_CLIPS else "barnes_hut")
            maps[f"{stage}_{name}"] = tsne.fit_transform(points)
            perplexities[f"{stage}_{name}"] = {"perplexity": perplexity}
            done += 1
            report("t-SNE maps", done, total)
    return maps, perplexities, notes


def _stages(target: str, ds: TaggingDataset, split: str, layer: Optional[str]
            ) -> tuple[list[tuple[str, Embedder]], str, list[str]]:
    """The stages to embed ('before', 'after') as (name, embed(on_clip) -> (clips, dim)), the layer, and notes.

    Every check (target, layer) is done here, before any clip is embedded."""
    run = Path(target)
    if (run / "config.json").is_file():
        return _run_stages(run, ds, split, layer)
    if run.is_dir():
        raise MdeError(f"{target}: not a training run folder (no config.json) nor a model file")
    from mde.runtime.extractor import load_model

    model = load_model(target)
    layer = layer or model.info.embedding_output
    model.output_names(layer)  # a ModelError naming the layers the model has

    from mde.trainer.clip_embeddings import model_clip_embeddings

    return [("after", partial(model_clip_embeddings, model, ds, split, layer))], layer, [MODEL_FILE_NOTE]


def _run_stages(run: Path, ds: TaggingDataset, split: str, layer: Optional[str]
                ) -> tuple[list[tuple[str, Embedder]], str, list[str]]:
    """Before / after stages of a run folder: its initial weights (when saved) and its best checkpoint."""
    from mde.trainer.data.loading import EVAL_CROPS
    from mde.trainer.loop import resolve_device
    from mde.trainer.run_dir import RunDir

    run_dir = RunDir(run)
    n_crops = run_dir.read_json(run_dir.config_path).get("eval_crops", EVAL_CROPS)
    device = resolve_device("auto")
    initial = run_dir.initial
    checkpoints = {"after": run_dir.load_checkpoint(run_dir.best, device)}
    notes = []
    if initial.is_file():
        checkpoints = {"before": run_dir.load_checkpoint(initial, device), **checkpoints}
    else:
        notes.append(NO_INITIAL_WEIGHTS)
    from mde.trainer.clip_embeddings import RunNetwork, run_clip_embeddings

    networks = {stage: RunNetwork(payload, device) for stage, payload in checkpoints.items()}
    layer = networks["after"].check_layer(layer, str(run))
    stages: list[tuple[str, Embedder]] = [(stage, partial(run_clip_embeddings, network, ds, split, layer, n_crops))
                                          for stage, network in networks.items()]
    return stages, layer, notes


def _write_figure(path: Path, maps: dict[str, np.ndarray], scores: dict[str, dict[str, Any]],
                  perplexities: dict[str, dict[str, float]], colours: ClipClasses, title: str) -> None:
    """The maps in a grid: a row per method (PCA, t-SNE 5, t-SNE 30), a column per stage (before, after)."""
    from mde.trainer.plots import MapPanel, class_names_with_counts, maps_figure, save_png

    stages = [stage for stage in ("before", "after") if f"{stage}_pca" in maps]
    rows: list[Sequence[MapPanel]] = []
    for method, heading in MAP_TITLES.items():
        row = []
        for stage in stages:
            name = f"{stage}_{method}"
            figures = scores[name]
            what = heading.format(**perplexities.get(name, {}))
            silhouette = "n/a" if figures["silhouette"] is None else f"{figures['silhouette']:.2f}"
            row.append(MapPanel(maps[name], colours.classes, f"{stage} training: {what}\n"
                                f"kNN accuracy {figures['knn_accuracy']:.2f}, silhouette {silhouette}"))
        rows.append(row)
    save_png(maps_figure(rows, class_names_with_counts(colours.names, colours.classes), title), path)
