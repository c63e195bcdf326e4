"""Evaluation figures for taggers and classifiers (scikit-learn), and the confusion-matrix files.

Multi-label (tagging): ROC-AUC and PR-AUC (average precision) per tag and their macro means, as the
sota-music-tagging-models recipe reports them. Single-label (classification): accuracy and
support-weighted precision / recall / F1, plus the confusion matrix (rows: true class, columns:
predicted class). Clip scores are the mean of a clip's window scores.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)


def clip_scores(window_scores: np.ndarray) -> np.ndarray:
    """A clip's scores (k,) from its windows' scores (n_windows, k): the mean over windows."""
    return np.asarray(window_scores, dtype=np.float64).mean(axis=0)


def multilabel_metrics(y_true: np.ndarray, y_score: np.ndarray, tag_names: Sequence[str]) -> dict[str, Any]:
    """ROC-AUC and PR-AUC of scores (n, k) against 0/1 labels (n, k), per tag and macro-averaged.

    Returns {'roc_auc': macro mean, 'pr_auc': macro mean, 'per_tag': {tag: {'roc_auc', 'pr_auc',
    'support'}}, 'undefined_tags': [...]}. A tag whose labels are all 0 or all 1 has no defined AUC: it is
    listed in 'undefined_tags', its AUCs are None, and it is left out of the means (which are NaN when
    no tag is defined). 'support' is the tag's number of positives.
    """
    truth = np.asarray(y_true)
    scores = np.asarray(y_score, dtype=np.float64)
    _check_shapes(truth, scores, len(tag_names))
    per_tag: dict[str, dict[str, Any]] = {}
    undefined: list[str] = []
    for column, tag in enumerate(tag_names):
        labels = truth[:, column].astype(bool)
        support = int(labels.sum())
        roc: float | None
        pr: float | None
        if 0 < support < len(labels):
            roc = float(roc_auc_score(labels, scores[:, column]))
            pr = float(average_precision_score(labels, scores[:, column]))
        else:
            roc = pr = None
            undefined.append(tag)
        per_tag[tag] = {"roc_auc": roc, "pr_auc": pr, "support": support}
    defined = [figures for figures in per_tag.values() if figures["roc_auc"] is not None]
    return {
        "roc_auc": _mean([figures["roc_auc"] for figures in defined]),
        "pr_auc": _mean([figures["pr_auc"] for figures in defined]),
        "per_tag": per_tag,
        "undefined_tags": undefined,
    }


def single_label_metrics(y_true: np.ndarray, y_score: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Classification figures of scores (n, k) against class indices (n,); the prediction is the argmax.

    Returns {'accuracy', 'precision', 'recall', 'f1' (support-weighted means, 0 where undefined),
    'confusion': k x k list of int counts (row: true class, column: predicted class),
    'per_class': {class: {'precision', 'recall', 'f1', 'support'}}}.
    """
    truth = np.asarray(y_true).astype(np.int64)
    scores = np.asarray(y_score)
    if truth.ndim != 1:
        raise ValueError(f"y_true must be class indices of shape (n,), got {truth.shape}")
    _check_shapes(truth[:, None], scores, len(class_names), same_width=False)
    predicted = scores.argmax(axis=1)
    labels = np.arange(len(class_names))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0)
    weighted = precision_recall_fscore_support(truth, predicted, labels=labels, average="weighted",
                                               zero_division=0)
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "precision": float(weighted[0]),
        "recall": float(weighted[1]),
        "f1": float(weighted[2]),
        "confusion": confusion_matrix(truth, predicted, labels=labels).astype(int).tolist(),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(class_names)
        },
    }


def write_confusion_matrix(matrix: Sequence[Sequence[int]] | np.ndarray, class_names: Sequence[str],
                           out_dir: Path) -> tuple[Path, Path]:
    """Write ``confusion_matrix.csv`` (a header row of class names, then one row of counts per true
    class) and ``confusion_matrix.png`` (annotated heat map) into ``out_dir``; returns (csv, png)."""
    counts = np.asarray(matrix, dtype=np.int64)
    k = len(class_names)
    if k == 0 or counts.shape != (k, k):
        raise ValueError(f"a confusion matrix of {k} classes must be {k} x {k}, got {counts.shape}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "confusion_matrix.csv"
    _write_csv(csv_path, counts, class_names)
    png_path = out_dir / "confusion_matrix.png"
    _plot(png_path, counts, class_names)
    return csv_path, png_path


def _check_shapes(truth: np.ndarray, scores: np.ndarray, k: int, same_width: bool = True) -> None:
    """ValueError unless scores are (n, k) and the labels have n rows (and k columns if ``same_width``)."""
    if scores.ndim != 2 or scores.shape[1] != k:
        raise ValueError(f"scores must have shape (n, {k}), got {scores.shape}")
    if truth.shape[0] != scores.shape[0] or (same_width and truth.shape != scores.shape):
        raise ValueError(f"labels of shape {truth.shape} do not match scores of shape {scores.shape}")


def _mean(values: list[float]) -> float:
    """Mean of ``values``; NaN for none."""
    return float(np.mean(values)) if values else float("nan")


def _write_csv(path: Path, counts: np.ndarray, class_names: Sequence[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(class_names)
        writer.writerows(counts.tolist())


def _plot(path: Path, counts: np.ndarray, class_names: Sequence[str]) -> None:
    """Heat map with each cell's count written in it; rows are true classes, columns predictions.

    Drawn on a bare matplotlib Figure (Agg canvas), so pyplot's global backend and figures are untouched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = len(class_names)
    size = max(4.0, 0.6 * k + 2.0)  # inches
    figure = Figure(figsize=(size, size))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(k), labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(range(k), labels=class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    threshold = counts.max() / 2
    for row in range(k):
        for column in range(k):
            value = counts[row, column]
            axes.text(column, row, str(value), ha="center", va="center",
                      color="white" if value > threshold else "black", fontsize=8 if k > 12 else 10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
