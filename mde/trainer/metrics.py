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

from mde.atomic import atomic_path


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
    class) and ``confusion_matrix.png`` (two annotated heat maps: the counts and the counts normalised
    per true class, see :func:`mde.trainer.plots.write_confusion_png`) into ``out_dir``, each atomically;
    returns (csv, png)."""
    from mde.trainer.plots import write_confusion_png

    counts = np.asarray(matrix, dtype=np.int64)
    png_path = write_confusion_png(counts, class_names, Path(out_dir) / "confusion_matrix.png")  # checks the shape
    csv_path = png_path.with_suffix(".csv")
    _write_csv(csv_path, counts, class_names)
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
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(class_names)
        writer.writerows(counts.tolist())
